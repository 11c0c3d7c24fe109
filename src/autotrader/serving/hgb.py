"""A flat, vectorised predictor for a fitted HistGradientBoostingClassifier: same answers, less overhead.

scikit-learn predicts one tree at a time: for every iteration and class it calls a Cython routine
(argument checks, an output allocation, an OpenMP region). For ONE row that loop over 100-600 trees
is the whole cost of a request (~1.6 ms of CPU for 100 iterations × 3 classes, measured). Here every
tree's nodes live in one set of flat arrays and all trees are walked at once, one depth level per
step, with numpy: the same node tests (``x <= threshold``, NaN → the node's missing side), the same
leaf values, and the scores summed in the same order as scikit-learn (baseline, then iteration by
iteration), so the floating-point results are identical, not merely close.

It is only used where that equality is established: numeric features only (no categorical splits,
no preprocessor), and ``compile_hgb`` verifies it on probe rows built from the trees' own thresholds
(each threshold exactly, just above it, NaN, and extremes) before handing it out — raw scores must
be bit-for-bit equal and the classes identical, else it returns None and the server keeps using
scikit-learn. For batches scikit-learn's per-tree loop is efficient again, so ``FLAT_MAX_ROWS`` bounds
where the flat walk is used.

Why not a maintained tree compiler instead (issue 14, measured 2026-11-29 with
``.venv/bin/python bench/hgb_compilers.py`` → bench/results/hgb_compilers.json; the candidates in a
throw-away venv beside the lock's scikit-learn 1.9.1 / numpy 2.3.5; the quick HGB of bench/serving.py,
100 iterations × 3 classes; golden rows = 5,184 market feature rows + 512 threshold probe rows;
machine load average 20 → 16 on 2 cores, so CPU times, not latencies; two runs agreed):

| predictor | classes ≠ sklearn (market/probe) | probabilities bit-identical | CPU ms/row | load |
| --- | --- | --- | --- | --- |
| this walker | 0 / 0 | yes / yes (raw scores too) | 0.19 | 0 s |
| scikit-learn ``predict`` | — | — | 2.35 | 0 s |
| tl2cgen 1.0 (treelite 4.8.1) | 0 / 0 | no / no: max Δp 4e-16 / 0.038, raw Δ 0.17 | 0.03 | 16-41 s gcc compile |
| onnxruntime 1.32 (skl2onnx 1.20), float32 | 0 / 20 | no / no: max Δp 1.8e-7 / 0.49 | 0.018 | 0.3 s |

onnxruntime with float64 inputs does not run (its TreeEnsembleClassifier outputs float only), and
skl2onnx 1.20 cannot convert this scikit-learn's HGB without a patch (a bool in an ints attribute).
Both compilers are faster per row, but neither gives scikit-learn's probabilities exactly: they sum
the trees in another order and (ONNX) compare float32 thresholds, so rows at a split threshold take
another branch — 20 of 512 probe rows change class under onnxruntime; tl2cgen changed 1 of 512 on a
model trained on 3 days. The server's answers must equal the batch path's (scikit-learn) bit for bit
(the bars-in parity tests, the deploy check's golden file), so exactness wins. tl2cgen would also
need a C compiler in the serving image and 16-41 s of compiling at every model load. The walker's
0.19 ms is ~40 % of a /predict request's ~0.45 ms of server CPU, within the 1,000 req/s budget.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("autotrader.serving")

# Up to this many rows the flat walk is faster. Measured (100 iterations × 3 classes, one OpenMP
# thread, CPU ms): 1 row 0.14 vs 1.58; 16 rows 0.85 vs 1.68; 32 rows 1.86 vs 1.94; 256 rows 17.2 vs 4.6.
FLAT_MAX_ROWS = 16


class FlatHGB:
    """Every tree of a fitted classifier in flat node arrays, walked together."""

    def __init__(self, estimator: Any) -> None:
        predictors = estimator._predictors
        self.n_iter = len(predictors)
        self.k = int(estimator.n_trees_per_iteration_)
        trees = [p.nodes for iteration in predictors for p in iteration]  # tree t = iteration * k + class
        sizes = np.array([len(t) for t in trees], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        nodes = np.concatenate(trees)
        shift = np.repeat(offsets, sizes)
        self.roots = offsets
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(np.float64)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.left = nodes["left"].astype(np.int64) + shift
        self.right = nodes["right"].astype(np.int64) + shift
        self.leaf = nodes["is_leaf"].astype(bool)
        self.value = nodes["value"].astype(np.float64)
        self.depth = int(nodes["depth"].max()) if len(nodes) else 0
        self.baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1, 1, self.k)
        self.classes = estimator.classes_

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (n, k), computed exactly as ``HistGradientBoostingClassifier._raw_predict``."""
        n = X.shape[0]
        cur = np.repeat(self.roots[None, :], n, axis=0)
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            at_leaf = self.leaf[cur]
            if at_leaf.all():
                break
            x = X[rows, self.feature[cur]]
            go_left = np.where(np.isnan(x), self.missing_left[cur], x <= self.threshold[cur])
            cur = np.where(at_leaf, cur, np.where(go_left, self.left[cur], self.right[cur]))
        values = self.value[cur].reshape(n, self.n_iter, self.k)
        # scikit-learn: raw = 0 + baseline, then raw += tree value, iteration by iteration.
        # cumsum accumulates left to right, so prepending the baseline gives the same roundings.
        stacked = np.concatenate([np.broadcast_to(self.baseline, (n, 1, self.k)), values], axis=1)
        return np.cumsum(stacked, axis=1)[:, -1, :]

    def predict(self, X: np.ndarray) -> np.ndarray:
        raw = self.raw(X)
        encoded = (raw.ravel() > 0).astype(int) if self.k == 1 else np.argmax(raw, axis=1)
        return self.classes[encoded]


def _probe_rows(flat: FlatHGB, n_features: int, n: int = 512, seed: int = 0) -> np.ndarray:
    """Rows that hit every kind of branch: thresholds exactly, just above, NaN, and far out."""
    rng = np.random.default_rng(seed)
    split = ~flat.leaf
    rows = rng.standard_normal((n, n_features))
    for f in range(n_features):
        thresholds = flat.threshold[split & (flat.feature == f)]
        if len(thresholds) == 0:
            continue
        picks = rng.choice(thresholds, size=n)
        kind = rng.integers(0, 6, size=n)
        rows[:, f] = np.select(
            [kind == 0, kind == 1, kind == 2, kind == 3, kind == 4],
            [picks, np.nextafter(picks, np.inf), np.nan, 1e12, -1e12],
            default=picks + rng.standard_normal(n) * (np.abs(picks) + 1e-3),
        )
    return rows


def unwrap(estimator: Any) -> Any:
    """The final step of a Pipeline that transforms nothing (every other step None/"passthrough").

    Training wraps the classifier as ``Pipeline([("model", HistGradientBoostingClassifier(...))])``;
    such a Pipeline's ``predict(X)`` is exactly its last step's ``predict(X)``.
    """
    from sklearn.pipeline import Pipeline

    while isinstance(estimator, Pipeline) and all(
        step in (None, "passthrough") for _, step in estimator.steps[:-1]
    ):
        estimator = estimator.steps[-1][1]
    return estimator


def compile_hgb(estimator: Any) -> FlatHGB | None:
    """A verified FlatHGB for a plain numeric HistGradientBoostingClassifier (or a Pipeline that is
    only that), else None."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    estimator = unwrap(estimator)
    if type(estimator) is not HistGradientBoostingClassifier:
        return None
    if getattr(estimator, "_preprocessor", None) is not None:
        return None  # categorical features: bitset splits are not reproduced here
    try:
        if any(
            bool(p.nodes["is_categorical"].any()) for iteration in estimator._predictors for p in iteration
        ):
            return None
        flat = FlatHGB(estimator)
        same = agrees(flat, estimator)
    except Exception as exc:  # an sklearn version with different internals: keep sklearn's own path
        log.warning("flat HGB predictor unavailable (%s: %s); using scikit-learn's", type(exc).__name__, exc)
        return None
    if not same:
        log.warning("flat HGB predictor disagrees with scikit-learn on probe rows; using scikit-learn's")
        return None
    return flat


def agrees(flat: FlatHGB, estimator: Any, extra: np.ndarray | None = None) -> bool:
    """Bit-for-bit equal raw scores and identical classes on the probe rows (plus ``extra`` rows)."""
    probe = _probe_rows(flat, int(estimator.n_features_in_))
    if extra is not None:
        probe = np.vstack([probe, np.asarray(extra, dtype=np.float64)])
    return bool(
        np.array_equal(flat.raw(probe), estimator._raw_predict(probe))
        and np.array_equal(flat.predict(probe), estimator.predict(probe))
    )
