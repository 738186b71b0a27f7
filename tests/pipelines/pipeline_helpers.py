"""Helpers of the pipeline tests: an isolated artifact store and feature repo, slices of the shared data."""

from __future__ import annotations

from smart_energy.components.feast_store import copy_feature_repo
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMART_ENERGY = str(Path(sys.executable).with_name("smart-energy"))


def isolated_env(root: Path) -> dict[str, str]:
    """SE_* settings pointing at a fresh artifact store and a copy of the feature repo under ``root``."""
    repo = root / "feature_repo"
    copy_feature_repo(repo)
    return {"SE_ARTIFACT_URI": (root / "artifacts").as_uri(), "SE_FEATURE_REPO": str(repo)}


def slice_of(shared: Path, dest: Path, lines: int) -> Path:
    """The first ``lines`` readings of the shared file (header kept)."""
    with open(shared) as src, open(dest, "w") as out:
        for i, line in enumerate(src):
            if i > lines:
                break
            out.write(line)
    return dest

