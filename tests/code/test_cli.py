"""The command line: building it loads no stage (so `--help` is instant), its help states the trainer's
real defaults, and a run's stderr carries only our own messages."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO

HEAVY = ("pandas", "numpy", "pyarrow", "xgboost", "feast", "kserve", "kfp", "sklearn", "alibi_detect", "fastapi")


def test_building_the_parser_imports_no_stage():
    probe = ("import sys\nfrom smart_energy.cli import build_parser\nbuild_parser()\n"
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_help_states_the_trainers_defaults():
    from smart_energy.components.train import DEFAULT_PARAMS, MAX_ROUNDS

    help_text = subprocess.run([sys.executable, "-m", "smart_energy.cli", "train", "--help"], capture_output=True,
                               text=True, check=True).stdout
    text = " ".join(help_text.split())
    assert f"the trainer's, {DEFAULT_PARAMS['max_depth']})" in text
    assert f"the trainer's, {DEFAULT_PARAMS['eta']:g})" in text
    assert f"the trainer's, {MAX_ROUNDS})" in text


def test_stderr_has_only_our_messages_when_not_a_terminal(shared_data, tmp_path, feature_repo_copy):
    env = {**os.environ, "SE_FEATURE_REPO": str(feature_repo_copy), "SE_ARTIFACT_URI": (tmp_path / "a").as_uri()}
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "train", "--data", str(shared_data),
                           "--model-dir", str(tmp_path / "m"), "--n-estimators", "30"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: ") and "materialised" in lines[0], proc.stderr
    for noise in ("\x1b[", "Warning", "it/s", "PyTorch", "does not exist and is now created"):
        assert noise not in proc.stderr
