"""Serializers turn handler values into message bodies and bodies into the handler's type.

A handler's ``msg`` annotation decides the decoding, resolved once at registration:
``bytes`` is raw, a betterproto message is protobuf, an attrs class or dataclass is JSON into
that class, ``dict``/``Any``/``object`` is plain JSON. Outbound, ``bytes`` always pass through
unchanged (nano's rule), so a body serialized once can be pushed to many sessions.

JSON, inbound (the same with or without orjson, which is only an accelerator):

- Text is UTF-8. pomelo's and nano's JS clients send CESU-8 (each UTF-16 code unit encoded on
  its own, so an emoji arrives as two 3-byte surrogate sequences): those pairs are re-joined.
  A lone surrogate, raw or as a ``\\ud800`` escape, becomes U+FFFD, so handler values can
  always be serialized again. Bytes that are invalid UTF-8 otherwise are a SerializeError.
- ``NaN``/``Infinity`` literals and numbers beyond a double's range are refused; integers
  beyond 64 bits become floats (orjson's rule, and what Go's ``interface{}`` would hold).
- Into an attrs class or dataclass (cattrs, one converter per serializer), with Go
  ``encoding/json``'s leniency and none of its coercions: unknown keys are ignored, a missing
  field takes its default, a missing field without a default is an error naming it
  (``required field missing @ $.name``), and a value of the wrong JSON type is an error naming
  its path (``expected int, got str @ $.to.x``). str, int, float and bool are never converted
  into one another, except that an int is accepted for a float (JSON has one number type);
  ``null`` only fits an ``Optional`` field (Go would keep the zero value). Nested records,
  lists, tuples, sets, ``dict[str, T]``, enums (by value), ``bytes`` (from UTF-8 text),
  ``Optional`` and unions of primitives (by exact JSON type) and records (one, or several
  that cattrs tells apart by a unique required field) are supported; any other type fails
  at registration. Give the fields of a message class defaults when nano-style
  clients may leave them out: nano fills Go zero values, trionano refuses rather than guess.
- ``dict`` and ``dict[str, Any]`` take a JSON object as parsed; ``Any`` and ``object`` any JSON.

JSON, outbound: compact as Go writes it; attrs classes and dataclasses through the same
converter (enums as their values), dates as ISO 8601, UUIDs as strings, bytes as UTF-8 text.
Characters outside the BMP are written as surrogate-pair escapes (U+1F600 as ``\\ud83d\\ude00``), because
the JS clients' ``strdecode`` only understands UTF-8 sequences of up to 3 bytes; every JSON
parser decodes the escape (BMP text stays raw UTF-8). ``NaN`` and ``Infinity`` are refused (a
SerializeError), never written as ``NaN`` or ``null``. With orjson, a body containing ``null``
is encoded again by the stdlib to tell ``None`` from ``NaN``, which orjson writes as ``null``.

Protobuf bodies are checked against the wire format and the message's field types before
betterproto parses them (it would turn junk into a default message, or a string field sent as
a varint into an int): every tag a field number from 1 to 2**29-1 and a wire type of 0, 1, 2
or 5, varints ending within 10 bytes and 64 bits, lengths within the body, nothing trailing,
known fields (nested messages and map entries included) with their own wire type or packed.
Unknown fields are kept. An empty body is a message of defaults.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import importlib
import json
import re
import uuid
from collections.abc import Callable, MutableSequence, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from types import MappingProxyType, ModuleType, NoneType, UnionType
from typing import Any, Final, Protocol, TypeGuard, Union, get_args, get_origin

import attrs
import betterproto
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote, StructureHandlerNotFoundError
from cattrs.gen import make_dict_structure_fn

from ._errors import SerializeError

orjson: ModuleType | None
try:  # optional speed-up: pip install trionano[speedups]
    orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

__all__ = ["ErrorResponse", "JSONSerializer", "ProtobufSerializer", "Serializer", "Unmarshal"]

Unmarshal = Callable[[bytes], Any]
_Hook = Callable[[Any, Any], Any]


class Serializer(Protocol):
    """How values become bodies. Implementations are immutable and shared by a whole server."""

    name: str

    def marshal(self, value: object) -> bytes:
        """The body for ``value``. Raises SerializeError."""
        ...

    def marshal_error(self, code: int, message: str) -> bytes:
        """The body of an error Response, in this serializer's format. Never raises."""
        ...

    def unmarshaller(self, annotation: object) -> Unmarshal:
        """A function from body to a value of ``annotation``'s type, raising SerializeError;
        called once per handler at registration. Raises SerializeError for an unsupported type."""
        ...


@dataclasses.dataclass(eq=False, repr=False)
class ErrorResponse(betterproto.Message):
    """The body of an error Response on a :class:`ProtobufSerializer` server::

    message ErrorResponse {
      int32 code = 1;     // 400 undecodable body, 404 unknown route, 500 handler error, ...
      string message = 2;
    }
    """

    code: int = betterproto.int32_field(1)
    message: str = betterproto.string_field(2)


def _is_message_class(annotation: object) -> TypeGuard[type[betterproto.Message]]:
    return isinstance(annotation, type) and issubclass(annotation, betterproto.Message)


def _raw(body: bytes) -> bytes:
    return body


# -- JSON text -------------------------------------------------------------------------------

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# a \u escape of a surrogate, perhaps lone (telling needs the escapes' context: the
# parsed value is checked instead; an escaped backslash before it only costs that check)
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_NON_BMP_UTF8: Final = re.compile(rb"[\xf0-\xf4][\x80-\xbf]{3}")
_INT64_MIN: Final = -(1 << 63)
_UINT64_LIMIT: Final = 1 << 64


def _parse_int(text: str) -> int | float:
    value = int(text)
    if _INT64_MIN <= value < _UINT64_LIMIT:
        return value
    try:  # beyond 64 bits: a float, as orjson parses it
        return float(value)
    except OverflowError:
        raise ValueError(f"number {text[:20]}... is infinity when parsed as double") from None


def _parse_float(text: str) -> float:
    value = float(text)
    if value - value != 0:  # inf - inf is nan
        raise ValueError(f"number {text[:20]} is infinity when parsed as double")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# stdlib json set to orjson's (and Go's) rules; immutable, so shared by every serializer
_DECODER: Final = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)


def _replace_lone_surrogates(value: Any) -> Any:
    """``value`` with every surrogate code point in its strings replaced by U+FFFD (after
    parsing, pairs are already joined: only lone ones are left)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    return value


def _text(body: bytes) -> str:
    """The body's text: UTF-8, or CESU-8 (JS clients) with its surrogate pairs joined and lone
    surrogates replaced by U+FFFD. Raises SerializeError for other invalid bytes."""
    try:
        return body.decode()
    except UnicodeDecodeError:
        try:
            text = body.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise SerializeError(f"body is not UTF-8: {exc}") from None
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _parse(text: str) -> Any:
    """JSON by the stdlib, the reference behaviour."""
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise SerializeError(f"body is not JSON: {exc}") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        value = _replace_lone_surrogates(value)
    return value


def _loads_stdlib(body: bytes) -> Any:
    return _parse(_text(body))


def _make_loads_orjson(module: ModuleType) -> Unmarshal:
    fast = module.loads
    failed = module.JSONDecodeError

    def loads(body: bytes) -> Any:
        try:
            return fast(body)
        except failed:  # CESU-8, a lone surrogate escape, or not JSON
            pass
        text = _text(body)
        try:  # without raw surrogates orjson reads it as the reference would...
            return fast(text)
        except failed:  # ...unless a lone surrogate escape or bad JSON: the reference decides
            return _parse(text)

    return loads


def _surrogate_pair_escape(match: re.Match[bytes]) -> bytes:
    code = ord(match.group().decode()) - 0x10000
    return b"\\u%04x\\u%04x" % (0xD800 | (code >> 10), 0xDC00 | (code & 0x3FF))


def _make_dumps(
    module: ModuleType | None, encoder: json.JSONEncoder, default: Callable[[Any], Any]
) -> Callable[[Any], bytes]:
    """JSON for a value; the stdlib ``encoder`` is the reference, orjson (``module``) only an
    accelerator. Raises TypeError, ValueError (NaN, Infinity, lone surrogates), RecursionError."""
    encode = encoder.encode
    non_bmp = _NON_BMP_UTF8.sub

    if module is None:

        def dumps_stdlib(value: Any) -> bytes:
            data = encode(value).encode()
            # only strings hold non-ASCII bytes in JSON, so every 4-byte sequence is in one
            return data if data.isascii() else non_bmp(_surrogate_pair_escape, data)

        return dumps_stdlib
    fast = module.dumps
    failed = module.JSONEncodeError
    options = module.OPT_PASSTHROUGH_DATACLASS | module.OPT_PASSTHROUGH_DATETIME  # to default, as in the stdlib

    def dumps(value: Any) -> bytes:
        try:
            data: bytes = fast(value, default=default, option=options)
        except failed:  # big ints, non-str keys, ...: the reference decides
            data = encode(value).encode()
        else:
            # perhaps NaN or Infinity, which orjson writes as null: the reference refuses them
            # (find: `in` on bytes costs twice as much)
            if data.find(b"null") >= 0:
                data = encode(value).encode()
        return data if data.isascii() else non_bmp(_surrogate_pair_escape, data)

    return dumps


# -- typed decoding (cattrs) -----------------------------------------------------------------


class _Mismatch(TypeError):
    """A JSON value of the wrong type; ``str()`` is the whole description."""


def _json_type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _mismatch(expected: object, value: object) -> _Mismatch:
    name = getattr(expected, "__name__", None) or repr(expected)
    return _Mismatch(f"expected {name}, got {_json_type(value)}")


# The primitive hooks also serve subclasses (IntEnum, StrEnum, ...): cattrs dispatches those here.
def _structure_str(value: Any, cls: Any) -> Any:
    if type(value) is not str:
        raise _mismatch(cls, value)
    return value if cls is str else cls(value)


def _structure_int(value: Any, cls: Any) -> Any:
    if type(value) is not int:
        raise _mismatch(cls, value)
    return value if cls is int else cls(value)


def _structure_float(value: Any, cls: Any) -> Any:
    if type(value) is not float and type(value) is not int:
        raise _mismatch(cls, value)
    return float(value) if cls is float else cls(value)


def _structure_bool(value: Any, cls: Any) -> Any:
    if type(value) is not bool:
        raise _mismatch(cls, value)
    return value


def _structure_bytes(value: Any, cls: Any) -> Any:
    if type(value) is not str:  # written as UTF-8 text (see JSONSerializer._default)
        raise _mismatch(cls, value)
    return value.encode()


def _no_hook(type_: Any) -> _Hook:
    # eager, so that an unsupported annotation fails at registration, not on a request
    raise StructureHandlerNotFoundError(f"unsupported type: {type_!r}", type_)


def _is_enum(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, enum.Enum)


def _enum_hook_factory(cls: type[enum.Enum]) -> _Hook:
    value_types = frozenset(type(member.value) for member in cls)

    def structure(value: Any, _: Any) -> Any:
        if type(value) not in value_types:
            raise _mismatch(cls, value)
        return cls(value)

    return structure


def _is_record(type_: Any) -> bool:
    cls = get_origin(type_) or type_
    return isinstance(cls, type) and (attrs.has(cls) or dataclasses.is_dataclass(cls)) and not _is_message_class(cls)


def _record_hook_factory(type_: Any, converter: cattrs.Converter) -> _Hook:
    inner = make_dict_structure_fn(type_, converter)
    name = getattr(get_origin(type_) or type_, "__name__", repr(type_))

    def structure(value: Any, cls: Any) -> Any:
        if type(value) is not dict:
            raise _Mismatch(f"expected {name} (an object), got {_json_type(value)}")
        return inner(value, cls)

    return structure


_ARRAY_ORIGINS: Final = MappingProxyType(
    {
        list: list,
        Sequence: list,
        MutableSequence: list,
        tuple: tuple,
        set: set,
        MutableSet: set,
        frozenset: frozenset,
        AbstractSet: frozenset,
    }
)


def _is_array(type_: Any) -> bool:
    return (get_origin(type_) or type_) in _ARRAY_ORIGINS


def _array_hook_factory(type_: Any, converter: cattrs.Converter) -> _Hook:
    """Arrays only from JSON arrays (cattrs would iterate a string or an object's keys)."""
    origin = get_origin(type_) or type_
    make = _ARRAY_ORIGINS[origin]
    args = get_args(type_)
    fixed = origin is tuple and bool(args) and args[-1] is not Ellipsis
    types: tuple[Any, ...] = args if fixed else (args[0] if args else Any,)
    hooks: list[_Hook] = []
    for item_type in types:
        try:
            hooks.append(converter.get_structure_hook(item_type))
        except RecursionError:  # a recursive type: bind late
            hooks.append(converter.structure)

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not list:
            raise _mismatch(origin, value)
        if fixed and len(value) != len(types):
            raise _Mismatch(f"expected {len(types)} items, got {len(value)}")
        if not fixed and types[0] is Any:
            return make(value)
        items = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            item_type, hook = (types[index], hooks[index]) if fixed else (types[0], hooks[0])
            try:
                items.append(hook(item, item_type))
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"Structuring {type_!r} @ index {index}", index, item_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
        return make(items)

    return structure


_PRIMITIVES: Final = frozenset({str, int, float, bool, NoneType})


def _is_primitive_union(type_: Any) -> bool:
    return get_origin(type_) in (Union, UnionType) and any(arg in _PRIMITIVES for arg in get_args(type_))


def _union_hook_factory(type_: Any, converter: cattrs.Converter) -> _Hook:
    """``int | str``, ``Optional[Point]``, ...: a primitive by its exact JSON type (bool is not
    an int; an int is a float where the union has float but not int), the rest by their hook."""
    args = get_args(type_)
    exact = frozenset(arg for arg in args if arg in _PRIMITIVES)
    int_as_float = float in exact and int not in exact
    others = tuple(arg for arg in args if arg not in _PRIMITIVES)
    other_type = None if not others else others[0] if len(others) == 1 else Union[others]  # noqa: UP007
    other_hook = None if other_type is None else converter.get_structure_hook(other_type)

    def structure(value: Any, _: Any) -> Any:
        kind = type(value)
        if kind in exact:
            return value
        if kind is int and int_as_float:
            return float(value)
        if other_hook is None:
            raise _mismatch(type_, value)
        return other_hook(value, other_type)

    return structure


def _structure_message(value: Any, cls: Any) -> Any:
    if type(value) is not dict:
        raise _mismatch(cls, value)
    return cls().from_dict(value)


def _unstructure_message(message: Any) -> Any:
    return message.to_dict()


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(structure_fallback_factory=_no_hook)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(bytes, _structure_bytes)
    # later registrations take precedence over cattrs' own
    converter.register_structure_hook_factory(_is_primitive_union, _union_hook_factory)
    converter.register_structure_hook_factory(_is_enum, _enum_hook_factory)
    converter.register_structure_hook_factory(_is_array, _array_hook_factory)
    converter.register_structure_hook_factory(_is_record, _record_hook_factory)
    converter.register_structure_hook_func(_is_message_class, _structure_message)
    converter.register_unstructure_hook_func(_is_message_class, _unstructure_message)
    return converter


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, _Mismatch):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, AttributeError) and str(exc).endswith("'items'"):
        return "expected an object"
    if isinstance(exc, ValueError | TypeError) and str(exc):  # validators, enum values
        return f"invalid value ({exc})"
    return cattrs.v.format_exception(exc, type_)


def _describe(exc: Exception) -> str:
    return "; ".join(cattrs.transform_error(exc, format_exception=_format_exception))


def _is_plain_dict(annotation: object) -> bool:
    """``dict``, ``dict[str, Any]``: a JSON object, passed on as parsed."""
    if annotation is dict:
        return True
    args = get_args(annotation)
    return get_origin(annotation) is dict and (not args or (args[0] in (str, Any) and args[1] in (Any, object)))


# -- serializers -----------------------------------------------------------------------------


_JSON_CONTAINERS: Final = frozenset({dict, list})


class JSONSerializer:
    """JSON bodies, compact as Go's ``encoding/json`` writes them; orjson when installed
    (``use_orjson=False`` forces the stdlib, which behaves the same, only slower).

    betterproto messages are sent as protobuf binary (``bytes(message)``), so one server can
    serve JSON and protobuf routes side by side; pass ``protobuf_as_json=True`` to send them as
    JSON objects instead (what pomelo's JS clients, which JSON-parse every body, need).

    Error bodies (:meth:`marshal_error`) are ``{"code": int, "message": str}``.
    """

    name = "json"

    def __init__(self, *, protobuf_as_json: bool = False, use_orjson: bool = True) -> None:
        self.protobuf_as_json = protobuf_as_json
        self._orjson = orjson if use_orjson else None
        self._converter: Final = _make_converter()
        encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=self._default)
        self._dumps: Final = _make_dumps(self._orjson, encoder, self._default)
        # marshal's fast path for the common answers (a dict, a list): _make_dumps' orjson
        # call, inlined
        self._fast_dumps: Final = self._orjson.dumps if self._orjson is not None else None
        self._fast_default: Final = self._default
        self._fast_options: Final = (
            self._orjson.OPT_PASSTHROUGH_DATACLASS | self._orjson.OPT_PASSTHROUGH_DATETIME
            if self._orjson is not None
            else 0
        )
        self._loads: Final = _loads_stdlib if self._orjson is None else _make_loads_orjson(self._orjson)

    def _default(self, value: object) -> object:
        """What JSON cannot hold natively: records, messages, enums, dates, UUIDs, bytes."""
        if isinstance(value, betterproto.Message):
            return value.to_dict()
        if attrs.has(type(value)) or isinstance(value, enum.Enum):
            return self._converter.unstructure(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._converter.unstructure(value)
        if isinstance(value, datetime.date | datetime.time):
            return value.isoformat()
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, bytes | bytearray):
            return value.decode()
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    def marshal(self, value: object) -> bytes:
        """``value`` as compact JSON (bytes pass through, betterproto messages are protobuf
        unless ``protobuf_as_json``). Raises SerializeError."""
        kind = type(value)
        if (kind is dict or kind is list) and self._fast_dumps is not None:
            # _make_dumps' dumps, inlined for the common answers: what it would send the
            # reference (orjson refused it, or perhaps wrote NaN as null) goes the long way
            try:
                data: bytes = self._fast_dumps(value, default=self._fast_default, option=self._fast_options)
            except TypeError:  # orjson.JSONEncodeError
                pass
            else:
                if data.find(b"null") < 0:
                    return data if data.isascii() else _NON_BMP_UTF8.sub(_surrogate_pair_escape, data)
        if isinstance(value, bytes):
            return value
        # (betterproto's isinstance is an ABC check: skipped for the common containers)
        if type(value) not in _JSON_CONTAINERS and isinstance(value, betterproto.Message) and not self.protobuf_as_json:
            return bytes(value)
        try:
            return self._dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializeError(f"cannot serialize {type(value).__name__} to JSON: {exc}") from None

    def marshal_error(self, code: int, message: str) -> bytes:
        """``{"code": code, "message": message}``. Never raises."""
        return self._dumps({"code": int(code), "message": _SURROGATE.sub("\ufffd", message)})

    def unmarshaller(self, annotation: object) -> Unmarshal:
        """The body decoder for a handler whose message is annotated ``annotation`` (see the
        module's rules). Raises SerializeError for a type it cannot decode into."""
        if annotation is bytes:
            return _raw
        if _is_message_class(annotation) and not self.protobuf_as_json:
            return _protobuf_unmarshal(annotation)
        loads = self._loads
        if annotation in (Any, object, None):
            return loads
        if _is_plain_dict(annotation):
            orjson_module = self._orjson
            fast = orjson_module.loads if orjson_module is not None else loads
            failed = orjson_module.JSONDecodeError if orjson_module is not None else SerializeError

            def to_dict(body: bytes) -> Any:
                try:  # the common case without loads' own call: orjson reads it
                    value = fast(body)
                except failed:  # loads decides (CESU-8, lone surrogates, or not JSON)
                    value = loads(body)
                if type(value) is not dict:
                    raise SerializeError(f"deserialize to dict failed: expected an object, got {_json_type(value)}")
                return value

            return to_dict
        if _is_message_class(annotation):
            cls = annotation

            def from_json(body: bytes) -> Any:
                value = loads(body)
                try:
                    return _structure_message(value, cls)
                except Exception as exc:
                    raise SerializeError(f"deserialize to {cls!r} failed: {exc}") from None

            return from_json
        if _is_record(annotation) or get_origin(annotation) is dict:
            try:
                hook = self._converter.get_structure_hook(annotation)
            except Exception as exc:
                raise SerializeError(f"no JSON decoding for {annotation!r}: {exc}") from None
            name = getattr(annotation, "__name__", repr(annotation))

            def structure(body: bytes) -> Any:
                value = loads(body)
                try:
                    return hook(value, annotation)
                except Exception as exc:
                    raise SerializeError(f"deserialize to {name} failed: {_describe(exc)}") from None

            return structure
        raise SerializeError(f"no JSON decoding for {annotation!r}: use bytes, dict, a dataclass or attrs class")


# -- protobuf --------------------------------------------------------------------------------

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_MAX_FIELD_NUMBER: Final = (1 << 29) - 1
_MAX_DEPTH: Final = 100
_SCALAR_WIRE_TYPES: Final = {
    **dict.fromkeys(betterproto.WIRE_VARINT_TYPES, _VARINT),
    **dict.fromkeys(betterproto.WIRE_FIXED_32_TYPES, _FIXED32),
    **dict.fromkeys(betterproto.WIRE_FIXED_64_TYPES, _FIXED64),
}


@attrs.frozen
class _FieldShape:
    wire_type: int
    packed: int | None  # a repeated scalar may also come packed: the wire type of its items
    message: _MessageShape | None  # a message (or map entry) field: its own fields


@attrs.define(eq=False)
class _MessageShape:
    """The field numbers of a message and their wire types; None for "any well-formed field"."""

    fields: dict[int, _FieldShape] | None = None


def _message_shape(cls: type[betterproto.Message], shapes: dict[type, _MessageShape]) -> _MessageShape:
    if cls in shapes:  # recursive message types
        return shapes[cls]
    shape = shapes[cls] = _MessageShape()
    message_cls: Any = cls  # betterproto's classproperty confuses mypy
    meta = message_cls._betterproto
    fields = {}
    for name, field in meta.meta_by_field_name.items():
        nested: _MessageShape | None = None
        if field.proto_type in (betterproto.TYPE_MESSAGE, betterproto.TYPE_MAP):
            nested_cls = meta.cls_by_field.get(name)
            nested = _message_shape(nested_cls, shapes) if _is_message_class(nested_cls) else _MessageShape()
        wire_type = _SCALAR_WIRE_TYPES.get(field.proto_type, _LEN)
        repeated = meta.default_gen[name] is list
        packed = wire_type if repeated and field.proto_type in betterproto.PACKED_TYPES else None
        fields[field.number] = _FieldShape(wire_type, packed, nested)
    shape.fields = fields
    return shape


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:
                raise SerializeError("protobuf: varint overflows 64 bits")
            return result, pos
        shift += 7
    raise SerializeError("protobuf: truncated varint" if pos >= end else "protobuf: varint longer than 10 bytes")


def _check_packed(data: bytes, pos: int, end: int, wire_type: int) -> None:
    if wire_type == _VARINT:
        while pos < end:
            _, pos = _varint(data, pos, end)
    elif (end - pos) % (8 if wire_type == _FIXED64 else 4):
        raise SerializeError("protobuf: packed field length is not a multiple of its item size")


def _check_wire_format(data: bytes, pos: int, end: int, shape: _MessageShape, depth: int = 0) -> None:
    """Raise SerializeError unless ``data[pos:end]`` is a well-formed message of ``shape``."""
    if depth > _MAX_DEPTH:
        raise SerializeError("protobuf: messages nested too deep")
    fields = shape.fields
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire_type = key >> 3, key & 7
        if not 1 <= number <= _MAX_FIELD_NUMBER:
            raise SerializeError(f"protobuf: invalid field number {number}")
        if wire_type == _VARINT:
            _, pos = _varint(data, pos, end)
            start = pos
        elif wire_type in (_FIXED64, _FIXED32):
            start, pos = pos, pos + (8 if wire_type == _FIXED64 else 4)
        elif wire_type == _LEN:
            length, start = _varint(data, pos, end)
            pos = start + length
        else:
            raise SerializeError(f"protobuf: invalid wire type {wire_type} (field {number})")
        if pos > end:
            raise SerializeError(f"protobuf: field {number} runs past the end of the body")
        field = fields.get(number) if fields is not None else None
        if field is None:  # unknown fields are kept, as protobuf does
            continue
        if wire_type == field.wire_type:
            if field.message is not None:
                _check_wire_format(data, start, pos, field.message, depth + 1)
        elif wire_type == _LEN and field.packed is not None:
            _check_packed(data, start, pos, field.packed)
        else:
            raise SerializeError(f"protobuf: field {number} has wire type {wire_type}, expected {field.wire_type}")


def _protobuf_unmarshal(cls: type[betterproto.Message]) -> Unmarshal:
    shape = _message_shape(cls, {})

    def unmarshal(body: bytes) -> betterproto.Message:
        try:
            _check_wire_format(body, 0, len(body), shape)
            return cls().parse(body)
        except Exception as exc:  # ours, or betterproto's assorted errors on bad input
            raise SerializeError(f"deserialize to {cls.__name__} failed: {exc}") from None

    return unmarshal


class ProtobufSerializer:
    """Protobuf bodies only (nano's default serializer): betterproto messages and raw bytes.

    Bodies must be well-formed protobuf for the handler's message (an empty body is a message
    of defaults); error bodies (:meth:`marshal_error`) are :class:`ErrorResponse` messages.
    """

    name = "protobuf"

    def marshal(self, value: object) -> bytes:
        """A betterproto message as protobuf; bytes pass through. Raises SerializeError for
        anything else."""
        if isinstance(value, bytes):
            return value
        if isinstance(value, betterproto.Message):
            return bytes(value)
        raise SerializeError(f"protobuf: convert on wrong type value: {type(value).__name__}")

    def marshal_error(self, code: int, message: str) -> bytes:
        """An :class:`ErrorResponse` message. Never raises."""
        return bytes(ErrorResponse(code=int(code), message=_SURROGATE.sub("\ufffd", message)))

    def unmarshaller(self, annotation: object) -> Unmarshal:
        """The body decoder for ``bytes`` or a betterproto message class. Raises
        SerializeError for any other annotation."""
        if annotation is bytes:
            return _raw
        if _is_message_class(annotation):
            return _protobuf_unmarshal(annotation)
        raise SerializeError(f"protobuf: convert on wrong type value: {annotation!r}")
