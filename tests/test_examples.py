"""Examples are smoke tests: each runs and says what it should."""

from __future__ import annotations

import pytest

from examples import wire_tour
from trionano import wire


def test_wire_tour_replays_the_chat_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    events = wire_tour.main()
    assert events[3] == wire.Request(1, "room.join", b"{}")
    assert events[-1] == wire.Kick("shutdown")
    out = capsys.readouterr().out
    assert "C->S  04 00 00 0e  00 01 09 72 6f 6f 6d 2e 6a 6f 69 6e 7b 7d" in out  # nano.md §6.1
