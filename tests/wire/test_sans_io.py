"""trionano.wire is sans-IO: it imports no trio, no socket layer, no logging."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trionano.wire

WIRE = Path(trionano.wire.__file__).parent
FORBIDDEN = {"trio", "socket", "ssl", "asyncio", "logging", "selectors", "trio_websocket", "grpclib"}


def test_wire_loaded_alone_pulls_in_no_io() -> None:
    # Load trionano.wire under a bare parent package, so the runtime's __init__ cannot hide
    # (or cause) an import.
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('trionano'); pkg.__path__ = [{str(WIRE.parent)!r}]\n"
        "sys.modules['trionano'] = pkg\n"
        "import trionano.wire\n"
        f"print(','.join(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_wire_sources_import_nothing_outside_the_stdlib_codec_set() -> None:
    for path in WIRE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
