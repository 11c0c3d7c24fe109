"""The expectations, grouped in families whose severity is a param (``validate.severity``).

Four tables per instrument, one GE suite each:

- ``bars``: the raw rows exactly as stored — schema (columns, dtypes, broker/symbol) and nulls.
- ``checks``: the same rows read leniently (``derive.checks_table``) — OHLC consistency, prices,
  volume, timestamp order and uniqueness, return spikes, bars off the calendar.
- ``feed``: narrow derived columns of the same rows (``derive.FEED_COLUMNS``) — frozen feeds (identical
  OHLC, or zero volume while open, N bars in a row per asset class), non-finite and absurd numbers,
  spread / close, future-dated bars, bars outside market hours or off the interval grid. A table of
  its own because GE copies the whole table for every expectation (its null filter): on 1M rows,
  eight more expectations over a wider ``checks`` table made validation ~75 % slower.
- ``sessions``: one row per calendar session (``derive.calendar_view``) — coverage and gaps.

Every expectation carries ``meta = {"family", "rule"}`` so a GE result maps back to its rule and
its severity; ``rule`` is the short name a failure message and the JSON report use.
"""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.expectation import Expectation

from autotrader.params import ValidateParams
from autotrader.schema import BAR_COLUMNS, NUMERIC_COLUMNS, PRICE_COLUMNS

TABLES: tuple[str, ...] = ("bars", "checks", "feed", "sessions")
REQUIRED_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
# Per-value type names GE accepts for a numeric column (numpy dtypes, and Python numbers in object columns).
NUMERIC_TYPES: list[str] = ["float64", "float32", "int64", "int32", "int16", "int8", "float", "int"]


@dataclass(frozen=True)
class Rule:
    """One expectation and what it means, in words a person reads in the failure message."""

    table: str
    family: str
    name: str
    demand: str  # what the data must satisfy, e.g. "high ≥ low"
    expectation: Expectation


def _rule(table: str, family: str, name: str, demand: str, expectation: Expectation) -> Rule:
    expectation.meta = {"family": family, "rule": name, "demand": demand}
    return Rule(table=table, family=family, name=name, demand=demand, expectation=expectation)


def timestamp_dtype_wanted(frame: pd.DataFrame) -> str:
    """The dtype the timestamp column must have: tz-aware UTC, in whatever unit the column uses."""
    column = frame.get("timestamp")
    unit = "ns"
    if column is not None and pd.api.types.is_datetime64_any_dtype(column.dtype):
        unit = getattr(column.dtype, "unit", "ns")
    return f"datetime64[{unit}, UTC]"


def bars_rules(frame: pd.DataFrame, broker: str, symbol: str) -> list[Rule]:
    """Schema and null rules over the raw rows; column rules only for columns that exist (a missing
    column is reported once, by the column-set rule, not again by every rule that reads it)."""
    present = set(frame.columns)
    rules = [
        _rule(
            "bars",
            "schema",
            "columns",
            f"columns are exactly the bar schema ({', '.join(BAR_COLUMNS)})",
            gxe.ExpectTableColumnsToMatchSet(column_set=list(BAR_COLUMNS), exact_match=True),
        ),
        _rule(
            "bars",
            "completeness",
            "has_bars",
            "at least one bar",
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ),
    ]
    if "timestamp" in present:
        rules.append(
            _rule(
                "bars",
                "schema",
                "timestamp_utc",
                "timestamp is tz-aware UTC",
                gxe.ExpectColumnTypeToBe(column="timestamp", type_=timestamp_dtype_wanted(frame)),
            )
        )
    for col in NUMERIC_COLUMNS:
        if col in present:
            rules.append(
                _rule(
                    "bars",
                    "schema",
                    f"numeric_{col}",
                    f"{col} is numeric",
                    gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=NUMERIC_TYPES),
                )
            )
    for col, value in (("broker", broker), ("symbol", symbol)):
        if col in present:
            rules.append(
                _rule(
                    "bars",
                    "schema",
                    f"{col}_value",
                    f"{col} is the string {value!r} of its partition",
                    gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[value]),
                )
            )
    for col in (*REQUIRED_COLUMNS, "broker", "symbol"):
        if col in present:
            rules.append(
                _rule(
                    "bars",
                    "completeness",
                    f"not_null_{col}",
                    f"{col} has no null values",
                    gxe.ExpectColumnValuesToNotBeNull(column=col),
                )
            )
    return rules


def _pair(a: str, b: str) -> Expectation:
    return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing"
    )


def checks_rules(params: ValidateParams) -> list[Rule]:
    """Anomaly and off-calendar rules over ``derive.checks_table``."""
    rules = [
        _rule("checks", "anomalies", "high_ge_open", "high ≥ open", _pair("high", "open")),
        _rule("checks", "anomalies", "high_ge_close", "high ≥ close", _pair("high", "close")),
        _rule("checks", "anomalies", "high_ge_low", "high ≥ low", _pair("high", "low")),
        _rule("checks", "anomalies", "low_le_open", "low ≤ open", _pair("open", "low")),
        _rule("checks", "anomalies", "low_le_close", "low ≤ close", _pair("close", "low")),
    ]
    for col in PRICE_COLUMNS:
        rules.append(
            _rule(
                "checks",
                "anomalies",
                f"positive_{col}",
                f"{col} > 0 (prices are positive)",
                gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0, strict_min=True),
            )
        )
    rules += [
        _rule(
            "checks",
            "anomalies",
            "non_negative_volume",
            "volume ≥ 0 (no negative volume)",
            gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
        ),
        _rule(
            "checks",
            "anomalies",
            "non_negative_spread",
            "spread ≥ 0 where given (no negative spread)",
            gxe.ExpectColumnValuesToBeBetween(column="spread", min_value=0),
        ),
        _rule(
            "checks",
            "anomalies",
            "unique_timestamps",
            "timestamps are unique (no duplicate bars)",
            gxe.ExpectColumnValuesToBeUnique(column="timestamp"),
        ),
        _rule(
            "checks",
            "anomalies",
            "increasing_timestamps",
            "timestamps increase row by row (no out-of-order rows)",
            gxe.ExpectColumnValuesToBeIncreasing(column="timestamp"),
        ),
        _rule(
            "checks",
            "anomalies",
            "return_spike",
            f"|log return| ≤ {params.spike_sigma:g} robust σ (no return spike)",
            gxe.ExpectColumnValuesToBeBetween(column="return_z", max_value=params.spike_sigma),
        ),
        _rule(
            "checks",
            "gaps",
            "on_calendar",
            "every bar is an expected bar of the broker calendar (in a session, on the interval grid)",
            gxe.ExpectColumnValuesToBeInSet(column="on_calendar", value_set=[True]),
        ),
    ]
    return rules


def feed_rules(params: ValidateParams, asset_class: str) -> list[Rule]:
    """Frozen-feed, non-finite, magnitude, spread, future, market-hours and grid rules over the ``feed``
    table; the run lengths that make a frozen feed are those of ``asset_class`` (crypto | fx | equity),
    and a run rule set to 0 is left out."""
    rules = [
        _rule(
            "feed",
            "anomalies",
            "finite_values",
            "every number is finite (no +inf or -inf in open/high/low/close/volume/spread)",
            gxe.ExpectColumnValuesToBeBetween(column="non_finite", max_value=0),
        ),
        _rule(
            "feed",
            "anomalies",
            "magnitude",
            f"|every number| ≤ {params.max_abs_value:g} (no absurd magnitude)",
            gxe.ExpectColumnValuesToBeBetween(column="magnitude", max_value=params.max_abs_value),
        ),
        _rule(
            "feed",
            "anomalies",
            "spread_ratio",
            f"spread ≤ {params.max_spread_ratio:g} × close where given (spread in price units)",
            gxe.ExpectColumnValuesToBeBetween(column="spread_ratio", max_value=params.max_spread_ratio),
        ),
        _rule(
            "feed",
            "anomalies",
            "not_future",
            "every bar opens before the window end data.end (no future-dated bar)",
            gxe.ExpectColumnValuesToBeInSet(column="before_end", value_set=[True]),
        ),
        _rule(
            "feed",
            "anomalies",
            "market_open",
            f"every bar lies in a calendar session of its broker, give or take {params.market_hours_grace}",
            gxe.ExpectColumnValuesToBeBetween(
                column="outside_session_s", max_value=params.grace_td.total_seconds()
            ),
        ),
        _rule(
            "feed",
            "anomalies",
            "on_grid",
            "every bar opens on the data.interval grid of its session",
            gxe.ExpectColumnValuesToBeInSet(column="on_grid", value_set=[True]),
        ),
    ]
    frozen, zero = params.frozen_bars.of(asset_class), params.zero_volume_bars.of(asset_class)
    if frozen:
        rules.append(
            _rule(
                "feed",
                "anomalies",
                "frozen_ohlc",
                f"fewer than {frozen} bars in a row with identical open/high/low/close ({asset_class})",
                gxe.ExpectColumnValuesToBeBetween(column="identical_ohlc_run", max_value=frozen - 1),
            )
        )
    if zero:
        rules.append(
            _rule(
                "feed",
                "anomalies",
                "zero_volume",
                f"fewer than {zero} zero-volume bars in a row while the market is open ({asset_class})",
                gxe.ExpectColumnValuesToBeBetween(column="zero_volume_run", max_value=zero - 1),
            )
        )
    return rules


def sessions_rules(params: ValidateParams) -> list[Rule]:
    """Coverage (completeness) and gap rules over ``derive.calendar_view(...).sessions``."""
    return [
        _rule(
            "sessions",
            "completeness",
            "session_coverage",
            f"each session has ≥ {params.min_session_coverage:.0%} of its expected bars (coverage)",
            gxe.ExpectColumnValuesToBeBetween(column="coverage", min_value=params.min_session_coverage),
        ),
        _rule(
            "sessions",
            "gaps",
            "missing_bars",
            "no expected bar is missing (no gaps)",
            gxe.ExpectColumnValuesToBeBetween(column="missing", max_value=0),
        ),
    ]
