"""The drift detector: Alibi Detect's Apache-2.0 release, imported beside pydantic 2 without leaking the alias."""

from __future__ import annotations

from importlib.metadata import metadata, version

import numpy as np
import pydantic

from smart_energy.components.drift import alibi, ks_detector, load, save


def test_the_apache_licensed_release_is_installed():
    assert version("alibi-detect") == "0.11.4"
    assert "Apache" in (metadata("alibi-detect").get("License") or "")


def test_detects_a_shift_and_not_the_reference_distribution(tmp_path):
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(2000, 4))
    detector = ks_detector(reference, 0.05)
    same = detector.predict(rng.normal(size=(168, 4)).astype(np.float32))["data"]
    shifted = detector.predict((rng.normal(size=(168, 4)) + [0, 0, 1.0, 0]).astype(np.float32))["data"]
    assert same["is_drift"] == 0
    assert shifted["is_drift"] == 1 and shifted["p_val"][2] < 1e-6 and shifted["p_val"][0] > 0.01
    save(detector, tmp_path / "drift")
    again = load(tmp_path / "drift").predict((rng.normal(size=(168, 4)) + [0, 0, 1.0, 0]).astype(np.float32))
    assert again["data"]["is_drift"] == 1


def test_pydantic_is_pydantic_2_after_the_import():
    alibi()
    assert pydantic.VERSION.startswith("2.")
    import pydantic as again

    assert again.BaseModel is pydantic.BaseModel and hasattr(again, "field_validator")
