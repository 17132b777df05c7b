"""trionano: real-time game and push servers on Trio, speaking nano's (pomelo's) wire protocol."""

__version__ = "0.1.0"
