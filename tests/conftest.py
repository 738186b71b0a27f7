from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smart_energy.components.feast_store import copy_feature_repo
from helpers import SHARED_DATA  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_file(), f"shared data file missing: {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture
def feature_repo_copy(tmp_path):
    """A private copy of feature_repo/ (definitions + config only), so tests never touch the real one."""
    repo = tmp_path / "feature_repo"
    copy_feature_repo(repo)
    return repo


@pytest.fixture
def isolated_settings(tmp_path, feature_repo_copy):
    """Settings for one test: its own feature repo, artifact store and data root."""
    from smart_energy.components.settings import Settings

    return Settings(feature_repo=feature_repo_copy, artifact_uri=(tmp_path / "artifacts").as_uri(),
                    data_root=tmp_path / "data")
