"""Promotion gates: every one must pass for ``promote`` to register the model.

Portfolio level, on the pooled walk-forward out-of-sample returns (metrics/evaluate.json): Sharpe >
``min_sharpe``, max drawdown < ``max_drawdown``, win rate > ``min_win_rate``, trades ≥
``min_trades``, and the deflated Sharpe ratio ≥ ``min_dsr`` — the probability that the Sharpe beats
the best of the trials counted for this model name by luck alone. Champion vs challenger: when the
registry has a ``champion``, the candidate's Sharpe on the last window must be ≥ the champion's on
the same rows minus ``max_regression`` of its magnitude (champion × (1 − r) for a positive champion).

Gates that cannot decide say so: when the test rows cannot hold ``min_trades`` non-overlapping bets
(rows // horizon, per instrument), the trade gate's verdict is ``insufficient_evidence`` with that
arithmetic, and so is the whole decision (never promoted without every gate passing, but a reviewer
sees that the window, not the model, decided it). The win-rate gate reports the profit factor and the expectancy beside
it, so a strategy that wins often and loses more is visible at a glance.
"""

from __future__ import annotations

from typing import Any

from autotrader.params import GateParams

OPS = {">": lambda v, t: v > t, "<": lambda v, t: v < t, ">=": lambda v, t: v >= t}
PASS, FAIL, INSUFFICIENT, SKIPPED = "pass", "fail", "insufficient_evidence", "skipped"


def _gate(name: str, value: float | None, op: str, threshold: float, detail: str = "") -> dict[str, Any]:
    passed = value is not None and bool(OPS[op](value, threshold))
    return {
        "name": name,
        "value": value,
        "op": op,
        "threshold": threshold,
        "passed": passed,
        "verdict": PASS if passed else FAIL,
        "detail": detail,
    }


def required_vs_champion(champion_sharpe: float, max_regression: float) -> float:
    return champion_sharpe - abs(champion_sharpe) * max_regression


def _ci_text(portfolio: dict[str, Any]) -> str:
    ci = portfolio.get("sharpe_ci")
    if not ci or ci[0] is None:
        return ""
    return f"; bootstrap CI [{ci[0]:.2f}, {ci[1]:.2f}]"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.2%}"


def trades_gate(
    portfolio: dict[str, Any], gates: GateParams, capacity: dict[str, Any] | None
) -> dict[str, Any]:
    """Trades ≥ min_trades, or ``insufficient_evidence`` when the window cannot hold that many bets."""
    gate = _gate("trades", portfolio.get("n_trades"), ">=", gates.min_trades, "trades out of sample")
    if capacity is None:
        return gate
    most = int(capacity["max_bets"])
    arithmetic = (
        f"{capacity['rows']} test rows / {capacity['horizon']}-bar bets = at most {most} "
        "non-overlapping bets (rows // horizon, per instrument)"
    )
    gate["capacity"] = most
    if most < gates.min_trades:
        gate.update(
            passed=False,
            verdict=INSUFFICIENT,
            detail=f"{arithmetic} < min_trades {gates.min_trades}: this window cannot pass whatever the "
            "skill; lengthen train.test_days / train.oos_windows or shorten train.horizon",
        )
    else:
        gate["detail"] = f"trades out of sample; {arithmetic}"
    return gate


def evaluate_gates(
    portfolio: dict[str, Any],
    gates: GateParams,
    champion: dict[str, Any] | None = None,
    *,
    dsr: dict[str, Any] | None = None,
    capacity: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The list of gate results.

    ``portfolio``: pooled OOS metrics; ``dsr``: ``metrics.deflated_sharpe_ratio`` output (with its
    ``n_trials``; missing → the gate fails); ``capacity``: ``evaluation.capacity``; ``champion``:
    ``{"version", "sharpe", "candidate_sharpe"}`` or ``{"version", "skipped"}``.
    """
    pf, expectancy = portfolio.get("profit_factor"), portfolio.get("expectancy")
    dsr_value = None if dsr is None else dsr.get("dsr")
    n_trials = None if dsr is None else dsr.get("n_trials")
    out = [
        _gate(
            "sharpe",
            portfolio.get("sharpe"),
            ">",
            gates.min_sharpe,
            f"annualised Sharpe of the pooled out-of-sample daily returns{_ci_text(portfolio)}",
        ),
        _gate(
            "max_drawdown",
            portfolio.get("max_drawdown"),
            "<",
            gates.max_drawdown,
            "largest peak-to-trough fall",
        ),
        _gate(
            "win_rate",
            portfolio.get("win_rate"),
            ">",
            gates.min_win_rate,
            f"winning trades / trades; profit factor {'–' if pf is None else f'{pf:.2f}'}, expectancy "
            f"{_pct(expectancy)} per trade"
            + (
                " — wins more trades than it loses, but loses more than it wins"
                if (portfolio.get("win_rate") or 0) > 0.5 and (expectancy or 0) < 0
                else ""
            ),
        ),
        trades_gate(portfolio, gates, capacity),
        _gate(
            "dsr",
            dsr_value,
            ">=",
            gates.min_dsr,
            "deflated Sharpe ratio: P(true Sharpe > best of "
            + ("? " if n_trials is None else f"{int(n_trials)} ")
            + "unskilled trials)",
        ),
    ]
    out[2]["profit_factor"], out[2]["expectancy"] = pf, expectancy
    if champion is not None:
        if "sharpe" in champion:
            required = required_vs_champion(float(champion["sharpe"]), gates.max_regression)
            out.append(
                _gate(
                    "champion_regression",
                    champion.get("candidate_sharpe", portfolio.get("sharpe")),
                    ">=",
                    required,
                    f"champion v{champion['version']} Sharpe {champion['sharpe']:.3f} on the same (last) test "
                    f"window, at most {gates.max_regression:.0%} worse",
                )
            )
        else:
            out.append(
                {
                    "name": "champion_regression",
                    "value": portfolio.get("sharpe"),
                    "op": ">=",
                    "threshold": None,
                    "passed": True,
                    "verdict": SKIPPED,
                    "detail": champion.get("skipped", "champion not comparable"),
                }
            )
    return out


def decide(results: list[dict[str, Any]]) -> bool:
    return all(r["passed"] for r in results)


def verdict(results: list[dict[str, Any]]) -> str:
    """``pass`` when every gate passes; ``insufficient_evidence`` when a gate could not decide; else ``fail``."""
    if decide(results):
        return PASS
    if any(r["verdict"] == INSUFFICIENT for r in results):
        return INSUFFICIENT
    return FAIL


def failures(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        if r["passed"]:
            continue
        if r["verdict"] == INSUFFICIENT:
            out.append(f"{r['name']}: insufficient evidence — {r['detail']}")
        else:
            out.append(f"{r['name']} {r['value']!r} not {r['op']} {r['threshold']!r}")
    return out
