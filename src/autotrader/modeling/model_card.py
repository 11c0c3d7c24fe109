"""The model card: a Markdown page a reviewer reads before approving a promotion.

``train`` writes a first version (data, features, selection) to the MLflow run; ``evaluate``
rewrites it with the walk-forward backtest, the confidence intervals, the deflated Sharpe with its
trial count and the gate thresholds to ``reports/model_card.md`` and the same run. On simulated data
it says so, and any Sharpe above ``IMPLAUSIBLE_SHARPE`` is flagged as implausible for a real market.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotrader.modeling.gates import INSUFFICIENT, evaluate_gates
from autotrader.params import Params

# Annualised Sharpe above which a backtest is implausible for a real market (the best systematic
# funds run at 1–3 after costs); on the simulated market it only means the planted signal is strong.
IMPLAUSIBLE_SHARPE = 6.0


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# The card's names for the gates of ``autotrader.modeling.gates.evaluate_gates``.
GATE_LABELS = {
    "sharpe": "Sharpe (annualised, daily, pooled OOS)",
    "max_drawdown": "Max drawdown",
    "win_rate": "Win rate (trades)",
    "trades": "Trades",
    "dsr": "Deflated Sharpe ratio",
}


def gate_preview(
    params: Params,
    portfolio: Mapping[str, Any],
    dsr: Mapping[str, Any] | None = None,
    capacity: Mapping[str, Any] | None = None,
) -> list[list[Any]]:
    """Each gate's threshold, this backtest's value and verdict: ``evaluate_gates`` itself decides.

    The card calls the gate stage's own function (without the champion, which the gate stage adds), so
    the card and metrics/gates.json cannot disagree on a threshold, an operator or a verdict.
    ``dsr`` and ``capacity`` are the evaluation's ``dsr`` and ``capacity`` records.
    """
    results = evaluate_gates(
        dict(portfolio),
        params.gates,
        dsr=dict(dsr) if dsr else None,
        capacity=dict(capacity) if capacity and "max_bets" in capacity else None,
    )
    rows = []
    for gate in results:
        if gate["verdict"] == INSUFFICIENT:
            passes: Any = "insufficient evidence"
        else:
            passes = None if gate["value"] is None else gate["passed"]
        op = "≥" if gate["op"] == ">=" else gate["op"]
        label = GATE_LABELS.get(gate["name"], gate["name"])
        rows.append([label, f"{op} {_fmt(gate['threshold'])}", gate["value"], passes])
    return rows


def render(
    params: Params,
    *,
    training: Mapping[str, Any],
    prepared: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None = None,
) -> str:
    """The card as Markdown. ``training`` is metrics/train.json, ``prepared`` is splits.json."""
    b = prepared.get("boundaries", {})
    splits = prepared.get("splits", {})
    features = prepared.get("features", [])
    instruments = sorted(splits.get("test", {}).get("instruments", {}))
    parts = [
        f"# Model card — {params.mlflow.model_name}",
        "",
        f"*Candidate* **{training.get('chosen')}** · MLflow run `{training.get('run_id')}` · logged model "
        f"`{training.get('model_id')}` · data version `{training.get('data_version')}` · git "
        f"`{training.get('git_commit') or 'n/a'}`",
        "",
        SUMMARY_HEADING,
        "",
        summary(params, training=training, prepared=prepared, evaluation=evaluation),
        "",
        "## Intended use",
        "",
        "Directional signal for intraday trading of the instruments below: for each closed bar it predicts "
        f"whether the log return over the next **{params.train.horizon} bars** will be above "
        f"+{params.train.cost_threshold_bps:g} bps (**1**, long), below −{params.train.cost_threshold_bps:g} bps "
        "(**−1**, short) or in between (**0**, flat). Inputs are the feature-store columns listed below, "
        "computed causally from bars up to and including the bar being predicted. Each signal is a bet held "
        f"{params.train.horizon} bars (see docs/training.md, holding rule).",
        "",
        "Not for: instruments, bar intervals or brokers it was not trained on; position sizing; any use "
        "without the gates below and the canary analysis in production.",
        "",
        "## Data",
        "",
        _table(
            ["split", "from", "to", "rows", "short / flat / long"],
            [
                [
                    name,
                    splits.get(name, {}).get("first"),
                    splits.get(name, {}).get("last"),
                    splits.get(name, {}).get("rows"),
                    " / ".join(
                        str(splits.get(name, {}).get("classes", {}).get(c, 0)) for c in ("-1", "0", "1")
                    ),
                ]
                for name in ("train", "valid", "test")
            ],
        ),
        "",
        f"Window [{b.get('start')}, {b.get('end')}); test from {b.get('test_start')}; validation from "
        f"{b.get('valid_start')}. Purge: {params.train.horizon} bars (label horizon); embargo: "
        f"{params.train.embargo} bars, between each pair of adjacent splits and before each CV fold.",
        "",
        f"Instruments: {', '.join(instruments) or '–'}. Bar interval: {prepared.get('interval')}. "
        f"Feature set version {prepared.get('feature_set_version')}.",
        "",
        f"Features ({len(features)}): {', '.join(f'`{f}`' for f in features)}.",
        "",
        "## Training and selection",
        "",
        f"Purged, embargoed walk-forward CV ({params.train.cv_folds} folds) on the train split; metric "
        f"`{params.train.cv_metric}`; seed {params.train.seed}.",
        "",
        _table(
            ["candidate", f"CV {params.train.cv_metric} (mean)", "chosen"],
            [
                [name, cv.get("mean"), name == training.get("chosen")]
                for name, cv in (training.get("cv") or {}).items()
            ],
        ),
        "",
        "Holdout check on the validation split (model fitted on train only): "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in (training.get("valid") or {}).items()),
        "",
    ]
    if evaluation is None:
        parts += ["## Backtest", "", "*Pending: the evaluate stage fills this in.*", ""]
    else:
        portfolio = evaluation.get("portfolio", {})
        dsr = evaluation.get("dsr", {})
        trials = dsr.get("trials") or {}
        capacity = evaluation.get("capacity") or {}
        windows = evaluation.get("windows") or []
        ci = portfolio.get("sharpe_ci") or [None, None]
        level = (evaluation.get("ci") or {}).get("level", params.train.ci_level)
        parts += warnings(evaluation, params)
        parts += [
            "## Walk-forward backtest (out of sample)",
            "",
            f"{len(windows)} consecutive test windows of {params.train.test_days} days; before each, the chosen "
            "configuration was refitted on everything before it (purged, embargoed, uniqueness-weighted), as the "
            "weekly retraining would; the last window's model is this model. The gates judge the pooled returns. "
            f"Fills at the {'next bar’s open' if evaluation.get('fill', 'next_open') == 'next_open' else 'same bar’s close'}. "
            "Costs: fees per broker "
            + ", ".join(f"{k} {v:g} bps" for k, v in params.costs.fees_bps.items())
            + " + half the quoted spread, paid only when the position changes. Sharpe from daily returns, "
            "annualised on the calendar of what the portfolio holds (docs/training.md). "
            f"Intervals: {level:.0%} stationary-bootstrap percentile intervals of the Sharpe.",
            "",
            _table(
                ["window", "from", "to", "model", "Sharpe", f"{level:.0%} CI", "trades", "win rate"],
                [
                    [
                        k + 1,
                        w.get("start"),
                        w.get("end"),
                        w.get("model"),
                        w.get("sharpe"),
                        _interval(w.get("sharpe_ci")),
                        w.get("n_trades"),
                        w.get("win_rate"),
                    ]
                    for k, w in enumerate(windows)
                ]
                + [
                    [
                        "**pooled**",
                        "",
                        "",
                        "",
                        portfolio.get("sharpe"),
                        _interval(ci),
                        portfolio.get("n_trades"),
                        portfolio.get("win_rate"),
                    ]
                ],
            ),
            "",
            f"Deflated Sharpe ratio **{_fmt(dsr.get('dsr'))}** (gate ≥ {params.gates.min_dsr:g}) over "
            f"**{_fmt(dsr.get('n_trials'), 0)} trials**: {trials.get('source', 'this run’s candidates')}. "
            f"Profit factor {_fmt(portfolio.get('profit_factor'), 2)}, expectancy "
            f"{_fmt(_bps(portfolio.get('expectancy')), 1)} bps per trade. "
            f"Capacity: {capacity.get('rows', '–')} test rows / {capacity.get('horizon', '–')}-bar bets = at most "
            f"{capacity.get('max_bets', '–')} non-overlapping bets (min_trades {params.gates.min_trades}).",
            "",
            _table(
                ["", "Sharpe", "gross Sharpe", "max DD", "win rate", "trades", "profit factor", "return"],
                [
                    [
                        "**portfolio**",
                        portfolio.get("sharpe"),
                        portfolio.get("sharpe_gross"),
                        portfolio.get("max_drawdown"),
                        portfolio.get("win_rate"),
                        portfolio.get("n_trades"),
                        portfolio.get("profit_factor"),
                        portfolio.get("total_return"),
                    ]
                ]
                + [
                    [
                        key,
                        m.get("sharpe"),
                        m.get("sharpe_gross"),
                        m.get("max_drawdown"),
                        m.get("win_rate"),
                        m.get("n_trades"),
                        m.get("profit_factor"),
                        m.get("total_return"),
                    ]
                    for key, m in sorted((evaluation.get("instruments") or {}).items())
                ],
            ),
            "",
            "Prediction quality: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in (evaluation.get("classification") or {}).items())
            + f"; IC {_fmt(evaluation.get('ic'))}, rank IC {_fmt(evaluation.get('rank_ic'))}.",
            "",
            f"Deflated Sharpe ratio {_fmt(evaluation.get('dsr', {}).get('dsr'))} for "
            f"{_fmt(evaluation.get('dsr', {}).get('n_trials'), 0)} configuration(s) tried.",
            "",
            "## Gates (portfolio, pooled out of sample)",
            "",
            _table(
                ["gate", "threshold", "value", "passes"],
                gate_preview(params, portfolio, dsr, capacity),
            ),
            "",
            f"Plus, when a `champion` exists: Sharpe ≥ champion's × (1 − {params.gates.max_regression:g}) on the "
            "same test window. The decision is in metrics/gates.json.",
            "",
        ]
    parts += [
        "## Limitations",
        "",
        "- Sharpe's standard error is about √(periods per year / days): ±2.1 over 80 days at 365, ±4.3 over one "
        "20-day window; read the intervals above, not the point estimates.",
        "- Trained on one market regime; drift monitoring (health stage) and canary analysis guard the rest.",
        "- Ignores market impact, latency, funding/borrow costs and partial fills.",
        "- On the simulated market the signal is planted; a pass there shows the pipeline works, not that a "
        "real market is predictable.",
        "",
    ]
    return "\n".join(parts)


SUMMARY_HEADING = "## Summary"


def summary(
    params: Params,
    *,
    training: Mapping[str, Any],
    prepared: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None = None,
) -> str:
    """A few sentences a reviewer reads first: what the model is, what it learnt from, how it did.

    The card's ``## Summary`` section, and the registered version's description in MLflow.
    """
    instruments = sorted(prepared.get("splits", {}).get("test", {}).get("instruments", {}))
    chosen = training.get("chosen")
    cv = (training.get("cv") or {}).get(chosen, {}) if chosen else {}
    text = (
        f"**{chosen}** signal for {', '.join(instruments) or '–'} ({prepared.get('interval')} bars): long, "
        f"flat or short over the next {params.train.horizon} bars. Chosen by purged walk-forward CV "
        f"({params.train.cv_metric} {_fmt(cv.get('mean'))}) on data `{training.get('data_version')}` "
        f"(the feature store's DVC hash), git `{(training.get('git_commit') or 'n/a')[:12]}`."
    )
    if evaluation is None:
        return text + " Backtest pending: the evaluate stage fills it in."
    portfolio = evaluation.get("portfolio") or {}
    dsr = evaluation.get("dsr") or {}
    windows = evaluation.get("windows") or []
    level = (evaluation.get("ci") or {}).get("level", params.train.ci_level)
    text += (
        f" Out of sample ({len(windows)} walk-forward windows of {params.train.test_days} days, pooled, "
        f"after costs): Sharpe {_fmt(portfolio.get('sharpe'), 2)} ({level:.0%} CI "
        f"{_interval(portfolio.get('sharpe_ci'))}), max drawdown {_pct(portfolio.get('max_drawdown'))}, "
        f"win rate {_pct(portfolio.get('win_rate'))}, {_fmt(portfolio.get('n_trades'))} trades; deflated "
        f"Sharpe {_fmt(dsr.get('dsr'))} over {_fmt(dsr.get('n_trials'), 0)} trials."
    )
    if evaluation.get("synthetic"):
        text += " Synthetic data: the signal is planted."
    return text


def card_summary(card: str) -> str:
    """The ``## Summary`` section of a rendered card (empty when the card has none)."""
    lines = card.splitlines()
    if SUMMARY_HEADING not in lines:
        return ""
    body = lines[lines.index(SUMMARY_HEADING) + 1 :]
    end = next((k for k, line in enumerate(body) if line.startswith("## ")), len(body))
    return "\n".join(body[:end]).strip()


def model_description() -> str:
    """The registered model's description in MLflow: what every version is, and where to read more."""
    return (
        "AutoTrader's intraday signal classifier: for each closed bar it predicts 1 (long), 0 (flat) or "
        "-1 (short) for the log return over the next `train.horizon` bars against the cost threshold. "
        "Inputs are the feature-store columns in each version's signature. A version is registered by "
        "`autotrader promote` only after every gate passed (walk-forward backtest, deflated Sharpe, champion "
        "comparison); aliases `staging` and `champion` point at versions. Each version's description is "
        "its model card summary; its tags carry the gate results, headline metrics, the data version (DVC "
        "hash of the feature store) and git commits; its run holds the full model card, plots and inputs."
    )


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def _interval(ci: Any) -> str:
    if not ci or ci[0] is None:
        return "–"
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _bps(value: Any) -> float | None:
    return None if value is None else float(value) * 1e4


def warnings(evaluation: Mapping[str, Any], params: Params) -> list[str]:
    """Synthetic data and implausible Sharpe ratios, said at the top of the backtest section."""
    out: list[str] = []
    if evaluation.get("synthetic"):
        out += [
            f"> **Synthetic data.** These bars come from the simulated market (signal strength "
            f"{evaluation.get('signal_strength')}); the signal is planted. A pass here shows the machinery "
            "works, not that a real market is predictable.",
            "",
        ]
    high = [
        name
        for name, value in [("pooled", (evaluation.get("portfolio") or {}).get("sharpe"))]
        + [(f"window {k + 1}", w.get("sharpe")) for k, w in enumerate(evaluation.get("windows") or [])]
        if value is not None and value > IMPLAUSIBLE_SHARPE
    ]
    if high:
        out += [
            f"> **Implausible Sharpe** (> {IMPLAUSIBLE_SHARPE:g}) in: {', '.join(high)}. No real market gives "
            "this after costs; on real data suspect leakage or a cost/fill error before believing it.",
            "",
        ]
    return out
