"""Serializers: JSON text as the JS clients write and read it, typed decoding, protobuf checks.

Every JSON test runs twice, with orjson and with the stdlib (``use_orjson=False``): the two
paths must not be told apart.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import itertools
import json
import math
import re
import uuid
from typing import Any

import attrs
import betterproto
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.runtime.apps import Ping, echo_components
from trionano import (
    Component,
    ComponentError,
    Components,
    Config,
    JSONSerializer,
    ProtobufSerializer,
    SerializeError,
    Server,
    Session,
)
from trionano._serializer import ErrorResponse, orjson
from trionano.client import decode_json
from trionano.testing import open_test_server

ORJSON_PATHS = [True, False] if orjson is not None else [False]
# the body of the report: nano's JS client sending {"c": "😀"}
CESU8_EMOJI = bytes.fromhex("7b 22 63 22 3a 22 ed a0 bd ed b8 80 22 7d")


@pytest.fixture(params=ORJSON_PATHS, ids=lambda use: "orjson" if use else "stdlib")
def serializer(request: pytest.FixtureRequest) -> JSONSerializer:
    return JSONSerializer(use_orjson=request.param)


def both() -> list[JSONSerializer]:
    """Both paths, for properties (Hypothesis does not mix with function-scoped fixtures)."""
    return [JSONSerializer(use_orjson=use) for use in ORJSON_PATHS]


def strencode(text: str) -> bytes:
    """protocol.js ``strencode``: every UTF-16 code unit on its own, as 1 to 3 bytes (CESU-8)."""
    units = text.encode("utf-16-le", "surrogatepass")
    out = bytearray()
    for i in range(0, len(units), 2):
        c = int.from_bytes(units[i : i + 2], "little")
        if c <= 0x7F:
            out.append(c)
        elif c <= 0x7FF:
            out += bytes([0xC0 | c >> 6, 0x80 | c & 0x3F])
        else:
            out += bytes([0xE0 | c >> 12, 0x80 | (c & 0xFC0) >> 6, 0x80 | c & 0x3F])
    return bytes(out)


def strdecode(data: bytes) -> str:
    """protocol.js ``strdecode``: lead bytes below 0xE0 take 2 bytes, every other one 3, so a
    4-byte sequence turns into garbage; ``String.fromCharCode`` keeps 16 bits of each unit."""

    def at(i: int) -> int:
        return data[i] if i < len(data) else 0  # JS: undefined & 0x3f is 0

    units = bytearray()
    offset = 0
    while offset < len(data):
        lead = data[offset]
        if lead < 128:
            code, offset = lead, offset + 1
        elif lead < 224:
            code, offset = ((lead & 0x3F) << 6) + (at(offset + 1) & 0x3F), offset + 2
        else:
            code = ((lead & 0x0F) << 12) + ((at(offset + 1) & 0x3F) << 6) + (at(offset + 2) & 0x3F)
            offset += 3
        units += (code & 0xFFFF).to_bytes(2, "little")
    return units.decode("utf-16-le", "surrogatepass")


def js_client_reads(body: bytes) -> Any:
    """What nano's and pomelo's JS clients get: ``JSON.parse(strdecode(body))``."""
    return json.loads(strdecode(body))


NOT_SURROGATES = st.characters(exclude_categories=["Cs"])
TEXT = st.text(st.one_of(NOT_SURROGATES, st.characters(min_codepoint=0x10000)))  # emoji often
ANY_TEXT = st.text(st.one_of(NOT_SURROGATES, st.characters(min_codepoint=0x10000), st.characters(categories=["Cs"])))
# values as handlers may return them: NaN, Infinity, beyond-64-bit ints and lone surrogates included
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


# -- 1. CESU-8 from the JS clients ----------------------------------------------------------


def test_an_emoji_from_a_js_client_arrives(serializer: JSONSerializer) -> None:
    assert serializer.unmarshaller(dict[str, Any])(CESU8_EMOJI) == {"c": "\U0001f600"}


@given(TEXT, TEXT)
@example("c", "\U0001f600")
@example("\U0001f600 key", "a \u00e9 \u4e2d \U00010348 z")
def test_whatever_a_js_client_encodes_decodes_to_the_same_text(key: str, text: str) -> None:
    body = strencode(json.dumps({key: text}, ensure_ascii=False))
    for serializer in both():
        assert serializer.unmarshaller(Any)(body) == {key: text}


@pytest.mark.parametrize(
    "body",
    [
        b'{"c":"a\xed\xa0\xbdb"}',  # a high surrogate alone (CESU-8)
        b'{"c":"a\xed\xb8\x80b"}',  # a low surrogate alone
        b'{"c":"a\\ud83db"}',  # the same as JSON escapes
        b'{"c":"a\\ude00b"}',
        b'{"c":"a\\ude00\\ud83db"}',  # a pair in the wrong order: two lone ones
    ],
)
def test_lone_surrogates_become_replacement_characters(serializer: JSONSerializer, body: bytes) -> None:
    value = serializer.unmarshaller(dict[str, Any])(body)
    assert re.fullmatch("a\ufffd+b", value["c"])
    assert json.loads(serializer.marshal(value)) == value  # no "surrogates not allowed" later


def test_lone_surrogates_are_replaced_in_keys_and_nested_values(serializer: JSONSerializer) -> None:
    body = b'{"\\ud800":[{"k":"\\udfff"}],"pair":"\\ud83d\\ude00"}'
    assert serializer.unmarshaller(Any)(body) == {"\ufffd": [{"k": "\ufffd"}], "pair": "\U0001f600"}
    # an escaped backslash, then a lone low surrogate: looks like a pair, is not one
    assert serializer.unmarshaller(Any)(b'["\\\\ud83d\\ude00"]') == ["\\ud83d\ufffd"]


@pytest.mark.parametrize("body", [b'{"c":"\xff"}', b'{"c":"\xc3\x28"}', b'{"c":"\xed\xa0"}', b"\xef\xbb\xbf{}"])
def test_bytes_that_are_no_encoding_of_text_are_refused(serializer: JSONSerializer, body: bytes) -> None:
    with pytest.raises(SerializeError):
        serializer.unmarshaller(Any)(body)


async def test_an_emoji_from_a_js_client_goes_through_the_server_and_back() -> None:
    async with open_test_server(echo_components()) as running, running.connect() as client:
        answer = await client.request("echo.json", CESU8_EMOJI, raw=True)
    assert js_client_reads(answer) == {"c": "\U0001f600"}


# -- 2. outbound text the JS clients can read -----------------------------------------------


def test_non_bmp_characters_are_written_as_surrogate_pair_escapes(serializer: JSONSerializer) -> None:
    body = serializer.marshal({"\U0001f600": "x\U0001f600y \u00e9\u4e2d"})
    assert body == '{"\\ud83d\\ude00":"x\\ud83d\\ude00y \u00e9\u4e2d"}'.encode()  # BMP text stays raw UTF-8


@given(JSON_VALUES)
@example({"c": "\U0001f600", "\U0001f469\u200d\U0001f467": ["\U00010348\U0010ffff"]})
def test_every_js_client_reads_what_the_server_writes(value: Any) -> None:
    for serializer in both():
        try:
            body = serializer.marshal(value)
        except SerializeError:
            continue  # NaN, Infinity or a lone surrogate somewhere: refused (see below)
        assert not re.search(rb"[\xf0-\xff]", body)  # no 4-byte sequence for strdecode to garble
        assert js_client_reads(body) == decode_json(body) == json.loads(body)
        assert decode_json(body) == json.loads(json.dumps(value))  # the value, as JSON has it


async def test_the_server_answers_emoji_a_js_client_can_read() -> None:
    async with open_test_server(echo_components()) as running, running.connect() as client:
        answer = await client.request("echo.json", {"c": "\U0001f600 \u00e9"}, raw=True)
    assert js_client_reads(answer) == decode_json(answer) == {"c": "\U0001f600 \u00e9"}


# -- 3. NaN and Infinity are not JSON --------------------------------------------------------


@attrs.frozen
class Reading:
    value: float


@dataclasses.dataclass
class Readings:
    readings: list[Reading]


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        {"a": math.inf},
        [1.0, -math.inf],
        {"deep": [{"deeper": math.nan}]},
        Reading(math.nan),
        {"records": Readings([Reading(1.0), Reading(math.inf)])},
    ],
)
def test_nan_and_infinity_are_refused(serializer: JSONSerializer, value: object) -> None:
    with pytest.raises(SerializeError, match="not JSON compliant"):
        serializer.marshal(value)


def test_null_is_still_written(serializer: JSONSerializer) -> None:
    assert serializer.marshal({"a": None, "b": [None, 1.5]}) == b'{"a":null,"b":[null,1.5]}'


@pytest.mark.parametrize("body", [b"NaN", b'{"a":Infinity}', b"[-Infinity]", b"1e400", b"-1e999", b"1" + b"0" * 400])
def test_nan_and_infinity_are_not_read_either(serializer: JSONSerializer, body: bytes) -> None:
    with pytest.raises(SerializeError):
        serializer.unmarshaller(Any)(body)


@given(JSON_VALUES)
@example({"big": 1 << 70, "small": -(1 << 63) - 1, "top": (1 << 64) - 1})
@example({"nan": math.nan})
@example({"1": {"2": [math.inf]}})
def test_orjson_and_the_stdlib_write_the_same_json(value: Any) -> None:
    results = []
    for serializer in both():
        try:
            results.append(json.loads(serializer.marshal(value)))
        except SerializeError as exc:
            results.append(f"refused: {exc}")
    assert results == [results[0]] * len(results)


@given(
    st.one_of(
        st.binary(),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),  # NaN, Infinity, escapes of lone surrogates
        JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        JSON_VALUES.map(lambda v: strencode(json.dumps(v, ensure_ascii=False))),
    )
)
@example(b"18446744073709551616")
@example(b"[-9223372036854775809, 9223372036854775807]")
@example(b'"\\ud800"')
def test_orjson_and_the_stdlib_read_the_same_json(body: bytes) -> None:
    results = []
    for serializer in both():
        try:
            value = serializer.unmarshaller(Any)(body)
        except SerializeError as exc:
            results.append(f"refused: {exc}")
        else:
            results.append(value)
            serializer.marshal(value)  # whatever a handler receives can be sent back
    assert results == [results[0]] * len(results)
    assert all(type(a) is type(b) for a, b in itertools.pairwise(results))


# -- 4. typed decoding -------------------------------------------------------------------------


@attrs.frozen
class Point:
    x: int
    y: int


@attrs.frozen
class Travel:
    name: str
    to: Point


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Tag:
    label: str
    weight: float = 1.0


@attrs.frozen
class Profile:
    name: str
    color: Color = Color.RED
    level: Level = Level.LOW
    tags: list[Tag] = attrs.field(factory=list)
    scores: dict[str, int] = attrs.field(factory=dict)
    home: Point | None = None
    nickname: str | None = None
    badge: int | str = 0
    path: tuple[Point, ...] = ()
    active: bool = False
    age: int = attrs.field(default=0, validator=attrs.validators.ge(0))


@attrs.frozen
class UserMessage:  # the chat example's message, as nano-style clients should have it
    name: str = ""
    content: str = ""


@attrs.frozen
class StrictUserMessage:
    name: str
    content: str


def test_the_reported_body_is_refused_naming_every_field(serializer: JSONSerializer) -> None:
    with pytest.raises(SerializeError) as info:
        serializer.unmarshaller(Travel)(b'{"name": 123, "to": {"x": "far"}}')
    assert str(info.value) == (
        "deserialize to Travel failed: expected str, got int @ $.name; "
        "expected int, got str @ $.to.x; required field missing @ $.to.y"
    )


def test_nested_records_collections_enums_and_unions_decode(serializer: JSONSerializer) -> None:
    body = json.dumps(
        {
            "name": "ann",
            "color": "blue",
            "level": 2,
            "tags": [{"label": "a"}, {"label": "b", "weight": 2}],
            "scores": {"x": 1},
            "home": {"x": 1, "y": 2, "z": 3},
            "nickname": None,
            "badge": "gold",
            "path": [{"x": 0, "y": 0}],
            "active": True,
            "unknown": {"ignored": True},
        }
    ).encode()
    profile = serializer.unmarshaller(Profile)(body)
    assert profile == Profile(
        name="ann",
        color=Color.BLUE,
        level=Level.HIGH,
        tags=[Tag("a"), Tag("b", 2.0)],
        scores={"x": 1},
        home=Point(1, 2),
        badge="gold",
        path=(Point(0, 0),),
        active=True,
    )
    assert type(profile.tags[1].weight) is float  # an int is a float, JSON has one number type
    assert serializer.unmarshaller(Profile)(serializer.marshal(profile)) == profile  # enums as values


def test_missing_fields_take_defaults_and_unknown_keys_are_ignored(serializer: JSONSerializer) -> None:
    # the official pomelo chat client sends only the content
    assert serializer.unmarshaller(UserMessage)(b'{"content":"hello","extra":1}') == UserMessage(content="hello")
    with pytest.raises(
        SerializeError, match=r"^deserialize to StrictUserMessage failed: required field missing @ \$\.name$"
    ):
        serializer.unmarshaller(StrictUserMessage)(b'{"content":"hello"}')


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"name": 1}', "expected str, got int @ $.name"),
        (b'{"name": "a", "age": "1"}', "expected int, got str @ $.age"),
        (b'{"name": "a", "age": 1.0}', "expected int, got float @ $.age"),
        (b'{"name": "a", "age": true}', "expected int, got bool @ $.age"),
        # attrs validators run in __init__, once every field is structured: their text names the field
        (b'{"name": "a", "age": -1}', "invalid value ('age' must be >= 0: -1) @ $"),
        (b'{"name": "a", "active": 1}', "expected bool, got int @ $.active"),
        (b'{"name": "a", "active": "false"}', "expected bool, got str @ $.active"),
        (b'{"name": "a", "level": true}', "expected Level, got bool @ $.level"),
        (b'{"name": "a", "level": 3}', "invalid value (3 is not a valid Level) @ $.level"),
        (b'{"name": "a", "color": "green"}', "invalid value ('green' is not a valid Color) @ $.color"),
        (b'{"name": "a", "color": 1}', "expected Color, got int @ $.color"),
        (b'{"name": "a", "tags": "ab"}', "expected list, got str @ $.tags"),
        (b'{"name": "a", "tags": {"label": "x"}}', "expected list, got dict @ $.tags"),
        (b'{"name": "a", "tags": [{"label": "x"}, {"weight": true}]}', "required field missing @ $.tags[1].label"),
        (b'{"name": "a", "scores": {"x": "1"}}', "expected int, got str @ $.scores['x']"),
        (b'{"name": "a", "scores": [1]}', "expected an object @ $.scores"),
        (b'{"name": "a", "home": [1, 2]}', "expected Point (an object), got list @ $.home"),
        (b'{"name": "a", "nickname": 5}', "expected str | None, got int @ $.nickname"),
        (b'{"name": "a", "badge": false}', "expected int | str, got bool @ $.badge"),
        (b'{"name": "a", "path": [{"x": 1}]}', "required field missing @ $.path[0].y"),
        (b'["name"]', "expected Profile (an object), got list @ $"),
        (b"null", "expected Profile (an object), got null @ $"),
    ],
)
def test_wrong_types_are_refused_naming_the_path(serializer: JSONSerializer, body: bytes, error: str) -> None:
    with pytest.raises(SerializeError) as info:
        serializer.unmarshaller(Profile)(body)
    assert str(info.value).startswith("deserialize to Profile failed: ")
    assert error in str(info.value).split(": ", 1)[1].split("; ")


def test_a_float_field_takes_an_int_and_nothing_else(serializer: JSONSerializer) -> None:
    unmarshal = serializer.unmarshaller(Tag)
    assert unmarshal(b'{"label": "a", "weight": 3}') == Tag("a", 3.0)
    for bad in (b'"3"', b"true", b"null"):
        with pytest.raises(SerializeError, match=r"\$\.weight"):
            unmarshal(b'{"label": "a", "weight": %s}' % bad)


def test_dict_annotations_want_an_object_and_any_takes_any_json(serializer: JSONSerializer) -> None:
    assert serializer.unmarshaller(dict[str, Any])(b'{"a": [1]}') == {"a": [1]}
    assert serializer.unmarshaller(dict[str, int])(b'{"a": 1}') == {"a": 1}
    with pytest.raises(SerializeError, match=r"\$\['a'\]"):
        serializer.unmarshaller(dict[str, int])(b'{"a": "1"}')
    for annotation in (dict, dict[str, Any], dict[str, int]):
        with pytest.raises(SerializeError):
            serializer.unmarshaller(annotation)(b"[1, 2]")
    assert serializer.unmarshaller(Any)(b"[1, 2]") == [1, 2]


@attrs.frozen
class Circle:
    radius: float


@attrs.frozen
class Square:
    side: float


@attrs.frozen
class Drawing:
    shapes: list[Circle | Square | None]
    data: bytes = b""


def test_unions_of_records_and_bytes_decode(serializer: JSONSerializer) -> None:
    body = b'{"shapes": [{"radius": 1}, {"side": 2.5}, null], "data": "\xc3\xa9"}'
    drawing = Drawing([Circle(1.0), Square(2.5), None], "\u00e9".encode())
    assert serializer.unmarshaller(Drawing)(body) == drawing
    assert serializer.unmarshaller(Drawing)(serializer.marshal(drawing)) == drawing
    with pytest.raises(SerializeError, match=r"\$\.shapes\[0\]"):
        serializer.unmarshaller(Drawing)(b'{"shapes": [{"diameter": 1}]}')


@attrs.frozen
class Event:
    at: datetime.datetime
    id: uuid.UUID


def test_dates_and_uuids_are_written_alike_on_both_paths() -> None:
    event = {"event": Event(datetime.datetime(2024, 1, 2, 3, 4, 5, 6, datetime.UTC), uuid.UUID(int=1))}
    expected = b'{"event":{"at":"2024-01-02T03:04:05.000006+00:00","id":"00000000-0000-0000-0000-000000000001"}}'
    assert [serializer.marshal(event) for serializer in both()] == [expected] * len(both())


class Opaque:
    pass


@attrs.frozen
class HasOpaque:
    thing: Opaque


@attrs.frozen
class A:
    a: int


@attrs.frozen
class B:
    a: int


@attrs.frozen
class Ambiguous:
    either: A | B


@pytest.mark.parametrize("annotation", [HasOpaque, Ambiguous, int, list[Point]])
def test_undecodable_types_are_refused_at_registration(serializer: JSONSerializer, annotation: object) -> None:
    with pytest.raises(SerializeError, match="no JSON decoding"):
        serializer.unmarshaller(annotation)


class Travels(Component):
    def go(self, session: Session, msg: Travel) -> Travel:
        return Travel(msg.name.upper(), Point(msg.to.y, msg.to.x))

    def say(self, session: Session, msg: UserMessage) -> UserMessage:
        return msg


async def test_the_server_answers_400_naming_the_fields() -> None:
    components = Components()
    components.register(Travels(), name="travel")
    async with open_test_server(components) as running, running.connect() as client:
        assert await client.request("travel.go", {"name": "a", "to": {"x": 1, "y": 2}}) == {
            "name": "A",
            "to": {"x": 2, "y": 1},
        }
        answer = await client.request("travel.go", b'{"name": 123, "to": {"x": "far"}}')
        assert answer["code"] == 400
        assert "$.name" in answer["message"]
        assert "$.to.y" in answer["message"]
        assert await client.request("travel.say", {"content": "hello"}) == {"name": "", "content": "hello"}


def test_a_handler_with_an_undecodable_type_is_a_startup_error() -> None:
    class Odd(Component):
        def take(self, session: Session, msg: HasOpaque) -> None: ...

    components = Components()
    components.register(Odd())
    with pytest.raises(ComponentError, match=r"Odd\.take"):
        Server(components)


# -- 5. protobuf -------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False, repr=False)
class Inner(betterproto.Message):
    n: int = betterproto.int32_field(1)


# betterproto's field functions are its dataclass API, immutable markers
@dataclasses.dataclass(eq=False, repr=False)
class Outer(betterproto.Message):
    name: str = betterproto.string_field(1)
    inner: Inner = betterproto.message_field(2)  # noqa: RUF009
    ids: list[int] = betterproto.int64_field(3)  # noqa: RUF009
    scores: dict[str, int] = betterproto.map_field(4, betterproto.TYPE_STRING, betterproto.TYPE_INT32)  # noqa: RUF009
    ratio: float = betterproto.double_field(5)
    code: int = betterproto.fixed32_field(6)
    children: list[Outer] = betterproto.message_field(7)  # noqa: RUF009


SAMPLE = Outer(
    name="a\U0001f600",
    inner=Inner(n=-5),
    ids=[1, 1 << 40],
    scores={"x": 3},
    ratio=0.5,
    code=7,
    children=[Outer(name="c", ids=[2])],
)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",  # the reported body: a varint that never ends
        b"\x0a",  # a key and nothing else
        b"\x0a\x05ab",  # a length past the end
        b"\x0a\x02hi\x0a",  # a trailing partial field
        b"\x00\x01",  # field number 0
        b"\x80\x80\x80\x80\x10\x00",  # field number 2**29, beyond the largest
        b"\x0b",  # wire type 3 (groups: not proto3)
        b"\x0c",  # 4
        b"\x0e\x00",  # 6
        b"\x0f\x00",  # 7
        b"\x10" + b"\x80" * 10 + b"\x01",  # an 11-byte varint
        b"\x10" + b"\xff" * 9 + b"\x02",  # a varint beyond 64 bits
        b"\x15\x01\x02",  # a truncated fixed32
        b"\x19\x01",  # a truncated fixed64
        b"\x08\x05",  # a string field sent as a varint (betterproto would make content=5)
        b"\x0a\x02\xff\xfe",  # a string that is not UTF-8
    ],
)
def test_junk_is_refused(body: bytes) -> None:
    with pytest.raises(SerializeError, match=r"^deserialize to Ping failed: "):
        ProtobufSerializer().unmarshaller(Ping)(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\x12\x02\xff\xff",  # junk inside a nested message
        b"\x12\x02\x0a\x01",  # a nested message's field sent with the wrong wire type
        b"\x1a\x01\x80",  # a packed repeated field with a truncated varint
        b"\x2a\x01\x00",  # a double (not repeated) sent packed
        b"\x32\x03\x01\x02\x03",  # a fixed32 sent packed
        b"\x22\x02\x08\x01",  # a map entry whose string key is a varint
        b"\x3a\x02\x3a\x02\x3a\x00",  # a recursive message: junk two levels down
    ],
)
def test_junk_inside_nested_fields_is_refused(body: bytes) -> None:
    with pytest.raises(SerializeError, match=r"^deserialize to Outer failed: "):
        ProtobufSerializer().unmarshaller(Outer)(body)


def test_well_formed_messages_decode_unknown_fields_included() -> None:
    unmarshal = ProtobufSerializer().unmarshaller(Outer)
    assert unmarshal(b"").to_dict() == {}  # an empty body: all defaults
    assert unmarshal(bytes(SAMPLE)).to_dict() == SAMPLE.to_dict()
    unpacked = b"\x18\x01\x18\x02"  # repeated scalars unpacked, as proto2 writers send them
    assert unmarshal(unpacked).ids == [1, 2]
    unknown = b"\xf8\xff\xff\xff\x0f\x01" + b"\x9a\x01\x01z" + b"\xa5\x01\x00\x00\x00\x00"  # fields 2**29-1, 19, 20
    decoded = unmarshal(bytes(SAMPLE) + unknown)
    assert decoded.to_dict() == SAMPLE.to_dict()
    assert bytes(decoded).endswith(unknown)  # kept, as protobuf does


@given(st.binary(max_size=40))
@example(bytes(SAMPLE))
def test_arbitrary_bytes_decode_to_a_well_typed_message_or_are_refused(body: bytes) -> None:
    for serializer in (ProtobufSerializer(), JSONSerializer()):
        try:
            message = serializer.unmarshaller(Outer)(body)
        except SerializeError:
            continue
        assert isinstance(message.name, str)
        assert isinstance(message.inner, Inner)
        assert all(type(i) is int for i in message.ids)
        assert all(type(k) is str and type(v) is int for k, v in message.scores.items())
        assert all(isinstance(child, Outer) for child in message.children)
        assert bytes(message) is not None  # serializable as decoded


def test_error_bodies_in_each_format() -> None:
    assert json.loads(JSONSerializer().marshal_error(400, "bad")) == {"code": 400, "message": "bad"}
    assert ErrorResponse().parse(ProtobufSerializer().marshal_error(404, "none")).to_dict() == {
        "code": 404,
        "message": "none",
    }
    # never raises: a lone surrogate in a message (from an exception's text) is replaced
    for serializer in both():
        body = serializer.marshal_error(500, "x\ud800 \U0001f600")
        assert js_client_reads(body) == {"code": 500, "message": "x\ufffd \U0001f600"}
    assert ErrorResponse().parse(ProtobufSerializer().marshal_error(500, "x\ud800")).message == "x\ufffd"


class ProtoOnly(Component):
    def __init__(self) -> None:
        self.calls = 0

    def ping(self, session: Session, msg: Ping) -> Ping:
        self.calls += 1
        return Ping(content=msg.content + " pong")


async def test_a_protobuf_server_answers_junk_with_400() -> None:
    component = ProtoOnly()
    components = Components()
    components.register(component, name="pb")
    config = Config(serializer=ProtobufSerializer())
    async with open_test_server(components, config) as running, running.connect() as client:
        answer = await client.request("pb.ping", b"\xff\xff\xff", raw=True)
        # the runtime's error body: JSON today, ErrorResponse once it calls marshal_error
        code = json.loads(answer)["code"] if answer.startswith(b"{") else ErrorResponse().parse(answer).code
        assert code == 400
        assert component.calls == 0
        assert Ping().parse(await client.request("pb.ping", Ping(content="x"), raw=True)).content == "x pong"
