"""The feature store: layout, metadata, incremental == full rebuild, rebuild triggers, the reader."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from autotrader.errors import StoreError
from autotrader.features import compute_features, feature_names, fingerprint, warmup_bars
from autotrader.params import FeatureParams, Instrument
from autotrader.rawstore import read_instrument, write_extract
from autotrader.schema import BAR_COLUMNS
from autotrader.sources.sim import SimulatedMarket
from autotrader.store import (
    METADATA_FILE,
    feature_columns,
    input_hashes,
    load_features,
    read_metadata,
    scan_raw,
    update_store,
)

PARAMS = FeatureParams()
INTERVAL = "5min"
START = pd.Timestamp("2026-03-02", tz="UTC")  # Monday
DAYS = 9
INSTRUMENTS = (
    Instrument(broker="binance", symbol="BTCUSDT"),  # 288 bars a day: warm-up spans 2 days
    Instrument(broker="oanda", symbol="EUR_USD"),  # FX week: Sunday evening to Friday evening
    Instrument(broker="ibkr", symbol="SPY"),  # 78 bars a day: warm-up spans 5 sessions and a weekend
)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw bars for all days; tests copy subsets of its day partitions."""
    root = tmp_path_factory.mktemp("master") / "raw"
    market = SimulatedMarket(seed=5, signal_strength=1.0)
    end = START + pd.Timedelta(days=DAYS)
    write_extract(
        root,
        ((i.broker, i.symbol, market.fetch(i, START, end, pd.Timedelta(INTERVAL))) for i in INSTRUMENTS),
    )
    return root


def dates_of(master: Path) -> list[str]:
    return sorted({p.name.split("=", 1)[1] for p in master.glob("broker=*/symbol=*/date=*")})


def raw_copy(master: Path, dest: Path, keep: Callable[[str], bool] = lambda d: True) -> Path:
    """Copy the master raw tree, keeping only the day partitions whose date passes ``keep``."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n.startswith("date=") and not keep(n.split("=", 1)[1])]

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(master, dest, ignore=ignore)
    return dest


def build(
    raw: Path, store: Path, params: FeatureParams = PARAMS, source: str = "sim", interval: str = INTERVAL
):
    return update_store(raw, store, params, interval, source, show_progress=False)


def files_of(store: Path) -> dict[str, bytes]:
    """Every partition file's bytes (the metadata has timestamps, so it is compared separately)."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*.parquet"))}


def tree_state(root: Path) -> dict[str, tuple[bytes, int]]:
    """All files with their bytes and inode: proves nothing was rewritten, not just restored."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_ino)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def full_store(master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("full") / "features"
    result = build(master, store)
    assert result.mode == "full" and result.partitions_skipped == 0
    return store


# ----------------------------------------------------------------------------- layout and metadata


def test_layout_and_metadata_describe_the_store(master, full_store):
    meta = read_metadata(full_store)
    raw = scan_raw(master)
    n_parts = sum(len(p) for p in raw.values())
    assert len(files_of(full_store)) == n_parts == len(meta["partitions"])
    for parts in raw.values():
        for part in parts:
            target = (
                full_store / f"broker={part.broker}/symbol={part.symbol}/date={part.date}/features.parquet"
            )
            assert target.is_file()
            entry = meta["partitions"][f"{part.broker}/{part.symbol}/{part.date}"]
            assert entry["source_hash"] == hashlib.sha256(part.path.read_bytes()).hexdigest()
            assert entry["rows"] == part.rows == pq.read_metadata(target).num_rows
    per_instrument = {f"{b}/{s}": sum(p.rows for p in parts) for (b, s), parts in raw.items()}
    assert meta["rows"] == {"total": sum(per_instrument.values()), "per_instrument": per_instrument}
    assert meta["instruments"] == sorted(per_instrument)
    assert meta["feature_set_version"] == PARAMS.version
    assert meta["fingerprint"] == fingerprint(PARAMS, INTERVAL)
    assert meta["warmup_bars"] == warmup_bars(PARAMS)
    assert [f["name"] for f in meta["features"]] == feature_names(PARAMS) == feature_columns(full_store)
    assert all(
        {"name", "family", "description", "params", "lookback", "dtype"} <= set(f) for f in meta["features"]
    )
    assert meta["columns"] == [*BAR_COLUMNS, *feature_names(PARAMS)]
    assert meta["dtypes"]["timestamp"] == "datetime64[ns, UTC]"
    assert {meta["dtypes"][n] for n in feature_names(PARAMS)} == {"float64"}
    assert len(meta["source_hash"]) == 64
    assert datetime.fromisoformat(meta["created_at"]).tzinfo is not None
    spy = read_instrument(master, "ibkr", "SPY")
    assert meta["time_range"]["per_instrument"]["ibkr/SPY"] == {
        "start": spy["timestamp"].min().isoformat(),
        "end": spy["timestamp"].max().isoformat(),
    }
    assert not [p for p in full_store.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_store_holds_raw_bars_and_their_features_exactly(master, full_store):
    frame = load_features(None, None, root=full_store)
    for inst in INSTRUMENTS:
        bars = read_instrument(master, inst.broker, inst.symbol)
        expected = compute_features(bars.sort_values("timestamp").reset_index(drop=True), PARAMS)
        got = frame[(frame["broker"] == inst.broker) & (frame["symbol"] == inst.symbol)].reset_index(
            drop=True
        )
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


# ----------------------------------------------------------------------------- incremental


def test_appending_a_day_computes_only_that_day_and_equals_a_full_rebuild(master, tmp_path):
    days = dates_of(master)
    raw = raw_copy(master, tmp_path / "raw", keep=lambda d: d < days[-1])
    store = tmp_path / "features"
    build(raw, store)
    before = tree_state(store)

    raw_copy(master, raw)  # the new day arrives
    (store / ".staging-killed").mkdir()  # left by a run that was killed mid-way
    (store / ".staging-killed" / "x.parquet").write_bytes(b"half")
    result = build(raw, store)
    assert not (store / ".staging-killed").exists()
    new_parts = len(list(master.glob(f"broker=*/symbol=*/date={days[-1]}")))
    assert result.mode == "incremental"
    assert result.partitions_written == new_parts
    assert result.partitions_skipped == sum(len(p) for p in scan_raw(raw).values()) - new_parts

    rebuilt = tmp_path / "rebuilt"
    build(raw, rebuilt)
    assert files_of(store) == files_of(rebuilt)  # byte for byte
    assert read_metadata(store)["partitions"] == read_metadata(rebuilt)["partitions"]
    after = tree_state(store)
    untouched = [k for k in before if k != METADATA_FILE]
    assert all(after[k] == before[k] for k in untouched)  # same bytes, same inode: not rewritten
    assert read_metadata(store)["last_update"]["mode"] == "incremental"

    again = build(raw, store)
    assert again.mode == "up-to-date" and again.partitions_written == 0
    assert tree_state(store) == after


def test_a_corrected_day_recomputes_it_and_the_days_whose_warmup_it_feeds(master, tmp_path):
    raw = raw_copy(master, tmp_path / "raw")
    store = tmp_path / "features"
    build(raw, store)
    day = dates_of(master)[3]
    target = raw / f"broker=binance/symbol=BTCUSDT/date={day}/bars.parquet"
    bars = pq.read_table(target).to_pandas()
    bars["volume"] = bars["volume"] * 2.0
    bars.to_parquet(target, index=False)

    parts = scan_raw(raw)[("binance", "BTCUSDT")]
    old = read_metadata(store)["partitions"]
    stale = [
        p.date
        for p, h in zip(parts, input_hashes(parts, warmup_bars(PARAMS)), strict=True)
        if old[f"binance/BTCUSDT/{p.date}"]["input_hash"] != h
    ]
    assert stale[0] == day and len(stale) >= 2  # the warm-up of the next day(s) reads the corrected day
    result = build(raw, store)
    assert result.partitions_written == len(stale)

    rebuilt = tmp_path / "rebuilt"
    build(raw, rebuilt)
    assert files_of(store) == files_of(rebuilt)


def test_sliding_window_keeps_history_and_matches_a_rebuild_inside_the_window(master, tmp_path):
    days = dates_of(master)
    raw = raw_copy(master, tmp_path / "raw", keep=lambda d: d < days[-1])
    store = tmp_path / "features"
    build(raw, store)
    first_day_files = {k: v for k, v in files_of(store).items() if f"date={days[0]}" in k}
    assert first_day_files

    raw_copy(master, raw, keep=lambda d: d > days[0])  # the window moves on by a day
    result = build(raw, store)
    assert result.mode == "incremental" and result.partitions_history == len(first_day_files)

    rebuilt = tmp_path / "rebuilt"
    build(raw, rebuilt)
    current = files_of(store)
    history = {k: v for k, v in current.items() if f"date={days[0]}" in k}
    assert history == first_day_files  # kept as they were
    assert {k: v for k, v in current.items() if k not in history} == files_of(rebuilt)
    meta = read_metadata(store)
    assert meta["time_range"]["start"] < read_metadata(rebuilt)["time_range"]["start"]
    assert len(load_features(days[0], days[1], root=store)) > 0  # history is readable


@pytest.mark.parametrize(
    "change",
    ["params", "version", "interval", "source", "instruments"],
)
def test_identity_changes_rebuild_the_whole_store_and_drop_history(master, tmp_path, change):
    days = dates_of(master)
    raw = raw_copy(master, tmp_path / "raw", keep=lambda d: d < days[-2])
    store = tmp_path / "features"
    build(raw, store)
    raw_copy(master, raw, keep=lambda d: days[0] < d < days[-2])  # day 0 would be history
    kwargs: dict = {}
    if change == "params":
        kwargs["params"] = FeatureParams(rsi_window=10)
    elif change == "version":
        kwargs["params"] = FeatureParams(version="2")
    elif change == "interval":
        kwargs["interval"] = "1h"  # the fingerprint includes the bar interval
    elif change == "source":
        kwargs["source"] = "files"
    else:
        shutil.rmtree(raw / "broker=ibkr")
    result = build(raw, store, **kwargs)
    assert result.mode == "full" and result.partitions_history == 0
    assert not list(store.glob(f"*/*/date={days[0]}"))
    meta = read_metadata(store)
    assert len(meta["partitions"]) == sum(len(p) for p in scan_raw(raw).values())
    if change == "params":
        assert "rsi_10" in feature_columns(store)


def test_bad_raw_data_fails_clearly_and_leaves_the_store_untouched(master, tmp_path):
    days = dates_of(master)
    raw = raw_copy(master, tmp_path / "raw", keep=lambda d: d < days[-1])
    store = tmp_path / "features"
    build(raw, store)
    before = tree_state(store)
    raw_copy(master, raw)
    bad = raw / f"broker=oanda/symbol=EUR_USD/date={days[-1]}/bars.parquet"
    bars = pq.read_table(bad).to_pandas()
    pd.concat([bars, bars.iloc[:3]]).to_parquet(bad, index=False)
    with pytest.raises(StoreError, match=r"EUR_USD.*duplicate bar timestamps"):
        build(raw, store)
    assert tree_state(store) == before
    assert not [p for p in store.iterdir() if p.name.startswith(".")]

    fresh = tmp_path / "fresh"
    with pytest.raises(StoreError, match="duplicate"):
        build(raw, fresh)
    assert not fresh.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    (tmp_path / "empty_raw").mkdir()
    with pytest.raises(StoreError, match="no raw partitions"):
        build(tmp_path / "empty_raw", fresh)
    with pytest.raises(StoreError, match="run the extract stage"):
        build(tmp_path / "nowhere", fresh)


# ----------------------------------------------------------------------------- reader


def test_reader_returns_the_half_open_window_sorted(full_store):
    start, end = pd.Timestamp("2026-03-04 10:00", tz="UTC"), pd.Timestamp("2026-03-06 15:30", tz="UTC")
    frame = load_features(start, end, root=full_store)
    assert frame["timestamp"].min() == start and frame["timestamp"].max() < end
    assert (frame["timestamp"] == end - pd.Timedelta(INTERVAL)).any()
    everything = load_features(None, None, root=full_store)
    inside = everything[(everything["timestamp"] >= start) & (everything["timestamp"] < end)]
    pd.testing.assert_frame_equal(frame, inside.reset_index(drop=True), check_exact=True)
    keys = list(zip(frame["broker"], frame["symbol"], frame["timestamp"], strict=True))
    assert keys == sorted(keys)
    assert list(frame.columns) == [*BAR_COLUMNS, *feature_columns(full_store)]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    naive = load_features("2026-03-04 10:00", "2026-03-06 15:30", root=full_store)  # naive = UTC
    pd.testing.assert_frame_equal(naive, frame)


def test_reader_never_returns_a_bar_whose_close_is_after_the_requested_time(full_store):
    bar = pd.Timedelta(INTERVAL)
    start = pd.Timestamp("2026-03-04 10:00", tz="UTC")
    end = pd.Timestamp("2026-03-04 15:30", tz="UTC") + bar / 2  # in the middle of the 15:30 bar
    frame = load_features(start, end, root=full_store)
    assert (frame["timestamp"] + bar <= end).all()  # every bar returned had closed by `end`
    crypto = frame[frame["broker"] == "binance"]
    assert (
        crypto["timestamp"].max() == pd.Timestamp("2026-03-04 15:30", tz="UTC") - bar
    )  # 15:30 is still open
    # on the bar grid nothing changes: the last bar closes exactly at `end`
    on_grid = load_features(start, end - bar / 2, root=full_store)
    assert on_grid["timestamp"].max() == end - bar / 2 - bar


def test_reader_selects_symbols_and_columns(full_store):
    by_symbol = load_features("2026-03-03", "2026-03-05", symbols=["EUR_USD"], root=full_store)
    by_key = load_features("2026-03-03", "2026-03-05", symbols="oanda/EUR_USD", root=full_store)
    pd.testing.assert_frame_equal(by_symbol, by_key)
    assert set(by_symbol["symbol"]) == {"EUR_USD"} and len(by_symbol) > 0
    two = load_features("2026-03-03", "2026-03-05", symbols=["SPY", "binance/BTCUSDT"], root=full_store)
    assert list(dict.fromkeys(two["broker"])) == ["binance", "ibkr"]
    slim = load_features("2026-03-03", "2026-03-05", root=full_store, columns=["ret_1", "vol_regime"])
    assert list(slim.columns) == [*BAR_COLUMNS, "ret_1", "vol_regime"]
    with pytest.raises(StoreError, match="no instrument 'DOGE'"):
        load_features("2026-03-03", "2026-03-05", symbols=["DOGE"], root=full_store)
    with pytest.raises(StoreError, match="unknown feature column"):
        load_features("2026-03-03", "2026-03-05", root=full_store, columns=["future_return"])


def test_reader_empty_results_and_missing_store(full_store, tmp_path):
    empty = load_features("2030-01-01", "2030-01-02", root=full_store)
    assert empty.empty and list(empty.columns) == [*BAR_COLUMNS, *feature_columns(full_store)]
    with pytest.raises(StoreError, match="no feature rows"):
        load_features("2030-01-01", "2030-01-02", root=full_store, require_rows=True)
    with pytest.raises(StoreError, match="not after start"):
        load_features("2026-03-05", "2026-03-03", root=full_store)
    with pytest.raises(StoreError, match="no feature store"):
        load_features("2026-03-03", "2026-03-05", root=tmp_path / "missing")
    with pytest.raises(StoreError, match="no feature store"):
        feature_columns(tmp_path / "missing")


def test_reader_opens_only_the_date_partitions_it_needs(full_store, tmp_path):
    store = tmp_path / "features"
    shutil.copytree(full_store, store)
    for path in store.glob("*/*/date=2026-03-02/features.parquet"):
        path.write_bytes(b"not parquet")  # a day outside the query window is unreadable
    frame = load_features("2026-03-04", "2026-03-05", root=store, require_rows=True)
    assert set(frame["timestamp"].dt.strftime("%Y-%m-%d")) == {"2026-03-04"}
    with pytest.raises(StoreError, match="cannot read feature partitions"):
        load_features("2026-03-02", "2026-03-03", root=store)


def test_warmup_rows_are_nan_only_at_the_start_of_history(full_store):
    frame = load_features(None, None, root=full_store)
    warmup = warmup_bars(PARAMS)
    for (_, _), group in frame.groupby(["broker", "symbol"]):
        regime = group["vol_regime"].to_numpy()
        assert np.isnan(regime[:warmup]).all() and not np.isnan(regime[warmup:]).any()
