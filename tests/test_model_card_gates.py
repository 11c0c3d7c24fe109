"""The model card's gate table is ``evaluate_gates`` itself: same thresholds, operators and verdicts."""

from __future__ import annotations

from pathlib import Path

import yaml

from autotrader.modeling.gates import INSUFFICIENT, evaluate_gates
from autotrader.modeling.model_card import GATE_LABELS, gate_preview
from autotrader.params import Params

REPO = Path(__file__).resolve().parents[1]


def params_with(**gates: float) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["gates"].update(gates)
    return Params.model_validate(raw)


PORTFOLIO = {"sharpe": 2.5, "max_drawdown": 0.15, "win_rate": 0.55, "n_trades": 120, "expectancy": 0.001}
DSR = {"dsr": 0.97, "n_trials": 6.0}
CAPACITY = {"rows": 9000, "horizon": 36, "max_bets": 250}


def test_every_row_carries_the_gate_stage_verdict() -> None:
    params = params_with()
    rows = gate_preview(params, PORTFOLIO, DSR, CAPACITY)
    gates = evaluate_gates(PORTFOLIO, params.gates, dsr=DSR, capacity=CAPACITY)
    assert [r[0] for r in rows] == [GATE_LABELS[g["name"]] for g in gates]
    assert [r[3] for r in rows] == [g["passed"] for g in gates]
    # the boundary cases are strict where the gate stage is strict: drawdown 0.15 < 0.15 and
    # win rate 0.55 > 0.55 both fail, in the card as in gates.json
    by_label = {r[0]: r for r in rows}
    assert by_label["Max drawdown"][3] is False and by_label["Win rate (trades)"][3] is False
    assert by_label["Sharpe (annualised, daily, pooled OOS)"][1:] == ["> 2.000", 2.5, True]
    assert by_label["Trades"][1] == "≥ 100"


def test_a_threshold_change_moves_card_and_gates_together() -> None:
    strict = params_with(min_sharpe=3.0, min_dsr=0.99)
    rows = {r[0]: r for r in gate_preview(strict, PORTFOLIO, DSR, CAPACITY)}
    assert rows["Sharpe (annualised, daily, pooled OOS)"][3] is False
    assert rows["Deflated Sharpe ratio"][3] is False


def test_a_window_too_short_for_min_trades_is_insufficient_evidence() -> None:
    small = {"rows": 900, "horizon": 36, "max_bets": 25}
    rows = {r[0]: r for r in gate_preview(params_with(), PORTFOLIO, DSR, small)}
    assert rows["Trades"][3] == "insufficient evidence"
    verdicts = {
        g["name"]: g["verdict"]
        for g in evaluate_gates(PORTFOLIO, params_with().gates, dsr=DSR, capacity=small)
    }
    assert verdicts["trades"] == INSUFFICIENT


def test_a_missing_value_is_shown_as_unknown_not_as_a_pass() -> None:
    rows = {r[0]: r for r in gate_preview(params_with(), {"sharpe": 2.5}, None, None)}
    assert rows["Deflated Sharpe ratio"][2] is None and rows["Deflated Sharpe ratio"][3] is None
