"""The pomelo/nano wire protocol, sans-IO: no trio, no sockets, no logging.

Packets (:func:`encode_packet`, :class:`PacketDecoder`), messages (:class:`MessageCodec`, the
events :class:`Request`, :class:`Notify`, :class:`Response`, :class:`Push`), the route
dictionary (:class:`RouteDict`), the control packets' bodies (:class:`Handshake`,
:class:`HandshakeResponse`, :class:`Kick`) and the connection state machine
(:class:`Connection`, its tables :data:`RECEIVE_TRANSITIONS` and :data:`SEND_TRANSITIONS`).

Error handling: every error is a :class:`ProtocolError`, either :class:`LocalProtocolError`
(the caller asked for something illegal) or :class:`RemoteProtocolError` (the peer sent
something illegal). Any other exception out of this package is a bug: whatever bytes a peer
sends, including any JSON in a handshake or kick body, decode or raise RemoteProtocolError. A
server-role Connection's RemoteProtocolError carries in ``event_hint`` the Kick to send before
closing.
"""

from ._connection import RECEIVE_TRANSITIONS as RECEIVE_TRANSITIONS
from ._connection import SEND_TRANSITIONS as SEND_TRANSITIONS
from ._connection import TIMEOUT_INTERVALS as TIMEOUT_INTERVALS
from ._connection import Connection as Connection
from ._connection import ConnectionClosed as ConnectionClosed
from ._connection import Event as Event
from ._connection import EventKind as EventKind
from ._connection import Role as Role
from ._connection import State as State
from ._connection import event_kind as event_kind
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._handshake import CODE_OK as CODE_OK
from ._handshake import CODE_SERVER_ERROR as CODE_SERVER_ERROR
from ._handshake import CODE_VERSION_MISMATCH as CODE_VERSION_MISMATCH
from ._handshake import MAX_HEARTBEAT as MAX_HEARTBEAT
from ._handshake import MIN_HEARTBEAT as MIN_HEARTBEAT
from ._handshake import Handshake as Handshake
from ._handshake import HandshakeAck as HandshakeAck
from ._handshake import HandshakeResponse as HandshakeResponse
from ._handshake import Heartbeat as Heartbeat
from ._handshake import Kick as Kick
from ._handshake import check_heartbeat as check_heartbeat
from ._handshake import dict_version as dict_version
from ._message import EMPTY_ROUTES as EMPTY_ROUTES
from ._message import MAX_MESSAGE_ID as MAX_MESSAGE_ID
from ._message import MAX_ROUTE_LENGTH as MAX_ROUTE_LENGTH
from ._message import Message as Message
from ._message import MessageCodec as MessageCodec
from ._message import MessageType as MessageType
from ._message import Notify as Notify
from ._message import Push as Push
from ._message import Request as Request
from ._message import Response as Response
from ._message import RouteDict as RouteDict
from ._message import build_message as build_message
from ._message import decode_message as decode_message
from ._message import decode_route as decode_route
from ._message import encode_message as encode_message
from ._message import encode_varint as encode_varint
from ._packet import HEAD_LENGTH as HEAD_LENGTH
from ._packet import MAX_BODY_SIZE as MAX_BODY_SIZE
from ._packet import Packet as Packet
from ._packet import PacketDecoder as PacketDecoder
from ._packet import PacketType as PacketType
from ._packet import encode_packet as encode_packet
