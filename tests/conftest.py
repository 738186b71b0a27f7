from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import SHARED_DATA  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_file(), f"shared data file missing: {SHARED_DATA}"
    return SHARED_DATA
