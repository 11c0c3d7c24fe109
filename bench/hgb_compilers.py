"""Should serving/hgb.py's hand-written walker give way to a maintained tree compiler? Measured here.

    .venv/bin/python bench/hgb_compilers.py            # builds /tmp/hgb-peers-venv on first use
    .venv/bin/python bench/hgb_compilers.py --venv DIR --rows 2000

Candidates: tl2cgen (treelite's C code generator: the model becomes C, compiled by gcc at load time)
and onnxruntime (skl2onnx converts the model to an ONNX TreeEnsemble, float64 inputs). They are NOT
project dependencies: they are installed into a throw-away venv (``--venv``, made with uv, next to
the same scikit-learn and numpy as the lock), and this script runs the candidates there.

The model: the quick HGB of ``bench/serving.py`` (100 iterations × 3 classes, 22 features). The rows
compared ("golden rows"): every feature row of its 10 days of the simulated market (warm-up NaNs
included) plus ``serving.hgb``'s probe rows (each split threshold exactly, just above it, NaN and
±1e12: where a float32 threshold or another comparison flips a branch). Reported per candidate: rows
whose class differs from scikit-learn's, the largest |Δ| of probabilities and of raw scores, whether
they are bit-identical, CPU ms per single-row predict (``time.process_time``, one thread), and
the load/compile time. Results: bench/results/hgb_compilers.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "hgb_compilers.json"
CANDIDATES = ("treelite", "tl2cgen", "onnxruntime", "skl2onnx")


def _hgb_module() -> Any:
    """serving/hgb.py by path: it needs numpy and scikit-learn only (the throw-away venv has those)."""
    spec = importlib.util.spec_from_file_location("hgb", REPO / "src" / "autotrader" / "serving" / "hgb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_row_ms(fn: Any, rows: np.ndarray) -> float:
    for i in range(min(50, len(rows))):  # warm
        fn(rows[i : i + 1])
    start = time.process_time()
    for i in range(len(rows)):
        fn(rows[i : i + 1])
    return round((time.process_time() - start) / len(rows) * 1000, 4)


def _compare(
    name: str,
    ref: dict[str, np.ndarray],
    proba: np.ndarray,
    raw: np.ndarray | None,
    classes: np.ndarray,
    sets: dict[str, slice],
) -> dict[str, Any]:
    """Differences from scikit-learn, per set of golden rows (market rows, threshold probe rows)."""
    out: dict[str, Any] = {"candidate": name}
    for label, rows in sets.items():
        out[label] = {
            "rows": len(classes[rows]),
            "class_mismatches": int((classes[rows] != ref["classes"][rows]).sum()),
            "proba_max_abs_diff": float(np.nanmax(np.abs(proba[rows] - ref["proba"][rows]))),
            "proba_bit_identical": bool(np.array_equal(proba[rows], ref["proba"][rows])),
            "raw_max_abs_diff": None
            if raw is None
            else float(np.nanmax(np.abs(raw[rows] - ref["raw"][rows]))),
            "raw_bit_identical": None if raw is None else bool(np.array_equal(raw[rows], ref["raw"][rows])),
        }
    return out


def _skl2onnx_bool_patch() -> None:
    """skl2onnx 1.20 passes numpy bools where onnx wants ints for HGB's missing-value tracks
    (``TypeError: Field onnx.AttributeProto.ints: Expected an int, got a boolean``): cast them."""
    import onnx.helper

    original = onnx.helper.make_attribute

    def make_attribute(key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, list | tuple) and any(isinstance(v, bool | np.bool_) for v in value):
            value = [int(v) for v in value]
        return original(key, value, *args, **kwargs)

    onnx.helper.make_attribute = make_attribute


def child(workdir: Path, timing_rows: int) -> dict[str, Any]:
    """Runs in the throw-away venv: every candidate against scikit-learn on the golden rows."""
    from threadpoolctl import threadpool_limits

    estimator = pickle.loads((workdir / "estimator.pkl").read_bytes())
    X = np.load(workdir / "rows.npy")
    n_market = int((workdir / "market_rows").read_text())
    sets = {"market_rows": slice(0, n_market), "probe_rows": slice(n_market, None)}
    timing = X[np.random.default_rng(0).permutation(len(X))[:timing_rows]]
    hgb = _hgb_module()
    out: dict[str, Any] = {"versions": {}, "candidates": []}
    import importlib.metadata as md

    for package in (*CANDIDATES, "scikit-learn", "numpy"):
        try:
            out["versions"][package] = md.version(package)
        except md.PackageNotFoundError:
            out["versions"][package] = None

    with threadpool_limits(1):
        ref = {
            "raw": estimator._raw_predict(X),
            "proba": estimator.predict_proba(X),
            "classes": estimator.predict(X),
        }
        classes_ = estimator.classes_

        flat = hgb.compile_hgb(estimator)
        assert flat is not None
        raw = flat.raw(X)
        proba = estimator._loss.predict_proba(raw)  # sklearn's own link on the walker's raw scores
        row = _compare("serving/hgb.py (flat numpy walk)", ref, proba, raw, flat.predict(X), sets)
        row["cpu_ms_per_row"] = _per_row_ms(flat.predict, timing)
        row["load_s"] = 0.0
        out["candidates"].append(row)

        sk = {"candidate": "scikit-learn predict", "cpu_ms_per_row": _per_row_ms(estimator.predict, timing)}
        out["candidates"].append(sk)

        try:
            import tl2cgen
            import treelite

            started = time.perf_counter()
            model = treelite.sklearn.import_model(estimator)
            lib = str(workdir / "model.so")
            tl2cgen.export_lib(model, toolchain="gcc", libpath=lib, params={"parallel_comp": 8}, nthread=1)
            predictor = tl2cgen.Predictor(lib, nthread=1)
            load_s = time.perf_counter() - started

            def tl_raw(rows: np.ndarray) -> np.ndarray:
                return np.asarray(
                    predictor.predict(tl2cgen.DMatrix(rows, dtype="float64"), pred_margin=True)
                ).reshape(len(rows), -1)

            def tl_proba(rows: np.ndarray) -> np.ndarray:
                return np.asarray(predictor.predict(tl2cgen.DMatrix(rows, dtype="float64"))).reshape(
                    len(rows), -1
                )

            def tl_predict(rows: np.ndarray) -> np.ndarray:
                return classes_[np.argmax(tl_proba(rows), axis=1)]

            row = _compare("tl2cgen (gcc-compiled C)", ref, tl_proba(X), tl_raw(X), tl_predict(X), sets)
            row["cpu_ms_per_row"] = _per_row_ms(tl_predict, timing)
            row["load_s"] = round(load_s, 2)
            out["candidates"].append(row)
        except Exception as exc:  # a candidate that cannot take this model is a result too
            out["candidates"].append({"candidate": "tl2cgen", "error": f"{type(exc).__name__}: {exc}"})

        try:
            import onnxruntime as ort
            from skl2onnx import convert_sklearn
            from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

            _skl2onnx_bool_patch()
            for tensor, dtype in ((DoubleTensorType, np.float64), (FloatTensorType, np.float32)):
                name = f"onnxruntime (skl2onnx, {np.dtype(dtype).name} inputs)"
                try:
                    started = time.perf_counter()
                    onx = convert_sklearn(
                        estimator,
                        initial_types=[("X", tensor([None, X.shape[1]]))],
                        options={id(estimator): {"zipmap": False}},
                    )
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = options.inter_op_num_threads = 1
                    session = ort.InferenceSession(
                        onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
                    )
                    load_s = time.perf_counter() - started
                    names = [o.name for o in session.get_outputs()]

                    def ort_run(rows: np.ndarray, s: Any = session, n: Any = names, d: Any = dtype) -> Any:
                        return s.run(n, {"X": np.ascontiguousarray(rows, dtype=d)})

                    labels, probabilities = ort_run(X)
                    row = _compare(name, ref, np.asarray(probabilities), None, np.asarray(labels), sets)
                    row["cpu_ms_per_row"] = _per_row_ms(lambda r, f=ort_run: f(r)[0], timing)
                    row["load_s"] = round(load_s, 2)
                except Exception as exc:
                    row = {"candidate": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                out["candidates"].append(row)
        except Exception as exc:
            out["candidates"].append({"candidate": "onnxruntime", "error": f"{type(exc).__name__}: {exc}"})
    return out


def ensure_venv(venv: Path) -> Path:
    """The throw-away venv: the lock's scikit-learn and numpy, plus the candidates (not in the lock)."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    import numpy
    import sklearn

    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "venv", "-q", "-p", "3.11", str(venv)], check=True)
    pins = [f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}", *CANDIDATES]
    subprocess.run([str(uv), "pip", "install", "-q", "-p", str(python), *pins], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default="/tmp/hgb-peers-venv", help="throw-away venv for the candidates")
    parser.add_argument("--rows", type=int, default=2000, help="single-row predicts timed per candidate")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child), args.rows)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mlflow.sklearn
    from serving import simulated_rows, train_quick_model

    from autotrader.atomic import write_json
    from autotrader.console import console
    from autotrader.schema import BAR_COLUMNS

    load_start = os.getloadavg()
    python = ensure_venv(Path(args.venv))
    hgb = _hgb_module()
    frame = simulated_rows()
    with tempfile.TemporaryDirectory(prefix="bench-hgb-") as tmp:
        work = Path(tmp)
        folder = train_quick_model(frame, work / "model")
        estimator = hgb.unwrap(mlflow.sklearn.load_model(str(folder)))
        columns = [c for c in frame.columns if c not in BAR_COLUMNS]
        flat = hgb.compile_hgb(estimator)
        assert flat is not None
        golden = np.vstack([frame[columns].to_numpy(dtype=np.float64), hgb._probe_rows(flat, len(columns))])
        (work / "estimator.pkl").write_bytes(pickle.dumps(estimator))
        np.save(work / "rows.npy", golden)
        (work / "market_rows").write_text(str(len(frame)))
        done = subprocess.run(
            [str(python), __file__, "--child", str(work), "--rows", str(args.rows)],
            check=True,
            capture_output=True,
            text=True,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])

    result = {
        "benchmark": "hgb_compilers",
        "command": "python "
        + " ".join(["bench/hgb_compilers.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": "quick HGB of bench/serving.py (100 iterations × 3 classes, 22 features)",
        "golden_rows": len(golden),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        **measured,
    }
    write_json(args.out, result)
    from rich.table import Table

    table = Table(title=f"HGB predictors vs scikit-learn: {len(frame)} market rows + probe rows")
    for col in (
        "candidate",
        "class ≠ (market/probe)",
        "bit-identical (market/probe)",
        "max |Δp| probe",
        "CPU ms/row",
        "load s",
    ):
        table.add_column(col)
    for c in measured["candidates"]:
        m, p = c.get("market_rows", {}), c.get("probe_rows", {})
        table.add_row(
            c["candidate"],
            f"{m.get('class_mismatches', '—')}/{p.get('class_mismatches', '—')}"
            if m
            else c.get("error", "—")[:80],
            f"{m.get('proba_bit_identical', '—')}/{p.get('proba_bit_identical', '—')}",
            str(p.get("proba_max_abs_diff", "—")),
            str(c.get("cpu_ms_per_row", "—")),
            str(c.get("load_s", "—")),
        )
    console.print(table)
    console.print(f"versions: {measured['versions']}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
