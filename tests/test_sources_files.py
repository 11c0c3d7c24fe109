"""The files source: real hourly EURUSD bars, Binance kline dumps, Parquet, and the rules for bad files."""

from __future__ import annotations

import importlib.resources
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotrader.errors import ConfigError, SourceError
from autotrader.params import DataParams, FileSpec, Instrument
from autotrader.sources.files import FileSource

EUR = Instrument(broker="oanda", symbol="EUR_USD")
BTC = Instrument(broker="binance", symbol="BTCUSDT")
HOUR = pd.Timedelta("1h")
WIDE = (pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2030-01-01", tz="UTC"))


def eurusd_csv() -> Path:
    """The real hourly bars shipped with the ``backtesting`` package (unnamed first column, naive times)."""
    path = Path(str(importlib.resources.files("backtesting") / "test" / "EURUSD.csv"))
    assert path.is_file()
    return path


def fetch(
    path: Path | str, instrument: Instrument = EUR, timezone: str | None = None, window=WIDE
) -> pd.DataFrame:
    spec = FileSpec(path=str(path), broker=instrument.broker, symbol=instrument.symbol, timezone=timezone)
    return FileSource([spec]).fetch(instrument, window[0], window[1], HOUR)


def write_kline_dump(
    path: Path, start: pd.Timestamp, n: int, step: pd.Timedelta, unit: str = "ms"
) -> list[list]:
    """A Binance public-data kline file: no header, 12 columns, epoch open/close times in ``unit``."""
    per = {"ms": 1_000_000, "us": 1_000}[unit]
    rows = []
    for i in range(n):
        open_t = (start + i * step).value // per
        close_t = (start + (i + 1) * step).value // per - 1
        price = 30_000 + i * 0.5
        rows.append(
            [open_t, price, price + 3, price - 2, price + 1, 0.25 + i, close_t, 99.5, 42, 0.1, 3.3, 0]
        )
    text = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(path.with_suffix(".csv").name, text)
    else:
        path.write_text(text)
    return rows


def test_real_eurusd_csv_keeps_every_row_and_naive_times_stay_naive() -> None:
    raw = pd.read_csv(eurusd_csv())
    bars = fetch(eurusd_csv())
    assert len(bars) == len(raw) == 5000
    assert str(bars["timestamp"].dtype) == "datetime64[ns]"  # naive: validate tells the user to set timezone
    assert bars["timestamp"].iloc[0] == pd.Timestamp("2017-04-19 09:00:00")
    assert bars["open"].tolist() == raw["Open"].tolist()
    assert bars["close"].tolist() == raw["Close"].tolist()
    assert bars["volume"].tolist() == raw["Volume"].astype(float).tolist()
    assert bars["spread"].isna().all()
    assert list(bars.columns) == [
        "timestamp",
        "broker",
        "symbol",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "spread",
    ]
    assert set(bars["broker"]) == {"oanda"} and set(bars["symbol"]) == {"EUR_USD"}


def test_a_timezone_localises_naive_times_and_converts_to_utc() -> None:
    utc = fetch(eurusd_csv(), timezone="UTC")
    assert str(utc["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert utc["timestamp"].iloc[0] == pd.Timestamp("2017-04-19 09:00", tz="UTC")
    berlin = fetch(eurusd_csv(), timezone="Europe/Berlin")
    assert berlin["timestamp"].iloc[0] == pd.Timestamp("2017-04-19 07:00", tz="UTC")  # CEST is UTC+2
    assert str(berlin["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_the_window_cuts_rows_without_reordering_them() -> None:
    window = (pd.Timestamp("2018-01-01", tz="UTC"), pd.Timestamp("2018-02-01", tz="UTC"))
    bars = fetch(eurusd_csv(), timezone="UTC", window=window)
    assert bars["timestamp"].min() >= window[0] and bars["timestamp"].max() < window[1]
    assert bars["timestamp"].is_monotonic_increasing
    raw = pd.read_csv(eurusd_csv(), index_col=0)
    inside = raw.loc["2018-01-01":"2018-01-31 23:59"]
    assert len(bars) == len(inside) > 400


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_headerless_binance_kline_dump(tmp_path, unit) -> None:
    start = pd.Timestamp("2026-10-01", tz="UTC")
    path = tmp_path / f"BTCUSDT-1m-2026-10-01.{'zip' if unit == 'us' else 'csv'}"
    rows = write_kline_dump(path, start, 90, pd.Timedelta("1min"), unit=unit)
    bars = fetch(path, BTC)
    assert len(bars) == 90
    assert str(bars["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert bars["timestamp"].iloc[0] == start and bars["timestamp"].iloc[-1] == start + pd.Timedelta("89min")
    assert bars["close"].tolist() == [float(r[4]) for r in rows]
    assert bars["volume"].tolist() == [float(r[5]) for r in rows]
    assert list(bars.columns) == [
        "timestamp",
        "broker",
        "symbol",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "spread",
    ]


def test_open_and_OPEN_headers_and_epoch_ms_read_alike(tmp_path) -> None:
    stamps = pd.date_range("2026-10-01", periods=5, freq="h", tz="UTC")
    ms = stamps.as_unit("ms").asi8
    data = {
        "open": [1.0, 2, 3, 4, 5],
        "high": [2.0] * 5,
        "low": [0.5] * 5,
        "close": [1.5] * 5,
        "volume": [10, 11, 12, 13, 14],
    }
    lower = pd.DataFrame({"timestamp": ms, **data})
    upper = pd.DataFrame({"Date": ms, **{k.capitalize(): v for k, v in data.items()}})
    shout = pd.DataFrame({"OPEN_TIME": ms, **{k.upper(): v for k, v in data.items()}})
    frames = []
    for name, frame in (("lower.csv", lower), ("upper.csv", upper), ("shout.csv", shout)):
        frame.to_csv(tmp_path / name, index=False)
        frames.append(fetch(tmp_path / name, BTC))
    for bars in frames:
        pd.testing.assert_frame_equal(bars, frames[0])
    assert frames[0]["timestamp"].tolist() == list(stamps)
    assert frames[0]["volume"].dtype == "float64"


def test_parquet_with_a_datetime_index(tmp_path) -> None:
    stamps = pd.date_range("2026-10-01", periods=48, freq="30min", tz="UTC", name="Datetime")
    frame = pd.DataFrame(
        {
            "Open": np.linspace(1, 2, 48),
            "High": 3.0,
            "Low": 0.5,
            "Close": np.linspace(1.1, 2.1, 48),
            "Volume": 7.0,
            "Spread": 0.01,
        },
        index=stamps,
    )
    frame.to_parquet(tmp_path / "bars.parquet")
    bars = fetch(tmp_path / "bars.parquet", BTC)
    assert bars["timestamp"].tolist() == list(stamps)
    assert bars["close"].tolist() == frame["Close"].tolist()
    assert (bars["spread"] == 0.01).all()


def test_parquet_with_ms_timestamps_becomes_ns_utc(tmp_path) -> None:
    stamps = pd.date_range("2026-10-01", periods=3, freq="5min", tz="UTC").as_unit("ms")
    pd.DataFrame(
        {"timestamp": stamps, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    ).to_parquet(tmp_path / "ms.parquet")
    bars = fetch(tmp_path / "ms.parquet", BTC)
    assert str(bars["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert bars["timestamp"].tolist() == list(stamps)


def test_rows_are_kept_as_the_file_has_them(tmp_path) -> None:
    """Out of order, a duplicate, a text close and no volume column: all left for validate to see."""
    path = tmp_path / "messy.csv"
    path.write_text(
        "time,open,high,low,close\n"
        "2026-10-01T02:00:00Z,1,2,0.5,1.5\n"
        "2026-10-01T01:00:00Z,1,2,0.5,oops\n"
        "2026-10-01T01:00:00Z,1,2,0.5,1.5\n"
    )
    bars = fetch(path, BTC)
    assert bars["timestamp"].tolist() == [
        pd.Timestamp("2026-10-01 02:00", tz="UTC"),
        pd.Timestamp("2026-10-01 01:00", tz="UTC"),
        pd.Timestamp("2026-10-01 01:00", tz="UTC"),
    ]
    assert bars["close"].tolist() == ["1.5", "oops", "1.5"]  # text stays text
    assert "volume" not in bars.columns
    assert bars["spread"].isna().all()


def test_offsets_are_kept_unless_they_are_utc_or_a_timezone_is_set(tmp_path) -> None:
    path = tmp_path / "offsets.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n2026-10-01T09:00:00+02:00,1,1,1,1,1\n2026-10-01T10:00:00+02:00,1,1,1,1,1\n"
    )
    kept = fetch(path, BTC)
    assert str(kept["timestamp"].dtype) == "datetime64[ns, UTC+02:00]"
    assert kept["timestamp"].iloc[0] == pd.Timestamp("2026-10-01 07:00", tz="UTC")
    converted = fetch(path, BTC, timezone="Europe/Berlin")
    assert str(converted["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert converted["timestamp"].iloc[0] == pd.Timestamp("2026-10-01 07:00", tz="UTC")


def test_unparseable_times_are_kept_and_not_filtered(tmp_path) -> None:
    path = tmp_path / "bad_times.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n2026-10-01 00:00,1,1,1,1,1\nnot a time,1,1,1,1,1\n"
    )
    bars = fetch(
        path, BTC, window=(pd.Timestamp("2026-10-01", tz="UTC"), pd.Timestamp("2026-10-02", tz="UTC"))
    )
    assert bars["timestamp"].tolist() == ["2026-10-01 00:00", "not a time"]


def test_separate_date_and_time_columns(tmp_path) -> None:
    path = tmp_path / "mt.csv"
    path.write_text(
        "<DATE>;<TIME>;<OPEN>;<HIGH>;<LOW>;<CLOSE>;<VOL>\n2026.10.01;00:00;1;2;0.5;1.5;3\n2026.10.01;00:05;1;2;0.5;1.5;4\n"
    )
    bars = fetch(path, EUR, timezone="UTC")
    assert bars["timestamp"].tolist() == [
        pd.Timestamp("2026-10-01 00:00", tz="UTC"),
        pd.Timestamp("2026-10-01 00:05", tz="UTC"),
    ]
    assert bars["volume"].tolist() == [3.0, 4.0]


def test_several_files_feed_one_instrument_in_params_order(tmp_path) -> None:
    write_kline_dump(tmp_path / "a.csv", pd.Timestamp("2026-10-01", tz="UTC"), 3, HOUR)
    write_kline_dump(tmp_path / "b.csv", pd.Timestamp("2026-10-02", tz="UTC"), 2, HOUR)
    specs = [FileSpec(path=str(tmp_path / n), broker="binance", symbol="BTCUSDT") for n in ("a.csv", "b.csv")]
    data = DataParams(source="files", files=specs)
    assert data.active_instruments() == (BTC,)
    bars = FileSource(specs).fetch(BTC, *WIDE, HOUR)
    assert len(bars) == 5 and bars["timestamp"].is_monotonic_increasing


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "the file is empty"),
        ("header_only.csv", "timestamp,open,high,low,close,volume\n", "has no data rows"),
        ("bars.xlsx", "whatever", "unknown extension"),
        ("no_time.csv", "open,high,low,close\n1,2,0.5,1.5\n", "no timestamp column"),
        ("odd.csv", "1700000000000,1,2,3\n", "no header row and 4 columns"),
        ("broken.parquet", "PAR1 this is not parquet", "cannot be read as .parquet"),
    ],
)
def test_bad_files_raise_a_source_error_naming_the_file(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SourceError, match=message) as err:
        fetch(path, BTC)
    assert str(path) in str(err.value)


def test_a_missing_file_is_named() -> None:
    with pytest.raises(SourceError, match=r"nowhere/bars\.csv: no such file"):
        fetch("nowhere/bars.csv", BTC)


def test_a_file_outside_the_window_says_what_it_spans() -> None:
    window = (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC"))
    with pytest.raises(
        SourceError, match=r"EURUSD\.csv.*none of its 5000 rows.*2017-04-19 09:00:00.*data\.end"
    ):
        fetch(eurusd_csv(), timezone="UTC", window=window)


def test_an_ambiguous_local_time_is_an_error_not_a_guess(tmp_path) -> None:
    path = tmp_path / "ny.csv"
    path.write_text("Date,Open,High,Low,Close,Volume\n2026-11-01 01:30:00,1,1,1,1,1\n")
    with pytest.raises(SourceError, match=r"ny\.csv.*ambiguous in America/New_York"):
        fetch(path, EUR, timezone="America/New_York")


def test_an_unknown_timezone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.files\[0\]\.timezone 'Mars/Olympus'"):
        FileSource([FileSpec(path="x.csv", broker="oanda", symbol="EUR_USD", timezone="Mars/Olympus")])


def test_bars_written_with_to_csv_read_back_bit_for_bit_on_either_reader(tmp_path) -> None:
    """A pandas ``to_csv`` of real bars (UTC offsets, 17-digit floats) is Arrow's fast layout; the same file
    with one text cell goes through pandas. Both readers give the nearest float64, i.e. the original bits."""
    from autotrader.sources.sim import SimulatedMarket

    start = pd.Timestamp("2026-03-02", tz="UTC")
    bars = SimulatedMarket(seed=5).fetch(BTC, start, start + pd.Timedelta(days=2), pd.Timedelta("1min"))
    columns = ["timestamp", "open", "high", "low", "close", "volume", "spread"]
    path = tmp_path / "btc.csv"
    bars[columns].to_csv(path, index=False)
    assert "+00:00" in path.read_text().splitlines()[1]
    fast = fetch(path, BTC)
    pd.testing.assert_frame_equal(fast, bars[fast.columns].reset_index(drop=True), check_exact=True)
    for col in columns[1:]:
        assert np.array_equal(fast[col].to_numpy().view(np.int64), bars[col].to_numpy().view(np.int64))

    text = bars[columns].astype({"volume": object})
    text.loc[7, "volume"] = "n/a?"  # not a number: pandas keeps the column as text for validate to fail
    text.to_csv(path, index=False)
    slow = fetch(path, BTC)
    assert slow["volume"].dtype == object and slow.loc[7, "volume"] == "n/a?"
    for col in ("open", "high", "low", "close", "spread"):
        assert np.array_equal(slow[col].to_numpy().view(np.int64), bars[col].to_numpy().view(np.int64))
    pd.testing.assert_series_equal(slow["timestamp"], fast["timestamp"])
