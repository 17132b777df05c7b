"""A stand-in for a Go nano member, in plain grpclib (no trionano): it registers with the
master, keeps alive, and prints every ``clusterpb.Member`` call it receives, one line each
(``SessionClosed 42``), so a test can see what the trionano nodes send to a foreign member.

    python -m tests.cluster._recorder --listen HOST:PORT --master HOST:PORT --heartbeat S [--services A,B]

``--services`` names the services it registers (``Recorder`` by default; ``""``: none).
"""

from __future__ import annotations

import argparse
import asyncio

import grpclib.client
import grpclib.server

from trionano.cluster._generated import clusterpb as pb


def record(line: str) -> None:
    print(line, flush=True)


class Recorder(pb.MemberBase):
    async def handle_request(self, request_message: pb.RequestMessage) -> pb.MemberHandleResponse:
        record(f"HandleRequest {request_message.session_id} {request_message.route}")
        return pb.MemberHandleResponse()

    async def handle_notify(self, notify_message: pb.NotifyMessage) -> pb.MemberHandleResponse:
        record(f"HandleNotify {notify_message.session_id} {notify_message.route}")
        return pb.MemberHandleResponse()

    async def new_member(self, new_member_request: pb.NewMemberRequest) -> pb.NewMemberResponse:
        record(f"NewMember {new_member_request.member_info.service_addr}")
        return pb.NewMemberResponse()

    async def del_member(self, del_member_request: pb.DelMemberRequest) -> pb.DelMemberResponse:
        record(f"DelMember {del_member_request.service_addr}")
        return pb.DelMemberResponse()

    async def session_closed(self, session_closed_request: pb.SessionClosedRequest) -> pb.SessionClosedResponse:
        record(f"SessionClosed {session_closed_request.session_id}")
        return pb.SessionClosedResponse()


async def main(listen: str, master: str, heartbeat: float, services: list[str]) -> None:
    host, _, port = listen.rpartition(":")
    server = grpclib.server.Server([Recorder()])
    await server.start(host, int(port))
    master_host, _, master_port = master.rpartition(":")
    channel = grpclib.client.Channel(master_host, int(master_port))
    stub = pb.MasterStub(channel)
    info = pb.MemberInfo(label="recorder", service_addr=listen, services=services)
    response = await stub.register(pb.RegisterRequest(member_info=info), timeout=30)
    record(f"node {listen} up: members {sorted(m.service_addr for m in response.members)}")
    while True:
        await asyncio.sleep(heartbeat)
        try:  # as nano's member: a failed heartbeat is logged, the next one comes all the same
            await stub.heartbeat(pb.HeartbeatRequest(member_info=info), timeout=30)
        except Exception as exc:  # a loaded machine's timeout must not end this node
            record(f"heartbeat failed: {exc!r}")


parser = argparse.ArgumentParser()
parser.add_argument("--listen", required=True)
parser.add_argument("--master", required=True)
parser.add_argument("--heartbeat", type=float, default=30.0)
parser.add_argument("--services", default="Recorder")
args = parser.parse_args()
asyncio.run(main(args.listen, args.master, args.heartbeat, [s for s in args.services.split(",") if s]))
