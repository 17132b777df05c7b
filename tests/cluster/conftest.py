from __future__ import annotations

import os

import pytest

from ._harness import ROOT


@pytest.fixture(autouse=True)
def _unbuffered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node processes log as they go, and find the project's packages."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
