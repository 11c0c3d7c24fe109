"""End to end on real market data: hourly EURUSD bars (shipped with ``backtesting``) through the files source.

``dvc repro promote`` must complete and record a gate decision, whatever it is; the promotion record
must follow that decision. Real data end mid-session (the file stops at 15:00 on 2018-02-07), so the
completeness family is a warning here rather than a failure.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil

import pytest

from .conftest import make_project

pytestmark = [pytest.mark.xdist_group("training-files"), pytest.mark.slow]


def test_hourly_eurusd_runs_to_a_recorded_gate_decision(tmp_path) -> None:
    project = make_project(tmp_path / "project")
    source = importlib.resources.files("backtesting") / "test" / "EURUSD.csv"
    shutil.copy(str(source), project.root / "data" / "external" / "EURUSD.csv")
    project.set_params(
        **{
            "data.source": "files",
            "data.interval": "1h",
            "data.end": "2018-02-08",
            "data.lookback_days": 290,
            "data.files": [
                {
                    "path": "data/external/EURUSD.csv",
                    "broker": "oanda",
                    "symbol": "EUR_USD",
                    "timezone": "UTC",
                }
            ],
            "validate.severity.completeness": "warn",
            "train.lookback_days": 280,
            "train.test_days": 60,
        }
    )
    project.dvc("repro", "promote", timeout=900)

    splits = json.loads((project.root / "data/prepared/splits.json").read_text())
    assert splits["interval"] == "1h"
    assert splits["boundaries"]["test_start"] == "2017-12-10T00:00:00+00:00"
    assert set(splits["splits"]["test"]["instruments"]) == {"oanda/EUR_USD"}
    evaluation = json.loads((project.root / "metrics/evaluate.json").read_text())
    assert evaluation["portfolio"]["periods_per_year"] == 260  # FX annualisation
    gates = json.loads((project.root / "metrics/gates.json").read_text())
    assert isinstance(gates["promote"], bool)
    assert {g["name"] for g in gates["gates"]} >= {"sharpe", "max_drawdown", "win_rate", "trades"}
    promotion = json.loads((project.root / "metrics/promotion.json").read_text())
    assert promotion["promoted"] is gates["promote"]
    if not gates["promote"]:
        assert promotion["reason"].startswith("gates failed")
