"""What counts as "nothing listens there" (:func:`trionano.cluster._reach.refused`): only a
refused connection, for every address tried, through the error a call raises; a timeout or a
reset is no proof that the process is gone."""

from __future__ import annotations

import socket

import pytest
import trio

from trionano.cluster._errors import DeadlineExceeded, Unavailable
from trionano.cluster._reach import refused


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # closed when the block ends: nothing listens there


def _as_call_error(cause: BaseException) -> Unavailable:
    """An Unavailable raised from ``cause``, as a cluster call raises it."""
    error = Unavailable(f"{type(cause).__name__}: {cause}")
    error.__cause__ = cause
    return error


async def test_a_refused_connection_is_refused() -> None:
    with pytest.raises(OSError, match="connect") as caught:
        await trio.open_tcp_stream("127.0.0.1", _closed_port())
    assert refused(caught.value)
    assert refused(_as_call_error(caught.value))


def test_other_failures_are_not_refusals() -> None:
    assert not refused(TimeoutError())
    assert not refused(ConnectionResetError())
    assert not refused(DeadlineExceeded("no answer"))
    assert not refused(Unavailable("StreamTerminatedError: Connection lost"))
    assert not refused(_as_call_error(OSError("all attempts failed")))
    mixed = OSError("all attempts to connect failed")
    mixed.__cause__ = ExceptionGroup("attempts", [ConnectionRefusedError(), TimeoutError()])
    assert not refused(mixed)
    every = OSError("all attempts to connect failed")
    every.__cause__ = ExceptionGroup("attempts", [ConnectionRefusedError(), ConnectionRefusedError()])
    assert refused(every)
    assert refused(_as_call_error(every))
