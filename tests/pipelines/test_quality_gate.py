"""The quality gate: a file of mostly bad rows stops the run at the gate, with the reason, before any training."""

from __future__ import annotations

import pytest

from smart_energy.components.pipeline_steps import QualityGateError, check_quality, gate_verdict, quality_markdown
from smart_energy.components.storage import open_store
from smart_energy.pipelines.local_run import PipelineRunError, run_local

QUALITY = {"rows_read": 1000, "rows_valid": 900, "rows_missing": 40, "rows_quarantined": 60, "hours": 17,
           "hours_complete": 16, "first_timestamp": "2007-01-01T00:00:00+00:00",
           "last_timestamp": "2007-01-01T16:39:00+00:00", "source": "meter.txt",
           "quarantine_reasons": {"out_of_range:Voltage": 50, "bad_timestamp": 10}}


def test_gate_passes_at_the_limit_and_stops_above_it():
    check_quality(QUALITY, 0.06)
    with pytest.raises(QualityGateError, match=r"6\.0% of rows quarantined \(60 of 1,000\).*limit 5\.0%"):
        check_quality(QUALITY, 0.05)
    assert "out_of_range:Voltage x50, bad_timestamp x10" in gate_verdict(QUALITY, 0.05)


def test_gate_stops_an_empty_file():
    assert gate_verdict(QUALITY | {"rows_read": 0, "rows_quarantined": 0, "quarantine_reasons": {}}, 0.05)


def test_gate_report_states_verdict_and_reason():
    passed, failed = quality_markdown(QUALITY, 0.1), quality_markdown(QUALITY, 0.05)
    assert passed.startswith("# Quality gate passed") and "**Stopped:**" not in passed
    assert failed.startswith("# Quality gate FAILED") and "**Stopped:** quality gate: 6.0%" in failed
    assert "| out_of_range:Voltage | 50 |" in failed


@pytest.mark.slow
def test_mostly_bad_file_stops_the_pipeline_at_the_gate(shared_data, pipeline_env, tmp_path):
    lines = shared_data.read_text().splitlines()[: 1 + 3 * 1440]
    header, rows = lines[0], lines[1:]
    # two rows in three get an impossible voltage
    bad = [";".join(r.split(";")[:4] + ["400.000"] + r.split(";")[5:]) if i % 3 else r for i, r in enumerate(rows)]
    data = tmp_path / "mostly_bad.txt"
    data.write_text("\n".join([header, *bad]) + "\n")
    with pytest.raises(PipelineRunError) as err:
        run_local(data, tmp_path / "runs")
    message = str(err.value)
    assert "quality-gate" in message
    assert "quality gate: 66.7% of rows quarantined (2,880 of 4,320)" in message
    assert "out_of_range:Voltage x2,880" in message and "limit 5.0%" in message
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert f"Task output: {run_dir / 'tasks.log'}" in message
    assert "QualityGateError" in (run_dir / "tasks.log").read_text()  # the traceback is kept for the user
    assert (run_dir / "quality-gate" / "report").read_text().startswith("# Quality gate FAILED")
    assert not (run_dir / "train").exists() and not (run_dir / "register").exists()
    assert open_store(pipeline_env["SE_ARTIFACT_URI"]).list("models") == []
