"""End to end: a corrupted input file fails the pipeline with a message naming the rule, and the
feature store stays byte-for-byte as it was.

A clean CSV of ten days of hourly EUR/USD (the simulated market, UTC timestamps) is imported with the
``files`` source and ``dvc repro features`` builds the feature store once. Each case then corrupts a
copy of that project's CSV and runs the pipeline again: the 50σ spike and the two faults of issue 9
(a frozen feed of 100 bars, ``volume=inf``) through real ``dvc repro features``; the others by running
``stages/extract.py`` and ``stages/validate.py`` in-process, which is what ``dvc repro`` would run
(features only after validate succeeded), minus DVC's start-up cost. Two kinds the files source can
never produce (it cuts rows to the window and sets broker/symbol itself) are written into
``data/raw`` directly, as a faulty live connector would store them, and then validated.

The corpus is the list ``CASES``: one corruption kind each, the stage that must refuse it and the rule
its message must name. ``test_corpus_size`` keeps it at 20 kinds or more (issue 9).
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotrader import rawstore
from autotrader.params import Instrument
from autotrader.sources.sim import SimulatedMarket
from tests.conftest import Project, make_project, tree_hashes

pytestmark = [pytest.mark.xdist_group("corrupt"), pytest.mark.slow]

END = pd.Timestamp("2026-11-20", tz="UTC")
DAYS = 10
CSV = Path("data/external/eurusd.csv")
PARAMS = {
    "data.source": "files",
    "data.files": [{"path": str(CSV), "broker": "oanda", "symbol": "EUR_USD", "timezone": None}],
    "data.interval": "1h",
    "data.end": "2026-11-20",
    "data.lookback_days": DAYS,
}


def _bars() -> pd.DataFrame:
    """The clean file's content: the bar schema's value columns, timestamp first, in UTC."""
    bars = SimulatedMarket().fetch(
        Instrument(broker="oanda", symbol="EUR_USD"), END - pd.Timedelta(days=DAYS), END, pd.Timedelta("1h")
    )
    return bars.drop(columns=["broker", "symbol"])


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, pd.DataFrame, dict[str, str]]:
    """The project after one clean ``dvc repro features``, the clean bars, and the store's file hashes."""
    project = make_project(tmp_path_factory.mktemp("corrupt") / "clean")
    project.set_params(**PARAMS)
    bars = _bars()
    _write_csv(project.root / CSV, bars)
    project.dvc("repro", "features")
    assert json.loads((project.root / "metrics" / "validation.json").read_text())["success"] is True
    hashes = tree_hashes(project.root / "data" / "features")
    assert hashes, "the clean run built no feature store"
    return project, bars, hashes


def _clone(clean: Project, project_factory: Callable[..., Project]) -> Project:
    """A private copy of the clean project (git, DVC lock and cache, raw, features, metrics)."""
    project = project_factory(with_dvc=False)
    shutil.copytree(clean.root, project.root, dirs_exist_ok=True, symlinks=True)
    return project


def _run_in_process(project: Project, stage: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run ``stages/<stage>.py`` as ``python stages/<stage>.py`` would, in this process."""
    monkeypatch.chdir(project.root)
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        try:
            runpy.run_path(str(project.root / "stages" / f"{stage}.py"), run_name="__main__")
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


# --- the corruptions: each takes the clean bars and returns the file's new content -----------------


def _missing_column(b: pd.DataFrame) -> pd.DataFrame:
    return b.drop(columns=["close"])


def _text_in_close(b: pd.DataFrame) -> pd.DataFrame:
    b = b.astype({"close": object})
    b.loc[50, "close"] = "n/a?"
    return b


def _null_prices(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[[60, 61], ["open", "close"]] = np.nan
    return b


def _duplicate_timestamp(b: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([b.iloc[:71], b.iloc[70:71], b.iloc[71:]], ignore_index=True)


def _out_of_order(b: pd.DataFrame) -> pd.DataFrame:
    order = list(range(len(b)))
    order[80], order[81] = order[81], order[80]
    return b.iloc[order]


def _high_below_low(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[90, "high"] = b.loc[90, "low"] * 0.998
    return b


def _negative_volume(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[100, "volume"] = -10.0
    return b


def _non_positive_price(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[110, ["open", "high", "low", "close"]] = [0.0, 0.0, -1.0, -1.0]
    return b


def _spike(b: pd.DataFrame) -> pd.DataFrame:
    """A 50σ bad tick (robust σ of the clean file's log returns), high/low kept consistent."""
    sigma = 1.4826 * float(np.median(np.abs(np.diff(np.log(b["close"].to_numpy())))))
    b.loc[120, "close"] *= np.exp(50 * sigma)
    b.loc[120, "high"] = max(b.loc[120, "high"], b.loc[120, "close"])
    return b


def _half_day_missing(b: pd.DataFrame) -> pd.DataFrame:
    """Every other bar of the FX session labelled 2026-11-18 (Nov 17 22:00 → Nov 18 22:00 UTC)."""
    ts = b["timestamp"]
    session = (ts >= pd.Timestamp("2026-11-17 22:00", tz="UTC")) & (
        ts < pd.Timestamp("2026-11-18 22:00", tz="UTC")
    )
    return b.loc[~session | (ts.dt.hour % 2 == 0)]


def _naive_timestamps(b: pd.DataFrame) -> pd.DataFrame:
    return b.assign(timestamp=b["timestamp"].dt.tz_localize(None))


def _plus_five_hours(b: pd.DataFrame) -> pd.DataFrame:
    return b.assign(timestamp=b["timestamp"].dt.tz_convert("+05:00"))


PRICES = ["open", "high", "low", "close"]


def _frozen_feed(b: pd.DataFrame) -> pd.DataFrame:
    """Issue 9: 100 bars with open = high = low = close (the last close) and zero volume."""
    b.loc[50:149, PRICES] = b.loc[49, "close"]
    b.loc[50:149, "volume"] = 0.0
    return b


def _replayed_bar(b: pd.DataFrame) -> pd.DataFrame:
    """A stale cache: bar 60 (not flat, with its volume) printed again for the next 10 bars."""
    b.loc[61:70, [*PRICES, "volume"]] = b.loc[60, [*PRICES, "volume"]].to_numpy()
    return b


def _zero_volume_while_open(b: pd.DataFrame) -> pd.DataFrame:
    """Prices move, but volume is 0 for 12 bars in the middle of an FX week."""
    b.loc[70:81, "volume"] = 0.0
    return b


def _inf_volume(b: pd.DataFrame) -> pd.DataFrame:
    """Issue 9: ``inf`` in the volume column (pandas writes and reads it as a float)."""
    b.loc[77, "volume"] = np.inf
    return b


def _minus_inf_close(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[85, "close"] = -np.inf
    return b


def _null_volume(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[[95, 96, 97], "volume"] = np.nan
    return b


def _negative_spread(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[105, "spread"] = -0.0002
    return b


def _close_above_high(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[115, "close"] = b.loc[115, "high"] * 1.001
    return b


def _open_below_low(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[125, "open"] = b.loc[125, "low"] * 0.999
    return b


def _price_times_100(b: pd.DataFrame) -> pd.DataFrame:
    """A unit error from bar 150 on: prices quoted ×100 (cents, or a mis-set pip factor)."""
    b.loc[150:, PRICES] = b.loc[150:, PRICES] * 100
    return b


def _absurd_price(b: pd.DataFrame) -> pd.DataFrame:
    b.loc[130, PRICES] = 1e300
    return b


def _epoch_in_volume(b: pd.DataFrame) -> pd.DataFrame:
    """Shifted columns in an export: nanosecond epochs (≈1.8e18) land in volume."""
    return b.assign(volume=b["timestamp"].astype("int64").astype("float64"))


def _spread_in_points(b: pd.DataFrame) -> pd.DataFrame:
    """An MT5-style export: spread in points (0.00001), not in price units."""
    return b.assign(spread=(b["spread"] * 1e5).round())


def _insert(b: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """A copy of the bar before ``at``, stamped ``at``, in time order."""
    before = b[b["timestamp"] < at].iloc[[-1]].assign(timestamp=at)
    return pd.concat([b, before]).sort_values("timestamp", kind="stable").reset_index(drop=True)


def _saturday_bar(b: pd.DataFrame) -> pd.DataFrame:
    """FX on a Saturday: the market is closed from Friday 17:00 to Sunday 17:00 New York."""
    return _insert(b, pd.Timestamp("2026-11-14 12:00", tz="UTC"))


def _off_grid_bar(b: pd.DataFrame) -> pd.DataFrame:
    """A bar at :30 in an hourly file."""
    return _insert(b, pd.Timestamp("2026-11-17 10:30", tz="UTC"))


def _half_hour_bars(b: pd.DataFrame) -> pd.DataFrame:
    """The wrong file: 30-minute bars where data.interval is 1h (every other bar off the grid)."""
    halves = b.assign(timestamp=b["timestamp"] + pd.Timedelta(minutes=30))
    return pd.concat([b, halves]).sort_values("timestamp", kind="stable").reset_index(drop=True)


def _gap_storm(b: pd.DataFrame) -> pd.DataFrame:
    """Every third bar missing all through the file: a storm of single-bar gaps."""
    return b.iloc[[i for i in range(len(b)) if i % 3 != 1]]


def _blank_timestamps(b: pd.DataFrame) -> pd.DataFrame:
    """Two rows whose time cell is empty (a truncated export line)."""
    b.loc[[140, 141], "timestamp"] = pd.NaT
    return b


def _future_dated(raw: pd.DataFrame) -> pd.DataFrame:
    """A bar stamped three days after data.end (a broker clock or parsing error)."""
    return pd.concat([raw, raw.iloc[[-1]].assign(timestamp=END + pd.Timedelta(days=3))], ignore_index=True)


def _symbol_mixing(raw: pd.DataFrame) -> pd.DataFrame:
    """Another instrument's bars stored under EUR_USD (a connector mixing up its requests)."""
    other = raw.iloc[:24].assign(symbol="GBP_USD", close=raw["close"].iloc[:24] * 1.17)
    return pd.concat([raw, other], ignore_index=True)


EMPTY = None  # the file is written empty (zero bytes)

# (case id, corruption, the stage that must refuse it, words the message must contain)
CASES: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame] | None, str, tuple[str, ...]]] = [
    ("missing_column", _missing_column, "validate", ("schema rule columns", "missing column(s) 'close'")),
    ("wrong_dtype", _text_in_close, "validate", ("schema rule numeric_close", "not numbers", "'n/a?'")),
    ("null_prices", _null_prices, "validate", ("rule not_null_close", "2 null value(s) in close")),
    ("duplicate_timestamp", _duplicate_timestamp, "validate", ("rule unique_timestamps", "duplicate")),
    ("out_of_order", _out_of_order, "validate", ("rule increasing_timestamps", "out-of-order")),
    ("high_below_low", _high_below_low, "validate", ("rule high_ge_low", "high ≥ low")),
    ("negative_volume", _negative_volume, "validate", ("rule non_negative_volume", "negative volume")),
    ("non_positive_price", _non_positive_price, "validate", ("rule positive_close", "must be positive")),
    ("spike_50_sigma", _spike, "dvc", ("rule return_spike", "return spike(s) beyond 25 robust σ")),
    ("half_day_missing", _half_day_missing, "validate", ("rule session_coverage", "2026-11-18: 12/24 bars")),
    ("empty_file", EMPTY, "extract", ("eurusd.csv", "the file is empty")),
    (
        "naive_timestamp",
        _naive_timestamps,
        "validate",
        ("rule timestamp_utc", "naive", "data.files[].timezone"),
    ),
    (
        "non_utc_timestamp",
        _plus_five_hours,
        "validate",
        ("rule timestamp_utc", "UTC+05:00", "data.files[].timezone"),
    ),
    # issue 9: staleness, non-finite and absurd values, and the rest of the family
    ("frozen_feed", _frozen_feed, "dvc", ("rule frozen_ohlc", "rule zero_volume", "100 bars in all")),
    ("replayed_bar", _replayed_bar, "validate", ("rule frozen_ohlc", "(11 bars, OHLC")),
    (
        "zero_volume_while_open",
        _zero_volume_while_open,
        "validate",
        ("rule zero_volume", "while the market is open"),
    ),
    ("inf_volume", _inf_volume, "dvc", ("rule finite_values", "volume=inf")),
    ("minus_inf_close", _minus_inf_close, "validate", ("rule finite_values", "close=-inf")),
    ("null_volume", _null_volume, "validate", ("rule not_null_volume", "3 null value(s) in volume")),
    ("negative_spread", _negative_spread, "validate", ("rule non_negative_spread",)),
    ("close_above_high", _close_above_high, "validate", ("rule high_ge_close", "high ≥ close")),
    ("open_below_low", _open_below_low, "validate", ("rule low_le_open", "low ≤ open")),
    ("price_times_100", _price_times_100, "validate", ("rule return_spike",)),
    ("absurd_price", _absurd_price, "validate", ("rule magnitude", "close=1e+300")),
    ("epoch_in_volume", _epoch_in_volume, "validate", ("rule magnitude", "absurd magnitude")),
    ("spread_in_points", _spread_in_points, "validate", ("rule spread_ratio", "points or pips")),
    ("saturday_bar", _saturday_bar, "validate", ("rule market_open", "market is closed", "a Saturday")),
    ("off_grid_bar", _off_grid_bar, "validate", ("rule on_grid", "2026-11-17T10:30:00+00:00")),
    ("half_hour_bars", _half_hour_bars, "validate", ("rule on_grid", "off the data.interval grid")),
    ("gap_storm", _gap_storm, "validate", ("rule session_coverage",)),
    (
        "blank_timestamps",
        _blank_timestamps,
        "validate",
        ("rule not_null_timestamp", "2 null value(s) in timestamp"),
    ),
    ("future_dated", _future_dated, "raw", ("rule not_future", "future-dated", "2026-11-23T00:00:00+00:00")),
    ("symbol_mixing", _symbol_mixing, "raw", ("rule symbol_value", "'GBP_USD'")),
]


@pytest.mark.parametrize(("case", "corrupt", "refused_by", "words"), CASES, ids=[c[0] for c in CASES])
def test_corrupt_file_is_refused_and_the_store_is_untouched(
    clean: tuple[Project, pd.DataFrame, dict[str, str]],
    project_factory: Callable[..., Project],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    corrupt: Callable[[pd.DataFrame], pd.DataFrame] | None,
    refused_by: str,
    words: tuple[str, ...],
) -> None:
    clean_project, bars, store_hashes = clean
    project = _clone(clean_project, project_factory)
    raw_root = project.root / "data" / "raw"
    if corrupt is None:
        (project.root / CSV).write_bytes(b"")
    elif refused_by == "raw":  # what a faulty connector would have stored: straight into data/raw
        stored = rawstore.read_instrument(raw_root, "oanda", "EUR_USD")
        rawstore.write_extract(raw_root, [("oanda", "EUR_USD", corrupt(stored))])
    else:
        _write_csv(project.root / CSV, corrupt(bars.copy()))
    raw_before = tree_hashes(raw_root)

    if refused_by == "raw":
        code, output = _run_in_process(project, "validate", monkeypatch)
    elif refused_by == "dvc":
        proc = project.dvc("repro", "features", check=False)
        code, output = proc.returncode, proc.stdout + proc.stderr
        assert "ERROR: failed to reproduce 'validate'" in output
    else:
        code, output = _run_in_process(project, "extract", monkeypatch)
        if refused_by == "validate":
            assert code == 0, output
            code, output = _run_in_process(project, "validate", monkeypatch)

    flat = " ".join(output.split())
    assert code != 0, flat
    for word in words:
        assert word in flat, f"{word!r} not in: {flat}"
    assert "Traceback" not in output
    assert tree_hashes(project.root / "data" / "features") == store_hashes
    if refused_by == "extract":  # the old raw bars are kept as they were
        assert tree_hashes(project.root / "data" / "raw") == raw_before
    else:  # the evidence is written and says so, which also stops the features stage
        verdict = json.loads((project.root / "metrics" / "validation.json").read_text())
        assert verdict["success"] is False
        assert verdict["instruments"]["oanda/EUR_USD"]["success"] is False


def test_corpus_size() -> None:
    """Issue 9: at least 20 corruption kinds, each named once and each naming the rule that refuses it."""
    kinds = [case for case, *_ in CASES]
    assert len(kinds) == len(set(kinds)) >= 20
    for case, _, refused_by, words in CASES:
        assert refused_by == "extract" or any(w.startswith(("rule ", "schema rule ")) for w in words), case
