"""Data-pipeline benchmark: ~1M one-minute bars through extract → validate → features, stage by stage.

Each stage runs as its own process (``python stages/<name>.py``) in a temporary copy of the project,
started from a fresh measuring wrapper so that ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that
stage's own peak RSS (its largest process). Wall time and peak RSS are the median of ``--runs`` runs
(default 3). One more run, not timed, samples the memory of each stage and its helper processes
(``validate.processes``) together every 50 ms: the RSS sum and, near its high, their PSS (proportional
set size: a library mapped by two processes counts once, as it sits in memory once). Sampling costs
the stages CPU, hence a run of its own. The 1 GB target is held to a stage's PSS when helpers ran,
else to its RSS.

It also measures appending one new day to a 90-day feature store:

* store append: the 90-day store exists, one more day of raw arrives, ``stages/features.py`` runs
  (incremental) — against processing that day alone from an empty store, and against appending to a
  30-day store (the cost must not grow with history);
* pipeline append: ``data.end`` moves on by one day and extract → validate → features run again —
  against running the pipeline on that one day alone.

Every measurement also records CPU time (user+sys of the stage process, from ``getrusage``) and the
1-minute load average when it started: on a shared machine, wall time is mostly queueing, CPU is not.

Floors: after the pipeline runs, one fresh process does the least each stage must on the same bars
(extract: simulate + write once; validate: read + the rules' arithmetic in vectorised pandas;
features: read + nine grouped rolling features + write), timing imports and each step, wall and CPU;
the table prints each stage's ratio to its floor. Targets: end to end ≤ 15 s, validate ≤ 3 s,
features ≤ 2 s, ≤ 1 GB per stage.

Files path: the same bars as one CSV and one Parquet file per instrument (``data.source: files``),
through extract → validate → features (target ≤ 10 s from CSV).

Results: a rich table on the terminal and ``bench/results/data_pipeline.json``.

    .venv/bin/python bench/data_pipeline.py            # the full benchmark (a few minutes)
    .venv/bin/python bench/data_pipeline.py --quick    # ~100k bars, 1 run: a smoke test
    .venv/bin/python bench/data_pipeline.py --skip-append   # pipeline, floors and files path only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
PYTHON = sys.executable
RESULTS = REPO / "bench" / "results" / "data_pipeline.json"
PIPELINE = ("extract", "validate", "features")
TARGET_WALL_S = 15.0
TARGET_STAGE_S = {"validate": 3.0, "features": 2.0}
TARGET_FILES_CSV_S = 10.0
TARGET_RSS_MB = 1024.0
APPEND_RATIO_MAX = 2.0

console = Console()

# Runs one command, then reports its wall time and the peak RSS of the largest child it waited for.
_MEASURE = r"""
import json, os, resource, subprocess, sys, time
import psutil
log = open(sys.argv[1], "w")
load = os.getloadavg()[0]
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
tree_peak = tree_pss_peak = 0
pss_read = 0.0
stage = psutil.Process(proc.pid)
while os.environ.get("BENCH_SAMPLE_MEMORY") == "1" and proc.poll() is None:  # a memory run, not timed
    try:
        members = [stage, *stage.children(recursive=True)]
        rss = sum(m.memory_info().rss for m in members)
        tree_peak = max(tree_peak, rss)
        # PSS: a library mapped by two processes counts once. Reading it walks each process's page
        # tables (~6 ms for 500 MB), so only near the RSS high, at most twice a second.
        if len(members) > 1 and rss >= 0.97 * tree_peak and time.perf_counter() - pss_read > 0.5:
            pss_read = time.perf_counter()
            tree_pss_peak = max(tree_pss_peak, sum(m.memory_full_info().pss for m in members))
    except psutil.Error:
        pass
    time.sleep(0.05)
rc = proc.wait()
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024.0, "tree_peak_rss_mb": tree_peak / 2**20,
                  "tree_peak_pss_mb": tree_pss_peak / 2**20,
                  "load_1min": load}))
"""

# ----------------------------------------------------------------------------------------- helpers


def default_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def count_bars(instruments: list[dict[str, str]], end: pd.Timestamp, days: int, interval: str) -> int:
    from autotrader.calendars import bar_index

    start = end - pd.Timedelta(days=days)
    return sum(len(bar_index(i["broker"], start, end, pd.Timedelta(interval))) for i in instruments)


def choose_days(instruments: list[dict[str, str]], end: pd.Timestamp, interval: str, target: int) -> int:
    """Fewest whole days of the window that give at least ``target`` bars for this instrument mix."""
    per_week = count_bars(instruments, end, 7, interval)
    days = max(1, int(target / per_week * 7) - 3)
    while count_bars(instruments, end, days, interval) < target:
        days += 1
    return days


def make_project(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for folder in ("stages", "src"):
        shutil.copytree(
            REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    (dest / "data" / "external").mkdir(parents=True)
    return dest


def set_params(project: Path, **overrides: Any) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{out.get('PATH', '')}"
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def run_stage(project: Path, stage: str, logs: Path, sample_memory: bool = False) -> dict[str, Any]:
    """One stage in its own process, measured by a fresh wrapper; its output goes to a log file."""
    return run_measured(project, [PYTHON, f"stages/{stage}.py"], logs, stage, sample_memory)


def run_measured(
    project: Path, cmd: list[str], logs: Path, label: str, sample_memory: bool = False
) -> dict[str, Any]:
    """Any command under the measuring wrapper: wall, CPU (user+sys), peak RSS, 1-min load at start;
    with ``sample_memory``, also the RSS and PSS of the command and its children together."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{label}-{time.monotonic_ns()}.log"
    proc = subprocess.run(
        [PYTHON, "-c", _MEASURE, str(log), *cmd],
        cwd=project,
        env={**env(), "BENCH_SAMPLE_MEMORY": "1" if sample_memory else "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["log"] = str(log)
    return result


def features_seconds(project: Path) -> float | None:
    """The store's own time (metrics/features.json), without interpreter start-up and imports."""
    path = project / "metrics" / "features.json"
    return json.loads(path.read_text()).get("seconds") if path.is_file() else None


def write_verdict(project: Path, note: str) -> None:
    path = project / "metrics" / "validation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"success": True, "note": note}))


def clean_outputs(project: Path) -> None:
    for rel in ("data/raw", "data/features", "metrics", "reports"):
        shutil.rmtree(project / rel, ignore_errors=True)


def _memory_mb(run: dict[str, Any]) -> float:
    """What the stage occupies: its processes' PSS when helpers ran, else its one process's peak RSS."""
    return run.get("tree_peak_pss_mb") or run["peak_rss_mb"]


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def run_pipeline(
    project: Path, logs: Path, stages: tuple[str, ...], sample_memory: bool = False
) -> dict[str, dict[str, Any]]:
    """extract → validate → features once; a missing or failing validate is recorded, not hidden."""
    out: dict[str, dict[str, Any]] = {}
    for stage in stages:
        if stage == "validate" and not (project / "stages" / "validate.py").is_file():
            write_verdict(project, "bench: stages/validate.py does not exist yet; features ran without it")
            out[stage] = {"rc": None, "wall_s": None, "peak_rss_mb": None, "note": "stage missing"}
            continue
        result = run_stage(project, stage, logs, sample_memory)
        out[stage] = result
        if result["rc"] != 0:
            if stage == "validate":
                write_verdict(project, f"bench: validate exited {result['rc']}; features measured anyway")
                result["note"] = "failed; see log"
                continue
            raise SystemExit(f"bench: stage {stage} failed (rc {result['rc']}); log: {result['log']}")
        if stage == "features":
            metrics = json.loads((project / "metrics" / "features.json").read_text())
            result.update(
                store_seconds=metrics["seconds"],
                mode=metrics["mode"],
                partitions_written=metrics["partitions_written"],
                partitions_skipped=metrics["partitions_skipped"],
            )
    return out


# ----------------------------------------------------------------------------------------- benchmarks


def bench_pipeline(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = default_params()
    instruments = params["data"]["instruments"]
    end = pd.Timestamp(params["data"]["end"], tz="UTC")
    days = choose_days(instruments, end, args.interval, args.bars)
    bars = count_bars(instruments, end, days, args.interval)
    project = make_project(work / "pipeline")
    set_params(project, **{"data.interval": args.interval, "data.lookback_days": days, "data.source": "sim"})
    console.print(
        f"[bold]pipeline[/]: {len(instruments)} instruments × {days} days at {args.interval} = {bars:,} bars, "
        f"{args.runs} run(s)"
    )
    runs = []
    for i in range(args.runs):
        clean_outputs(project)
        result = run_pipeline(project, work / "logs", PIPELINE)
        total = sum(r["wall_s"] for r in result.values() if r.get("wall_s") is not None)
        console.print(
            f"  run {i + 1}: "
            + ", ".join(
                f"{s} {r['wall_s']:.1f}s/{r['peak_rss_mb']:.0f}MB"
                if r.get("wall_s") is not None
                else f"{s} -"
                for s, r in result.items()
            )
            + f" → {total:.1f}s"
        )
        runs.append(result)
    stages: dict[str, Any] = {}
    for stage in PIPELINE:
        walls = [r[stage]["wall_s"] for r in runs if r[stage].get("wall_s") is not None]
        peaks = [r[stage]["peak_rss_mb"] for r in runs if r[stage].get("peak_rss_mb") is not None]
        stages[stage] = {
            "median_wall_s": median(walls),
            "median_cpu_s": median([r[stage]["cpu_s"] for r in runs if r[stage].get("cpu_s") is not None]),
            "load_1min_at_start": [r[stage].get("load_1min") for r in runs],
            "median_peak_rss_mb": median(peaks),
            "max_peak_rss_mb": max(peaks) if peaks else None,
            "runs": [r[stage] for r in runs],
            "notes": sorted({r[stage].get("note") for r in runs if r[stage].get("note")}),
        }
    clean_outputs(project)  # one more run, untimed, for the memory of each stage with its helpers
    memory_run = run_pipeline(project, work / "logs", PIPELINE, sample_memory=True)
    for stage in PIPELINE:
        if memory_run[stage].get("peak_rss_mb") is not None:
            stages[stage]["memory_run"] = memory_run[stage]
            stages[stage]["memory_mb"] = _memory_mb(memory_run[stage])
    stages["features"]["median_store_seconds"] = median(
        [r["features"]["store_seconds"] for r in runs if r["features"].get("store_seconds") is not None]
    )
    totals = [sum(r[s]["wall_s"] for s in PIPELINE if r[s].get("wall_s") is not None) for r in runs]
    cpus = [sum(r[s]["cpu_s"] for s in PIPELINE if r[s].get("cpu_s") is not None) for r in runs]
    floors = bench_floors(project, work / "logs")
    for stage in PIPELINE:
        floor, floor_cpu = floors["floor_s"][stage], floors["floor_cpu_s"][stage]
        stages[stage]["floor_s"], stages[stage]["floor_cpu_s"] = floor, floor_cpu
        stages[stage]["ratio_wall_to_floor"] = stages[stage]["median_wall_s"] / floor
        stages[stage]["ratio_cpu_to_floor"] = stages[stage]["median_cpu_s"] / floor_cpu
    return {
        "project": str(project),
        "floors": floors,
        "end_to_end_cpu_median_s": median(cpus),
        "instruments": [f"{i['broker']}/{i['symbol']}" for i in instruments],
        "interval": args.interval,
        "days": days,
        "bars": bars,
        "stages": stages,
        "end_to_end_median_s": median(totals),
        "end_to_end_runs_s": totals,
    }


def _raw_days(raw: Path) -> list[str]:
    return sorted({p.name.split("=", 1)[1] for p in raw.glob("broker=*/symbol=*/date=*")})


def _copy_raw(src: Path, dest: Path, keep: set[str]) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        src, dest, ignore=lambda _d, names: [n for n in names if n.startswith("date=") and n[5:] not in keep]
    )


def bench_store_append(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Append one day to 30- and 90-day stores vs that day alone, through stages/features.py."""
    project = make_project(work / "append")
    params = default_params()
    end = pd.Timestamp(params["data"]["end"], tz="UTC")
    history = max(args.history_days)
    set_params(
        project,
        **{
            "data.interval": args.interval,
            "data.lookback_days": history + 1,
            "data.end": (end + pd.Timedelta(days=1)).strftime("%Y-%m-%d"),
        },
    )
    console.print(f"[bold]store append[/]: extracting {history + 1} days at {args.interval} once")
    run_stage(project, "extract", work / "logs")
    all_raw = work / "append_raw"
    shutil.move(project / "data" / "raw", all_raw)
    days = _raw_days(all_raw)
    new_day = days[-1]
    write_verdict(project, "bench: store-append scenario (raw copied from one extract)")
    raw, store = project / "data" / "raw", project / "data" / "features"

    scenarios: dict[str, Any] = {}
    for hist in sorted(args.history_days):
        before = set(days[-1 - hist : -1])
        _copy_raw(all_raw, raw, before)
        shutil.rmtree(store, ignore_errors=True)
        run_stage(project, "features", work / "logs")  # the existing store, not measured
        saved = work / f"store_{hist}"
        shutil.rmtree(saved, ignore_errors=True)
        shutil.copytree(store, saved)
        _copy_raw(all_raw, raw, before | {new_day})
        runs = []
        for _ in range(args.runs):
            shutil.rmtree(store)
            shutil.copytree(saved, store)
            result = run_stage(project, "features", work / "logs")
            metrics = json.loads((project / "metrics" / "features.json").read_text())
            assert metrics["mode"] == "incremental", metrics
            result.update(store_seconds=metrics["seconds"], partitions_written=metrics["partitions_written"])
            runs.append(result)
        scenarios[f"append_to_{hist}_days"] = runs

    _copy_raw(all_raw, raw, {new_day})
    runs = []
    for _ in range(args.runs):
        shutil.rmtree(store, ignore_errors=True)
        result = run_stage(project, "features", work / "logs")
        result.update(store_seconds=features_seconds(project))
        runs.append(result)
    scenarios["day_alone"] = runs

    summary = {
        name: {
            "median_wall_s": median([r["wall_s"] for r in runs]),
            "median_store_seconds": median([r["store_seconds"] for r in runs]),
            "median_peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
            "runs": runs,
        }
        for name, runs in scenarios.items()
    }
    alone = summary["day_alone"]
    longest = summary[f"append_to_{history}_days"]
    shortest = summary[f"append_to_{min(args.history_days)}_days"]
    return {
        "new_day": new_day,
        "scenarios": summary,
        "ratio_wall_append_vs_alone": longest["median_wall_s"] / alone["median_wall_s"],
        "ratio_store_append_vs_alone": longest["median_store_seconds"] / alone["median_store_seconds"],
        "ratio_store_long_vs_short_history": longest["median_store_seconds"]
        / shortest["median_store_seconds"],
    }


def bench_pipeline_append(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Move data.end on by one day and rerun extract → validate → features, vs that day alone."""
    project = make_project(work / "pipeline_append")
    params = default_params()
    end = pd.Timestamp(params["data"]["end"], tz="UTC")
    history = max(args.history_days)
    base = {
        "data.interval": args.interval,
        "data.lookback_days": history,
        "data.end": end.strftime("%Y-%m-%d"),
    }
    moved = {**base, "data.end": (end + pd.Timedelta(days=1)).strftime("%Y-%m-%d")}
    console.print(f"[bold]pipeline append[/]: {history}-day pipeline, then data.end + 1 day")
    clean_outputs(project)
    set_params(project, **base)
    run_pipeline(project, work / "logs", PIPELINE)  # the existing 90-day state, not measured
    saved = work / "pipeline_append_state"
    shutil.copytree(project, saved, ignore=shutil.ignore_patterns("src", "stages"))
    appended, alone = [], []
    for _ in range(args.runs):
        clean_outputs(project)
        for rel in ("data", "metrics", "reports"):
            if (saved / rel).exists():
                shutil.rmtree(project / rel, ignore_errors=True)
                shutil.copytree(saved / rel, project / rel)
        set_params(project, **moved)
        appended.append(run_pipeline(project, work / "logs", PIPELINE))
    for _ in range(args.runs):
        clean_outputs(project)
        set_params(project, **{**moved, "data.lookback_days": 1})
        alone.append(run_pipeline(project, work / "logs", PIPELINE))

    def total(result: dict[str, Any]) -> float:
        return sum(r["wall_s"] for r in result.values() if r.get("wall_s") is not None)

    appended_s, alone_s = median([total(r) for r in appended]), median([total(r) for r in alone])
    return {
        "history_days": history,
        "median_wall_s_append": appended_s,
        "median_wall_s_day_alone": alone_s,
        "ratio": appended_s / alone_s,
        "features_after_append": [
            {k: r["features"].get(k) for k in ("mode", "partitions_written", "partitions_skipped")}
            for r in appended
        ],
        "runs_append": appended,
        "runs_day_alone": alone,
    }


# ----------------------------------------------------------------------------------------- floors

# The least each stage must do on the same bars, in a fresh interpreter (imports timed separately):
# extract = simulate + write the bars once; validate = read them + the rules' arithmetic in vectorised
# pandas; features = read + nine grouped rolling features + write them.
_FLOORS = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np, pandas as pd, pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq
imports = time.perf_counter() - t0
imports_cpu = time.process_time() - c0
raw, out = sys.argv[1], sys.argv[2]
res = {"imports_s": imports, "imports_cpu_s": imports_cpu}
t, u = time.perf_counter(), time.process_time()
bars = ds.dataset(raw, format="parquet", partitioning="hive").to_table(
    columns=["timestamp", "broker", "symbol", "open", "high", "low", "close", "volume", "spread"]).to_pandas()
res["read_s"] = time.perf_counter() - t
res["read_cpu_s"] = time.process_time() - u
t, u = time.perf_counter(), time.process_time()
pq.write_table(pa.Table.from_pandas(bars, preserve_index=False), out, compression="zstd")
res["write_s"] = time.perf_counter() - t
res["write_cpu_s"] = time.process_time() - u
t, u = time.perf_counter(), time.process_time()
from autotrader.params import Instrument
from autotrader.sources.sim import SimulatedMarket
import yaml
p = yaml.safe_load(open("params.yaml"))
d = p["data"]
end = pd.Timestamp(d["end"], tz="UTC"); start = end - pd.Timedelta(days=d["lookback_days"])
m = SimulatedMarket(seed=d["sim"]["seed"], signal_strength=d["sim"]["signal_strength"])
n = sum(len(m.fetch(Instrument(**i), start, end, pd.Timedelta(d["interval"]))) for i in d["instruments"])
res["simulate_s"] = time.perf_counter() - t
res["simulate_cpu_s"] = time.process_time() - u
t, u = time.perf_counter(), time.process_time()
key = bars["broker"].astype(str) + "/" + bars["symbol"].astype(str)
g = bars.assign(key=key).sort_values(["key", "timestamp"], kind="stable")
o, h, l, c, v = (g[x].to_numpy() for x in ("open", "high", "low", "close", "volume"))
step = g.groupby("key")["timestamp"].diff()
checks = [g[x].isna().to_numpy() for x in ("timestamp", "open", "high", "low", "close", "volume")]
checks += [h < np.maximum(o, c), l > np.minimum(o, c), h < l, c <= 0, o <= 0, v < 0,
           g["spread"].to_numpy() < 0, (step <= pd.Timedelta(0)).to_numpy(),
           g.duplicated(["key", "timestamp"]).to_numpy(), (step > pd.Timedelta(d["interval"])).to_numpy(),
           np.abs(np.log(c[1:] / c[:-1])) > 0.2, ~np.isfinite(c)]
failed = sum(int(np.count_nonzero(x)) for x in checks)
res["rules_s"] = time.perf_counter() - t
res["rules_cpu_s"] = time.process_time() - u
res["rules"] = len(checks)
t, u = time.perf_counter(), time.process_time()
grp = g.groupby("key", sort=False)
lc = np.log(g["close"])
r1 = lc - grp["close"].shift(1).pipe(np.log)
feats = pd.DataFrame({"r1": r1, "r12": lc - grp["close"].shift(12).pipe(np.log)})
rg = r1.groupby(g["key"])
feats["vol12"] = rg.rolling(12).std().to_numpy()
feats["vol48"] = rg.rolling(48).std().to_numpy()
lv = np.log1p(g["volume"]); lvg = lv.groupby(g["key"])
feats["vz96"] = (lv - lvg.rolling(96).mean().to_numpy()) / lvg.rolling(96).std().to_numpy()
feats["park48"] = np.sqrt((np.log(g["high"] / g["low"]) ** 2).groupby(g["key"]).rolling(48).mean().to_numpy() / (4 * np.log(2)))
feats["ma20"] = g["close"].groupby(g["key"]).rolling(20).mean().to_numpy() / g["close"]
feats["rs"] = g["spread"] / g["close"]
feats["sv12"] = (np.sign(g["close"] - g["open"]) * g["volume"]).groupby(g["key"]).rolling(12).sum().to_numpy()
res["features_s"] = time.perf_counter() - t
res["features_cpu_s"] = time.process_time() - u
t, u = time.perf_counter(), time.process_time()
pq.write_table(pa.Table.from_pandas(pd.concat([g.reset_index(drop=True), feats.reset_index(drop=True)], axis=1), preserve_index=False), out, compression="zstd")
res["features_write_s"] = time.perf_counter() - t
res["features_write_cpu_s"] = time.process_time() - u
res.update(bars=len(bars), simulated=n, failed=failed)
print(json.dumps(res))
"""


def bench_floors(project: Path, logs: Path) -> dict[str, Any]:
    """Per-stage floors on the bars the pipeline just wrote (project/data/raw), one fresh process."""
    out = project / "floor.parquet"
    proc = subprocess.run(
        [PYTHON, "-c", _FLOORS, str(project / "data" / "raw"), str(out)],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    out.unlink(missing_ok=True)
    f = json.loads(proc.stdout.strip().splitlines()[-1])
    parts = {
        "extract": ("imports", "simulate", "write"),
        "validate": ("imports", "read", "rules"),
        "features": ("imports", "read", "features", "features_write"),
    }
    f["floor_s"] = {stage: sum(f[f"{p}_s"] for p in ps) for stage, ps in parts.items()}
    f["floor_cpu_s"] = {stage: sum(f[f"{p}_cpu_s"] for p in ps) for stage, ps in parts.items()}
    return f


# ----------------------------------------------------------------------------------------- files path


def bench_files(work: Path, pipe_project: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same bars as user files (one CSV or Parquet per instrument) through extract → validate → features."""
    params = default_params()
    raw = pipe_project / "data" / "raw"
    out: dict[str, Any] = {}
    for fmt in ("csv", "parquet"):
        project = make_project(work / f"files_{fmt}")
        specs = []
        for broker, symbol in sorted(
            (b.name.split("=", 1)[1], s.name.split("=", 1)[1])
            for b in raw.glob("broker=*")
            for s in b.glob("symbol=*")
        ):
            files = sorted((raw / f"broker={broker}" / f"symbol={symbol}").glob("date=*/bars.parquet"))
            bars = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            bars = bars[["timestamp", "open", "high", "low", "close", "volume", "spread"]]
            rel = f"data/external/{broker}_{symbol}.{fmt}"
            if fmt == "csv":
                bars.to_csv(project / rel, index=False)  # timestamps as 2026-06-19 00:00:00+00:00
            else:
                bars.to_parquet(project / rel, index=False)
            specs.append({"path": rel, "broker": broker, "symbol": symbol, "timezone": None})
        pipe_params = yaml.safe_load((pipe_project / "params.yaml").read_text())
        set_params(
            project,
            **{
                "data.interval": args.interval,
                "data.lookback_days": pipe_params["data"]["lookback_days"],
                "data.end": params["data"]["end"],
                "data.source": "files",
                "data.files": specs,
            },
        )
        runs = []
        for _ in range(args.runs):
            clean_outputs(project)
            runs.append(run_pipeline(project, work / "logs", PIPELINE))
        totals = [sum(r[s]["wall_s"] for s in PIPELINE) for r in runs]
        cpus = [sum(r[s]["cpu_s"] for s in PIPELINE) for r in runs]
        out[fmt] = {
            "end_to_end_median_s": median(totals),
            "end_to_end_cpu_median_s": median(cpus),
            "stages": {
                s: {
                    "median_wall_s": median([r[s]["wall_s"] for r in runs]),
                    "median_cpu_s": median([r[s]["cpu_s"] for r in runs]),
                    "max_peak_rss_mb": max(r[s]["peak_rss_mb"] for r in runs),
                }
                for s in PIPELINE
            },
            "runs": runs,
        }
        console.print(
            f"  files ({fmt}): "
            + ", ".join(
                f"{s} {out[fmt]['stages'][s]['median_wall_s']:.1f}s wall/{out[fmt]['stages'][s]['median_cpu_s']:.1f}s CPU"
                for s in PIPELINE
            )
            + f" → {out[fmt]['end_to_end_median_s']:.1f}s (CPU {out[fmt]['end_to_end_cpu_median_s']:.1f}s)"
        )
    return out


# ----------------------------------------------------------------------------------------- report


def show(results: dict[str, Any]) -> None:
    pipe = results["pipeline"]
    table = Table(
        title=f"Data pipeline: {pipe['bars']:,} bars ({pipe['days']} days × 7 instruments, {pipe['interval']})"
    )
    for col in (
        "stage",
        "median wall (s)",
        "median CPU (s)",
        "floor (s)",
        "wall ÷ floor",
        "CPU ÷ floor",
        "median peak memory (MB)",
        "notes",
    ):
        table.add_column(col)
    for stage, stats in pipe["stages"].items():
        rss = stats.get("memory_mb", stats["median_peak_rss_mb"])
        target = TARGET_STAGE_S.get(stage)
        table.add_row(
            stage,
            f"{stats['median_wall_s']:.2f}",
            f"{stats['median_cpu_s']:.2f}",
            f"{stats['floor_s']:.2f}/{stats['floor_cpu_s']:.2f}",
            f"{stats['ratio_wall_to_floor']:.1f}×",
            f"{stats['ratio_cpu_to_floor']:.1f}×",
            f"{rss:.0f}" + (" [red]> 1 GB[/]" if rss == rss and rss > TARGET_RSS_MB else ""),
            "; ".join([*stats["notes"], *([f"target ≤ {target:g} s"] if target else [])]),
        )
    e2e = pipe["end_to_end_median_s"]
    table.add_row(
        "[bold]end to end[/]",
        f"[bold]{e2e:.2f}[/]",
        f"{pipe['end_to_end_cpu_median_s']:.2f}",
        f"{sum(s['floor_s'] for s in pipe['stages'].values()):.2f}",
        "",
        "",
        "",
        f"target ≤ {TARGET_WALL_S:g} s" + (" [red]missed[/]" if e2e > TARGET_WALL_S else " [green]met[/]"),
    )
    console.print(table)
    console.print(
        f"load average during the run: {results['machine']['load_average_at_start']} → {results['machine'].get('load_average_at_end')}"
    )
    if "files" in results:
        for fmt, f in results["files"].items():
            console.print(
                f"files ({fmt}) → store: {f['end_to_end_median_s']:.1f}s wall, {f['end_to_end_cpu_median_s']:.1f}s CPU"
                + (f" (target ≤ {TARGET_FILES_CSV_S:g} s)" if fmt == "csv" else "")
            )

    if "store_append" in results:
        app = results["store_append"]
        table = Table(title=f"Appending one day ({app['new_day']}) to the feature store (stages/features.py)")
        for col in ("scenario", "median wall (s)", "median store time (s)", "median peak RSS (MB)"):
            table.add_column(col)
        for name, stats in app["scenarios"].items():
            table.add_row(
                name.replace("_", " "),
                f"{stats['median_wall_s']:.2f}",
                f"{stats['median_store_seconds']:.3f}",
                f"{stats['median_peak_rss_mb']:.0f}",
            )
        console.print(table)
        console.print(
            f"append ÷ day alone: wall {app['ratio_wall_append_vs_alone']:.2f}×, store {app['ratio_store_append_vs_alone']:.2f}× "
            f"(target ≤ {APPEND_RATIO_MAX}×); longest ÷ shortest history: {app['ratio_store_long_vs_short_history']:.2f}×"
        )
    if "pipeline_append" in results:
        pa = results["pipeline_append"]
        console.print(
            f"pipeline append (data.end + 1 day, {pa['history_days']}-day window): {pa['median_wall_s_append']:.1f}s vs "
            f"{pa['median_wall_s_day_alone']:.1f}s for the day alone = {pa['ratio']:.1f}×"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000, help="bars through the pipeline (default 1M)")
    parser.add_argument("--interval", default="1min")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--history-days", type=int, nargs="+", default=[30, 90])
    parser.add_argument("--skip-append", action="store_true", help="only the 1M-bar pipeline")
    parser.add_argument("--skip-pipeline-append", action="store_true")
    parser.add_argument("--skip-files", action="store_true", help="skip the CSV/Parquet files path")
    parser.add_argument(
        "--quick", action="store_true", help="100k bars, 1 run, 5/15-day history: a smoke test"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects and logs")
    args = parser.parse_args()
    if args.quick:
        args.bars, args.runs, args.history_days = 100_000, 1, [5, 15]

    work = Path(tempfile.mkdtemp(prefix="autotrader-bench-"))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "runs": args.runs,
        "targets": {
            "end_to_end_s": TARGET_WALL_S,
            "peak_rss_mb": TARGET_RSS_MB,
            "append_ratio": APPEND_RATIO_MAX,
        },
    }
    try:
        results["pipeline"] = bench_pipeline(work, args)
        if not args.skip_files:
            results["files"] = bench_files(work, Path(results["pipeline"]["project"]), args)
        if not args.skip_append:
            results["store_append"] = bench_store_append(work, args)
            if not args.skip_pipeline_append:
                results["pipeline_append"] = bench_pipeline_append(work, args)
    finally:
        if args.keep:
            console.print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["bench_seconds"] = time.perf_counter() - started
    pipe = results["pipeline"]
    results["verdict"] = {
        "end_to_end_within_target": pipe["end_to_end_median_s"] <= TARGET_WALL_S,
        "stages_within_target": {
            s: pipe["stages"][s]["median_wall_s"] <= t for s, t in TARGET_STAGE_S.items()
        },
        "peak_rss_within_target": all(
            max(s["max_peak_rss_mb"] or 0, s.get("memory_mb") or 0) <= TARGET_RSS_MB
            for s in pipe["stages"].values()
        ),
    }
    if "files" in results:
        results["verdict"]["files_csv_within_target"] = (
            results["files"]["csv"]["end_to_end_median_s"] <= TARGET_FILES_CSV_S
        )
    if "store_append" in results:
        results["verdict"]["store_append_within_ratio"] = (
            results["store_append"]["ratio_store_append_vs_alone"] <= APPEND_RATIO_MAX
        )
    show(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    console.print(f"results → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
