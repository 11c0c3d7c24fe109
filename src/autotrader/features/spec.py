"""What a feature is: its name, family, formula and how many past bars it reads.

The lookback is part of the definition, not an afterthought: the store's warm-up (how many bars
before a new day must be loaded to compute that day exactly) is the largest lookback, and a test
checks that each feature's first defined row is exactly its declared lookback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

FEATURE_DTYPE = "float64"


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    family: str  # technical | microstructure | regime
    description: str
    formula: str
    lookback: int  # row t reads rows t-lookback … t; earlier rows are NaN
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str = FEATURE_DTYPE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BarArrays:
    """One instrument's bars as float64 arrays in time order: the only input feature math sees."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    spread: np.ndarray

    @classmethod
    def from_frame(cls, bars: pd.DataFrame) -> BarArrays:
        def col(name: str) -> np.ndarray:
            return np.ascontiguousarray(bars[name].to_numpy(dtype=np.float64, na_value=np.nan))

        return cls(*(col(c) for c in ("open", "high", "low", "close", "volume", "spread")))

    def __len__(self) -> int:
        return len(self.close)
