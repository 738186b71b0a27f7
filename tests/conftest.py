from __future__ import annotations

import json
import os
import subprocess
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


@pytest.fixture(scope="session")
def dayahead_model(shared_data, tmp_path_factory) -> dict:
    """The day-ahead model as ``smart-energy train --horizon 24 --holdout-weeks 4`` trains it on the shared file,
    trained once per session for the modules that score, monitor and serve it: ``model_dir`` and ``trained`` (what
    train printed). Never change it: copy ``model_dir`` into the module's own folder."""
    root = tmp_path_factory.mktemp("dayahead-model")
    env = {**os.environ, "SE_FEATURE_REPO": str(copy_feature_repo(root / "feature_repo")),
           "SE_ARTIFACT_URI": (root / "artifacts").as_uri()}
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "train", "--horizon", "24", "--data",
                           str(shared_data), "--model-dir", str(root / "model"), "--holdout-weeks", "4"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"model_dir": root / "model", "trained": json.loads(proc.stdout)}


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
