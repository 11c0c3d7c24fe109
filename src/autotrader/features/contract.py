"""What a model records about the features it was trained on, so a server can compute the same ones.

The store records its feature params, bar interval, fingerprint and warm-up in ``_metadata.json``;
``prepare`` copies them into the splits it writes, and training stores them in the model's MLmodel
``metadata`` under ``feature_set`` (``autotrader.modeling.tracking.log_model``). The model server's
bars-in endpoint (``autotrader.serving.bars``) computes features from raw bars with exactly these
params and refuses (409) when its own params, hash or feature code disagree: never silent skew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

FEATURE_SET_KEY = "feature_set"  # the MLmodel metadata key (read by the server without importing modeling)


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 of the feature params as canonical JSON (sorted keys, no spaces): their identity."""
    blob = json.dumps(dict(params), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def feature_set_record(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``feature_set`` a model records, from what ``prepare`` copied out of the store's metadata.

    None when the store's metadata did not say (splits written before this existed): the model then
    records nothing and the server refuses bars-in for it rather than guessing the params.
    """
    params = info.get("feature_params")
    if not isinstance(params, Mapping):
        return None
    return {
        "params": dict(params),
        "params_hash": params_hash(params),
        "interval": info.get("interval"),
        "fingerprint": info.get("feature_fingerprint"),
        "warmup_bars": info.get("warmup_bars"),
    }


def params_diff(recorded: Mapping[str, Any], served: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the params that differ, e.g. ``["rsi_window", "macd.fast"]`` (sorted)."""
    out: list[str] = []
    for key in sorted(set(recorded) | set(served)):
        a, b = recorded.get(key), served.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(params_diff(a, b, f"{name}."))
        elif a != b:
            out.append(name)
    return out
