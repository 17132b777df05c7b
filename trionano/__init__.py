"""trionano: real-time game and push servers on Trio, speaking nano's (pomelo's) wire protocol.

The runtime: :class:`Server` runs :class:`Components` (handlers discovered from their type
annotations) for :class:`Session` s over TCP, TLS and WebSocket; every handler runs in one
scheduler task (:mod:`trionano.nursery_scheduler`), so game state needs no locks.
:mod:`trionano.wire` is the protocol, sans-IO; :mod:`trionano.client` a Trio client.
"""

from ._component import Component as Component
from ._component import Components as Components
from ._config import Config as Config
from ._config import HandshakeValidator as HandshakeValidator
from ._config import SlowConsumerPolicy as SlowConsumerPolicy
from ._errors import ComponentError as ComponentError
from ._errors import GroupError as GroupError
from ._errors import HandlerError as HandlerError
from ._errors import HandshakeRejected as HandshakeRejected
from ._errors import Kicked as Kicked
from ._errors import SerializeError as SerializeError
from ._errors import SessionError as SessionError
from ._errors import TrionanoError as TrionanoError
from ._group import Group as Group
from ._pipeline import Pipeline as Pipeline
from ._pipeline import PipelineMessage as PipelineMessage
from ._serializer import JSONSerializer as JSONSerializer
from ._serializer import ProtobufSerializer as ProtobufSerializer
from ._serializer import Serializer as Serializer
from ._server import Endpoint as Endpoint
from ._server import Server as Server
from ._server import Stats as Stats
from ._server import TCPEndpoint as TCPEndpoint
from ._server import serve_tcp as serve_tcp
from ._session import Session as Session
from ._session import SessionKey as SessionKey
from ._websocket import BROWSER_CLIENT as BROWSER_CLIENT
from ._websocket import WebSocketEndpoint as WebSocketEndpoint
from ._websocket import serve_websocket as serve_websocket

__version__ = "0.1.0"
