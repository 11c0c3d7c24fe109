"""Validate the raw store: every instrument through its three GE suites, then reports and a summary.

``validate_raw`` judges; ``write_outputs`` writes the evidence (JSON per instrument, Data Docs,
``metrics/validation.json``) atomically — on failure too, since the reports are what a person reads
to fix the data. The stage raises ``ValidationFailed`` with ``ValidationRun.failure_message()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from autotrader import rawstore
from autotrader.atomic import atomic_dir, write_json
from autotrader.calendars import profile
from autotrader.console import console, progress
from autotrader.params import DataParams, Params, ValidateParams
from autotrader.schema import NUMERIC_COLUMNS, empty_bars
from autotrader.validation.derive import (
    CHECK_COLUMNS,
    FEED_COLUMNS,
    CalendarView,
    calendar_view,
    checks_table,
    lenient_utc,
    time_order,
)
from autotrader.validation.engine import GxEngine
from autotrader.validation.report import MAX_EXAMPLES, Finding, InstrumentResult, describe
from autotrader.validation.rules import (
    FAMILIES,
    Rule,
    bars_rules,
    checks_rules,
    feed_rules,
    sessions_rules,
)

DOCS_DIR = "data_docs"


@dataclass(frozen=True)
class Window:
    """The clipped window [start, end) whose calendar the bars are held to."""

    start: pd.Timestamp
    end: pd.Timestamp
    interval: pd.Timedelta
    clip_to_data: bool  # data.end == "now": the newest bar ends the window (freshness is health's job)

    @classmethod
    def from_params(cls, data: DataParams) -> Window:
        return cls(data.start_ts(), data.end_ts(), data.interval_td, clip_to_data=data.end == "now")

    def end_for(self, timestamps: pd.Series) -> pd.Timestamp:
        newest = timestamps.max()
        if self.clip_to_data and pd.notna(newest):
            return min(self.end, newest + self.interval)
        return self.end


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
        suite = f"{broker}__{symbol}.{table}"
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


@dataclass
class ValidationRun:
    """All instruments' results and the GE context that holds them (for the Data Docs build)."""

    results: list[InstrumentResult]
    engine: GxEngine

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def failures(self) -> list[Finding]:
        return [f for r in self.results for f in r.failures]

    @property
    def warnings(self) -> list[Finding]:
        return [f for r in self.results for f in r.warnings]

    def summary(self) -> dict[str, Any]:
        """``metrics/validation.json``: per instrument success, rows, gaps and per-family counts."""
        return {
            "success": self.success,
            "instruments": {r.key: r.summary() for r in self.results},
            "failed": len(self.failures),
            "warned": len(self.warnings),
            "rows": sum(r.rows for r in self.results),
        }

    def failure_message(self, reports_dir: str | Path = "reports/validation") -> str:
        """One line per failed expectation, after a header that says where the evidence is."""
        head = (
            f"validation failed: {len(self.failures)} expectation(s) with severity 'fail' broke "
            f"(per-instrument results in {reports_dir}/<broker>__<symbol>.json, "
            f"Data Docs in {reports_dir}/{DOCS_DIR}/index.html)"
        )
        return "\n".join([head, *(f.line() for f in self.failures)])


def instruments_to_validate(data: DataParams, raw_root: str | Path) -> list[tuple[str, str]]:
    """The configured instruments (absent ones fail as 'no bars'), then any others found on disk."""
    wanted = [(i.broker, i.symbol) for i in data.active_instruments()]
    return wanted + [pair for pair in rawstore.instruments(raw_root) if pair not in wanted]


def validate_raw(params: Params, raw_root: str | Path | None = None) -> ValidationRun:
    """Validate every instrument of the raw store with one ephemeral GE context; progress per instrument."""
    raw_root = Path(raw_root or params.paths.raw)
    window = Window.from_params(params.data)
    pairs = instruments_to_validate(params.data, raw_root)
    engine = GxEngine()
    results: list[InstrumentResult] = []
    with progress() as bar:
        task = bar.add_task("validate", total=len(pairs))
        for broker, symbol in pairs:
            bar.update(task, description=f"validate {broker}/{symbol}")
            frame = rawstore.read_instrument(raw_root, broker, symbol)
            if frame.empty and len(frame.columns) == 0:
                frame = empty_bars()
            results.append(validate_instrument(engine, broker, symbol, frame, window, params.validate_))
            bar.advance(task)
    return ValidationRun(results=results, engine=engine)


def write_outputs(run: ValidationRun, reports_dir: str | Path, metrics_path: str | Path) -> Path:
    """JSON per instrument and the Data Docs into ``reports_dir`` (swapped in whole), then the summary."""
    reports_dir = Path(reports_dir)
    with atomic_dir(reports_dir) as tmp:
        for result in run.results:
            write_json(tmp / f"{result.file_stem}.json", result.report())
        run.engine.build_docs(tmp / DOCS_DIR)
    write_json(metrics_path, run.summary())
    return reports_dir / DOCS_DIR / "index.html"


def show(run: ValidationRun) -> None:
    """A table per instrument and one yellow line per warning (warnings never fail the stage)."""
    table = Table(title="Data validation (Great Expectations)")
    table.add_column("instrument", no_wrap=True, min_width=max((len(r.key) for r in run.results), default=10))
    table.add_column("rows", justify="right")
    for family in FAMILIES:
        table.add_column(family, justify="right")
    table.add_column("gap runs", justify="right")
    table.add_column("result")
    for r in run.results:
        counts = r.family_counts()
        cells = [_cell(counts[f]) for f in FAMILIES]
        verdict = "[green]ok[/]" if r.success else "[bold red]FAIL[/]"
        table.add_row(r.key, str(r.rows), *cells, str(len(r.gaps)), verdict)
    console.print(table)
    for finding in run.warnings:
        console.print(f"[yellow]warning:[/] {escape(finding.line())}", soft_wrap=True)


def _cell(count: dict[str, int]) -> str:
    if count["failed"]:
        return f"[red]{count['failed']} fail[/]"
    if count["warned"]:
        return f"[yellow]{count['warned']} warn[/]"
    return f"[green]{count['checked']} ok[/]"


__all__: Sequence[str] = (
    "ValidationRun",
    "Window",
    "instruments_to_validate",
    "show",
    "validate_instrument",
    "validate_raw",
    "write_outputs",
)
