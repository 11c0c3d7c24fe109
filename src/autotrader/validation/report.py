"""GE results → findings a person reads and JSON a machine reads.

A finding is one expectation's verdict (from GE) plus its family, severity and a one-line message
naming broker, symbol, rule and unexpected count. Examples in the message (session dates, spike
times) are looked up in the derived tables only to point at the rows GE counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from autotrader.params import ValidateParams
from autotrader.schema import BAR_COLUMNS

# The rule families, in report order; each has a severity in validate.severity (rules.py has the rules).
FAMILIES: tuple[str, ...] = ("schema", "completeness", "anomalies", "gaps")
MAX_LISTED = 200  # gaps and off-calendar bars listed per instrument in the JSON report
MAX_EXAMPLES = 3  # examples quoted in a one-line message
# Column-pair rules: the (A, B) GE quotes in partial_unexpected_list.
PAIRS: dict[str, tuple[str, str]] = {
    "high_ge_open": ("high", "open"),
    "high_ge_close": ("high", "close"),
    "high_ge_low": ("high", "low"),
    "low_le_open": ("open", "low"),
    "low_le_close": ("close", "low"),
}
TIMEZONE_HINT = (
    "set data.files[].timezone to the zone the file's timestamps are written in "
    "(or give them an explicit UTC offset), so extract stores UTC"
)


@dataclass(frozen=True)
class Finding:
    """One expectation's verdict."""

    broker: str
    symbol: str
    suite: str
    family: str
    rule: str
    demand: str
    severity: str  # fail | warn
    success: bool
    expectation_type: str
    column: str | None
    unexpected_count: int | None
    element_count: int | None
    observed_value: Any
    examples: list[Any]
    message: str

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.symbol}"

    def line(self) -> str:
        """``oanda/EUR_USD: anomalies rule high_ge_low (expect_…) — 3 unexpected of 240 rows: …``"""
        return f"{self.key}: {self.family} rule {self.rule} ({self.expectation_type}) — {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "family": self.family,
            "rule": self.rule,
            "demand": self.demand,
            "severity": self.severity,
            "success": self.success,
            "expectation_type": self.expectation_type,
            "column": self.column,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "observed_value": _jsonable(self.observed_value),
            "examples": [_jsonable(e) for e in self.examples],
            "message": self.message,
        }


@dataclass
class InstrumentResult:
    """Everything validation found for one broker/symbol."""

    broker: str
    symbol: str
    rows: int
    window: dict[str, str]
    findings: list[Finding] = field(default_factory=list)
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    off_calendar: list[str] = field(default_factory=list)
    off_calendar_count: int = 0
    sessions: int = 0
    below_coverage: list[str] = field(default_factory=list)
    gx_results: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.symbol}"

    @property
    def file_stem(self) -> str:
        return f"{self.broker}__{self.symbol}"

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.success and f.severity == "fail"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.success and f.severity == "warn"]

    @property
    def success(self) -> bool:
        return not self.failures

    def family_counts(self) -> dict[str, dict[str, int]]:
        counts = {fam: {"checked": 0, "failed": 0, "warned": 0} for fam in FAMILIES}
        for f in self.findings:
            counts[f.family]["checked"] += 1
            if not f.success:
                counts[f.family]["failed" if f.severity == "fail" else "warned"] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """The instrument's entry in ``metrics/validation.json``: numbers only, stable across reruns."""
        return {
            "success": self.success,
            "rows": self.rows,
            "gaps": len(self.gaps),
            "missing_bars": int(self.gaps["bars"].sum()) if len(self.gaps) else 0,
            "off_calendar_bars": self.off_calendar_count,
            "families": self.family_counts(),
        }

    def report(self) -> dict[str, Any]:
        """The per-suite results file ``reports/validation/<broker>__<symbol>.json``."""
        gaps = self.gaps.head(MAX_LISTED)
        return {
            "broker": self.broker,
            "symbol": self.symbol,
            "success": self.success,
            "rows": self.rows,
            "window": self.window,
            "families": self.family_counts(),
            "failures": [f.line() for f in self.failures],
            "warnings": [f.line() for f in self.warnings],
            "expectations": [f.as_json() for f in self.findings],
            "gaps": {
                "runs": len(self.gaps),
                "missing_bars": int(self.gaps["bars"].sum()) if len(self.gaps) else 0,
                "listed": [
                    {
                        "start": r.start.isoformat(),
                        "end": r.end.isoformat(),
                        "bars": int(r.bars),
                        "session": r.session,
                    }
                    for r in gaps.itertuples(index=False)
                ],
                "truncated": len(self.gaps) > MAX_LISTED,
            },
            "off_calendar": {
                "count": self.off_calendar_count,
                "listed": self.off_calendar[:MAX_LISTED],
                "truncated": self.off_calendar_count > MAX_LISTED,
            },
            "sessions": {"count": self.sessions, "below_coverage": self.below_coverage[:MAX_LISTED]},
            "great_expectations": self.gx_results,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return repr(value)


def _examples(values: list[Any]) -> str:
    if not values:
        return ""
    shown = ", ".join(_fmt(v) for v in values[:MAX_EXAMPLES])
    return f", e.g. {shown}"


def _listed(texts: list[str]) -> str:
    """Examples that are already text (no quotes): ``, e.g. volume=inf at 2026-…``."""
    return f", e.g. {'; '.join(texts[:MAX_EXAMPLES])}" if texts else ""


def describe(
    rule: str,
    demand: str,
    result: dict[str, Any],
    context: dict[str, Any],
    params: ValidateParams,
) -> tuple[str, list[Any]]:
    """The message for a failed rule and the examples it quotes (``context`` holds derived lookups)."""
    count = result.get("unexpected_count")
    total = result.get("element_count")
    partial = list(result.get("partial_unexpected_list") or [])
    of_rows = f"{count} unexpected of {total} rows" if count is not None else "failed"
    if rule == "columns":
        observed = list(result.get("observed_value") or [])
        missing = [c for c in BAR_COLUMNS if c not in observed]
        extra = [c for c in observed if c not in BAR_COLUMNS]
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(repr(c) for c in missing))
        if extra:
            parts.append("unexpected extra column(s) " + ", ".join(repr(c) for c in extra))
        return f"{'; '.join(parts)} — {demand}", missing + extra
    if rule == "has_bars":
        return "no bars at all for this instrument in the raw store", []
    if rule == "timestamp_utc":
        observed = str(result.get("observed_value"))
        # Said in words, not as "datetime64[ns, …]": square brackets read as console markup.
        if observed.startswith("datetime64") and "," in observed:
            zone = context.get("timestamp_zone") or observed.split(",", 1)[1].rstrip("]").strip()
            found = f"timestamps carry time zone {zone}, not UTC"
        elif observed.startswith("datetime64"):
            found = "timestamps are naive (no time zone)"
        else:
            found = f"timestamp column holds {observed} values, not timestamps"
        return f"{found}; they must be tz-aware UTC — hint: {TIMEZONE_HINT}", [observed]
    if rule.startswith("numeric_"):
        bad = context.get("non_numeric", {}).get(rule.removeprefix("numeric_"), partial)
        return f"{of_rows} are not numbers (wrong dtype, text in a numeric column){_examples(bad)}", bad[
            :MAX_EXAMPLES
        ]
    if rule.startswith("not_null_"):
        return f"{count} null value(s) in {rule.removeprefix('not_null_')} of {total} rows", []
    if rule == "return_spike":
        times = context.get("spikes", [])
        return (
            f"{count} return spike(s) beyond {params.spike_sigma:g} robust σ "
            f"(|log return| / (1.4826·MAD)){_examples(times)} (z = {_fmt(partial[:MAX_EXAMPLES])})",
            times[:MAX_EXAMPLES],
        )
    if rule == "session_coverage":
        low = context.get("low_sessions", [])
        return (
            f"{count} of {total} sessions below {params.min_session_coverage:.0%} bar coverage "
            f"(observed/expected){_examples(low)}",
            low[:MAX_EXAMPLES],
        )
    if rule == "missing_bars":
        runs = context.get("gap_runs", [])
        return (
            f"{count} of {total} sessions have gaps: {context.get('gap_count', 0)} run(s), "
            f"{context.get('missing_total', 0)} missing bars{_examples(runs)}",
            runs[:MAX_EXAMPLES],
        )
    if rule == "on_calendar":
        times = context.get("off_calendar", [])
        return (
            f"{count} bar(s) outside the broker's calendar sessions or off the interval grid{_examples(times)}",
            times[:MAX_EXAMPLES],
        )
    if rule == "finite_values":
        cells = context.get("non_finite", [])
        return f"{count} of {total} rows hold +inf or -inf{_listed(cells)}", cells
    if rule == "magnitude":
        cells = context.get("absurd", [])
        return (
            f"{count} of {total} rows hold a number beyond ±{params.max_abs_value:g} (absurd magnitude)"
            f"{_listed(cells)}",
            cells,
        )
    if rule == "spread_ratio":
        cells = context.get("wide_spread", [])
        return (
            f"{count} of {total} rows have spread > {params.max_spread_ratio:g} × close (spread in points or "
            f"pips, not price units?){_listed(cells)}",
            cells,
        )
    if rule == "not_future":
        times = context.get("future", [])
        return (
            f"{count} future-dated bar(s) at or after the window end {context.get('window_end')} "
            f"(data.end){_listed(times)}",
            times,
        )
    if rule == "market_open":
        times = context.get("closed", [])
        return (
            f"{count} bar(s) while the market is closed (more than {params.market_hours_grace} outside the "
            f"broker's calendar sessions){_listed(times)}",
            times,
        )
    if rule == "on_grid":
        times = context.get("off_grid", [])
        return f"{count} bar(s) off the data.interval grid{_examples(times)}", times
    if rule in ("frozen_ohlc", "zero_volume"):
        listed, runs, bars = context.get("frozen" if rule == "frozen_ohlc" else "zero_volume", ([], 0, 0))
        what = (
            "identical open/high/low/close"
            if rule == "frozen_ohlc"
            else "zero volume while the market is open"
        )
        limit = (params.frozen_bars if rule == "frozen_ohlc" else params.zero_volume_bars).of(
            context.get("asset_class", "fx")
        )
        return (
            f"frozen feed: {runs} run(s) of ≥ {limit} bars in a row with {what} "
            f"({context.get('asset_class')}), {bars} bars in all{_listed(listed)}",
            listed,
        )
    if rule == "unique_timestamps":
        return f"{count} rows share a duplicate timestamp{_examples(partial)}", partial[:MAX_EXAMPLES]
    if rule == "increasing_timestamps":
        return (
            f"{count} out-of-order row(s): timestamp earlier than the row before{_examples(partial)}",
            partial[:MAX_EXAMPLES],
        )
    if rule == "non_negative_volume":
        return f"{of_rows} have negative volume{_examples(partial)}", partial[:MAX_EXAMPLES]
    if rule.startswith("positive_"):
        col = rule.removeprefix("positive_")
        return f"{of_rows} have {col} ≤ 0 (prices must be positive){_examples(partial)}", partial[
            :MAX_EXAMPLES
        ]
    if rule in PAIRS:
        a, b = PAIRS[rule]
        shown = f", e.g. ({a}, {b}) = {', '.join(_fmt(v) for v in partial[:MAX_EXAMPLES])}" if partial else ""
        return f"{of_rows} break '{demand}'{shown}", partial[:MAX_EXAMPLES]
    return f"{of_rows} break '{demand}'{_examples(partial)}", partial[:MAX_EXAMPLES]
