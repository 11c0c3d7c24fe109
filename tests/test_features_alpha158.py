"""Alpha158 family: each of the 158 definitions against a per-window reference, its lookbacks, its
window-locality, its selection by ``features.families``, and the store's incremental == rebuild with it.

The reference below is written from qlib's formula text (``Alpha158DL``) independently of the module:
one Python loop over rows, one numpy call per window (``np.polyfit``, ``np.corrcoef``, ``np.quantile``,
an explicit rank count, ``argmax``), on the store's rule that a row is defined only when its whole
window (and every ``Ref`` it reads) is there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotrader.features import compute_features, feature_names, feature_specs, fingerprint, warmup_bars
from autotrader.features.alpha158 import WINDOWS, names
from autotrader.params import FeatureParams, Instrument
from autotrader.rawstore import write_extract
from autotrader.sources.sim import SimulatedMarket
from autotrader.store import update_store

ALPHA = FeatureParams(families=("alpha158",))
BOTH = FeatureParams(families=("core", "alpha158"))
EPS = 1e-12
N = 160


def hand_built_bars(n: int = N, seed: int = 4) -> pd.DataFrame:
    """A rounded random walk: ties in close/high/low (rank and arg-max ties), flat stretches, zero moves."""
    rng = np.random.default_rng(seed)
    close = np.round(100.0 + np.cumsum(rng.choice([-0.3, -0.1, 0.0, 0.0, 0.1, 0.2, 0.4], n)), 1)
    close[40:52] = close[40]  # a flat stretch: zero std, zero moves, constant windows
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) + np.round(rng.choice([0.0, 0.1, 0.2], n), 1)
    low = np.minimum(open_, close) - np.round(rng.choice([0.0, 0.1, 0.3], n), 1)
    volume = np.round(rng.lognormal(5, 0.6, n))
    volume[60:64] = volume[59]  # equal volumes: zero volume moves
    stamps = pd.date_range("2026-03-02", periods=n, freq="1min", tz="UTC")
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "broker": "binance",
            "symbol": "BTCUSDT",
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "spread": 0.01,
        }
    )


# ----------------------------------------------------------------------------- the reference


def _rank_pct(window: np.ndarray) -> float:
    last = window[-1]
    below, equal = np.sum(window < last), np.sum(window == last)
    return (below + (equal + 1) / 2.0) / len(window)


def _slope(y: np.ndarray) -> tuple[float, float, float]:
    x = np.arange(1, len(y) + 1, dtype=float)
    b, a = np.polyfit(x, y, 1)
    fitted = a + b * x
    ss_res, ss_tot = np.sum((y - fitted) ** 2), np.sum((y - y.mean()) ** 2)
    return b, 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan, y[-1] - fitted[-1]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def reference(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    o, h, lo, c, v = (bars[k].to_numpy(float) for k in ("open", "high", "low", "close", "volume"))
    n = len(c)
    out: dict[str, np.ndarray] = {}
    rng = h - lo + EPS
    out["KMID"] = (c - o) / o
    out["KLEN"] = (h - lo) / o
    out["KMID2"] = (c - o) / rng
    out["KUP"] = (h - np.maximum(o, c)) / o
    out["KUP2"] = (h - np.maximum(o, c)) / rng
    out["KLOW"] = (np.minimum(o, c) - lo) / o
    out["KLOW2"] = (np.minimum(o, c) - lo) / rng
    out["KSFT"] = (2 * c - h - lo) / o
    out["KSFT2"] = (2 * c - h - lo) / rng
    out["OPEN0"], out["HIGH0"], out["LOW0"] = o / c, h / c, lo / c
    out["VWAP0"] = (h + lo + c) / 3 / c

    def per_window(d: int, needs_prev: bool, f: Callable[[slice, int], float]) -> np.ndarray:
        col = np.full(n, np.nan)
        first = d if needs_prev else d - 1
        for t in range(first, n):
            col[t] = f(slice(t - d + 1, t + 1), t)
        return col

    prev_c = np.concatenate([[np.nan], c[:-1]])
    prev_v = np.concatenate([[np.nan], v[:-1]])
    dc, dv = c - prev_c, v - prev_v
    for d in WINDOWS:
        col = np.full(n, np.nan)
        col[d:] = c[:-d] / c[d:]
        out[f"ROC{d}"] = col
        out[f"MA{d}"] = per_window(d, False, lambda s, t: c[s].mean() / c[t])
        out[f"STD{d}"] = per_window(d, False, lambda s, t: c[s].std(ddof=1) / c[t])
        out[f"BETA{d}"] = per_window(d, False, lambda s, t: _slope(c[s])[0] / c[t])
        out[f"RSQR{d}"] = per_window(d, False, lambda s, t: _slope(c[s])[1])
        out[f"RESI{d}"] = per_window(d, False, lambda s, t: _slope(c[s])[2] / c[t])
        out[f"MAX{d}"] = per_window(d, False, lambda s, t: h[s].max() / c[t])
        out[f"MIN{d}"] = per_window(d, False, lambda s, t: lo[s].min() / c[t])
        out[f"QTLU{d}"] = per_window(d, False, lambda s, t: np.quantile(c[s], 0.8) / c[t])
        out[f"QTLD{d}"] = per_window(d, False, lambda s, t: np.quantile(c[s], 0.2) / c[t])
        out[f"RANK{d}"] = per_window(d, False, lambda s, t: _rank_pct(c[s]))
        out[f"RSV{d}"] = per_window(
            d, False, lambda s, t: (c[t] - lo[s].min()) / (h[s].max() - lo[s].min() + EPS)
        )
        out[f"IMAX{d}"] = per_window(d, False, lambda s, t, d=d: (np.argmax(h[s]) + 1) / d)
        out[f"IMIN{d}"] = per_window(d, False, lambda s, t, d=d: (np.argmin(lo[s]) + 1) / d)
        out[f"IMXD{d}"] = per_window(d, False, lambda s, t, d=d: (np.argmax(h[s]) - np.argmin(lo[s])) / d)
        out[f"CORR{d}"] = per_window(d, False, lambda s, t: _corr(c[s], np.log(v[s] + 1)))
        out[f"CORD{d}"] = per_window(
            d, True, lambda s, t: _corr(c[s] / prev_c[s], np.log(v[s] / prev_v[s] + 1))
        )
        out[f"CNTP{d}"] = per_window(d, True, lambda s, t: np.mean(dc[s] > 0))
        out[f"CNTN{d}"] = per_window(d, True, lambda s, t: np.mean(dc[s] < 0))
        out[f"CNTD{d}"] = per_window(d, True, lambda s, t: np.mean(dc[s] > 0) - np.mean(dc[s] < 0))
        for prefix, diff in (("SUM", dc), ("VSUM", dv)):
            den = per_window(d, True, lambda s, t, x=diff: np.abs(x[s]).sum() + EPS)
            up = per_window(d, True, lambda s, t, x=diff: np.clip(x[s], 0, None).sum())
            down = per_window(d, True, lambda s, t, x=diff: np.clip(-x[s], 0, None).sum())
            out[f"{prefix}P{d}"], out[f"{prefix}N{d}"] = up / den, down / den
            out[f"{prefix}D{d}"] = (up - down) / den
        out[f"VMA{d}"] = per_window(d, False, lambda s, t: v[s].mean() / (v[t] + EPS))
        out[f"VSTD{d}"] = per_window(d, False, lambda s, t: v[s].std(ddof=1) / (v[t] + EPS))
        wv = np.abs(c / prev_c - 1) * v
        out[f"WVMA{d}"] = per_window(d, True, lambda s, t, x=wv: x[s].std(ddof=1) / (x[s].mean() + EPS))
    for key, col in out.items():
        out[key] = np.where(np.isfinite(col), col, np.nan)
    return out


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return hand_built_bars()


@pytest.fixture(scope="module")
def ours(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_features(bars, ALPHA)


@pytest.fixture(scope="module")
def theirs(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    return reference(bars)


# ----------------------------------------------------------------------------- definitions


def test_the_family_has_qlibs_158_names_once_each() -> None:
    assert len(names()) == 158 == len(set(names()))
    assert feature_names(ALPHA) == names()
    assert {"KMID", "VWAP0", "ROC60", "CORD5", "VSUMD60"} <= set(names())


@pytest.mark.parametrize("name", names())
def test_each_definition_matches_the_per_window_reference(name: str, ours, theirs) -> None:
    got, want = ours[name].to_numpy(), theirs[name]
    assert np.array_equal(np.isnan(got), np.isnan(want)), np.flatnonzero(np.isnan(got) != np.isnan(want))[:5]
    assert np.isfinite(got).sum() > N // 3  # the comparison covers real values, not just NaN
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-9, atol=1e-12)


def test_reference_catches_a_wrong_window(theirs) -> None:
    """The comparison has teeth: neighbouring windows of one operator differ on this series."""
    for op in ("MA", "RANK", "IMAX", "QTLU", "CORD", "RESI"):
        a, b = theirs[f"{op}5"][80:], theirs[f"{op}10"][80:]
        assert not np.allclose(a, b, equal_nan=True), op


def test_each_feature_is_first_defined_exactly_at_its_lookback(bars) -> None:
    frame = compute_features(hand_built_bars(seed=9), ALPHA)
    for spec in feature_specs(ALPHA):
        first = int(np.flatnonzero(~np.isnan(frame[spec.name].to_numpy()))[0])
        assert first == spec.lookback, spec.name


def test_warmup_is_the_longest_window_and_rows_depend_on_it_only(bars, ours) -> None:
    assert warmup_bars(ALPHA) == 60
    assert warmup_bars(BOTH) == warmup_bars(FeatureParams())  # the core regime window is longer
    matrix = ours[names()].to_numpy()
    for k in (60, 77, 131):
        tail = compute_features(bars.iloc[k - 60 :].reset_index(drop=True), ALPHA)
        assert np.array_equal(tail[names()].to_numpy()[60:], matrix[k:], equal_nan=True), k
    short = compute_features(bars.iloc[100 - 59 :].reset_index(drop=True), ALPHA)
    assert np.isnan(short["ROC60"].iloc[59]) and not np.isnan(ours["ROC60"].iloc[100])


def test_changing_a_later_bar_never_changes_an_earlier_row(bars, ours) -> None:
    changed = bars.copy()
    changed.loc[120:, "close"] *= 1.5
    changed.loc[120:, "volume"] *= 3
    again = compute_features(changed, ALPHA)
    assert np.array_equal(again[names()].to_numpy()[:120], ours[names()].to_numpy()[:120], equal_nan=True)


def test_default_families_are_todays_features_with_todays_fingerprint() -> None:
    default = FeatureParams()
    assert default.families == ("core",)
    assert not set(names()) & set(feature_names(default))
    assert feature_names(BOTH) == feature_names(default) + names()
    assert fingerprint(default, "5min") != fingerprint(BOTH, "5min")
    assert "families" not in str(default.model_dump(exclude={"families"}))


def test_families_are_validated_by_params() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        FeatureParams(families=("qlib",))
    with pytest.raises(ValidationError):
        FeatureParams(families=())


# ----------------------------------------------------------------------------- the store


def test_store_appends_a_day_of_alpha158_equal_to_a_full_rebuild(tmp_path: Path) -> None:
    start = pd.Timestamp("2026-03-02", tz="UTC")
    market = SimulatedMarket(seed=5, signal_strength=1.0)
    spy = Instrument(broker="ibkr", symbol="SPY")  # 78 bars a session: the 60-bar warm-up crosses a day
    master = tmp_path / "master"
    write_extract(
        master,
        [
            (
                spy.broker,
                spy.symbol,
                market.fetch(spy, start, start + pd.Timedelta(days=4), pd.Timedelta("5min")),
            )
        ],
    )
    days = sorted(p.name for p in master.glob("broker=*/symbol=*/date=*"))
    raw = tmp_path / "raw"
    shutil.copytree(master, raw, ignore=lambda _d, ns: [n for n in ns if n == days[-1]])
    store = tmp_path / "features"
    update_store(raw, store, ALPHA, "5min", "sim", show_progress=False)
    shutil.rmtree(raw)
    shutil.copytree(master, raw)
    result = update_store(raw, store, ALPHA, "5min", "sim", show_progress=False)
    assert result.mode == "incremental" and result.partitions_written == 1
    rebuilt = tmp_path / "rebuilt"
    update_store(raw, rebuilt, ALPHA, "5min", "sim", show_progress=False)
    files = sorted(p.relative_to(store) for p in store.rglob("*.parquet"))
    assert files and files == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*.parquet"))
    assert all((store / f).read_bytes() == (rebuilt / f).read_bytes() for f in files)
    last = pd.read_parquet(store / files[-1])
    assert set(names()) <= set(last.columns) and last["ROC60"].notna().all()
