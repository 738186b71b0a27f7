"""The monitoring report's advice table when the backtest is too short for a yearly figure: the nulls that
`advise` gives under 28 backtested days are dashes (no data-value a reader would parse), and its caveat is shown."""

from __future__ import annotations

import re

from smart_energy.components.advice import MIN_DAYS_TO_ANNUALISE
from smart_energy.components.monitor import cell, dayahead_html


def test_short_backtest_shows_dashes_and_the_caveat():
    caveat = f"only 3 complete days backtested, fewer than {MIN_DAYS_TO_ANNUALISE}: no yearly figure"
    d = {"model_version": "v1", "origins": 48, "mae_kw": 0.5, "coverage_p10_p90": 0.8, "pinball_kw": 0.2,
         "persistence_mae_kw": 0.6, "seasonal_24h_mae_kw": 0.7, "seasonal_168h_mae_kw": 0.8,
         "savings_eur_per_year": None, "savings_kwh_shifted_per_year": None, "savings_bill_eur_per_year": None,
         "savings_peak_kw_reduction": 0.1, "savings_days_backtested": 3, "savings_caveat": caveat,
         "savings_method": "Replayed 3 complete days", "calibration_origins": {"rolling": 6, "training": 42}}
    page = dayahead_html({"dayahead": d, "advice": {"tariff": "hp-hc", "loads": []}}, lambda name: "", cell)
    assert caveat in page
    assert "dayahead.savings_eur_per_year" not in page and page.count("<td>–</td>") == 3
    assert re.search(r'data-key="dayahead.savings_days_backtested" data-value="3"', page)
    assert "(6 origins; the first day's\n42 with the training calibration)" in page
