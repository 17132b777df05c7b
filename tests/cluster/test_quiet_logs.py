"""asyncio's and grpclib's records of ordinary events (a peer gone while written to, a call
cancelled by its caller) go to trionano's logger at DEBUG while a node runs, not as WARNING and
INFO on their own loggers (attack3: one per stop or resume of a peer); every other record of
theirs goes through as it was."""

from __future__ import annotations

import logging

import grpclib.exceptions
import pytest

from trionano.cluster._quiet import quiet_ordinary_events


def test_ordinary_events_are_routed_to_trionano_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with quiet_ordinary_events():
        logging.getLogger("asyncio").warning("socket.send() raised exception.")
        reset = grpclib.exceptions.StreamTerminatedError("Stream reset by remote party")
        logging.getLogger("grpclib.server").info("Request was cancelled: %s", reset)
        logging.getLogger("grpclib.server").info("Deadline exceeded")
        logging.getLogger("grpclib.server").exception("Application error")  # not ordinary
        logging.getLogger("asyncio").error("Task exception was never retrieved")  # nor this
    logging.getLogger("asyncio").warning("socket.send() raised exception.")  # the block is over
    seen = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert seen == [
        (
            "trionano.cluster",
            "DEBUG",
            "a connection was lost while writing to it (asyncio: socket.send() raised exception.)",
        ),
        (
            "trionano.cluster",
            "DEBUG",
            "a call was cancelled by its caller (grpclib: Request was cancelled: Stream reset by remote party)",
        ),
        ("trionano.cluster", "DEBUG", "a call's deadline passed (grpclib: Deadline exceeded)"),
        ("grpclib.server", "ERROR", "Application error"),
        ("asyncio", "ERROR", "Task exception was never retrieved"),
        ("asyncio", "WARNING", "socket.send() raised exception."),
    ]
