"""The generated clusterpb messages encode byte for byte with nano's field numbers
(proto/cluster.proto = nano's cluster/clusterpb/proto/cluster.proto). The expected bytes are
protobuf's wire format worked out by hand from those field numbers: tag = field << 3 | type."""

from __future__ import annotations

import betterproto
import pytest

from trionano.cluster._generated import clusterpb as pb
from trionano.wire import encode_varint

SNOWFLAKE = 1795536729 << 22

CASES = [
    (pb.MemberInfo(label="L", service_addr="a:1", services=["S", "T"]), "0a014c1203613a311a01531a0154"),
    (pb.RegisterRequest(member_info=pb.MemberInfo(service_addr="a")), "0a03120161"),
    (pb.RegisterResponse(members=[pb.MemberInfo(label="x"), pb.MemberInfo(label="y")]), "0a030a01780a030a0179"),
    (pb.UnregisterRequest(service_addr="a:1"), "0a03613a31"),
    (pb.HeartbeatRequest(member_info=pb.MemberInfo(label="h")), "0a030a0168"),
    (
        pb.RequestMessage(gate_addr="g", session_id=5, id=300, route="r.x", data=b"{}"),
        "0a0167100518ac022203722e782a027b7d",
    ),
    (pb.NotifyMessage(gate_addr="g", session_id=2, route="r", data=b"d"), "0a016710021a0172220164"),
    (pb.ResponseMessage(session_id=1, id=2, data=b"ok"), "080110021a026f6b"),
    (pb.PushMessage(session_id=3, route="onX", data=b"{}"), "080312036f6e581a027b7d"),
    (pb.NewMemberRequest(member_info=pb.MemberInfo(label="n")), "0a030a016e"),
    (pb.DelMemberRequest(service_addr="d"), "0a0164"),
    (pb.SessionClosedRequest(session_id=7), "0807"),
    (pb.CloseSessionRequest(session_id=8), "0808"),
    # int64 session ids are varints, negative ones ten bytes long (Go's snowflake ids are large)
    (pb.SessionClosedRequest(session_id=-1), "08ffffffffffffffffff01"),
    # a snowflake-sized id: protobuf varints are pomelo's base-128 groups (wire.encode_varint)
    (pb.SessionClosedRequest(session_id=SNOWFLAKE), "08" + encode_varint(SNOWFLAKE).hex()),
    (pb.MemberHandleResponse(), ""),
]


@pytest.mark.parametrize(("message", "expected"), CASES, ids=[type(m).__name__ for m, _ in CASES])
def test_generated_messages_match_nanos_field_numbers(message: betterproto.Message, expected: str) -> None:
    assert bytes(message).hex() == expected
    assert type(message)().parse(bytes.fromhex(expected)) == message


def test_service_paths_are_nanos() -> None:
    master = pb.MasterBase().__mapping__()
    member = pb.MemberBase().__mapping__()
    assert sorted(master) == [
        "/clusterpb.Master/Heartbeat",
        "/clusterpb.Master/Register",
        "/clusterpb.Master/Unregister",
    ]
    assert sorted(member) == [
        f"/clusterpb.Member/{name}"
        for name in sorted(
            [
                "CloseSession",
                "DelMember",
                "HandleNotify",
                "HandlePush",
                "HandleRequest",
                "HandleResponse",
                "NewMember",
                "SessionClosed",
            ]
        )
    ]
