"""The default feature frame and the store built from it, pinned bit for bit for a fixed seed.

Speed work on the feature math, the raw reader or the store writer must not change one bit of what
the store holds: these hashes were taken before that work (issue 14) and may only change together
with ``features.build.CODE_VERSION`` (a deliberate change of meaning). The hash covers every column's
name, dtype and raw bytes (NaN payloads included), so a different rounding anywhere shows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from autotrader import rawstore
from autotrader.features import CODE_VERSION, compute_feature_arrays
from autotrader.params import FeatureParams, Instrument
from autotrader.sources.sim import SimulatedMarket
from autotrader.store import update_store

START = pd.Timestamp("2026-03-02", tz="UTC")  # a Monday: FX and NYSE sessions on every calendar day
END = START + pd.Timedelta(days=4)
MINUTE = pd.Timedelta("1min")
INSTRUMENTS = (
    Instrument(broker="binance", symbol="BTCUSDT"),
    Instrument(broker="oanda", symbol="EUR_USD"),
    Instrument(broker="ibkr", symbol="SPY"),
)
# sha256 of the 22 default features per instrument (seed 11, 1-minute bars, START → END).
PINNED_FEATURES = {
    "binance/BTCUSDT": "a0ceaa346bb9d161cea5e1cf8d26b2f9ff4ccef209d370dbfeecdce8c1954194",
    "oanda/EUR_USD": "a7f8b74f9d8df00857321068eb80926ae73c948f8a4b7d75c373f48841445f8b",
    "ibkr/SPY": "a31039ed83528c4c9b4f926a4d2389d425b9fc0802b2d6fd98a9a2bd092f11c9",
}
# sha256 of every column of every store partition, in partition order (same bars).
PINNED_STORE = "4117393c03fab1d5bbee0a0c3f1332f487bbbddd79a2177761ec78389a5330ab"


def _bars() -> dict[str, pd.DataFrame]:
    market = SimulatedMarket(seed=11, signal_strength=1.0)
    return {i.key: market.fetch(i, START, END, MINUTE) for i in INSTRUMENTS}


def _digest(columns: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, values in columns.items():
        array = np.ascontiguousarray(values)
        digest.update(f"{name}:{array.dtype.str}:{array.size};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _plain(column: pd.Series) -> np.ndarray:
    """A column as a numpy array whose bytes are its values (times as UTC nanoseconds, text as text)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC").to_numpy("datetime64[ns]").view(np.int64)
    if column.dtype.kind in "fiub":
        return column.to_numpy()
    return column.astype(str).to_numpy(str)


def test_code_version_is_the_pinned_one() -> None:
    assert CODE_VERSION == "2026.1", "a new CODE_VERSION: re-pin the hashes below deliberately"


def test_default_features_are_bit_identical_to_the_pinned_frame() -> None:
    got = {key: _digest(compute_feature_arrays(bars, FeatureParams())) for key, bars in _bars().items()}
    assert got == PINNED_FEATURES


def test_store_partitions_are_bit_identical_to_the_pinned_store(tmp_path: Path) -> None:
    raw, store = tmp_path / "raw", tmp_path / "features"
    rawstore.write_extract(
        raw, ((i.broker, i.symbol, bars) for i, bars in zip(INSTRUMENTS, _bars().values(), strict=True))
    )
    update_store(raw, store, FeatureParams(), interval="1min", source="sim", show_progress=False)
    digest = hashlib.sha256()
    files = sorted(p for p in store.rglob("*.parquet"))
    assert len(files) == 4 + 4 + 4  # four calendar days per instrument
    for path in files:
        frame = pq.read_table(path).to_pandas()
        columns = {c: _plain(frame[c]) for c in frame.columns}
        digest.update(path.relative_to(store).as_posix().encode())
        digest.update(_digest(columns).encode())
    assert digest.hexdigest() == PINNED_STORE
