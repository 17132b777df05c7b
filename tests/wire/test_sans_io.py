"""trionano.wire is sans-IO: importing it pulls in no trio, no socket layer, no logging."""

from __future__ import annotations

import subprocess
import sys


def test_wire_imports_no_io() -> None:
    code = (
        "import sys, trionano.wire\n"
        "bad = sorted(m for m in ('trio', 'socket', 'ssl', 'asyncio', 'logging', 'trio_websocket', 'grpclib')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
