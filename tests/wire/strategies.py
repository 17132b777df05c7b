"""Hypothesis strategies for wire values."""

from __future__ import annotations

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
