"""The pull-request comment of ``.github/workflows/pr.yml``, CML-style: gates, metrics diff, plots.

``metrics/gates.json`` holds the gates as a list (name, value, op, threshold, verdict); this renders
that list as a table a reviewer reads at a glance, with the decision above it, then the DVC diffs the
workflow produced (``dvc metrics diff base head --md`` of the headline metrics, ``dvc params diff``)
and where the plots are. Run as ``autotrader reports pr-comment``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autotrader.errors import ConfigError
from autotrader.jsonfiles import read_json

VERDICT_MARK = {"pass": "✅ pass", "fail": "❌ fail", "insufficient_evidence": "⚠️ insufficient evidence"}


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def read_gates(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    record = read_json(path, ConfigError, "the gate stage writes it; did the pipeline run?")
    if not isinstance(record, dict) or not isinstance(record.get("gates"), list):
        raise ConfigError(f'{path}: expected an object with a "gates" list (the gate stage\'s output)')
    return record


def gate_table(record: dict[str, Any]) -> str:
    """The decision line and one table row per gate: name, value, threshold (with its operator), verdict."""
    promote = record.get("promote")
    head = (
        "**Decision: promote** — every gate passes."
        if promote
        else f"**Decision: not promoted** ({record.get('verdict', 'fail')}): "
        + ("; ".join(record.get("failed") or []) or "see the table")
    )
    rows = ["| gate | value | threshold | verdict |", "|---|---:|---:|---|"]
    for gate in record["gates"]:
        verdict = gate.get("verdict") or ("pass" if gate.get("passed") else "fail")
        threshold = f"{gate.get('op', '')} {_number(gate.get('threshold'))}".strip()
        rows.append(
            f"| {gate.get('name', '?')} | {_number(gate.get('value'))} | {threshold} | "
            f"{VERDICT_MARK.get(verdict, verdict)} |"
        )
    return head + "\n\n" + "\n".join(rows)


def _section(title: str, path: str | Path | None, empty: str) -> list[str]:
    if path is None:
        return []
    text = Path(path).read_text().strip() if Path(path).is_file() else ""
    return [f"### {title}", "", text or empty, ""]


def render(
    gates: str | Path,
    *,
    metrics_diff: str | Path | None = None,
    params_diff: str | Path | None = None,
    plots_url: str | None = None,
    title: str = "Pipeline on the small simulated-market configuration",
) -> str:
    """The whole comment as markdown."""
    lines = [f"## {title}", "", "### Gates (head)", "", gate_table(read_gates(gates)), ""]
    lines += _section("Metrics (base → head)", metrics_diff, "No headline metric changed.")
    lines += _section("Params (base → head)", params_diff, "No param changed.")
    if plots_url:
        lines += [
            "### Plots",
            "",
            f"Equity, drawdown, confusion and importance, base against head: [dvc plots diff]({plots_url}) "
            "(the `pipeline-plots` artifact of this run: index.html and the PNGs).",
            "",
        ]
    return "\n".join(lines)
