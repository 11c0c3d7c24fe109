"""One instrument through its four Great Expectations suites, and GE's verdicts turned into findings.

With ``rules`` and ``engine``, the only part of validation that imports Great Expectations (~1.5 s):
``run`` imports it when it validates, not when it is imported, and forks its helper processes after
that import so they share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotrader import rawstore
from autotrader.calendars import profile
from autotrader.params import Params, ValidateParams
from autotrader.schema import NUMERIC_COLUMNS, empty_bars
from autotrader.validation.derive import (
    CHECK_COLUMNS,
    FEED_COLUMNS,
    CalendarView,
    Window,
    calendar_view,
    checks_table,
    lenient_utc,
    time_order,
)
from autotrader.validation.engine import Exported, GxEngine
from autotrader.validation.report import FAMILIES, MAX_EXAMPLES, Finding, InstrumentResult, describe
from autotrader.validation.rules import (
    TABLES,
    Rule,
    bars_rules,
    checks_rules,
    feed_rules,
    sessions_rules,
)


def _exception_message(result: Any) -> str | None:
    """GE reports an expectation it could not evaluate in ``exception_info``; that is a failure too."""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _zone(column: pd.Series | None) -> str | None:
    """A tz-aware column's zone as a person writes it: ``UTC+05:00``, or ``Europe/Berlin (UTC+01:00)``."""
    if column is None or not isinstance(column.dtype, pd.DatetimeTZDtype):
        return None
    values = column.dropna()
    offset = values.iloc[0].utcoffset() if len(values) else None
    if offset is None:
        return str(column.dt.tz)
    minutes = int(offset.total_seconds() // 60)
    text = f"UTC{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    name = str(column.dt.tz)
    return f"{name} ({text})" if "/" in name else text


def _at(checks: pd.DataFrame, rows: pd.Index, text: Any) -> list[str]:
    """``"<what> at <time>"`` for the first few ``rows``; ``text(row)`` says what."""
    out = []
    for row in rows[:MAX_EXAMPLES]:
        ts = checks.at[row, "timestamp"]
        out.append(f"{text(row)} at {ts.isoformat() if pd.notna(ts) else 'no time'}")
    return out


def _runs(checks: pd.DataFrame, column: str, bars: int, order: Any) -> tuple[list[str], int, int]:
    """The runs a run-length column flags (≥ ``bars``), in time order: examples, run count, bar count."""
    lengths = checks[column].to_numpy()[order]
    flagged = lengths >= bars
    if not bars or not flagged.any():
        return [], 0, 0
    total_bars = int(flagged.sum())
    total_runs = round(float((1.0 / lengths[flagged]).sum()))  # each run of L rows adds L × 1/L
    listed: list[str] = []
    pos = int(np.flatnonzero(flagged)[0])
    while pos < lengths.size and len(listed) < MAX_EXAMPLES:
        if not flagged[pos]:
            pos += 1
            continue
        length = int(lengths[pos])
        first, last = checks.iloc[order[pos]], checks.iloc[order[pos + length - 1]]
        ohlc = ", ".join(f"{first[c]:.6g}" for c in ("open", "high", "low", "close"))
        listed.append(
            f"{first['timestamp'].isoformat()}→{last['timestamp'].isoformat()} ({length} bars, OHLC {ohlc}, "
            f"volume {first['volume']:.6g})"
        )
        pos += length
    return listed, total_runs, total_bars


def _fault_context(
    checks: pd.DataFrame, params: ValidateParams, asset_class: str, end: pd.Timestamp
) -> dict[str, Any]:
    """Examples for the non-finite, magnitude, spread, future, market-hours, grid and frozen-feed rules."""
    numbers = checks[list(NUMERIC_COLUMNS)]
    context: dict[str, Any] = {"window_end": end.isoformat(), "asset_class": asset_class}

    def cells(mask: pd.DataFrame) -> list[str]:
        rows = mask.index[mask.any(axis=1)]
        return _at(
            checks,
            rows,
            lambda r: ", ".join(f"{c}={numbers.at[r, c]:.6g}" for c in NUMERIC_COLUMNS if mask.at[r, c]),
        )

    bad = checks["non_finite"].to_numpy() > 0
    context["non_finite"] = cells(numbers[bad].apply(np.isinf)) if bad.any() else []
    bad = checks["magnitude"].to_numpy() > params.max_abs_value
    context["absurd"] = (
        cells(numbers[bad].abs().gt(params.max_abs_value) & np.isfinite(numbers[bad])) if bad.any() else []
    )
    rows = checks.index[checks["spread_ratio"].to_numpy() > params.max_spread_ratio]
    context["wide_spread"] = _at(
        checks,
        rows,
        lambda r: (
            f"spread {checks.at[r, 'spread']:.6g} = {checks.at[r, 'spread_ratio']:.3g} × close "
            f"{checks.at[r, 'close']:.6g}"
        ),
    )
    rows = checks.index[~checks["before_end"].to_numpy()]
    context["future"] = _at(checks, rows, lambda r: "bar")
    grace = params.grace_td.total_seconds()
    rows = checks.index[checks["outside_session_s"].to_numpy() > grace]
    context["closed"] = _at(
        checks,
        rows,
        lambda r: (
            f"{pd.Timedelta(seconds=float(checks.at[r, 'outside_session_s']))} outside a session,"
            f" a {checks.at[r, 'timestamp'].day_name()},"
        ),
    )
    context["off_grid"] = [
        t.isoformat() for t in checks.loc[~checks["on_grid"].to_numpy(), "timestamp"].head(MAX_EXAMPLES)
    ]
    if (checks["identical_ohlc_run"].to_numpy() >= max(params.frozen_bars.of(asset_class), 2)).any() or (
        checks["zero_volume_run"].to_numpy() >= max(params.zero_volume_bars.of(asset_class), 2)
    ).any():
        order = time_order(checks["timestamp"])
        context["frozen"] = _runs(checks, "identical_ohlc_run", params.frozen_bars.of(asset_class), order)
        context["zero_volume"] = _runs(
            checks, "zero_volume_run", params.zero_volume_bars.of(asset_class), order
        )
    return context


def _message_context(
    frame: pd.DataFrame, checks: pd.DataFrame, view: CalendarView, params: ValidateParams
) -> dict[str, Any]:
    """Rows to quote in messages, found with the same conditions the expectations check."""
    non_numeric: dict[str, list[Any]] = {}
    for col in NUMERIC_COLUMNS:
        if col in frame.columns:
            raw = frame[col]
            bad = raw[raw.notna() & checks[col].isna()]
            non_numeric[col] = bad.astype(str).unique()[:MAX_EXAMPLES].tolist()
    spikes = checks.loc[checks["return_z"] > params.spike_sigma, "timestamp"]
    off = checks.loc[checks["on_calendar"].eq(False), "timestamp"]
    sessions = view.sessions
    low = sessions[sessions["coverage"] < params.min_session_coverage]
    return {
        "timestamp_zone": _zone(frame.get("timestamp")),
        "non_numeric": non_numeric,
        "spikes": [t.isoformat() for t in spikes.head(MAX_EXAMPLES)],
        "off_calendar": [t.isoformat() for t in off.head(200)],
        "off_calendar_count": len(off),
        "low_sessions": [
            f"{r.session}: {r.observed}/{r.expected} bars" for r in low.head(200).itertuples(index=False)
        ],
        "gap_runs": [
            f"{r.start.isoformat()}→{r.end.isoformat()} ({r.bars} bars)"
            for r in view.gaps.head(MAX_EXAMPLES).itertuples(index=False)
        ],
        "gap_count": len(view.gaps),
        "missing_total": int(view.gaps["bars"].sum()) if len(view.gaps) else 0,
    }


def validate_instrument(
    engine: GxEngine,
    broker: str,
    symbol: str,
    frame: pd.DataFrame,
    window: Window,
    params: ValidateParams,
) -> InstrumentResult:
    """Run the bars, checks and sessions suites for one instrument and turn GE's verdicts into findings."""
    frame = frame.reset_index(drop=True)
    timestamps = lenient_utc(frame.get("timestamp"), len(frame))
    end = window.end_for(timestamps)
    view = calendar_view(timestamps, broker, window.start, end, window.interval)
    checks = checks_table(
        frame, view.expected, timestamps, broker=broker, interval=window.interval, end=window.end
    )
    asset_class = profile(broker).asset_class
    tables: dict[str, tuple[pd.DataFrame, list[Rule]]] = {
        "bars": (frame, bars_rules(frame, broker, symbol)),
        "checks": (checks[list(CHECK_COLUMNS)], checks_rules(params)),
        "feed": (checks[list(FEED_COLUMNS)], feed_rules(params, asset_class)),
        "sessions": (view.sessions, sessions_rules(params)),
    }
    context = _message_context(frame, checks, view, params)
    context.update(_fault_context(checks, params, asset_class, window.end))
    out = InstrumentResult(
        broker=broker,
        symbol=symbol,
        rows=len(frame),
        window={
            "start": window.start.isoformat(),
            "end": end.isoformat(),
            "interval": pd.tseries.frequencies.to_offset(window.interval).freqstr,
        },
        gaps=view.gaps,
        off_calendar=context["off_calendar"],
        off_calendar_count=context["off_calendar_count"],
        sessions=len(view.sessions),
        below_coverage=context["low_sessions"],
    )
    for table, (data, rules) in tables.items():
        suite = suite_name(broker, symbol, table)
        result = engine.validate(suite, data, rules)
        out.gx_results[suite] = result.to_json_dict()
        for item in result.results:
            out.findings.append(_finding(broker, symbol, suite, item, context, params))
    out.findings.sort(key=lambda f: (FAMILIES.index(f.family), f.rule))
    return out


def _finding(
    broker: str, symbol: str, suite: str, item: Any, context: dict[str, Any], params: ValidateParams
) -> Finding:
    config = item.expectation_config
    meta = config.meta or {}
    family, rule, demand = meta["family"], meta["rule"], meta["demand"]
    result = dict(item.result or {})
    error = _exception_message(item)
    success = bool(item.success) and error is None
    message, examples = "", []
    if error is not None:
        message = f"Great Expectations could not evaluate '{demand}': {error}"
    elif not success:
        message, examples = describe(rule, demand, result, context, params)
    return Finding(
        broker=broker,
        symbol=symbol,
        suite=suite,
        family=family,
        rule=rule,
        demand=demand,
        severity=params.severity.of(family),
        success=success,
        expectation_type=config.type,
        column=config.kwargs.get("column"),
        unexpected_count=result.get("unexpected_count"),
        element_count=result.get("element_count"),
        observed_value=result.get("observed_value"),
        examples=examples,
        message=message,
    )


def read_bars(raw_root: str | Path, broker: str, symbol: str) -> pd.DataFrame:
    """One instrument's stored bars; an instrument with no partitions is an empty bar table."""
    frame = rawstore.read_instrument(raw_root, broker, symbol)
    if frame.empty and len(frame.columns) == 0:
        frame = empty_bars()
    return frame


def validate_stored(
    engine: GxEngine, params: Params, raw_root: str | Path, broker: str, symbol: str
) -> InstrumentResult:
    """Read one instrument from the raw store and validate it in ``engine``."""
    frame = read_bars(raw_root, broker, symbol)
    return validate_instrument(
        engine, broker, symbol, frame, Window.from_params(params.data), params.validate_
    )


def suite_name(broker: str, symbol: str, table: str) -> str:
    return f"{broker}__{symbol}.{table}"


def validate_exported(
    engine: GxEngine, params: Params, raw_root: str | Path, broker: str, symbol: str
) -> tuple[InstrumentResult, Exported]:
    """``validate_stored`` in a helper process: the result, and the GE records the main process adopts."""
    result = validate_stored(engine, params, raw_root, broker, symbol)
    return result, engine.export([suite_name(broker, symbol, table) for table in TABLES])
