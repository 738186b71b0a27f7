"""Every subcommand, walked through the mistakes a user makes: each exits 2 with one line on stderr that names
the file or flag, no traceback, and nothing written (the files under the test's directory are the same before
and after, the feature repo included: the check comes before any expensive step).

Unwritable places are real: a read-only tmpfs and a full one (8 KiB), mounted by the test (as root permission
bits stop nothing, a read-only mount does). The commands run in-process through ``smart_energy.cli.main``, the
function the ``smart-energy`` script calls; one case runs the real script to show the process's own stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from smart_energy.cli import main

DAYS = 14


def _mount(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


@pytest.fixture(scope="module")
def places(tmp_path_factory, shared_data):
    """A 14-day raw file, a plain file, an empty directory, a read-only mount and a full one."""
    root = tmp_path_factory.mktemp("mistakes")
    with open(shared_data) as src:
        lines = [next(src) for _ in range(1 + DAYS * 1440)]
    (root / "readings.txt").write_text("".join(lines))
    (root / "a_file").write_text("not a directory\n")
    (root / "empty_dir").mkdir()
    _mount(root / "ro", "ro,size=1m")
    _mount(root / "full", "size=8k")
    yield root
    for mount in ("ro", "full"):
        subprocess.run(["umount", str(root / mount)], check=False)


@pytest.fixture
def env(places, tmp_path, feature_repo_copy, monkeypatch):
    monkeypatch.chdir(places)
    monkeypatch.setenv("SE_FEATURE_REPO", str(feature_repo_copy))
    monkeypatch.setenv("SE_ARTIFACT_URI", (tmp_path / "artifacts").as_uri())
    return tmp_path


def _files(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


# (argv, extra environment, a part the message must contain)
R = "readings.txt"
CASES = [
    # ingest
    (["ingest", "missing.txt", "--out", "out"], {}, "missing.txt: no such file"),
    (["ingest", R, "--out", "a_file"], {}, "--out a_file: is a file"),
    (["ingest", R, "--out", "a_file/out"], {}, "a_file is a file"),
    (["ingest", R, "--out", "ro/out"], {}, "read-only file system"),
    (["ingest", R, "--out", "full/out"], {}, "no space left"),
    (["ingest", R, "--out", "out"], {"SE_MIN_MINUTES_PER_HOUR": "abc"}, "SE_MIN_MINUTES_PER_HOUR='abc': not an integer"),
    (["ingest", R, "--out", "out"], {"SE_MIN_MINUTES_PER_HOUR": "90"}, "SE_MIN_MINUTES_PER_HOUR=90: must be between"),
    (["ingest", R, "--out", "out"], {"SE_ENGINE": "sparc"}, "SE_ENGINE='sparc': choose one of embedded, spark"),
    (["ingest", R, "--out", "out"], {"S3_USE_HTTPS": "ture"}, "S3_USE_HTTPS='ture': not a boolean"),
    # features
    (["features", "build"], {}, "features build needs --data"),
    (["features", "materialize", "--data", "missing.txt"], {}, "--data missing.txt: no such file"),
    # train
    (["train", "--data", "missing.txt", "--model-dir", "m"], {}, "--data missing.txt: no such file"),
    (["train", "--data", R, "--model-dir", "m", "--until", "yesterday"], {}, "--until 'yesterday': not a date"),
    (["train", "--data", R, "--model-dir", "m", "--until", "2006-12-01"], {}, "--until 2006-12-01 leaves 0.0 days"),
    (["train", "--data", R, "--model-dir", "m", "--holdout-weeks", "9"], {}, "--holdout-weeks 9 leaves 0.0 days"),
    (["train", "--data", R, "--model-dir", "m", "--horizon", "24", "--holdout-weeks", "2"], {}, "leaves 0.3 days"),
    (["train", "--data", R, "--model-dir", "m", "--until", "2007-01-01", "--holdout-weeks", "1"], {}, "give one"),
    (["train", "--data", R, "--model-dir", "ro/m"], {}, "--model-dir ro/m: cannot write in ro (read-only"),
    (["train", "--data", R, "--model-dir", "a_file"], {}, "--model-dir a_file: is a file"),
    (["train", "--data", R, "--model-dir", "m", "--n-estimators", "0"], {}, "--n-estimators 0: must be above 0"),
    (["train", "--data", R, "--model-dir", "m", "--hpo-trials", "-3"], {}, "--hpo-trials -3: must be 0 or more"),
    # predict: the model is checked before any feature is published
    (["predict", "--model-dir", "no_model", "--data", R], {}, "--model-dir no_model: no such directory"),
    (["predict", "--model-dir", "empty_dir", "--data", R], {}, "empty_dir: not a model directory"),
    (["predict", "--model-dir", "a_file", "--data", R], {}, "--model-dir a_file: is a file"),
    # evaluate, advise, backtest, monitor
    (["evaluate", "--model-dir", "no_model", "--data", R], {}, "--model-dir no_model: no such directory"),
    (["evaluate", "--model-dir", "empty_dir", "--data", "missing.txt"], {}, "--data missing.txt: no such file"),
    (["evaluate", "--model-dir", "empty_dir", "--data", R, "--last-weeks", "-1"], {}, "--last-weeks -1: must be 0"),
    (["advise", "--model-dir", "no_model", "--data", R], {}, "--model-dir no_model: no such directory"),
    (["backtest", "--data", R, "--weeks", "0"], {}, "--weeks 0: must be above 0"),
    (["backtest", "--data", R, "--out", "ro/bt"], {}, "--out ro/bt: cannot write in ro"),
    (["monitor", "--data", R, "--out", "ro/report"], {}, "--out ro/report: cannot write in ro"),
    (["monitor", "--data", R, "--model-dir", "no_model"], {}, "--model-dir no_model: no such directory"),
    # the registry and the rollout controller
    (["models", "register"], {}, "models register needs --model-dir"),
    (["models", "register", "--model-dir", "no_model"], {}, "--model-dir no_model: no such directory"),
    (["models", "promote", "--version", "v1"], {}, "has no version 'v1'"),
    (["rollout", "--model", "Not_A_Name"], {}, "--model 'Not_A_Name' is not a model"),
    # the loop, the pipelines, the servers
    (["loop", "--history", "missing.txt", "--data", R], {}, "--history missing.txt: no such file"),
    (["loop", "--history", R, "--data", R, "--out", "ro/loop"], {}, "--out ro/loop: cannot write in ro"),
    (["loop", "--history", R, "--data", R, "--hours", "0"], {}, "--hours 0: must be above 0"),
    (["loop", "--history", R, "--data", R], {"SE_CANARY_STEPS": "10,x"}, "SE_CANARY_STEPS: canary steps must"),
    (["pipeline", "compile", "--out", "ro/pipeline.yaml"], {}, "ro/pipeline.yaml: read-only file system"),
    (["pipeline", "run"], {}, "pipeline run needs --local"),
    (["serve", "--model-dir", "no_model"], {}, "no_model"),
]


@pytest.mark.parametrize("argv, extra, expected", CASES, ids=[" ".join(c[0])[:60] + (" " + ",".join(c[1]) if c[1]
                                                                                         else "") for c in CASES])
def test_a_mistake_exits_2_with_one_line_and_writes_nothing(places, env, argv, extra, expected, monkeypatch,
                                                           capsys):
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    before = _files(places, env)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(("smart-energy ", "smart-energy:")) and ": error: " in lines[0], err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert _files(places, env) == before, "a failed command left files behind"


def test_the_script_itself_prints_one_line(places, tmp_path):
    """The real process: a bad setting fails while the parser is built, before any handler runs."""
    env = {**os.environ, "SE_MIN_MINUTES_PER_HOUR": "abc", "SE_FEATURE_REPO": str(tmp_path / "repo")}
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "train", "--data", R, "--model-dir",
                           str(tmp_path / "m")], capture_output=True, text=True, cwd=places, env=env)
    assert proc.returncode == 2
    assert proc.stderr == "smart-energy: error: SE_MIN_MINUTES_PER_HOUR='abc': not an integer (default 45)\n"
    assert not (tmp_path / "m").exists()


def test_rollout_of_a_misspelt_model_names_the_models_the_store_holds(places, env, capsys):
    """A fresh store (nothing registered) is no error for the CronJob; a name the store lacks beside others is."""
    assert main(["rollout", "--model", "energy-forecastr"]) == 0  # an empty store: nothing to roll out yet
    assert "no candidate registered" in capsys.readouterr().err
    version = env / "artifacts" / "models" / "energy-forecaster" / "v1"
    version.mkdir(parents=True)
    (version / "metadata.json").write_text("{}")
    assert main(["rollout", "--model", "energy-forecastr"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'energy-forecastr' has no versions" in err and "it holds energy-forecaster" in err


@pytest.mark.parametrize("cmd", [["-m", "benchmarks.run"], ["benchmarks/peers_bench.py"],
                                 ["-m", "benchmarks.dayahead_candidates"], ["benchmarks/make_fleet.py", "--out", "x"]])
@pytest.mark.parametrize("bad", ["no_such.txt", "empty_dir", "a_file"])
def test_the_benches_name_a_missing_data_file(places, cmd, bad):
    """`make bench DATA=...` and the benches run alone: a wrong --data (missing, a directory, not meter data) is
    one line and exit 2, before any work."""
    got = subprocess.run([sys.executable, *cmd, "--data", str(places / bad)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 2, got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and "--data" in lines[0] and str(places / bad) in lines[0], got.stderr
    assert {"no_such.txt": "no such file", "empty_dir": "directory", "a_file": "unexpected header"}[bad] in lines[0]


@pytest.mark.parametrize("script", ["run.py", "peers_bench.py", "dayahead_candidates.py", "fleet_bench.py",
                                    "objective_bench.py", "serving_bench.py"])
def test_each_bench_runs_as_a_script_from_anywhere(places, script):
    """`python benchmarks/X.py` from another folder imports the repository's `benchmarks`, not pyarrow's package of
    the same name (a script's folder, not the working directory, starts sys.path), and so reaches its own check."""
    got = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--data", str(places / "no_such.txt")],
                         cwd=places, capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
    assert got.stderr.strip().splitlines() == [f"{script}: error: --data {places / 'no_such.txt'}: no such file"]


@pytest.mark.parametrize("bad, why", [("no_such.json", "no such file or directory"), ("empty_dir", "is a directory"),
                                      ("a_file", "not a day-ahead evaluate JSON")])
def test_the_backtest_summary_names_a_bad_evaluation_file(places, bad, why):
    got = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dayahead_summary.py"), str(places / bad)],
                         cwd=places, capture_output=True, text=True, timeout=60)
    assert got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dayahead_summary.py: error: {places / bad}: {why}"), got.stderr
