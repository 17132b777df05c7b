"""Handshake, HandshakeAck, Heartbeat and Kick: the control packets' bodies (nano.md §3)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn

import attrs

from ._errors import LocalProtocolError, RemoteProtocolError
from ._message import RouteDict

__all__ = [
    "CODE_OK",
    "CODE_SERVER_ERROR",
    "CODE_VERSION_MISMATCH",
    "MAX_HEARTBEAT",
    "MIN_HEARTBEAT",
    "Handshake",
    "HandshakeAck",
    "HandshakeResponse",
    "Heartbeat",
    "Kick",
    "check_heartbeat",
    "dict_version",
]

#: Handshake response codes, as pomelo's JS clients read them.
CODE_OK: Final = 200
CODE_SERVER_ERROR: Final = 500  # "handshake fail"
CODE_VERSION_MISMATCH: Final = 501  # "client version not fullfill"


#: The heartbeat intervals, in seconds, that either side accepts: 0 (no heartbeats) or a number
#: from a millisecond (nano's timer floor) to a day. Outside that a server's value is absurd: a
#: client would spin or never notice a dead server.
MIN_HEARTBEAT: Final = 0.001
MAX_HEARTBEAT: Final = 86_400.0

# Longer integers are refused whatever sys.set_int_max_str_digits says: int() of a long digit
# string is quadratic. 4300 is CPython's default limit.
_MAX_INT_DIGITS: Final = 4300
# A \uD800..\uDFFF escape: the text may hold a lone surrogate once parsed.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def check_heartbeat(value: object) -> float | None:
    """``value`` as a heartbeat interval in seconds, or None when it is not one: a bool, a
    non-number, not finite, or outside 0 and :data:`MIN_HEARTBEAT`..:data:`MAX_HEARTBEAT`."""
    if type(value) is not int and type(value) is not float:
        return None
    if value == 0:
        return 0.0  # also -0.0
    if not MIN_HEARTBEAT <= value <= MAX_HEARTBEAT:  # exact for huge ints; False for NaN
        return None
    return float(value)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]}... is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


_DECODER: Final = json.JSONDecoder(parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant)


def _replace_surrogates(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def _loads(body: bytes) -> object:
    """Parse a peer's JSON as Go's encoding/json reads it: strict UTF-8 (json.loads would let
    UTF-8-encoded surrogates through), no NaN/Infinity, no number out of float range, and a lone
    surrogate escape becomes U+FFFD, so every string parsed is valid text. Duplicate keys: the
    last wins. Raises ValueError or RecursionError."""
    text = body.decode()
    value = _DECODER.decode(text)
    if _SURROGATE_ESCAPE.search(text):
        # surrogate pairs are joined by now: any surrogate left is a lone one
        value = _DECODER.decode(_replace_surrogates(json.dumps(value, ensure_ascii=False)))
    return value


def _dumps(value: object, *, sort_keys: bool = True) -> bytes:
    """Compact UTF-8 JSON (Go's encoding/json shape with ``sort_keys``). A lone surrogate in a
    string is written as U+FFFD, as Go writes invalid UTF-8. Raises TypeError or ValueError."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _replace_surrogates(text).encode()


def _loads_object(body: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object body; an empty body is an empty object. Raises RemoteProtocolError."""
    if not body.strip():
        return {}
    try:
        value = _loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RemoteProtocolError(f"invalid {what}: {exc}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"invalid {what}: expected a JSON object")
    return value


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def dict_version(routes: RouteDict) -> str:
    """pomelo's ``dictVersion``: base64 of the MD5 of the dictionary's JSON, in code order."""
    ordered = dict(sorted(routes.items(), key=lambda item: item[1]))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(hashlib.md5(text.encode(), usedforsecurity=False).digest()).decode()


@attrs.frozen
class Handshake:
    """The client's handshake request. nano passes the body opaquely to a validator; trionano
    also reads pomelo's fields. Unknown keys are tolerated; an empty body is a Handshake with
    every field None (the Go benchmark client sends one)."""

    type: str | None = None  # sys.type, e.g. "js-websocket"
    version: str | None = None  # sys.version
    user: Any = None  # the application's own handshake data
    raw: bytes = b""  # the body as received, for validators that want nano's view

    @classmethod
    def parse(cls, body: bytes) -> Handshake:
        """Raises RemoteProtocolError when the body is neither empty nor a JSON object."""
        obj = _loads_object(body, "handshake")
        sys = obj.get("sys")
        sys = sys if isinstance(sys, dict) else {}
        return cls(type=_as_str(sys.get("type")), version=_as_str(sys.get("version")), user=obj.get("user"), raw=body)

    def encode(self) -> bytes:
        """The request body as starx and pomelo's JS clients shape it. Raises LocalProtocolError
        if ``user`` is not JSON-serializable."""
        sys: dict[str, object] = {}
        if self.type is not None:
            sys["type"] = self.type
        if self.version is not None:
            sys["version"] = self.version
        obj: dict[str, object] = {"sys": sys}
        if self.user is not None:
            obj["user"] = self.user
        try:
            return _dumps(obj, sort_keys=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise LocalProtocolError(f"handshake user data is not JSON: {exc}") from None


@attrs.frozen
class HandshakeResponse:
    """The server's handshake response.

    ``code`` 200 accepts; anything else refuses (500 "handshake fail", 501 "client version not
    fullfill") and carries no ``sys``. ``heartbeat`` is in seconds, 0 for none. With ``pomelo``
    set, the response also carries pomelo's ``useDict``/``routeToCode``/``codeToRoute``/
    ``dictVersion`` for libpomelo2 clients, which read the heartbeat as a whole number of
    seconds: a fractional one is then refused (LocalProtocolError from :meth:`encode`).
    """

    code: int = CODE_OK
    heartbeat: float = 30.0
    servertime: int | None = None
    dictionary: RouteDict | None = None
    pomelo: bool = False
    user: Any = None

    @property
    def accepted(self) -> bool:
        """Whether ``code`` is 200: the client may acknowledge and start working."""
        return self.code == CODE_OK

    def encode(self) -> bytes:
        """The response body: nano's ``{"code":200,"sys":{"heartbeat":...}}`` (keys sorted,
        compact); a refusal has no ``sys``. Raises LocalProtocolError for an
        invalid heartbeat or ``user`` that is not JSON."""
        obj: dict[str, object] = {"code": self.code}
        if self.user is not None:
            obj["user"] = self.user
        if self.accepted:
            heartbeat: float = self.heartbeat
            if check_heartbeat(heartbeat) is None:
                raise LocalProtocolError(
                    f"heartbeat must be 0 or {MIN_HEARTBEAT}..{MAX_HEARTBEAT} seconds, not {heartbeat!r}"
                )
            if float(heartbeat).is_integer():
                heartbeat = int(heartbeat)  # Go prints 30.0 as 30
            elif self.pomelo:
                raise LocalProtocolError(f"libpomelo2 reads whole heartbeat seconds; {heartbeat} would be cut")
            sys: dict[str, object] = {"heartbeat": heartbeat}
            if self.servertime is not None:
                sys["servertime"] = self.servertime
            if self.dictionary:
                sys["dict"] = dict(self.dictionary)
                if self.pomelo:
                    sys["useDict"] = True
                    sys["routeToCode"] = dict(self.dictionary)
                    sys["codeToRoute"] = {str(code): route for code, route in self.dictionary.codes.items()}
                    sys["dictVersion"] = dict_version(self.dictionary)
            obj["sys"] = sys
        try:
            return _dumps(obj)
        except (TypeError, ValueError, RecursionError) as exc:
            raise LocalProtocolError(f"handshake user data is not JSON: {exc}") from None

    @classmethod
    def parse(cls, body: bytes) -> HandshakeResponse:
        """Read nano's fields, or pomelo's ``routeToCode`` when ``dict`` is absent. Raises
        RemoteProtocolError for a body that is not a JSON object, a missing or non-integer code,
        or a malformed dictionary."""
        obj = _loads_object(body, "handshake response")
        code = obj.get("code")
        if type(code) is not int:
            raise RemoteProtocolError("invalid handshake response: no integer code")
        sys = obj.get("sys")
        sys = sys if isinstance(sys, dict) else {}
        raw_heartbeat = sys.get("heartbeat", 0)
        heartbeat = check_heartbeat(raw_heartbeat)
        if heartbeat is None:
            shown = repr(raw_heartbeat)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise RemoteProtocolError(
                f"invalid handshake response: heartbeat {shown} is not 0 or {MIN_HEARTBEAT}..{MAX_HEARTBEAT} seconds"
            )
        servertime = sys.get("servertime")
        raw_dict = sys.get("dict", sys.get("routeToCode"))
        dictionary = None
        if raw_dict is not None:
            if not isinstance(raw_dict, dict):
                raise RemoteProtocolError("invalid handshake response: dict is not an object")
            try:
                dictionary = RouteDict(raw_dict)
            except LocalProtocolError as exc:
                raise RemoteProtocolError(f"invalid handshake response: {exc}") from None
        return cls(
            code=code,
            heartbeat=heartbeat,
            servertime=servertime if type(servertime) is int else None,
            dictionary=dictionary,
            pomelo=bool(sys.get("useDict")),
            user=obj.get("user"),
        )


@attrs.frozen
class HandshakeAck:
    """The client's acknowledgement of an accepted handshake (empty body)."""


@attrs.frozen
class Heartbeat:
    """A heartbeat (empty body), in either direction."""


@attrs.frozen
class Kick:
    """Server -> client: you are being disconnected, and why. nano never sends one (issue #81);
    pomelo sends ``{"reason": ...}``, which is what the JS clients parse."""

    reason: str = ""

    def encode(self) -> bytes:
        """``{"reason": ...}``; a lone surrogate in the reason is written as U+FFFD."""
        return _dumps({"reason": self.reason})

    @classmethod
    def parse(cls, body: bytes) -> Kick:
        """Tolerant, never raises: pitaya sends an empty body, others any JSON; the connection
        ends either way. A reason that is not a JSON string is the body's text (invalid UTF-8
        and lone surrogates replaced by U+FFFD)."""
        try:
            value = _loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            return cls(reason=body.decode(errors="replace"))
        reason = value.get("reason") if isinstance(value, Mapping) else value
        if reason is None:
            return cls()
        return cls(reason=reason if isinstance(reason, str) else body.decode(errors="replace"))
