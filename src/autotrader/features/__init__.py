"""Causal, scale-free features per instrument (technical, microstructure, regime).

Feature math only: no files, no models. The feature store (``autotrader.store``) persists them.
"""

from autotrader.features.build import (
    CODE_VERSION,
    WARMUP_BARS,
    compute_feature_arrays,
    compute_features,
    feature_names,
    feature_specs,
    fingerprint,
    warmup_bars,
)
from autotrader.features.lastrow import compute_last_row
from autotrader.features.spec import FEATURE_DTYPE, FeatureSpec

__all__ = [
    "CODE_VERSION",
    "FEATURE_DTYPE",
    "WARMUP_BARS",
    "FeatureSpec",
    "compute_feature_arrays",
    "compute_features",
    "compute_last_row",
    "feature_names",
    "feature_specs",
    "fingerprint",
    "warmup_bars",
]
