"""Training benchmark: 90 days of one-minute bars, the full feature set, 5-fold purged walk-forward CV.

Two crypto instruments (binance/BTCUSDT and binance/ETHUSDT, 24/7: 90 × 1440 = 129,600 bars each,
≈ 259k rows) from the simulated market (default signal strength) are written once to Parquet; then
each run is a fresh process that reads them and does what ``prepare`` + ``train`` do, in memory:

    features (compute_features per instrument) → label + purged/embargoed split → fit
    (5-fold walk-forward CV of every candidate in params, holdout check, final refit)

Wall time per phase and the process's peak RSS (``getrusage``) are reported; the figures are the
median over ``--runs`` runs (default 3). MLflow logging is not included (it does not grow with data).

Targets: total ≤ 120 s and peak RSS ≤ 2 GB on the 2-core CI machine.

    .venv/bin/python bench/training.py             # the benchmark (3 runs)
    .venv/bin/python bench/training.py --runs 1    # one run
    .venv/bin/python bench/training.py --quick     # 10 days, 1 run: a smoke test

Results: a rich table and ``bench/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "training.json"
INSTRUMENTS = (("binance", "BTCUSDT"), ("binance", "ETHUSDT"))
TARGET_WALL_S = 120.0
TARGET_RSS_MB = 2048.0
PHASES = ("read", "features", "prepare", "fit", "total")

console = Console(stderr=True)


def bench_params(days: int):
    from autotrader.params import Params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["interval"] = "1min"
    raw["data"]["lookback_days"] = days
    raw["data"]["instruments"] = [{"broker": b, "symbol": s} for b, s in INSTRUMENTS]
    raw["train"]["lookback_days"] = days
    raw["train"]["test_days"] = max(2, days * 2 // 9)
    raw["train"]["oos_windows"] = 1  # one test window, as measured before walk-forward evaluation existed
    raw["train"]["cv_folds"] = 5
    return Params.model_validate(raw)


def make_bars(days: int, path: Path) -> int:
    from autotrader.params import Instrument
    from autotrader.sources.sim import SimulatedMarket

    params = bench_params(days)
    sim = SimulatedMarket(seed=params.data.sim.seed, signal_strength=params.data.sim.signal_strength)
    end = params.data.end_ts()
    start = end - pd.Timedelta(days=days + 1)  # one day of feature warm-up before the window
    frames = [
        sim.fetch(Instrument(broker=b, symbol=s), start, end, params.data.interval_td) for b, s in INSTRUMENTS
    ]
    bars = pd.concat(frames, ignore_index=True)
    bars.to_parquet(path, index=False)
    return len(bars)


def worker(bars_path: Path, days: int) -> dict[str, Any]:
    """One measured run (in its own process)."""
    from autotrader.features import feature_names
    from autotrader.modeling.dataset import features_in_memory, prepare_frame
    from autotrader.modeling.train import fit

    params = bench_params(days)
    times: dict[str, float] = {}
    t0 = t = time.perf_counter()
    bars = pd.read_parquet(bars_path)
    times["read"] = time.perf_counter() - t
    t = time.perf_counter()
    frame = features_in_memory(bars, params)
    times["features"] = time.perf_counter() - t
    t = time.perf_counter()
    features = feature_names(params.features)
    prepared = prepare_frame(frame, params, features)
    times["prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    result = fit(prepared.parts["train"], prepared.parts["valid"], features, params.train)
    times["fit"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    return {
        "seconds": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rows": {"bars": len(bars), **{k: len(v) for k, v in prepared.parts.items()}},
        "chosen": result.chosen,
        "cv": {k: v.mean for k, v in result.candidates.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--quick", action="store_true", help="10 days, 1 run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker), args.days)))
        return 0
    days, runs = (10, 1) if args.quick else (args.days, args.runs)

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        bars_path = Path(tmp) / "bars.parquet"
        with console.status(f"simulating {days} days of 1-minute bars for {len(INSTRUMENTS)} instruments"):
            n_bars = make_bars(days, bars_path)
        results = []
        for i in range(runs):
            with console.status(f"run {i + 1}/{runs}: features → prepare → 5-fold purged CV → fit"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", str(bars_path), "--days", str(days)],
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    check=False,
                )
            if proc.returncode != 0:
                console.print(proc.stderr[-3000:])
                return proc.returncode
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            console.print(
                f"run {i + 1}: {results[-1]['seconds']['total']:.1f} s, {results[-1]['peak_rss_mb']:.0f} MB"
            )

    median = {p: statistics.median(r["seconds"][p] for r in results) for p in PHASES}
    rss = statistics.median(r["peak_rss_mb"] for r in results)
    report = {
        "what": f"{days} days × 1440 one-minute bars × {len(INSTRUMENTS)} instruments "
        f"({', '.join(f'{b}/{s}' for b, s in INSTRUMENTS)}), full feature set, 5-fold purged walk-forward CV",
        "runs": runs,
        "bars": n_bars,
        "rows": results[0]["rows"],
        "median_seconds": median,
        "median_peak_rss_mb": rss,
        "all_runs": results,
        "targets": {"total_s": TARGET_WALL_S, "peak_rss_mb": TARGET_RSS_MB},
        "meets_targets": median["total"] <= TARGET_WALL_S and rss <= TARGET_RSS_MB,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "model_threads": os.environ.get("AUTOTRADER_MODEL_THREADS", "1"),
    }
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"Training benchmark (median of {runs} run(s))")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for phase in PHASES:
        table.add_row(phase, f"{median[phase]:.1f}")
    table.add_row("peak RSS (MB)", f"{rss:.0f}")
    table.add_row(
        "rows (train/valid/test)", "/".join(str(report["rows"][k]) for k in ("train", "valid", "test"))
    )
    Console().print(table)
    verdict = "[green]meets[/]" if report["meets_targets"] else "[red]misses[/]"
    Console().print(f"{verdict} the targets: ≤ {TARGET_WALL_S:.0f} s, ≤ {TARGET_RSS_MB:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
