"""One model trained on six weeks of the shared data (isolated Feast repo in tmp), served for real on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from smart_energy.components.feast_store import copy_feature_repo
from helpers import PYTHON, free_port, start, stop, wait_http

SLICE_MINUTES = 6 * 7 * 1440


@dataclass
class Served:
    url: str  # transformer
    predictor_url: str
    predictor_port: int
    model_dir: Path
    metadata: dict
    feature_repo: Path
    env: dict
    logs: Path
    procs: dict


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shared_data):
    """(settings, model_dir, metadata): trained once per session on the first six weeks."""
    from smart_energy.components.settings import Settings
    from smart_energy.components.train import train

    root = tmp_path_factory.mktemp("serving")
    data = root / "six_weeks.txt"
    with open(shared_data) as src, open(data, "w") as dst:
        dst.writelines(itertools.islice(src, SLICE_MINUTES + 1))
    repo = root / "feature_repo"
    copy_feature_repo(repo)
    settings = Settings(feature_repo=repo, data_root=root / "data", artifact_uri=(root / "artifacts").as_uri())
    metadata = train(data, root / "model", settings)
    return settings, root / "model", metadata


def start_predictor(model_dir: Path, port: int, env: dict, log: Path):
    return start([PYTHON, "-m", "smart_energy.serving.predictor", "--model_dir", str(model_dir), "--http_port", str(port)],
                 log, env=env)


@pytest.fixture(scope="session")
def served(trained, tmp_path_factory):
    settings, model_dir, metadata = trained
    logs = tmp_path_factory.mktemp("logs")
    port, predictor_port = free_port(), free_port()
    env = {**settings.as_env(), "SE_DRIFT_WINDOW": "48"}
    predictor = start_predictor(model_dir, predictor_port, env, logs / "predictor.log")
    transformer = start([PYTHON, "-m", "smart_energy.serving.transformer", "--model_dir", str(model_dir), "--http_port", str(port),
                         "--predictor_host", f"127.0.0.1:{predictor_port}"], logs / "transformer.log", env=env)
    procs = {"predictor": predictor, "transformer": transformer}
    try:
        wait_http(f"http://127.0.0.1:{predictor_port}/v2/health/ready", timeout=90, proc=predictor)
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=90, proc=transformer)
        yield Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{predictor_port}", predictor_port, model_dir,
                     metadata, settings.feature_repo, env, logs, procs)
    finally:
        for proc in procs.values():
            stop(proc)


@pytest.fixture(scope="session")
def feature_rows(served):
    """The offline feature rows (the parquet Feast serves), newest last."""
    import pandas as pd

    frame = pd.read_parquet(served.feature_repo / "data" / "hourly_features.parquet")
    return frame.sort_values("event_timestamp").reset_index(drop=True)


def booster_predict(model_dir: Path, matrix) -> list[float]:
    """The direct xgboost call the servers must agree with."""
    import xgboost as xgb

    meta = json.loads((model_dir / "metadata.json").read_text())
    booster = xgb.Booster()
    booster.load_model(str(model_dir / "model.json"))
    return booster.predict(xgb.DMatrix(matrix, feature_names=meta["features"])).tolist()
