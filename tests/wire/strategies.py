"""Hypothesis strategies for wire values."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from trionano import wire

ids = st.integers(min_value=0, max_value=wire.MAX_MESSAGE_ID)
bodies = st.binary(max_size=300)
# Routes that fit the 255-byte field, plus some that do not (the encoder must refuse those).
routes = st.text(max_size=90) | st.text(min_size=200, max_size=300)


@st.composite
def route_dicts(draw: st.DrawFn) -> wire.RouteDict:
    names = draw(st.lists(st.text(min_size=1, max_size=40).map(str.strip).filter(bool), unique=True, max_size=8))
    names = [n for n in names if len(n.encode()) <= wire.MAX_ROUTE_LENGTH]
    codes = draw(st.lists(st.integers(1, 0xFFFF), unique=True, min_size=len(names), max_size=len(names)))
    return wire.RouteDict(zip(names, codes, strict=True))


@st.composite
def messages(draw: st.DrawFn, routes_in: wire.RouteDict | None = None) -> wire.Message:
    route = draw(st.sampled_from(sorted(routes_in)) if routes_in else routes) if draw(st.booleans()) else draw(routes)
    kind = draw(st.sampled_from(list(wire.MessageType)))
    return wire.build_message(kind, id=draw(ids), route=route, body=draw(bodies))


packet_types = st.sampled_from(list(wire.PacketType))


# -- hostile JSON, as a peer may send it in a handshake, handshake response or kick body --------

_json_scalars = st.one_of(
    st.sampled_from([b"null", b"true", b"false", b"0", b"-0", b"-0.0", b"1.5", b"0.001", b"86400", b"86401"]),
    st.integers().map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
    # out of float range, NaN/Infinity literals (not JSON, Python's json accepts them)
    st.sampled_from([b"1e400", b"-1e400", b"1e-400", b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 400]),
    st.integers(300, 6000).map(lambda n: b"9" * n),  # huge ints, around CPython's 4300-digit limit
)


_string_parts = {
    "text": st.text(max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False)[1:-1].encode()),
    # lone and paired surrogate escapes, in both cases
    "escape": st.sampled_from([b"\\ud800", b"\\uDBFF", b"\\udc00", b"\\uDFFF", b"\\ud83d\\ude00", b"\\ud83d"]),
    # UTF-8-encoded surrogates and bytes that are not UTF-8 at all
    "bytes": st.sampled_from([b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xff", b"\xc3", b"\x80"]),
}


@st.composite
def _json_strings(draw: st.DrawFn) -> bytes:
    parts = draw(
        st.lists(
            st.sampled_from(["text"] * 6 + ["escape"] * 3 + ["bytes"]).flatmap(_string_parts.__getitem__),
            max_size=4,
        )
    )
    return b'"' + b"".join(parts) + b'"'


def _json_containers(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    keys = st.one_of(st.sampled_from([b'"a"', b'"a"', b'"sys"', b'"dict"', b'"\\ud800"']), _json_strings())
    arrays = st.lists(children, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]")
    # duplicate keys come from the small key pool
    objects = st.lists(st.tuples(keys, children), max_size=4).map(
        lambda kvs: b"{" + b",".join(k + b":" + v for k, v in kvs) + b"}"
    )
    return arrays | objects


json_values = st.recursive(_json_scalars | _json_strings(), _json_containers, max_leaves=12) | st.integers(1, 3000).map(
    lambda n: b"[" * n + b"]" * n
)  # deep nesting


@st.composite
def _objects(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[bytes]], required: tuple[str, ...] = ()) -> bytes:
    items = [
        b'"%s":%s' % (name.encode(), draw(value))
        for name, value in fields.items()
        if name in required or draw(st.booleans())
    ]
    return b"{" + b",".join(items) + b"}"


def _near(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Mostly plausible values, often hostile ones: plausible ones get deeper fields reached."""
    return st.one_of(valid, valid, json_values)


server_handshake_bodies = st.one_of(
    json_values,
    _objects(
        {
            "code": st.just(b"200"),
            "sys": _objects({"heartbeat": json_values, "dict": json_values, "servertime": json_values}),
        },
        required=("code", "sys"),
    ),
    _objects(
        {
            "code": _near(st.sampled_from([b"200", b"500", b"501"])),
            "sys": _near(
                _objects(
                    {
                        "heartbeat": _near(st.sampled_from([b"30", b"1.5", b"0", b"0.0001", b"100000"])),
                        "servertime": json_values,
                        "dict": _near(st.sampled_from([b'{"a.b":1,"c":2}', b'{"a":1,"b":1}', b'{" ":3}'])),
                        "routeToCode": json_values,
                        "useDict": json_values,
                    }
                )
            ),
            "user": json_values,
        },
        required=("code",),
    ),
)
client_handshake_bodies = st.one_of(
    json_values,
    _objects({"sys": _objects({"type": json_values, "version": json_values}), "user": json_values}),
    _objects(
        {
            "sys": _near(_objects({"type": json_values, "version": json_values, "protoVersion": json_values})),
            "user": json_values,
        }
    ),
)
kick_bodies = json_values | _objects({"reason": json_values}) | st.binary(max_size=40)
