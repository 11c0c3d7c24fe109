"""Assemble every feature family for one instrument, and describe the feature set.

``compute_features`` is the single entry point the store calls: bars in (one instrument, time
order), bars plus feature columns out, row for row. It is strictly causal — row t is a function of
rows ≤ t only — and window-local: row t depends on rows t-``warmup_bars`` … t and nothing earlier,
bit for bit. That is what lets the store compute one new day from a short warm-up and get exactly
what a full rebuild would.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from autotrader.features import alpha158, microstructure, regime, technical
from autotrader.features.spec import FEATURE_DTYPE, BarArrays, FeatureSpec
from autotrader.params import FeatureParams
from autotrader.schema import BAR_COLUMNS

FAMILIES = (technical, microstructure, regime)  # "core": today's features, in this order
# features.families → the modules computed, in order; regime reads technical's volatility, so core
# stays one unit.
_SELECTABLE = {"core": FAMILIES, "alpha158": (alpha158,)}
# Bumped when feature code changes meaning without a params change; part of the fingerprint.
CODE_VERSION = "2026.1"


def feature_specs(params: FeatureParams) -> list[FeatureSpec]:
    """Every feature this params set produces, in column order."""
    specs = [spec for family in families(params) for spec in family.specs(params)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"features: two features share the name(s) {', '.join(duplicates)}; check params")
    return specs


def families(params: FeatureParams) -> tuple[Any, ...]:
    """The family modules ``features.families`` selects, each once, in the order given."""
    chosen: list[Any] = []
    for name in dict.fromkeys(params.families):
        chosen.extend(_SELECTABLE[name])
    return tuple(chosen)


def feature_names(params: FeatureParams) -> list[str]:
    return [s.name for s in feature_specs(params)]


def warmup_bars(params: FeatureParams) -> int:
    """Bars before a row that any feature reads: the store loads this many before each new day."""
    return max(s.lookback for s in feature_specs(params))


WARMUP_BARS = warmup_bars(FeatureParams())  # for the default params; use warmup_bars(params) in code


def fingerprint(params: FeatureParams, interval: str) -> str:
    """Identity of the feature set: params, bar interval, definitions and code version.

    Two stores with the same fingerprint hold comparable numbers; a different one forces a rebuild.
    """
    payload: dict[str, Any] = {
        "code_version": CODE_VERSION,
        "interval": interval,
        # families is left out while it is the default, so stores built before it existed stay valid.
        "params": params.model_dump(
            mode="json", exclude={"families"} if params.families == ("core",) else None
        ),
        "features": [s.as_dict() for s in feature_specs(params)],
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def compute_feature_arrays(bars: pd.DataFrame, params: FeatureParams) -> dict[str, np.ndarray]:
    """Bars of ONE instrument in strictly increasing time → every feature as a float64 array, in order.

    The caller (the store) sorts, deduplicates and checks the bars; this refuses unsorted input
    rather than silently reordering, because a feature over shuffled rows is leakage.
    """
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {', '.join(missing)}")
    stamps = bars["timestamp"].to_numpy("datetime64[ns]")
    if len(stamps) > 1 and not (stamps[1:] > stamps[:-1]).all():
        raise ValueError(
            "bars must be in strictly increasing timestamp order (one instrument, no duplicates)"
        )
    if bars["broker"].nunique(dropna=False) > 1 or bars["symbol"].nunique(dropna=False) > 1:
        raise ValueError("compute_features takes one instrument at a time")

    return compute_feature_arrays_of(BarArrays.from_frame(bars), params)


def compute_feature_arrays_of(arrays: BarArrays, params: FeatureParams) -> dict[str, np.ndarray]:
    """``compute_feature_arrays`` on bar arrays the caller has already checked (order, one instrument)."""
    values: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for family in families(params):
            values.update(family.compute(arrays, params, values))
    out = {}
    for spec in feature_specs(params):
        column = np.asarray(values[spec.name], dtype=FEATURE_DTYPE)
        column[~np.isfinite(column)] = np.nan  # log of a zero price etc.: undefined, never ±inf
        out[spec.name] = column
    return out


def compute_features(bars: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """The bar columns plus every feature column, row for row (see ``compute_feature_arrays``)."""
    values = compute_feature_arrays(bars, params)
    out = bars.loc[:, list(BAR_COLUMNS)].reset_index(drop=True)
    return pd.concat([out, pd.DataFrame(values, index=out.index)], axis=1)
