"""Each validation rule on a small clean frame, then on the same frame with exactly one defect.

The frame is five days of hourly EUR/USD from the simulated market (98 bars on the FX calendar). Every
case runs the real Great Expectations suites and asserts which rules broke, that nothing else did,
and that the message names broker, symbol, rule and the unexpected count.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from autotrader.params import Instrument, ValidateParams, ValidateSeverity
from autotrader.schema import empty_bars
from autotrader.sources.sim import SimulatedMarket
from autotrader.validation import InstrumentResult, Window, validate_instrument
from autotrader.validation.derive import robust_return_z
from autotrader.validation.engine import GxEngine

pytestmark = pytest.mark.xdist_group("validation")

END = pd.Timestamp("2026-11-20", tz="UTC")
START = END - pd.Timedelta(days=5)
HOUR = pd.Timedelta("1h")
WINDOW = Window(START, END, HOUR, clip_to_data=False)
BROKER, SYMBOL = "oanda", "EUR_USD"


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return SimulatedMarket().fetch(Instrument(broker=BROKER, symbol=SYMBOL), START, END, HOUR)


def validate(frame: pd.DataFrame, params: ValidateParams | None = None) -> InstrumentResult:
    return validate_instrument(GxEngine(), BROKER, SYMBOL, frame, WINDOW, params or ValidateParams())


def broken(result: InstrumentResult) -> set[str]:
    return {f.rule for f in result.findings if not f.success}


def test_clean_frame_passes_every_rule(clean: pd.DataFrame) -> None:
    result = validate(clean)
    assert result.success, [f.line() for f in result.failures]
    assert broken(result) == set()
    assert result.rows == len(clean) == 98
    counts = result.family_counts()
    assert all(counts[fam]["checked"] > 0 for fam in ("schema", "completeness", "anomalies", "gaps"))
    assert result.gaps.empty and result.off_calendar_count == 0


def _drop_close(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns=["close"])


def _extra_column(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(vwap=f["close"])


def _text_in_close(f: pd.DataFrame) -> pd.DataFrame:
    f = f.astype({"close": object})
    f.loc[7, "close"] = "abc"
    return f


def _naive_timestamps(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(timestamp=f["timestamp"].dt.tz_localize(None))


def _plus_five_hours(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(timestamp=f["timestamp"].dt.tz_convert("+05:00"))


def _other_broker(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[3, "broker"] = "binance"
    return f


def _null_close(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[12, "close"] = np.nan
    return f


def _null_timestamp(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[12, "timestamp"] = pd.NaT
    return f


def _duplicate_timestamp(f: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([f.iloc[:11], f.iloc[10:11], f.iloc[11:]], ignore_index=True)


def _out_of_order(f: pd.DataFrame) -> pd.DataFrame:
    order = list(range(len(f)))
    order[20], order[21] = order[21], order[20]
    return f.iloc[order].reset_index(drop=True)


def _high_below_low(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[30, "high"] = f.loc[30, "low"] * 0.999
    return f


def _negative_volume(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[40, "volume"] = -5.0
    return f


def _zero_prices(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[50, ["open", "high", "low", "close"]] = 0.0
    return f


def _negative_spread(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[60, "spread"] = -0.0001
    return f


def _spike(f: pd.DataFrame) -> pd.DataFrame:
    """Close jumps by 50 robust σ and comes back: a bad tick, with high/low kept consistent."""
    sigma = float(np.median(np.abs(np.diff(np.log(f["close"].to_numpy()))))) * 1.4826
    f.loc[70, "close"] = f.loc[70, "close"] * np.exp(50 * sigma)
    f.loc[70, "high"] = max(f.loc[70, "high"], f.loc[70, "close"])
    f.loc[71, "open"] = f.loc[70, "close"]
    f.loc[71, "high"] = max(f.loc[71, "high"], f.loc[71, "open"])
    return f


def _half_session_missing(f: pd.DataFrame) -> pd.DataFrame:
    """Every other bar of the FX session labelled 2026-11-18 (17:00 New York the day before → 17:00)."""
    ts = f["timestamp"]
    session = (ts >= pd.Timestamp("2026-11-17 22:00", tz="UTC")) & (
        ts < pd.Timestamp("2026-11-18 22:00", tz="UTC")
    )
    keep = ~session | (ts.dt.hour % 2 == 0)
    return f.loc[keep].reset_index(drop=True)


def _off_grid_bar(f: pd.DataFrame) -> pd.DataFrame:
    extra = f.iloc[[30]].assign(timestamp=f.loc[30, "timestamp"] + pd.Timedelta(minutes=30))
    return pd.concat([f.iloc[:31], extra, f.iloc[31:]], ignore_index=True)


def _bar_before_open(f: pd.DataFrame) -> pd.DataFrame:
    """A bar an hour before the FX week opens (Sunday 21:00 UTC in winter): some brokers print it."""
    extra = f.iloc[[0]].assign(timestamp=f.loc[0, "timestamp"] - HOUR)
    return pd.concat([extra, f], ignore_index=True)


def _weekend_bar(f: pd.DataFrame) -> pd.DataFrame:
    """A bar on Sunday 10:00 UTC, twelve hours before the FX week opens: the market is closed."""
    extra = f.iloc[[0]].assign(timestamp=pd.Timestamp("2026-11-15 10:00", tz="UTC"))
    return pd.concat([extra, f], ignore_index=True)


def _future_bar(f: pd.DataFrame) -> pd.DataFrame:
    extra = f.iloc[[-1]].assign(timestamp=END + pd.Timedelta(days=3))
    return pd.concat([f, extra], ignore_index=True)


def _freeze(f: pd.DataFrame, rows: slice, *, flat: bool = True, volume: float | None = 0.0) -> pd.DataFrame:
    """A feed stuck on one quote: bars ``rows`` repeat bar ``rows.start - 1`` (its close when ``flat``)."""
    source = rows.start - 1
    values = f.loc[source, "close"] if flat else f.loc[source, ["open", "high", "low", "close"]].to_numpy()
    f.loc[rows, ["open", "high", "low", "close"]] = values
    if volume is not None:
        f.loc[rows, "volume"] = volume
    return f


def _frozen_feed(f: pd.DataFrame) -> pd.DataFrame:
    """20 bars with OHLC equal to the last close and zero volume: the feed froze."""
    return _freeze(f, slice(40, 59))


def _repeated_bar(f: pd.DataFrame) -> pd.DataFrame:
    """Bar 39 (not flat) printed 8 more times with its volume: a stale cache replaying one bar (9 bars)."""
    return _freeze(f, slice(40, 47), flat=False, volume=None)


def _zero_volume_while_open(f: pd.DataFrame) -> pd.DataFrame:
    """Prices move but volume is 0 for 8 bars of an open session (a volume feed that died)."""
    f.loc[40:47, "volume"] = 0.0
    return f


def _inf_volume(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[30, "volume"] = np.inf
    return f


def _minus_inf_close(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[30, "close"] = -np.inf
    return f


def _absurd_price(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[30, ["open", "high", "low", "close"]] = 1e300
    return f


def _epoch_in_volume(f: pd.DataFrame) -> pd.DataFrame:
    """Columns shifted in an export: nanosecond epochs (≈1.8e18) land in volume."""
    f["volume"] = f["timestamp"].astype("int64").astype("float64")
    return f


def _spread_in_points(f: pd.DataFrame) -> pd.DataFrame:
    """An MT5-style export: spread in points (1 point = 0.00001), not in price units."""
    f["spread"] = (f["spread"] * 1e5).round()
    return f


def _empty(f: pd.DataFrame) -> pd.DataFrame:
    return empty_bars()


# (defect, the rules it must break and no others, a word the failure message must contain, success)
CASES: list[tuple[Callable[[pd.DataFrame], pd.DataFrame], set[str], str, bool]] = [
    (_drop_close, {"columns"}, "missing column(s) 'close'", False),
    (_extra_column, {"columns"}, "extra column(s) 'vwap'", False),
    (_text_in_close, {"numeric_close"}, "'abc'", False),
    (_naive_timestamps, {"timestamp_utc"}, "naive", False),
    (_plus_five_hours, {"timestamp_utc"}, "UTC+05:00", False),
    (_other_broker, {"broker_value"}, "'binance'", False),
    (_null_close, {"not_null_close"}, "null", False),
    (_null_timestamp, {"not_null_timestamp", "missing_bars"}, "null", False),
    (_duplicate_timestamp, {"unique_timestamps"}, "duplicate", False),
    (_out_of_order, {"increasing_timestamps"}, "out-of-order", False),
    (_high_below_low, {"high_ge_low", "high_ge_open", "high_ge_close"}, "high ≥ low", False),
    (_negative_volume, {"non_negative_volume"}, "negative volume", False),
    (_zero_prices, {"positive_open", "positive_high", "positive_low", "positive_close"}, "positive", False),
    (_negative_spread, {"non_negative_spread"}, "spread", False),
    (_spike, {"return_spike"}, "spike", False),
    (_half_session_missing, {"session_coverage", "missing_bars"}, "coverage", False),
    (_off_grid_bar, {"on_grid", "on_calendar"}, "off the data.interval grid", False),
    (_bar_before_open, {"on_calendar"}, "calendar", True),  # within the grace: gaps family, warn
    (_weekend_bar, {"market_open", "on_calendar"}, "market is closed", False),
    (_future_bar, {"not_future", "on_calendar"}, "future-dated", False),
    (_frozen_feed, {"frozen_ohlc", "zero_volume"}, "frozen feed: 1 run(s) of ≥ 6 bars", False),
    (_repeated_bar, {"frozen_ohlc"}, "(9 bars, OHLC", False),
    (_zero_volume_while_open, {"zero_volume"}, "zero volume while the market is open", False),
    (_inf_volume, {"finite_values"}, "volume=inf", False),
    (_minus_inf_close, {"finite_values", "positive_close", "low_le_close"}, "close=-inf", False),
    (_absurd_price, {"magnitude", "return_spike"}, "close=1e+300", False),
    (_epoch_in_volume, {"magnitude"}, "absurd magnitude", False),
    (_spread_in_points, {"spread_ratio"}, "spread in points or pips", False),
    (_empty, {"has_bars", "session_coverage", "missing_bars"}, "no bars", False),
]


@pytest.mark.parametrize(
    ("defect", "rules", "word", "success"), CASES, ids=[c[0].__name__.strip("_") for c in CASES]
)
def test_one_defect_breaks_its_rule(
    clean: pd.DataFrame,
    defect: Callable[[pd.DataFrame], pd.DataFrame],
    rules: set[str],
    word: str,
    success: bool,
) -> None:
    result = validate(defect(clean.copy()))
    assert broken(result) == rules
    assert result.success is success
    lines = [f.line() for f in result.findings if not f.success]
    assert any(word in line for line in lines), lines
    for finding in result.findings:
        if finding.success:
            continue
        line = finding.line()
        assert line.startswith(f"{BROKER}/{SYMBOL}: {finding.family} rule {finding.rule} ")
        if finding.unexpected_count is not None:
            assert str(finding.unexpected_count) in line
        assert finding.severity == ("warn" if finding.family == "gaps" else "fail")


def test_timestamp_messages_hint_at_the_files_timezone(clean: pd.DataFrame) -> None:
    for defect in (_naive_timestamps, _plus_five_hours):
        (finding,) = validate(defect(clean.copy())).failures
        assert "data.files[].timezone" in finding.message


def test_unexpected_counts_come_from_great_expectations(clean: pd.DataFrame) -> None:
    f = clean.copy()
    f.loc[[5, 9, 33], "volume"] = -1.0
    (finding,) = validate(f).failures
    assert finding.rule == "non_negative_volume"
    assert finding.expectation_type == "expect_column_values_to_be_between"
    assert (finding.unexpected_count, finding.element_count) == (3, len(f))


def test_half_a_session_missing_names_the_session(clean: pd.DataFrame) -> None:
    result = validate(_half_session_missing(clean.copy()))
    coverage = next(f for f in result.failures if f.rule == "session_coverage")
    assert coverage.unexpected_count == 1
    assert "2026-11-18: 12/24 bars" in coverage.message
    assert result.below_coverage == ["2026-11-18: 12/24 bars"]
    assert int(result.gaps["bars"].sum()) == 12


def test_coverage_threshold_is_a_param(clean: pd.DataFrame) -> None:
    f = _half_session_missing(clean.copy())
    relaxed = validate(f, ValidateParams(min_session_coverage=0.5))
    assert "session_coverage" not in broken(relaxed)
    assert relaxed.success  # the gaps are still reported, as warnings
    assert {w.rule for w in relaxed.warnings} == {"missing_bars"}


def test_severity_is_a_param_per_family(clean: pd.DataFrame) -> None:
    spiked = _spike(clean.copy())
    lenient = ValidateParams(severity=ValidateSeverity(anomalies="warn"))
    result = validate(spiked, lenient)
    assert result.success and {w.rule for w in result.warnings} == {"return_spike"}

    strict = ValidateParams(severity=ValidateSeverity(gaps="fail"))
    result = validate(_bar_before_open(clean.copy()), strict)
    assert not result.success and {f.rule for f in result.failures} == {"on_calendar"}


def test_spike_threshold_is_a_param(clean: pd.DataFrame) -> None:
    assert "return_spike" not in broken(validate(_spike(clean.copy()), ValidateParams(spike_sigma=80.0)))


def test_robust_z_measures_a_50_sigma_spike(clean: pd.DataFrame) -> None:
    spiked = _spike(clean.copy())
    z = robust_return_z(spiked["timestamp"], spiked["close"])
    assert 40 < z.iloc[70] < 60 and 40 < z.iloc[71] < 60
    assert z.drop([70, 71]).max() < 10


def test_robust_z_is_computed_in_time_order(clean: pd.DataFrame) -> None:
    shuffled = clean.sample(frac=1.0, random_state=3).reset_index(drop=True)
    z = robust_return_z(shuffled["timestamp"], shuffled["close"])
    in_order = robust_return_z(clean["timestamp"], clean["close"])
    by_time = pd.Series(z.to_numpy(), index=shuffled["timestamp"]).sort_index()
    np.testing.assert_allclose(by_time.to_numpy(), in_order.to_numpy(), equal_nan=True)


# --- issue 9, defect 3: a frozen feed and an infinite volume used to pass validation ----------------


@pytest.fixture(scope="module")
def ten_days() -> pd.DataFrame:
    """Ten days of hourly EUR/USD (192 bars), enough for the issue's 100-bar frozen feed."""
    start = END - pd.Timedelta(days=10)
    return SimulatedMarket().fetch(Instrument(broker=BROKER, symbol=SYMBOL), start, END, HOUR)


def _validate_ten_days(frame: pd.DataFrame, params: ValidateParams | None = None) -> InstrumentResult:
    window = Window(END - pd.Timedelta(days=10), END, HOUR, clip_to_data=False)
    return validate_instrument(GxEngine(), BROKER, SYMBOL, frame, window, params or ValidateParams())


def test_issue_frozen_feed_of_100_bars_fails_validation(ten_days: pd.DataFrame) -> None:
    """The reproduction: 100 bars with open = high = low = close and zero volume."""
    assert _validate_ten_days(ten_days.copy()).success
    frozen = _freeze(ten_days.copy(), slice(50, 149))
    result = _validate_ten_days(frozen)
    assert not result.success
    assert {f.rule for f in result.failures} == {"frozen_ohlc", "zero_volume"}
    for finding in result.failures:
        assert finding.unexpected_count == 100
        assert "1 run(s)" in finding.message and "100 bars in all" in finding.message
        assert ten_days.loc[50, "timestamp"].isoformat() in finding.message


def test_issue_infinite_volume_fails_validation(ten_days: pd.DataFrame) -> None:
    """The reproduction: ``volume=inf`` passed the ≥ 0 check and reached the store."""
    bad = ten_days.copy()
    bad.loc[77, "volume"] = np.inf
    result = _validate_ten_days(bad)
    assert not result.success
    (finding,) = result.failures
    assert finding.rule == "finite_values" and finding.unexpected_count == 1
    assert f"volume=inf at {ten_days.loc[77, 'timestamp'].isoformat()}" in finding.message


def test_frozen_run_length_is_a_param_per_asset_class(clean: pd.DataFrame) -> None:
    repeated = _repeated_bar(clean.copy())  # 9 identical bars
    assert "frozen_ohlc" in broken(validate(repeated))  # fx default: 6
    assert "frozen_ohlc" not in broken(validate(repeated, ValidateParams(frozen_bars={"fx": 10})))
    off = validate(repeated, ValidateParams(frozen_bars={"fx": 0}))
    assert "frozen_ohlc" not in {f.rule for f in off.findings}  # 0 leaves the rule out
    # The same fx-sized run on crypto (default 12) is within what a thin 24/7 market prints.
    start, end = END - pd.Timedelta(days=10), END  # long enough that 12 flat returns are no spike
    btc = SimulatedMarket().fetch(Instrument(broker="binance", symbol="BTCUSDT"), start, end, HOUR)
    window = Window(start, end, HOUR, clip_to_data=False)
    crypto = validate_instrument(
        GxEngine(), "binance", "BTCUSDT", _freeze(btc, slice(10, 19)), window, ValidateParams()
    )
    assert {"frozen_ohlc", "zero_volume"}.isdisjoint(broken(crypto)) and crypto.success
    longer = _freeze(btc.copy(), slice(10, 21))  # 12 zero-volume bars, 13 identical: both reach 12
    crypto = validate_instrument(GxEngine(), "binance", "BTCUSDT", longer, window, ValidateParams())
    assert broken(crypto) == {"frozen_ohlc", "zero_volume"}


def test_short_runs_and_zero_volume_outside_sessions_pass(clean: pd.DataFrame) -> None:
    """Runs of 5 (below the fx N of 6) pass; zero volume counts only while the calendar says open.

    ``_freeze`` slices by label, both ends included: ``slice(40, 45)`` is 6 bars.
    """
    f = _freeze(clean.copy(), slice(40, 45), volume=None)  # 6 identical flat bars, volume as it was
    assert broken(validate(f)) == {"frozen_ohlc"}
    f = _freeze(clean.copy(), slice(40, 44))  # 5 identical bars with zero volume
    assert broken(validate(f)) == set()
    before_open = _bar_before_open(clean.copy())
    before_open.loc[0, "volume"] = 0.0
    assert broken(validate(before_open)) == {"on_calendar"}


def test_new_limits_are_params(clean: pd.DataFrame) -> None:
    assert "spread_ratio" not in broken(
        validate(_spread_in_points(clean.copy()), ValidateParams(max_spread_ratio=100))
    )
    assert "magnitude" not in broken(
        validate(_epoch_in_volume(clean.copy()), ValidateParams(max_abs_value=1e19))
    )
    weekend = _weekend_bar(clean.copy())
    assert "market_open" not in broken(validate(weekend, ValidateParams(market_hours_grace="13h")))
    assert "market_open" in broken(
        validate(_bar_before_open(clean.copy()), ValidateParams(market_hours_grace="0s"))
    )


def test_equity_bar_at_night_is_refused_by_the_nyse_calendar() -> None:
    """An SPY bar at 03:30 New York (08:30 UTC, on the 1 h grid of the 09:30 open): NYSE is closed."""
    start = END - pd.Timedelta(days=5)
    spy = SimulatedMarket().fetch(Instrument(broker="ibkr", symbol="SPY"), start, END, HOUR)
    window = Window(start, END, HOUR, clip_to_data=False)
    assert validate_instrument(GxEngine(), "ibkr", "SPY", spy, window, ValidateParams()).success
    night = pd.Timestamp("2026-11-18 08:30", tz="UTC")
    extra = spy[spy["timestamp"] < night].iloc[[-1]].assign(timestamp=night)
    bad = pd.concat([spy, extra]).sort_values("timestamp", kind="stable").reset_index(drop=True)
    result = validate_instrument(GxEngine(), "ibkr", "SPY", bad, window, ValidateParams())
    assert broken(result) == {"market_open", "on_calendar"} and not result.success
    (finding,) = result.failures
    assert "a Wednesday, at 2026-11-18T08:30:00+00:00" in finding.message
