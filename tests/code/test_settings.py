from __future__ import annotations

from pathlib import Path

from smart_energy.components.settings import ENV, Settings


def test_every_field_has_one_env_var():
    names = list(ENV.values())
    assert len(names) == len(set(names))
    assert set(ENV) == set(Settings.__dataclass_fields__)


def test_from_env_parses_types_and_defaults():
    s = Settings.from_env({"SE_DATA_ROOT": "/x", "S3_USE_HTTPS": "true", "SE_CANARY_HOLD_SECONDS": "2.5",
                           "SE_DRIFT_WINDOW": "24", "SE_METER_ID": ""})
    assert s.data_root == Path("/x") and s.s3_use_https is True
    assert s.canary_hold_seconds == 2.5 and s.drift_window == 24
    assert s.meter_id == "household-1"


def test_as_env_round_trips():
    s = Settings(meter_id="m-2", s3_use_https=True, max_error_rate=0.2)
    assert Settings.from_env(s.as_env()) == s
