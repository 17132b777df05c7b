"""A node's view of the cluster: every other node by service address, and the services each
hosts (nano's ``cluster.members`` and ``handler.remoteServices`` in one map)."""

from __future__ import annotations

from ._generated import clusterpb as pb

__all__ = ["Membership"]


class Membership:
    """The other nodes this node knows, by service address (never itself). Owned by the node;
    changed by registration, NewMember/DelMember, and (on the master) the registry."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._members: dict[str, pb.MemberInfo] = {}
        # service -> its members, built on first use after a change (a betterproto message's
        # attributes cost ~1 us each: not read again for every forwarded message)
        self._hosting: dict[str, dict[str, pb.MemberInfo]] = {}
        self._hosting_any: list[str] | None = None

    def __contains__(self, address: str) -> bool:
        return address in self._members

    def get(self, address: str) -> pb.MemberInfo | None:
        return self._members.get(address)

    def add(self, info: pb.MemberInfo) -> bool:
        """Add or replace ``info``; False for this node itself or an empty address."""
        if not info.service_addr or info.service_addr == self.address:
            return False
        self._members[info.service_addr] = info
        self._hosting.clear()
        self._hosting_any = None
        return True

    def remove(self, address: str) -> pb.MemberInfo | None:
        self._hosting.clear()
        self._hosting_any = None
        return self._members.pop(address, None)

    def hosting_any(self) -> list[str]:
        """The addresses of the members that host at least one service (the caller must not
        change the list)."""
        if self._hosting_any is None:
            self._hosting_any = [address for address, m in self._members.items() if m.services]
        return self._hosting_any

    @property
    def addresses(self) -> list[str]:
        return list(self._members)

    @property
    def infos(self) -> list[pb.MemberInfo]:
        return list(self._members.values())

    def hosting(self, service: str) -> list[pb.MemberInfo]:
        """The members hosting ``service``, by address."""
        return list(self.hosting_by_address(service).values())

    def hosting_by_address(self, service: str) -> dict[str, pb.MemberInfo]:
        """The members hosting ``service``: address -> member, sorted by address (the caller
        must not change it)."""
        members = self._hosting.get(service)
        if members is None:
            members = {m.service_addr: m for m in sorted(self._members.values(), key=lambda m: m.service_addr)}
            members = {address: m for address, m in members.items() if service in m.services}
            if len(self._hosting) < 4096:  # routes clients name, hosted or not: bounded
                self._hosting[service] = members
        return members

    @property
    def remote_services(self) -> list[str]:
        return sorted({service for member in self._members.values() for service in member.services})
