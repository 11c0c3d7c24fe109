"""End to end on real market data: hourly EURUSD bars (shipped with ``backtesting``) through the files source.

``dvc repro promote`` must complete with an honest, explained verdict. Four walk-forward windows of
30 days hold about 2 000 hourly rows: at most 56 non-overlapping 36-bar bets, fewer than the 100 the
trade gate asks for — so no skill could pass, and the verdict is ``insufficient_evidence`` with that
arithmetic rather than a plain fail; the promotion record follows it. The FX-only portfolio is
annualised on the FX calendar and agrees with its one instrument. Real data end mid-session (the file
stops at 15:00 on 2018-02-07), so the completeness family is a warning here rather than a failure.
"""

from __future__ import annotations

import json

import pytest

from .conftest import make_project, use_eurusd_file

pytestmark = [pytest.mark.xdist_group("training-files"), pytest.mark.slow]


def test_hourly_eurusd_runs_to_a_recorded_gate_decision(tmp_path) -> None:
    project = make_project(tmp_path / "project")
    use_eurusd_file(project)
    project.dvc("repro", "promote", timeout=900)

    splits = json.loads((project.root / "data/prepared/splits.json").read_text())
    assert splits["interval"] == "1h"
    assert splits["boundaries"]["test_start"] == "2017-10-11T00:00:00+00:00"  # 2018-02-08 − 4 × 30 days
    assert len(splits["oos_windows"]) == 4
    assert set(splits["splits"]["test"]["instruments"]) == {"oanda/EUR_USD"}
    evaluation = json.loads((project.root / "metrics/evaluate.json").read_text())
    portfolio = evaluation["portfolio"]
    assert portfolio["periods_per_year"] == 260  # FX annualisation
    # an FX-only portfolio is its single instrument, on the FX calendar
    assert portfolio["sharpe"] == pytest.approx(
        evaluation["instruments"]["oanda/EUR_USD"]["sharpe"], rel=1e-12
    )
    rows, most = evaluation["capacity"]["rows"], evaluation["capacity"]["max_bets"]
    assert most == rows // 36 < 100
    gates = json.loads((project.root / "metrics/gates.json").read_text())
    assert gates["promote"] is False and gates["verdict"] == "insufficient_evidence"
    trades = next(g for g in gates["gates"] if g["name"] == "trades")
    assert trades["verdict"] == "insufficient_evidence"
    assert f"{rows} test rows / 36-bar bets = at most {most}" in trades["detail"]
    win = next(g for g in gates["gates"] if g["name"] == "win_rate")
    assert "profit factor" in win["detail"] and "expectancy" in win["detail"]
    assert {"sharpe", "max_drawdown", "win_rate", "trades", "dsr"} <= {g["name"] for g in gates["gates"]}
    promotion = json.loads((project.root / "metrics/promotion.json").read_text())
    assert promotion["promoted"] is False
    assert promotion["reason"].startswith("gates failed") and "insufficient evidence" in promotion["reason"]
    card = (project.root / "reports/model_card.md").read_text()
    assert "insufficient evidence" in card and "Synthetic data" not in card
