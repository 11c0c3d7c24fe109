"""The ``extract`` stage run as DVC runs it, in a throw-away copy of the project."""

from __future__ import annotations

import importlib.resources
import runpy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autotrader import rawstore
from autotrader.errors import SourceError
from autotrader.params import Instrument
from autotrader.sources.binance import KLINES_PATH
from autotrader.sources.sim import SimulatedMarket
from tests.conftest import tree_hashes
from tests.test_sources_binance import FakeBinance, make_klines

REPO = Path(__file__).resolve().parents[1]

SMALL = {
    "data.end": "2026-11-20",
    "data.lookback_days": 2,
    "data.interval": "15min",
    "data.instruments": [
        {"broker": "binance", "symbol": "BTCUSDT"},
        {"broker": "oanda", "symbol": "EUR_USD"},
        {"broker": "ibkr", "symbol": "SPY"},
    ],
}


def test_extract_twice_gives_byte_identical_files(project) -> None:
    project.set_params(**SMALL)
    first = project.dvc("repro", "extract")  # the dvc.yaml contract: deps exist, the out is declared
    raw = project.root / "data" / "raw"
    before = tree_hashes(raw)
    project.stage("extract")
    assert tree_hashes(raw) == before

    # one day file per instrument and UTC date, and they read back as the simulator's bars
    assert rawstore.instruments(raw) == [("binance", "BTCUSDT"), ("ibkr", "SPY"), ("oanda", "EUR_USD")]
    assert len(rawstore.partition_files(raw, "binance", "BTCUSDT")) == 2
    stored = rawstore.read_instrument(raw, "binance", "BTCUSDT")
    sim = project.params()["data"]["sim"]
    expected = SimulatedMarket(seed=sim["seed"], signal_strength=sim["signal_strength"]).fetch(
        Instrument(broker="binance", symbol="BTCUSDT"),
        pd.Timestamp("2026-11-18", tz="UTC"),
        pd.Timestamp("2026-11-20", tz="UTC"),
        pd.Timedelta("15min"),
    )
    pd.testing.assert_frame_equal(stored, expected)

    # a one-line summary per instrument: bars, first and last timestamp
    assert "binance/BTCUSDT: 192 bars, 2026-11-18 00:00:00+00:00 → 2026-11-19 23:45:00+00:00" in first.stderr
    assert "ibkr/SPY: 52 bars, 2026-11-18 14:30:00+00:00 → 2026-11-19 20:45:00+00:00" in first.stderr


def test_real_csv_then_a_bad_file_leaves_the_raw_store_untouched(project_factory) -> None:
    project = project_factory(with_dvc=False)
    eurusd = Path(str(importlib.resources.files("backtesting") / "test" / "EURUSD.csv"))
    project.set_params(
        **{
            "data.source": "files",
            "data.files": [{"path": str(eurusd), "broker": "oanda", "symbol": "EUR_USD", "timezone": "UTC"}],
            "data.interval": "1h",
            "data.end": "2018-02-08",
            "data.lookback_days": 7,  # docs/sources.md runs all 300 days; a week keeps the test quick
        }
    )
    ok = project.stage("extract")
    raw = project.root / "data" / "raw"
    in_file = pd.read_csv(eurusd, index_col=0).loc["2018-02-01":"2018-02-07 23:00"]
    assert (
        f"oanda/EUR_USD: {len(in_file)} bars, 2018-02-01 00:00:00+00:00 → 2018-02-07 15:00:00+00:00"
        in ok.stderr
    )
    stored = rawstore.read_instrument(raw, "oanda", "EUR_USD")
    assert stored["close"].tolist() == in_file["Close"].tolist()
    before = tree_hashes(raw)

    (project.root / "data" / "external" / "empty.csv").write_text("")
    project.set_params(
        **{
            "data.files": [
                {"path": "data/external/empty.csv", "broker": "oanda", "symbol": "EUR_USD", "timezone": "UTC"}
            ]
        }
    )
    failed = project.stage("extract", check=False)
    assert failed.returncode == 1
    assert "data/external/empty.csv: the file is empty" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert tree_hashes(raw) == before
    assert sorted(p.name for p in (project.root / "data").iterdir()) == [
        ".raw.lock",  # the stage's output lock (flock), kept between runs
        "external",
        "raw",
    ]  # no temp left over


def test_live_extract_against_a_binance_server(project_factory, httpserver) -> None:
    klines = make_klines(
        pd.Timestamp("2026-11-18", tz="UTC"), pd.Timestamp("2026-11-20", tz="UTC"), step_ms=300_000
    )
    fake = FakeBinance(klines)
    httpserver.expect_request(KLINES_PATH, method="GET").respond_with_handler(fake)
    project = project_factory(with_dvc=False)
    project.set_params(
        **{
            "data.source": "live",
            "data.end": "2026-11-20",
            "data.lookback_days": 1,
            "data.interval": "5min",
            "data.instruments": [{"broker": "binance", "symbol": "BTCUSDT"}],
            "data.live.binance_url": httpserver.url_for("/").rstrip("/"),
            "data.live.backoff_s": 0.001,
        }
    )
    run = project.stage("extract", env={"BINANCE_API_KEY": ""})
    assert "binance/BTCUSDT: 288 bars, 2026-11-19 00:00:00+00:00 → 2026-11-19 23:55:00+00:00" in run.stderr
    stored = rawstore.read_instrument(project.root / "data" / "raw", "binance", "BTCUSDT")
    assert stored["close"].tolist() == [float(k[4]) for k in klines[288:]]
    assert len(fake.requests) == 1


def test_no_instruments_is_a_clear_error(tmp_path, monkeypatch) -> None:
    main = runpy.run_path(str(REPO / "stages" / "extract.py"), run_name="extract_under_test")["main"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["instruments"] = []
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"data\.source=sim: no instruments to extract"):
        main()
    assert not (tmp_path / "data").exists()


def _frames(days: int = 5) -> list[tuple[str, str, pd.DataFrame]]:
    end = pd.Timestamp("2026-11-20", tz="UTC")
    market = SimulatedMarket()
    pairs = [("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("oanda", "EUR_USD"), ("ibkr", "SPY")]
    return [
        (
            b,
            s,
            market.fetch(
                Instrument(broker=b, symbol=s), end - pd.Timedelta(days=days), end, pd.Timedelta("5min")
            ),
        )
        for b, s in pairs
    ]


def test_concurrent_writes_give_the_bytes_of_one_instrument_after_another(tmp_path: Path) -> None:
    frames = _frames()
    rawstore.write_extract(tmp_path / "threads", frames)
    for broker, symbol, frame in frames:  # the plain loop the writer threads replace
        rawstore.write_partitions(tmp_path / "loop", frame, broker, symbol)
    assert tree_hashes(tmp_path / "threads") == tree_hashes(tmp_path / "loop")


def test_a_source_failing_while_instruments_are_being_written_keeps_the_old_tree(tmp_path: Path) -> None:
    frames = _frames()
    root = tmp_path / "raw"
    rawstore.write_extract(root, frames[:2])
    before = tree_hashes(root)

    def failing():
        yield from frames  # all four are handed to the writer threads first
        raise SourceError("ibkr: the gateway went away")

    with pytest.raises(SourceError, match="gateway went away"):
        rawstore.write_extract(root, failing())
    assert tree_hashes(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no staging tree left beside it
