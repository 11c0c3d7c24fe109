"""The promotion gates' operating characteristic on the simulated market: false passes and power.

For each planted signal strength (0 = no signal, the ``realistic`` preset, and stronger ones up to the
demo's 4.0) and each seed, this runs the pipeline's modelling exactly as the stages do
(``autotrader.modeling.pipeline.run_modelling``: prepare → purged CV selection → walk-forward refits
→ pooled out-of-sample backtest → gates) on a fresh simulated market, and records whether each gate
and the whole decision passed, with the realised information coefficient and Sharpe.

At strength 0 a pass is a false pass. With ``k`` passes in ``n`` seeds the exact (Clopper–Pearson)
one-sided 95 % upper bound of the false-pass rate is ``beta.ppf(0.95, k + 1, n − k)``; 0 passes in
300 seeds bounds it at 0.99 % — the issue's ≤ 1 % target needs at least 299 null seeds, so that is
the default here (20 seeds with 0 passes would only bound it at 13.9 %).

Small windows keep it affordable on a shared 2-core machine: three instruments (BTCUSDT, EUR_USD,
SPY) of 5-minute bars, 36 days of history, four walk-forward windows of 4 days (16 days pooled),
3 CV folds; every other knob is params.yaml's. Runs in ``--workers`` processes; start it with ``nice -n 10``.

    nice -n 10 python bench/gate_power.py        # full: 300 null seeds + 20 per other strength
    python bench/gate_power.py --quick           # 3 seeds each, a smoke run
    python bench/gate_power.py --strengths 0.25,0.5 --seeds 6 --null-seeds 0   # calibration

Writes bench/results/gate_power.json (every run) and docs/gate_power.png (the curves).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

GATES = ("sharpe", "max_drawdown", "win_rate", "trades", "dsr")
INSTRUMENTS = (("binance", "BTCUSDT"), ("oanda", "EUR_USD"), ("ibkr", "SPY"))
LOOKBACK_DAYS, TEST_DAYS, WINDOWS, CV_FOLDS, WARMUP_DAYS = 36, 4, 4, 3, 4


def bench_params(seed: int, strength: float | str) -> Any:
    import yaml

    from autotrader.params import Params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["sim"] = {**raw["data"]["sim"], "seed": seed, "signal_strength": strength}
    raw["train"].update(
        lookback_days=LOOKBACK_DAYS,
        test_days=TEST_DAYS,
        oos_windows=WINDOWS,
        cv_folds=CV_FOLDS,
        bootstrap_samples=200,
    )
    return Params.model_validate(raw)


def one_run(job: tuple[str, int]) -> dict[str, Any]:
    """Simulate, model, gate: one seed at one strength."""
    import pandas as pd

    from autotrader.features import feature_names
    from autotrader.modeling.dataset import features_in_memory
    from autotrader.modeling.pipeline import run_modelling
    from autotrader.params import Instrument
    from autotrader.sources.sim import SimulatedMarket, resolve_strength

    label, seed = job
    strength: float | str = label if label == "realistic" else float(label)
    params = bench_params(seed, strength)
    started = time.perf_counter()
    sim = SimulatedMarket(seed=seed, signal_strength=strength)
    end = params.data.end_ts()
    start = end - pd.Timedelta(days=LOOKBACK_DAYS + WARMUP_DAYS)
    bars = pd.concat(
        [
            sim.fetch(Instrument(broker=b, symbol=s), start, end, params.data.interval_td)
            for b, s in INSTRUMENTS
        ],
        ignore_index=True,
    )
    frame = features_in_memory(bars, params)
    outcome = run_modelling(frame, params, feature_names(params.features))
    m = outcome.evaluation.metrics
    p = m["portfolio"]
    return {
        "strength": label,
        "planted": resolve_strength(strength),
        "seed": seed,
        "promote": outcome.promote,
        "verdict": outcome.verdict,
        "gates": {g["name"]: bool(g["passed"]) for g in outcome.gates},
        "ic": m["ic"],
        "sharpe": p["sharpe"],
        "sharpe_gross": p["sharpe_gross"],
        "dsr": m["dsr"]["dsr"],
        "win_rate": p["win_rate"],
        "n_trades": p["n_trades"],
        "chosen": outcome.training.chosen,
        "seconds": round(time.perf_counter() - started, 2),
    }


def upper_bound(passes: int, n: int, confidence: float = 0.95) -> float:
    """Exact one-sided Clopper–Pearson upper bound of a rate with ``passes`` in ``n``."""
    from scipy import stats

    return 1.0 if passes >= n else float(stats.beta.ppf(confidence, passes + 1, n - passes))


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import numpy as np

    rows = []
    for label in dict.fromkeys(r["strength"] for r in runs):
        mine = [r for r in runs if r["strength"] == label]
        n, passes = len(mine), sum(r["promote"] for r in mine)
        rows.append(
            {
                "strength": label,
                "planted": mine[0]["planted"],
                "seeds": n,
                "decision_passes": passes,
                "decision_rate": passes / n,
                "decision_upper95": upper_bound(passes, n),
                "gate_rates": {g: float(np.mean([r["gates"][g] for r in mine])) for g in GATES},
                "insufficient_evidence": sum(r["verdict"] == "insufficient_evidence" for r in mine),
                "ic_median": float(np.median([r["ic"] for r in mine])),
                "sharpe_median": float(np.median([r["sharpe"] for r in mine])),
                "sharpe_gross_median": float(np.median([r["sharpe_gross"] for r in mine])),
                "dsr_median": float(np.median([r["dsr"] for r in mine])),
            }
        )
    return sorted(rows, key=lambda r: r["planted"])


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| strength | seeds | decision passes | rate (95 % upper) | Sharpe | DD | win | trades | DSR "
        "| median IC | median Sharpe (gross) | median DSR |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        g = r["gate_rates"]
        name = r["strength"] if r["strength"] != "realistic" else f"realistic ({r['planted']:g})"
        lines.append(
            f"| {name} | {r['seeds']} | {r['decision_passes']} | {r['decision_rate']:.1%} "
            f"({r['decision_upper95']:.2%}) | {g['sharpe']:.0%} | {g['max_drawdown']:.0%} | "
            f"{g['win_rate']:.0%} | {g['trades']:.0%} | {g['dsr']:.0%} | {r['ic_median']:.3f} | "
            f"{r['sharpe_median']:.1f} ({r['sharpe_gross_median']:.1f}) | {r['dsr_median']:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["planted"] for r in rows]
    fig, (ax, ax_ic) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(x, [r["decision_rate"] for r in rows], "k-o", lw=2, label="whole decision")
    for g in GATES:
        ax.plot(x, [r["gate_rates"][g] for r in rows], "--", marker=".", label=g)
    for r in rows:
        if r["strength"] == "realistic":
            ax.axvline(r["planted"], color="grey", ls=":", lw=1)
            ax.annotate("realistic", (r["planted"], 0.9), rotation=90, fontsize=8)
    ax.set_xlabel("planted signal strength")
    ax.set_ylabel("pass rate")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("Gate pass rates (walk-forward, 16 OOS days)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_ic.plot(x, [r["ic_median"] for r in rows], "b-o", label="median realised IC")
    ax_ic.axhspan(0.01, 0.05, color="green", alpha=0.1, label="real intraday IC (0.01–0.05)")
    ax_ic.set_xlabel("planted signal strength")
    ax_ic.set_ylabel("IC (prediction vs forward return)")
    ax_ic.set_title("Realised information coefficient")
    ax_ic.legend(fontsize=8)
    ax_ic.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strengths", default="realistic,0.25,1,2,4", help="besides 0 (the null market)")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per strength other than 0")
    parser.add_argument("--null-seeds", type=int, default=300, help="seeds at strength 0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 seeds each")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs already in --out (same planted strength and seed: the same market and pipeline)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gate_power.json"))
    parser.add_argument("--plot", default=str(REPO / "docs" / "gate_power.png"))
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.null_seeds = 3, 3
    jobs = [("0", s) for s in range(1, args.null_seeds + 1)]
    jobs += [(label, s) for label in args.strengths.split(",") if label for s in range(1, args.seeds + 1)]
    started = time.perf_counter()
    os.environ.setdefault("AUTOTRADER_MODEL_THREADS", "1")
    done: dict[tuple[float, int], dict[str, Any]] = {}
    if args.resume and Path(args.out).is_file():
        done = {(r["planted"], r["seed"]): r for r in json.loads(Path(args.out).read_text())["runs"]}
    from autotrader.sources.sim import resolve_strength

    def planted(label: str) -> float:
        return resolve_strength(label if label == "realistic" else float(label))

    todo = [j for j in jobs if (planted(j[0]), j[1]) not in done]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} reused from {args.out}", flush=True)
    fresh: dict[tuple[str, int], dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:  # run the whole bench under `nice -n 10`
        for i, run in enumerate(pool.map(one_run, todo, chunksize=1), start=1):
            fresh[(run["strength"], run["seed"])] = run
            if i % 20 == 0 or i == len(todo):
                print(f"  {i}/{len(todo)} runs, {time.perf_counter() - started:.0f} s", flush=True)
    runs = [fresh.get(j) or {**done[(planted(j[0]), j[1])], "strength": j[0]} for j in jobs]
    rows = summarise(runs)
    print(table(rows))
    null = next((r for r in rows if r["strength"] == "0"), None)
    if null:
        print(
            f"\nstrength 0: {null['decision_passes']} false passes in {null['seeds']} seeds → exact one-sided "
            f"95 % upper bound of the false-pass rate {null['decision_upper95']:.2%}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "python bench/gate_power.py " + " ".join(sys.argv[1:]),
                "config": {
                    "instruments": [f"{b}/{s}" for b, s in INSTRUMENTS],
                    "lookback_days": LOOKBACK_DAYS,
                    "test_days": TEST_DAYS,
                    "oos_windows": WINDOWS,
                    "cv_folds": CV_FOLDS,
                },
                "seconds": round(time.perf_counter() - started, 1),
                "load_average": os.getloadavg(),
                "summary": rows,
                "runs": runs,
            },
            indent=2,
        )
    )
    if args.plot:
        plot(rows, Path(args.plot))
    print(f"→ {out}" + (f", {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
