"""Pipeline tests run against a throwaway artifact store and feature repo (never the repo's own folders)."""

from __future__ import annotations

import pytest

from pipeline_helpers import isolated_env


@pytest.fixture(scope="module")
def pipeline_env(tmp_path_factory):
    """The isolated settings, also applied to this process (kfp.local's task subprocesses inherit them)."""
    env = isolated_env(tmp_path_factory.mktemp("pipeline"))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env
