"""Validation beyond single rules: calendars and gaps, the spike rule on the default market, the
reports and Data Docs it writes, and the ``validate`` stage's exit code and message."""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotrader import rawstore
from autotrader.calendars import bar_index, expected_bars_per_session, profile
from autotrader.params import FileSpec, Instrument, ValidateParams, ValidateSeverity, load_params
from autotrader.sources.files import read_table, to_bars
from autotrader.sources.files import window as files_window
from autotrader.sources.sim import SimulatedMarket
from autotrader.validation import Window, validate_instrument, validate_raw, write_outputs
from autotrader.validation.derive import calendar_view, checks_table, robust_return_z
from autotrader.validation.engine import GxEngine
from tests.conftest import REPO, Project

pytestmark = pytest.mark.xdist_group("validation")

HOUR = pd.Timedelta("1h")
END = pd.Timestamp("2026-11-20", tz="UTC")


def test_default_simulated_market_never_trips_the_spike_rule() -> None:
    """120 days of 5-minute bars, all 7 default instruments, default spike_sigma: no return spike."""
    params = load_params(REPO / "params.yaml")
    data = params.data
    assert (data.lookback_days, data.interval, len(data.instruments)) == (120, "5min", 7)
    market = SimulatedMarket(seed=data.sim.seed, signal_strength=data.sim.signal_strength)
    worst = {}
    for instrument in data.instruments:
        bars = market.fetch(instrument, data.start_ts(), data.end_ts(), data.interval_td)
        worst[instrument.key] = float(robust_return_z(bars["timestamp"], bars["close"]).max())
    assert max(worst.values()) < params.validate_.spike_sigma / 2, worst


def test_default_simulated_market_never_trips_the_new_anomaly_rules() -> None:
    """No false alarms: the default market (7 instruments, 120 days of 5-minute bars) against the frozen-feed,
    zero-volume, market-hours, grid, future, finite, magnitude and spread rules, by their derived columns."""
    params = load_params(REPO / "params.yaml")
    data, rules = params.data, params.validate_
    market = SimulatedMarket(seed=data.sim.seed, signal_strength=data.sim.signal_strength)
    worst: dict[str, dict[str, float]] = {}
    for instrument in data.instruments:
        bars = market.fetch(instrument, data.start_ts(), data.end_ts(), data.interval_td)
        expected = bar_index(instrument.broker, data.start_ts(), data.end_ts(), data.interval_td)
        checks = checks_table(
            bars, expected, broker=instrument.broker, interval=data.interval_td, end=data.end_ts()
        )
        asset_class = profile(instrument.broker).asset_class
        worst[instrument.key] = {
            "identical_run": int(checks["identical_ohlc_run"].max()),
            "zero_volume_run": int(checks["zero_volume_run"].max()),
            "frozen_limit": rules.frozen_bars.of(asset_class),
        }
        assert int(checks["identical_ohlc_run"].max()) < rules.frozen_bars.of(asset_class)
        assert int(checks["zero_volume_run"].max()) < rules.zero_volume_bars.of(asset_class)
        assert checks["outside_session_s"].max() == 0 and checks["on_grid"].all()
        assert checks["before_end"].all() and checks["non_finite"].max() == 0
        assert checks["magnitude"].max() < rules.max_abs_value
        assert checks["spread_ratio"].max() < rules.max_spread_ratio / 10, instrument.key
    assert max(w["identical_run"] for w in worst.values()) == 1, worst  # no bar ever repeats


def test_real_hourly_eurusd_raises_no_anomaly() -> None:
    """No false alarms on real data: the hourly EURUSD file shipped with ``backtesting``, in the window
    tests/test_training_files.py uses (290 days to 2018-02-08: 4,937 bars from 2017-04-24), passes every
    anomaly rule, the frozen-feed and market-hours rules included. Its two Friday 21:00 UTC bars (an
    hour after the 17:00 New York close, in summer time) are within the market-hours grace and only
    show as off-calendar warnings. (The file's first days hold the 2017 French-election weekend gap,
    a real 25σ move the spike rule flags; that window is the training test's, not this one.)"""
    source = importlib.resources.files("backtesting") / "test" / "EURUSD.csv"
    path = Path(str(source))
    spec = FileSpec(path=str(path), broker="oanda", symbol="EUR_USD", timezone="UTC")
    end = pd.Timestamp("2018-02-08", tz="UTC")
    start = end - pd.Timedelta(days=290)
    bars, _ = files_window(to_bars(read_table(path), spec, path), start, end)
    lenient = ValidateParams(severity=ValidateSeverity(completeness="warn"))  # the file has real holes
    window = Window(start, end, HOUR, clip_to_data=False)
    result = validate_instrument(GxEngine(), "oanda", "EUR_USD", bars, window, lenient)
    assert result.rows == len(bars) > 4900
    assert result.success, [f.line() for f in result.failures]
    anomalies = {f.rule for f in result.findings if f.family == "anomalies"}
    assert {"frozen_ohlc", "zero_volume", "finite_values", "market_open", "on_grid"} <= anomalies
    assert [f.rule for f in result.findings if f.family == "anomalies" and not f.success] == []
    assert result.off_calendar_count == 2


@pytest.mark.parametrize("broker", ["binance", "oanda", "ibkr"])
def test_calendar_view_agrees_with_the_calendar(broker: str) -> None:
    start = END - pd.Timedelta(days=9)
    expected = bar_index(broker, start, END, HOUR)
    full = calendar_view(pd.Series(expected), broker, start, END, HOUR)
    counts = expected_bars_per_session(broker, start, END, HOUR)
    assert full.sessions["expected"].tolist() == counts.tolist()
    assert (full.sessions["observed"] == full.sessions["expected"]).all()
    assert full.gaps.empty  # weekends and nights are not gaps: only expected bars count

    # Drop 5 consecutive expected bars, then a single one: two runs, 6 bars.
    holes = np.r_[20:25, 40]
    view = calendar_view(pd.Series(expected.delete(holes)), broker, start, END, HOUR)
    assert view.gaps["bars"].tolist() == [5, 1]
    assert view.gaps["start"].tolist() == [expected[20], expected[40]]
    assert view.gaps["end"].tolist() == [expected[24] + HOUR, expected[40] + HOUR]
    assert int(view.sessions["missing"].sum()) == 6


def test_window_clips_to_the_newest_bar_only_when_end_is_now() -> None:
    stamps = pd.Series(pd.date_range("2026-11-19 10:00", periods=3, freq="h", tz="UTC"))
    fixed = Window(END - pd.Timedelta(days=2), END, HOUR, clip_to_data=False)
    live = Window(END - pd.Timedelta(days=2), END, HOUR, clip_to_data=True)
    assert fixed.end_for(stamps) == END
    assert live.end_for(stamps) == pd.Timestamp("2026-11-19 13:00", tz="UTC")


def _write_raw(root: Path, instruments: list[Instrument], start: pd.Timestamp, corrupt: Callable) -> None:
    market = SimulatedMarket()
    frames = []
    for inst in instruments:
        bars = market.fetch(inst, start, END, HOUR)
        frames.append((inst.broker, inst.symbol, corrupt(inst, bars)))
    rawstore.write_extract(root, frames)


def _negative_volume_on_btc(inst: Instrument, bars: pd.DataFrame) -> pd.DataFrame:
    if inst.symbol == "BTCUSDT":
        bars.loc[[3, 4], "volume"] = -1.0
    return bars


def test_reports_data_docs_and_summary_are_written_even_on_failure(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    data = params.data.model_copy(
        update={
            "interval": "1h",
            "lookback_days": 3,
            "end": "2026-11-20",
            "instruments": (
                Instrument(broker="binance", symbol="BTCUSDT"),
                Instrument(broker="oanda", symbol="EUR_USD"),
                Instrument(broker="ibkr", symbol="SPY"),  # configured but never extracted
            ),
        }
    )
    params = params.model_copy(update={"data": data})
    raw = tmp_path / "raw"
    _write_raw(raw, list(data.instruments[:2]), data.start_ts(), _negative_volume_on_btc)

    run = validate_raw(params, raw)
    reports, metrics = tmp_path / "reports" / "validation", tmp_path / "metrics" / "validation.json"
    index = write_outputs(run, reports, metrics)

    summary = json.loads(metrics.read_text())
    assert summary["success"] is False
    assert set(summary["instruments"]) == {"binance/BTCUSDT", "oanda/EUR_USD", "ibkr/SPY"}
    btc = summary["instruments"]["binance/BTCUSDT"]
    assert btc["success"] is False and btc["rows"] == 72
    assert btc["families"]["anomalies"]["failed"] == 1
    assert summary["instruments"]["oanda/EUR_USD"]["success"] is True
    spy = summary["instruments"]["ibkr/SPY"]
    assert spy["rows"] == 0 and spy["families"]["completeness"]["failed"] == 2  # no bars, no coverage

    report = json.loads((reports / "binance__BTCUSDT.json").read_text())
    assert report["success"] is False
    (line,) = report["failures"]
    assert "non_negative_volume" in line and "2 unexpected of 72 rows" in line
    assert set(report["great_expectations"]) == {
        f"binance__BTCUSDT.{t}" for t in ("bars", "checks", "feed", "sessions")
    }
    volume = next(e for e in report["expectations"] if e["rule"] == "non_negative_volume")
    assert volume["unexpected_count"] == 2 and volume["examples"] == [-1.0, -1.0]

    assert index == reports / "data_docs" / "index.html"
    html = index.read_text()
    for suite in (
        "binance__BTCUSDT/checks",
        "binance__BTCUSDT/feed",
        "oanda__EUR_USD/sessions",
        "ibkr__SPY/bars",
    ):
        assert suite in html
    assert list((reports / "data_docs" / "validations").rglob("*.html"))

    message = run.failure_message(reports)
    lines = message.splitlines()
    assert len(lines) == 1 + len(run.failures) == 4
    assert any(ln.startswith("binance/BTCUSDT: anomalies rule non_negative_volume") for ln in lines)
    assert any(ln.startswith("ibkr/SPY: completeness rule has_bars") for ln in lines)


def test_validate_stage_exits_non_zero_naming_the_rule(project_factory: Callable[..., Project]) -> None:
    project = project_factory(with_dvc=False)
    project.set_params(
        **{
            "data.interval": "1h",
            "data.lookback_days": 3,
            "data.instruments": [{"broker": "binance", "symbol": "BTCUSDT"}],
        }
    )
    start = END - pd.Timedelta(days=3)
    _write_raw(
        project.root / "data" / "raw",
        [Instrument(broker="binance", symbol="BTCUSDT")],
        start,
        _negative_volume_on_btc,
    )
    metrics = project.root / "metrics" / "validation.json"
    metrics.parent.mkdir()
    metrics.write_text('{"success": true}\n')  # a previous run's verdict must not survive a failure

    proc = project.stage("validate", check=False)
    assert proc.returncode == 1, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "validation failed: 1 expectation(s)" in err
    assert "binance/BTCUSDT: anomalies rule non_negative_volume" in err and "2 unexpected of 72 rows" in err
    assert "Traceback" not in proc.stderr
    assert json.loads(metrics.read_text())["success"] is False
    assert (project.root / "reports" / "validation" / "data_docs" / "index.html").is_file()
