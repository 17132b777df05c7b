"""trionano: real-time game and push servers on Trio, speaking nano's (pomelo's) wire protocol.

The runtime: :class:`Server` runs :class:`Components` (handlers discovered from their type
annotations) for :class:`Session` s over TCP, TLS and WebSocket; every handler runs in one
scheduler task (:mod:`trionano.nursery_scheduler`), so game state needs no locks.
:mod:`trionano.wire` is the protocol, sans-IO; :mod:`trionano.client` a Trio client.
"""

import logging as _logging

from ._component import Components as Components
from ._config import Config as Config
from ._config import HandshakeValidator as HandshakeValidator
from ._config import RateLimit as RateLimit
from ._config import SlowConsumerPolicy as SlowConsumerPolicy
from ._errors import ComponentError as ComponentError
from ._errors import GroupError as GroupError
from ._errors import HandlerError as HandlerError
from ._errors import HandshakeRejected as HandshakeRejected
from ._errors import Kicked as Kicked
from ._errors import MessageTooLarge as MessageTooLarge
from ._errors import ResponseError as ResponseError
from ._errors import SerializeError as SerializeError
from ._errors import SessionError as SessionError
from ._errors import TrionanoError as TrionanoError
from ._group import Group as Group
from ._listen import ConnectionHandler as ConnectionHandler
from ._listen import Endpoint as Endpoint
from ._listen import TCPEndpoint as TCPEndpoint
from ._pipeline import Pipeline as Pipeline
from ._pipeline import PipelineMessage as PipelineMessage
from ._run import run as run
from ._run import serve_until_signalled as serve_until_signalled
from ._run import tune_gc as tune_gc
from ._serializer import JSONSerializer as JSONSerializer
from ._serializer import ProtobufSerializer as ProtobufSerializer
from ._serializer import Serializer as Serializer
from ._server import Component as Component
from ._server import Server as Server
from ._server import serve_tcp as serve_tcp
from ._server import serve_websocket as serve_websocket
from ._session import DeferredResponse as DeferredResponse
from ._session import Session as Session
from ._session import SessionKey as SessionKey
from ._stats import Statistics as Statistics
from ._websocket import BROWSER_CLIENT as BROWSER_CLIENT
from ._websocket import WebSocketEndpoint as WebSocketEndpoint
from .wire import Handshake as Handshake
from .wire import RouteDict as RouteDict

__version__ = "0.2.0"

# A library never configures logging; this keeps "No handlers could be found" away.
_logging.getLogger("trionano").addHandler(_logging.NullHandler())


def _fixup_module_metadata() -> None:
    # Trio's fixup_module_metadata: public names say they come from "trionano", not "trionano._x"
    for name, value in list(globals().items()):
        if name.startswith("_") or not str(getattr(value, "__module__", "")).startswith("trionano._"):
            continue  # public modules (trionano.wire) keep their names
        try:
            value.__module__ = __name__
        except (AttributeError, TypeError):  # values without a writable __module__
            pass


_fixup_module_metadata()
del _fixup_module_metadata
