"""The archive: deterministic gzip CSV day partitions, a faithful round trip, idempotent reruns, write-once
(a changed day is an error unless replaced with the old content kept), and only validated bars."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotrader import rawstore
from autotrader.archive import (
    ArchiveError,
    archive_raw,
    archived_dates,
    decode_bars,
    encode_bars,
    open_target,
    partition_key,
    read_archived,
    read_archived_bytes,
    redact_url,
)
from autotrader.atomic import write_parquet
from autotrader.params import Instrument
from autotrader.sources.sim import SimulatedMarket

END = pd.Timestamp("2026-11-20", tz="UTC")
INSTRUMENTS = (Instrument(broker="binance", symbol="BTCUSDT"), Instrument(broker="oanda", symbol="EUR_USD"))


def write_sim_raw(root: Path, days: int = 3, end: pd.Timestamp = END) -> Path:
    """A small raw store from the simulated market, as the extract stage would write it."""
    market = SimulatedMarket(seed=3)
    start = end - pd.Timedelta(days=days)
    frames = [(i.broker, i.symbol, market.fetch(i, start, end, pd.Timedelta("5min"))) for i in INSTRUMENTS]
    rawstore.write_extract(root, frames)
    return root


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_sim_raw(tmp_path / "raw")


def all_partitions(raw_root: Path) -> list[tuple[str, str, str]]:
    return [
        (b, s, p.parent.name.split("=", 1)[1])
        for b, s in rawstore.instruments(raw_root)
        for p in rawstore.partition_files(raw_root, b, s)
    ]


def test_encoding_is_deterministic_gzip_without_mtime_or_name(raw: Path) -> None:
    frame = rawstore.read_instrument(raw, "binance", "BTCUSDT", dates=["2026-11-18"])
    first, second = encode_bars(frame), encode_bars(frame.copy())
    assert first == second
    assert first[:2] == b"\x1f\x8b"
    assert first[3] == 0, "no FNAME/FEXTRA/FCOMMENT flags in the gzip header"
    assert first[4:8] == b"\x00\x00\x00\x00", "gzip mtime must be 0"
    text = gzip.decompress(first).decode()
    assert text.splitlines()[0] == "timestamp,broker,symbol,open,high,low,close,volume,spread"
    assert text.splitlines()[1].startswith("2026-11-18T00:00:00.000000Z,binance,BTCUSDT,")


def test_round_trip_is_exact_including_missing_spread(raw: Path) -> None:
    frame = rawstore.read_instrument(raw, "oanda", "EUR_USD", dates=["2026-11-18"])
    frame.loc[[0, 5], "spread"] = np.nan  # Binance-style bars have no spread
    back = decode_bars(encode_bars(frame))
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back["spread"].isna().sum() == 2


def test_encoding_refuses_bars_without_the_schema_columns() -> None:
    with pytest.raises(ArchiveError, match="lack column"):
        encode_bars(pd.DataFrame({"timestamp": [END], "close": [1.0]}))


def test_local_archive_layout_round_trip_and_metrics(raw: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "archive")
    result = archive_raw(raw, url, show_progress=False)
    parts = all_partitions(raw)
    assert len(parts) >= 6
    assert sorted(result.written) == sorted(partition_key(*p) for p in parts)
    metrics = result.as_metrics()
    assert metrics["objects_written"] == len(parts) and metrics["objects_skipped"] == 0
    assert metrics["bytes_written"] == metrics["bytes_total"] > 0
    assert metrics["instruments"] == ["binance/BTCUSDT", "oanda/EUR_USD"]
    assert metrics["first_date"] == "2026-11-17" and metrics["last_date"] == "2026-11-19"
    for broker, symbol, date in parts:
        path = tmp_path / "archive" / f"broker={broker}" / f"symbol={symbol}" / f"date={date}" / "bars.csv.gz"
        assert path.is_file()
        original = rawstore.read_instrument(raw, broker, symbol, dates=[date])
        pd.testing.assert_frame_equal(read_archived(url, broker, symbol, date), original, check_exact=True)
    assert archived_dates(url, "binance", "BTCUSDT") == ["2026-11-17", "2026-11-18", "2026-11-19"]
    assert not list((tmp_path / "archive").rglob("*.tmp")), "no temporary files left behind"


def test_rerun_skips_unchanged_days_and_replaces_a_changed_one_only_when_asked(
    raw: Path, tmp_path: Path
) -> None:
    url = str(tmp_path / "archive")
    archive_raw(raw, url, show_progress=False)
    files = sorted((tmp_path / "archive").rglob("bars.csv.gz"))
    before = {f: (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes()) for f in files}

    again = archive_raw(raw, url, show_progress=False)
    assert again.written == [] and len(again.skipped) == len(files)
    assert again.as_metrics()["bytes_written"] == 0
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before

    # A corrected day in the raw store is a conflict: an error naming the object, and nothing written.
    day = rawstore.partition_files(raw, "binance", "BTCUSDT")[1]
    date = day.parent.name.split("=", 1)[1]
    old_bytes = read_archived_bytes(url, "binance", "BTCUSDT", date)
    frame = pd.read_parquet(day)
    frame.loc[0, "volume"] += 1.0
    write_parquet(day, frame)
    changed = partition_key("binance", "BTCUSDT", date)
    with pytest.raises(ArchiveError, match=rf"1 archived object\(s\) would change: .*{changed}.*--replace"):
        archive_raw(raw, url, show_progress=False)
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before
    assert sorted((tmp_path / "archive").rglob("*.gz")) == files

    # An explicit replace writes it and keeps the old content as a dated sibling; the others are left alone.
    when = datetime(2026, 11, 29, 20, 1, 2, tzinfo=UTC)
    third = archive_raw(raw, url, show_progress=False, replace=True, now=when)
    assert third.written == [changed] and third.replaced == [changed]
    sibling = changed.replace("bars.csv.gz", "bars.replaced-20261129T200102Z.csv.gz")
    assert third.as_metrics()["replaced"] == [{"key": changed, "old_version": sibling}]
    assert (tmp_path / "archive" / sibling).read_bytes() == old_bytes
    assert read_archived(url, "binance", "BTCUSDT", date)["volume"][0] == frame["volume"][0]
    assert archived_dates(url, "binance", "BTCUSDT") == sorted(
        p.parent.name.split("=", 1)[1] for p in rawstore.partition_files(raw, "binance", "BTCUSDT")
    )


def test_missing_raw_store_is_a_clear_error_and_leaves_the_archive(raw: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "archive")
    archive_raw(raw, url, show_progress=False)
    snapshot = {p: p.read_bytes() for p in (tmp_path / "archive").rglob("*") if p.is_file()}
    with pytest.raises(ArchiveError, match="raw bars not found"):
        archive_raw(tmp_path / "nowhere", url, show_progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match="no raw partitions"):
        archive_raw(empty, url, show_progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "archive").rglob("*") if p.is_file()} == snapshot


def test_reading_a_day_that_is_not_archived_names_it(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"binance/BTCUSDT 2020-01-01"):
        read_archived_bytes(str(tmp_path), "binance", "BTCUSDT", "2020-01-01")


def test_urls_never_carry_or_leak_credentials() -> None:
    assert redact_url("s3://bucket/prefix") == "s3://bucket/prefix"
    assert redact_url("https://user:secret@host:9000/p?X-Amz-Signature=abc") == "https://host:9000/p"
    assert redact_url("data/archive") == "data/archive"
    with pytest.raises(ArchiveError, match="carries credentials") as info:
        open_target("s3://AKIA:topsecret@bucket/prefix")
    assert "topsecret" not in str(info.value)
    with pytest.raises(ArchiveError, match="empty"):
        open_target(" ")
    assert open_target("file:///tmp/x").is_local


def small_window(project) -> None:
    """The two instruments and three days ``write_sim_raw`` writes, so the validate stage judges exactly them."""
    project.set_params(
        **{
            "data.instruments": [{"broker": i.broker, "symbol": i.symbol} for i in INSTRUMENTS],
            "data.end": END.strftime("%Y-%m-%d"),
            "data.lookback_days": 3,
        }
    )


def test_archive_stage_writes_metrics(project_factory, tmp_path: Path) -> None:
    project = project_factory(with_dvc=False)
    write_sim_raw(project.root / "data" / "raw")
    archive = tmp_path / "arch"
    project.set_params(**{"archive.url": str(archive)})
    small_window(project)
    project.stage("validate")
    project.stage("archive")
    metrics = json.loads((project.root / "metrics" / "archive.json").read_text())
    assert metrics["url"] == str(archive)
    assert metrics["objects_written"] == metrics["objects_total"] == len(list(archive.rglob("bars.csv.gz")))

    rerun = project.stage("archive")
    metrics = json.loads((project.root / "metrics" / "archive.json").read_text())
    assert metrics["objects_written"] == 0 and metrics["objects_skipped"] == metrics["objects_total"]
    assert "0 written" in rerun.stderr


def test_archive_stage_fails_cleanly_without_raw_bars(project_factory) -> None:
    project = project_factory(with_dvc=False)
    proc = project.stage("archive", check=False)
    assert proc.returncode == 1
    assert (
        "validation.json: not found; run the validate stage" in proc.stderr and "Traceback" not in proc.stderr
    )
    assert not (project.root / "metrics" / "archive.json").exists()
    assert not (project.root / "data" / "archive").exists()
    assert os.listdir(project.root / "data") == ["external"]
