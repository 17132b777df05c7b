"""Loads ``../shared/reference/vectors.json``: nano's conformance vectors, recorded from its
own Go encoder. The file lives beside the repository (as in CI); TRIONANO_SHARED overrides."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("TRIONANO_SHARED", REPO.parent / "shared"))


@cache
def vectors() -> dict[str, Any]:
    path = shared_dir() / "reference" / "vectors.json"
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def unhex(value: str | dict[str, Any]) -> bytes:
    """A hex string, or ``{"repeat": HEX, "count": N}`` for HEX repeated N times."""
    if isinstance(value, dict):
        return bytes.fromhex(value["repeat"]) * int(value["count"])
    return bytes.fromhex(value)
