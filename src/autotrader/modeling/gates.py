"""Promotion gates: every one must pass for ``promote`` to register the model.

Portfolio level, from metrics/evaluate.json: Sharpe > ``min_sharpe``, max drawdown <
``max_drawdown``, win rate > ``min_win_rate``, trades ≥ ``min_trades``. Champion vs challenger: when
the registry has a ``champion``, the candidate's Sharpe must be ≥ the champion's Sharpe on the same
test window minus ``max_regression`` of its magnitude (champion × (1 − r) for a positive champion).
"""

from __future__ import annotations

from typing import Any

from autotrader.params import GateParams

OPS = {">": lambda v, t: v > t, "<": lambda v, t: v < t, ">=": lambda v, t: v >= t}


def _gate(name: str, value: float | None, op: str, threshold: float, detail: str = "") -> dict[str, Any]:
    passed = value is not None and bool(OPS[op](value, threshold))
    return {
        "name": name,
        "value": value,
        "op": op,
        "threshold": threshold,
        "passed": passed,
        "verdict": "pass" if passed else "fail",
        "detail": detail,
    }


def required_vs_champion(champion_sharpe: float, max_regression: float) -> float:
    return champion_sharpe - abs(champion_sharpe) * max_regression


def evaluate_gates(
    portfolio: dict[str, Any], gates: GateParams, champion: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The list of gate results. ``champion``: ``{"version", "sharpe"}`` or ``{"version", "skipped"}``."""
    out = [
        _gate("sharpe", portfolio.get("sharpe"), ">", gates.min_sharpe, "annualised Sharpe of daily returns"),
        _gate(
            "max_drawdown",
            portfolio.get("max_drawdown"),
            "<",
            gates.max_drawdown,
            "largest peak-to-trough fall",
        ),
        _gate("win_rate", portfolio.get("win_rate"), ">", gates.min_win_rate, "winning trades / trades"),
        _gate("trades", portfolio.get("n_trades"), ">=", gates.min_trades, "trades in the test window"),
    ]
    if champion is not None:
        if "sharpe" in champion:
            required = required_vs_champion(float(champion["sharpe"]), gates.max_regression)
            out.append(
                _gate(
                    "champion_regression",
                    portfolio.get("sharpe"),
                    ">=",
                    required,
                    f"champion v{champion['version']} Sharpe {champion['sharpe']:.3f} on the same test window, "
                    f"at most {gates.max_regression:.0%} worse",
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
                    "verdict": "skipped",
                    "detail": champion.get("skipped", "champion not comparable"),
                }
            )
    return out


def decide(results: list[dict[str, Any]]) -> bool:
    return all(r["passed"] for r in results)


def failures(results: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['name']} {r['value']!r} not {r['op']} {r['threshold']!r}" for r in results if not r["passed"]
    ]
