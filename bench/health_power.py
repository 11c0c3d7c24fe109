"""Operating characteristic of the health check: how often it alarms on an unchanged market, how often it
catches a known shift. Not a timed test: it prints a table (docs/archive_health.md holds the last one).

    nice -n 10 .venv/bin/python bench/health_power.py            # ≈ 5 min on 2 cores (1 050 runs)
    nice -n 10 .venv/bin/python bench/health_power.py --quick    # a smoke run, a few trials each

Each trial is one daily health run (``autotrader.health.assess``, the stage's judgement without the
HTML) on a freshly seeded simulated market of 28 days ending at a logical date that cycles through
the week (so FX weekends and NYSE closures take their turn), with params.yaml's ``health`` knobs:

* **false alarm** — all seven default instruments, no regime change (``regime_switching=False``);
  the run alarms if its status is not ``ok`` (stale, gap, jump or drift on any instrument);
* **regime-switching market** — the same on the default market, whose volatility switches between
  calm and stormy regimes (what a regime switch looks like to the check is in the docs);
* **detection** — one instrument per trial (cycling through the seven) on the no-regime market, the
  shift injected into its latest trading day (``autotrader.health.inject``); detected when that
  instrument's verdict is not ``ok``. The one-hour gap starts at a random bar of the day, with bars after it.

Results: the table on stdout and bench/results/health_power.json. Rates carry exact two-sided 95 %
Clopper–Pearson intervals: with n trials and no failure the bound is 1 − 0.025^(1/n), so n ≥ 72 is
needed before "0 of n" can claim < 5 %; the defaults (300 null runs, 100 per shift) leave room for a few.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "health_power.json"
sys.path.insert(0, str(REPO / "src"))

from autotrader.health import assess  # noqa: E402
from autotrader.health.inject import SHIFTS  # noqa: E402
from autotrader.health.windows import instrument_windows  # noqa: E402
from autotrader.params import Instrument, Params, load_params  # noqa: E402
from autotrader.sources.sim import SimulatedMarket  # noqa: E402

INTERVAL = pd.Timedelta("5min")
HISTORY = pd.Timedelta(days=28)  # 14 reference + 1 current trading days of NYSE, holidays included
FIRST_END = pd.Timestamp("2026-03-02", tz="UTC")  # a Monday; trial k ends k days later (mod 28)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def _market(seed: int, regimes: bool, at: pd.Timestamp) -> SimulatedMarket:
    return SimulatedMarket(seed=seed, signal_strength=4.0, epoch=at - HISTORY, regime_switching=regimes)


def _at(trial: int) -> pd.Timestamp:
    return FIRST_END + pd.Timedelta(days=trial % 28)


def null_trial(args: tuple[Params, int, bool]) -> tuple[bool, list[str]]:
    """One daily run over every instrument of an unchanged market: did it alarm, and on what?"""
    params, trial, regimes = args
    at = _at(trial)
    market = _market(10_000 + trial, regimes, at)
    frame = pd.concat(
        [market.fetch(i, at - HISTORY, at, INTERVAL) for i in params.data.instruments], ignore_index=True
    )
    report = assess(frame, at, INTERVAL, params.health)
    return report.alarm, [f"{key} {tag}" for key in report.instruments for tag in report.reasons(key)]


def shift_trial(args: tuple[Params, str, int]) -> tuple[bool, list[str]]:
    """One instrument with ``shift`` in its latest trading day: is it flagged, and by what?"""
    params, shift, trial = args
    instruments = params.data.instruments
    inst: Instrument = instruments[trial % len(instruments)]
    at = _at(trial)
    bars = _market(20_000 + trial, False, at).fetch(inst, at - HISTORY, at, INTERVAL)
    windows = instrument_windows(
        inst.key, inst.broker, bars["timestamp"].iloc[0], at, INTERVAL,
        params.health.current_days, params.health.reference_days,
    )  # fmt: skip
    since = windows.expected[len(windows.expected) - windows.current_bars]
    if shift == "one-hour gap":  # anywhere in the day, as long as a bar follows it (else it is staleness)
        day = bars["timestamp"][bars["timestamp"] >= since]
        last_start = day.iloc[-1] - pd.Timedelta(hours=1) - INTERVAL
        choices = day[day <= last_start]
        since = choices.iloc[np.random.default_rng(trial).integers(len(choices))]
    shifted = SHIFTS[shift](bars, since)
    reasons = assess(shifted, at, INTERVAL, params.health).reasons(inst.key)
    return bool(reasons), reasons


def _by(results: list[tuple[bool, list[str]]], strip_instrument: bool = False) -> str:
    """What flagged the trials: each tag with the share of trials it appeared in, most common first."""
    counts: Counter[str] = Counter()
    for _, tags in results:
        counts.update({t.split(" ")[-1] if strip_instrument else t for t in tags})
    return ", ".join(f"{t} {n / len(results):.0%}" for t, n in counts.most_common(4)) or "—"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-trials", type=int, default=300)
    parser.add_argument("--regime-trials", type=int, default=150)
    parser.add_argument("--shift-trials", type=int, default=100)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="a few trials each (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.null_trials, args.regime_trials, args.shift_trials = 8, 4, 4

    params = load_params(REPO / "params.yaml")  # once: every worker judges with the same knobs
    load_start = os.getloadavg()
    started = time.perf_counter()
    # Warm the threshold cache for the common window sizes before the workers fork (they inherit it).
    null_trial((params, 0, False))
    for t in (0, 5):  # a 24 h market and NYSE, a gap shortens their day
        shift_trial((params, "one-hour gap", t))
    rows: list[tuple[str, str, int, int, str]] = []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("fork")) as pool:
        null = list(pool.map(null_trial, [(params, t, False) for t in range(args.null_trials)], chunksize=4))
        alarms = [r for r in null if r[0]]
        rows.append(
            (
                "false alarm, no regime change",
                "≤ 5 %",
                len(alarms),
                len(null),
                "; ".join(t for _, tags in alarms for t in tags) or "—",
            )
        )
        for shift in SHIFTS:
            hits = list(
                pool.map(shift_trial, [(params, shift, t) for t in range(args.shift_trials)], chunksize=4)
            )
            rows.append((f"detection: {shift}", "≥ 95 %", sum(h for h, _ in hits), len(hits), _by(hits)))
        regime = list(
            pool.map(null_trial, [(params, t, True) for t in range(args.regime_trials)], chunksize=4)
        )
        rows.append(
            (
                "alarm rate, default regime-switching market",
                "(reported)",
                sum(a for a, _ in regime),
                len(regime),
                _by(regime, strip_instrument=True),
            )
        )
        flagged = sum(len({t.split(" ")[0] for t in tags}) for _, tags in regime)
        n_inst = len(params.data.instruments) * len(regime)
        rows.append(
            ("  instrument-days flagged there", "(reported)", flagged, n_inst, "per instrument and day")
        )

    print("| case | target | alarms / trials | rate | 95 % CI (Clopper–Pearson) | holds | flagged by |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for name, target, k, n, by in rows:
        lo, hi = clopper_pearson(k, n)
        holds = "—"
        if target.startswith("≤"):
            holds = "yes" if hi <= 0.05 else ("rate only" if k / n <= 0.05 else "no")
        elif target.startswith("≥"):
            holds = "yes" if lo >= 0.95 else ("rate only" if k / n >= 0.95 else "no")
        ok &= holds != "no"
        print(f"| {name} | {target} | {k} / {n} | {k / n:.1%} | {lo:.1%} – {hi:.1%} | {holds} | {by} |")
    wall = time.perf_counter() - started
    load_end = os.getloadavg()
    print(
        f"\n{wall:.0f} s wall, {args.workers} worker(s), load average {load_start[0]:.1f} → {load_end[0]:.1f}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "health": params.health.model_dump(),
                "rows": [
                    {
                        "case": name.strip(),
                        "target": target,
                        "alarms": k,
                        "trials": n,
                        "ci95": clopper_pearson(k, n),
                        "flagged_by": by,
                    }
                    for name, target, k, n, by in rows
                ],
                "wall_s": round(wall, 1),
                "machine": {
                    "cpus": os.cpu_count(),
                    "workers": args.workers,
                    "loadavg_start": load_start,
                    "loadavg_end": load_end,
                },
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
