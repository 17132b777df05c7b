"""Serializers turn handler values into message bodies and bodies into the handler's type.

A handler's ``msg`` annotation decides the decoding, resolved once at registration:
``bytes`` is raw, a betterproto message is protobuf, an attrs class or dataclass is JSON into
that class, ``dict``/``Any``/``object`` is plain JSON. Outbound, ``bytes`` always pass through
unchanged (nano's rule), so a body serialized once can be pushed to many sessions.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

import attrs
import betterproto

from ._errors import SerializeError

orjson: ModuleType | None
try:  # optional speed-up: pip install trionano[speedups]
    orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

__all__ = ["JSONSerializer", "ProtobufSerializer", "Serializer", "Unmarshal"]

Unmarshal = Callable[[bytes], Any]


class Serializer(Protocol):
    """How values become bodies. Implementations are immutable and shared by a whole server."""

    name: str

    def marshal(self, value: object) -> bytes:
        """The body for ``value``. Raises SerializeError."""
        ...

    def unmarshaller(self, annotation: object) -> Unmarshal:
        """A function from body to a value of ``annotation``'s type, raising SerializeError;
        called once per handler at registration. Raises SerializeError for an unsupported type."""
        ...


def _is_message_class(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, betterproto.Message)


def _raw(body: bytes) -> bytes:
    return body


def _protobuf_unmarshal(cls: type[betterproto.Message]) -> Unmarshal:
    def unmarshal(body: bytes) -> betterproto.Message:
        try:
            return cls().parse(body)
        except Exception as exc:  # betterproto raises assorted errors on bad input
            raise SerializeError(f"deserialize to {cls.__name__} failed: {exc}") from None

    return unmarshal


class JSONSerializer:
    """JSON bodies, compact as Go's ``encoding/json`` writes them; orjson when installed.

    betterproto messages are sent as protobuf binary (``bytes(message)``), so one server can
    serve JSON and protobuf routes side by side; pass ``protobuf_as_json=True`` to send them as
    JSON objects instead (what pomelo's JS clients, which JSON-parse every body, need).
    """

    name = "json"

    def __init__(self, *, protobuf_as_json: bool = False, use_orjson: bool = True) -> None:
        self.protobuf_as_json = protobuf_as_json
        self._orjson = orjson if use_orjson else None

    def _dumps(self, value: object) -> bytes:
        if self._orjson is not None:
            result: bytes = self._orjson.dumps(value, default=_to_builtin)
            return result
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_to_builtin).encode()

    def _loads(self, body: bytes) -> Any:
        if self._orjson is not None:
            return self._orjson.loads(body)
        return json.loads(body)

    def marshal(self, value: object) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, betterproto.Message) and not self.protobuf_as_json:
            return bytes(value)
        try:
            return self._dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializeError(f"cannot serialize {type(value).__name__} to JSON: {exc}") from None

    def unmarshaller(self, annotation: object) -> Unmarshal:
        if annotation is bytes:
            return _raw
        if _is_message_class(annotation) and not self.protobuf_as_json:
            return _protobuf_unmarshal(annotation)  # type: ignore[arg-type]
        loads = self._loads

        def parse(body: bytes) -> Any:
            try:
                return loads(body)
            except (ValueError, RecursionError) as exc:
                raise SerializeError(f"body is not JSON: {exc}") from None

        if annotation in (dict, Any, object, None) or getattr(annotation, "__origin__", None) is dict:
            return parse
        if _is_message_class(annotation):
            cls = annotation

            def from_json(body: bytes) -> Any:
                try:
                    return cls().from_dict(parse(body))  # type: ignore[operator]
                except SerializeError:
                    raise
                except Exception as exc:
                    raise SerializeError(f"deserialize to {cls!r} failed: {exc}") from None

            return from_json
        if isinstance(annotation, type) and (attrs.has(annotation) or dataclasses.is_dataclass(annotation)):
            record = annotation

            def to_record(body: bytes) -> Any:
                obj = parse(body)
                if not isinstance(obj, dict):
                    raise SerializeError(f"deserialize to {record.__name__} failed: expected a JSON object")
                try:
                    return record(**obj)
                except (TypeError, ValueError) as exc:
                    raise SerializeError(f"deserialize to {record.__name__} failed: {exc}") from None

            return to_record
        raise SerializeError(f"no JSON decoding for {annotation!r}: use bytes, dict, a dataclass or attrs class")


def _to_builtin(value: object) -> object:
    """JSON fallback for records: attrs classes, dataclasses and betterproto messages."""
    if isinstance(value, betterproto.Message):
        return value.to_dict()
    if attrs.has(type(value)):
        return attrs.asdict(value)  # type: ignore[arg-type]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes | bytearray):
        return value.decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ProtobufSerializer:
    """Protobuf bodies only (nano's default serializer): betterproto messages and raw bytes."""

    name = "protobuf"

    def marshal(self, value: object) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, betterproto.Message):
            return bytes(value)
        raise SerializeError(f"protobuf: convert on wrong type value: {type(value).__name__}")

    def unmarshaller(self, annotation: object) -> Unmarshal:
        if annotation is bytes:
            return _raw
        if _is_message_class(annotation):
            return _protobuf_unmarshal(annotation)  # type: ignore[arg-type]
        raise SerializeError(f"protobuf: convert on wrong type value: {annotation!r}")
