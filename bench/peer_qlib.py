"""Alpha158 against its home, qlib: the same ~1M one-minute bars through both, values, speed and memory.

* qlib (pyqlib 0.9.7, needs pandas < 3, not a project dependency) is installed into a throw-away venv
  under ``~/.cache/autotrader-bench/qlib-venv`` (created on first use with ``python -m venv`` and pip).
* The bars are the simulator's, 7 instruments × enough days at 1 min for ``--bars`` (as
  bench/data_pipeline.py). qlib stores float32 (``.bin`` files), so both sides get the float32-rounded
  bars: the inputs are identical and every difference comes from the computation.
* qlib has one calendar for every instrument; ours trade on three (24/7, 24/5, NYSE sessions). Each
  instrument's bars are laid end to end on one synthetic minute calendar, so qlib computes on exactly
  the bars we do, with no NaN gaps (Alpha158 reads bar order only, never clock time).
* ``$vwap`` is written as the typical price (high+low+close)/3, the proxy our ``VWAP0`` uses.
* Each side runs in its own process; the parent samples that process tree's RSS every 20 ms (qlib's
  joblib workers included) and reads its CPU time (user+sys) from ``getrusage(RUSAGE_CHILDREN)``.
  ``compute_s`` is the feature computation alone (qlib: ``D.features``; ours: the family over each
  instrument, results dropped as the store does after writing each partition).
* Why the rest differ (``CAUSES``), checked on these bars: qlib's elementwise operators run in
  float32 (its storage dtype) — evaluating WVMA's formula in float32 numpy reproduces qlib to 6e-8 —
  and its ``Std`` is pandas' running-sum rolling std, which drifts from the two-pass value by up to
  2.6e-4 relative over 220k ETH bars; ours is two-pass. qlib's Corr/Rsquare are NaN where a window's
  std is below an absolute 2e-5, which an FX close often is over 5 bars.
* Agreement: per feature, the largest |ours − qlib| / max(|ours|, |qlib|) over rows where both are
  defined and our window is complete (qlib's ``min_periods=1`` defines earlier rows too), plus rows
  where exactly one side is NaN (qlib's Corr and Rsquare are NaN wherever a window's std is below an
  absolute 2e-5, ``np.isclose(std, 0, atol=2e-05)``; ours are scale-free and defined there).

    .venv/bin/python bench/peer_qlib.py                # 1M bars (a few minutes; installs qlib once)
    .venv/bin/python bench/peer_qlib.py --bars 100000  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from data_pipeline import choose_days, count_bars  # noqa: E402

RESULTS = REPO / "bench" / "results" / "peer_qlib.json"
QLIB_VENV = Path.home() / ".cache" / "autotrader-bench" / "qlib-venv"
QLIB_PIN = "pyqlib==0.9.7"
FIELDS = ("open", "high", "low", "close", "volume", "vwap")
TOLERANCE = 1e-6
# Why a feature can differ by more than TOLERANCE, by operator (checked on these bars, see the module doc).
CAUSES = {
    "STD": "qlib's Std is pandas' rolling std, a running sum over the whole series: on the same float64 "
    "ETH closes it differs from the two-pass window std by 2.0e-4 (5), 2.6e-4 (10), 8.2e-6 (60); ours is two-pass",
    "WVMA": "qlib evaluates |$close/Ref($close,1)-1|*$volume in float32 (its .bin dtype): ~7 digits on a "
    "1e-5 return; the same formula in float32 numpy matches qlib to 6e-8",
    "CORR": "Log($volume+1) in float32 and correlations near 0 (|rho| down to 1e-8): relative error of a "
    "near-zero value; and NaN where a window's std < 2e-5 (qlib's absolute cut-off)",
    "CORD": "$close/Ref($close,1) in float32 (a 1e-5 return has ~2 significant digits left) and "
    "correlations near 0; NaN where a window's std < 2e-5",
    "VSUMD": "a difference of two nearly equal sums (values ~1e-7) of float32 volume differences",
    "RSQR": "NaN where a window's std < 2e-5 (qlib's absolute cut-off); values agree elsewhere",
}
SCALE_FLOOR = 1e-9

_QLIB_RUN = r"""
import json, sys, time
import numpy as np
work, kernels = sys.argv[1], int(sys.argv[2])
import qlib
from qlib.constant import REG_CN
from qlib.contrib.data.loader import Alpha158DL
from qlib.data import D
qlib.init(provider_uri=f"{work}/qlib_data", region=REG_CN, kernels=kernels,
          expression_cache=None, dataset_cache=None)
fields, names = Alpha158DL.get_feature_config()
t0 = time.perf_counter()
frame = D.features(D.instruments("all"), fields, freq="1min")
seconds = time.perf_counter() - t0
frame.columns = names
insts = np.array(frame.index.get_level_values(0).astype(str), dtype="U64")
np.savez(f"{work}/qlib_out.npz", values=frame.to_numpy(np.float64), instruments=insts,
         names=np.array(names))
print(json.dumps({"compute_s": seconds, "rows": len(frame), "features": len(names)}))
"""

_OURS_RUN = r"""
import json, sys, time
import numpy as np, pandas as pd
from autotrader.features import compute_feature_arrays
from autotrader.features.alpha158 import names
from autotrader.params import FeatureParams
work = sys.argv[1]
params = FeatureParams(families=("alpha158",))
keys = sorted(set(pd.read_parquet(f"{work}/bars.parquet", columns=["key"])["key"]))
seconds, rows = 0.0, 0
for key in keys:  # one instrument at a time, as the store does
    frame = pd.read_parquet(f"{work}/bars.parquet", filters=[("key", "=", key)]).drop(columns="key")
    t0 = time.perf_counter()
    values = compute_feature_arrays(frame, params)
    seconds += time.perf_counter() - t0
    rows += len(frame)
    np.savez(f"{work}/ours_{key}.npz", **values)  # column by column: no second copy of the matrix
    del values, frame
print(json.dumps({"compute_s": seconds, "rows": rows, "features": len(names())}))
"""


def ensure_qlib(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import qlib, pandas; print(qlib.__version__, pandas.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "pandas<3", QLIB_PIN], check=True)
    subprocess.run(probe, check=True)
    return python


def make_bars(target: int) -> tuple[pd.DataFrame, int]:
    from autotrader.params import Instrument
    from autotrader.sources.sim import SimulatedMarket

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    instruments = params["data"]["instruments"]
    end = pd.Timestamp(params["data"]["end"], tz="UTC")
    days = choose_days(instruments, end, "1min", target)
    sim = params["data"]["sim"]
    market = SimulatedMarket(seed=sim["seed"], signal_strength=sim["signal_strength"])
    frames = []
    for i in instruments:
        inst = Instrument(broker=i["broker"], symbol=i["symbol"])
        bars = market.fetch(inst, end - pd.Timedelta(days=days), end, pd.Timedelta("1min"))
        for col in ("open", "high", "low", "close", "volume", "spread"):  # what qlib's .bin can hold
            bars[col] = bars[col].astype(np.float32).astype(np.float64)
        bars["key"] = f"{i['broker']}_{i['symbol']}".upper()
        frames.append(bars)
    assert count_bars(instruments, end, days, "1min") == sum(len(f) for f in frames)
    return pd.concat(frames, ignore_index=True), days


def write_qlib(bars: pd.DataFrame, root: Path) -> None:
    """qlib's file layout: calendars/1min.txt, instruments/all.txt, features/<inst>/<field>.1min.bin."""
    longest = int(bars.groupby("key").size().max())
    calendar = pd.date_range("2000-01-03", periods=longest, freq="1min")
    (root / "calendars").mkdir(parents=True)
    (root / "calendars" / "1min.txt").write_text("\n".join(calendar.strftime("%Y-%m-%d %H:%M:%S")) + "\n")
    (root / "instruments").mkdir()
    lines = []
    for key, frame in bars.groupby("key", sort=True):
        folder = root / "features" / key.lower()
        folder.mkdir(parents=True)
        cols = {c: frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")}
        cols["vwap"] = (cols["high"] + cols["low"] + cols["close"]) / 3.0
        for field in FIELDS:
            np.hstack([[0.0], cols[field]]).astype("<f4").tofile(folder / f"{field}.1min.bin")
        lines.append(f"{key}\t{calendar[0]:%Y-%m-%d %H:%M:%S}\t{calendar[len(frame) - 1]:%Y-%m-%d %H:%M:%S}")
    (root / "instruments" / "all.txt").write_text("\n".join(lines) + "\n")


def measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run cmd; peak RSS of its whole process tree (sampled), wall, CPU (user+sys) and its JSON line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"tree": 0, "main": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                main = proc.memory_info().rss
                tree = main + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak["tree"], peak["main"] = max(peak["tree"], tree), max(peak["main"], main)
            except psutil.Error:
                pass
            done.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {cmd[:2]} failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(
        wall_s=wall,
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        peak_tree_rss_mb=peak["tree"] / 2**20,
        peak_main_rss_mb=peak["main"] / 2**20,
    )
    return result


def compare(work: Path, bars: pd.DataFrame) -> dict[str, dict[str, Any]]:
    from autotrader.features import feature_specs
    from autotrader.params import FeatureParams

    specs = {s.name: s for s in feature_specs(FeatureParams(families=("alpha158",)))}
    qlib = np.load(work / "qlib_out.npz", allow_pickle=True)  # our own file, written just now
    names = [str(n) for n in qlib["names"]]
    theirs_all, insts = qlib["values"], qlib["instruments"]
    stats = {n: {"max_rel": 0.0, "worst_value": None, "one_side_nan": 0, "compared": 0} for n in names}
    for key in sorted(bars["key"].unique()):
        saved = np.load(work / f"ours_{key}.npz")
        ours = np.column_stack([saved[n] for n in names])
        theirs = (
            theirs_all[insts == key.lower()] if (insts == key.lower()).any() else theirs_all[insts == key]
        )
        assert theirs.shape == ours.shape, (key, theirs.shape, ours.shape)
        for j, name in enumerate(names):
            a, b = ours[specs[name].lookback :, j], theirs[specs[name].lookback :, j]
            fa, fb = np.isfinite(a), np.isfinite(b)
            both = fa & fb
            # Below 1e-9 (e.g. a residual that is exactly 0 in theory) the difference is taken as absolute.
            scale = np.maximum(np.maximum(np.abs(a[both]), np.abs(b[both])), SCALE_FLOOR)
            rel = np.abs(a[both] - b[both]) / scale
            entry = stats[name]
            entry["one_side_nan"] += int((fa != fb).sum())
            entry["compared"] += int(both.sum())
            if rel.size and rel.max() > entry["max_rel"]:
                k = int(rel.argmax())
                entry["max_rel"] = float(rel[k])
                entry["worst_value"] = {
                    "instrument": key,
                    "ours": float(a[both][k]),
                    "qlib": float(b[both][k]),
                }
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--kernels", type=int, default=os.cpu_count() or 1, help="qlib's worker processes")
    parser.add_argument("--venv", type=Path, default=QLIB_VENV)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    qlib_python = ensure_qlib(args.venv)
    work = Path(tempfile.mkdtemp(prefix="autotrader-peer-qlib-"))
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "qlib": subprocess.run(
            [str(qlib_python), "-c", "import qlib, pandas; print(qlib.__version__, pandas.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(),
    }
    try:
        bars, days = make_bars(args.bars)
        bars.to_parquet(work / "bars.parquet")
        write_qlib(bars, work / "qlib_data")
        results["bars"], results["days"] = len(bars), days
        print(f"{len(bars):,} bars ({days} days × 7 instruments at 1 min); qlib kernels={args.kernels}")
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        results["ours"] = measured([sys.executable, "-c", _OURS_RUN, str(work)], env)
        print("ours:", {k: round(v, 2) if isinstance(v, float) else v for k, v in results["ours"].items()})
        results["qlib_run"] = measured([str(qlib_python), "-c", _QLIB_RUN, str(work), str(args.kernels)])
        print(
            "qlib:", {k: round(v, 2) if isinstance(v, float) else v for k, v in results["qlib_run"].items()}
        )
        results["agreement"] = compare(work, bars)
    finally:
        results["machine"]["load_average_at_end"] = os.getloadavg()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    ours, theirs = results["ours"], results["qlib_run"]
    values = ours["rows"] * ours["features"]
    summary = {
        "feature_values": values,
        "ours_values_per_s": values / ours["compute_s"],
        "qlib_values_per_s": theirs["rows"] * theirs["features"] / theirs["compute_s"],
        "ours_values_per_s_process": values / ours["wall_s"],
        "qlib_values_per_s_process": theirs["rows"] * theirs["features"] / theirs["wall_s"],
        "speed_ratio_compute": (values / ours["compute_s"])
        / (theirs["rows"] * theirs["features"] / theirs["compute_s"]),
        "speed_ratio_process": theirs["wall_s"] / ours["wall_s"],
        "memory_ratio_tree": ours["peak_tree_rss_mb"] / theirs["peak_tree_rss_mb"],
        "within_tolerance": sorted(n for n, s in results["agreement"].items() if s["max_rel"] <= TOLERANCE),
        "beyond_tolerance": {
            n: s["max_rel"]
            for n, s in sorted(results["agreement"].items(), key=lambda kv: -kv[1]["max_rel"])
            if s["max_rel"] > TOLERANCE
        },
        "one_side_nan": {n: s["one_side_nan"] for n, s in results["agreement"].items() if s["one_side_nan"]},
    }
    results["summary"] = summary
    print(
        f"compute: ours {ours['compute_s']:.2f}s ({summary['ours_values_per_s'] / 1e6:.1f}M values/s) vs qlib "
        f"{theirs['compute_s']:.2f}s ({summary['qlib_values_per_s'] / 1e6:.1f}M values/s) = {summary['speed_ratio_compute']:.2f}×"
    )
    print(
        f"process: ours {ours['wall_s']:.1f}s wall / {ours['cpu_s']:.1f}s CPU / {ours['peak_tree_rss_mb']:.0f} MB peak vs qlib "
        f"{theirs['wall_s']:.1f}s / {theirs['cpu_s']:.1f}s CPU / {theirs['peak_tree_rss_mb']:.0f} MB "
        f"(memory ratio {summary['memory_ratio_tree']:.2f})"
    )
    print(f"agreement ≤ {TOLERANCE:g}: {len(summary['within_tolerance'])}/158; beyond:")
    for name, rel in summary["beyond_tolerance"].items():
        print(f"  {name:8s} {rel:.2e}  {results['agreement'][name]['worst_value']}")
    for op, why in CAUSES.items():
        print(f"  why {op}: {why}")
    summary["causes"] = CAUSES
    if summary["one_side_nan"]:
        print(f"rows NaN on one side only: {summary['one_side_nan']}")
    print(
        f"load average: start {results['machine']['load_average_at_start']}, end {results['machine']['load_average_at_end']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
