"""Validate the raw store: every instrument through its four GE suites, then reports and a summary.

``validate_raw`` judges; ``write_outputs`` writes the evidence (JSON per instrument, Data Docs,
``metrics/validation.json``) atomically — on failure too, since the reports are what a person reads
to fix the data. The stage raises ``ValidationFailed`` with ``ValidationRun.failure_message()``.

Importing this module does not import Great Expectations (~1.5 s): ``validate_raw`` does, so that
commands which only read reports stay quick; its helper processes then fork with GE in memory.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from autotrader import rawstore
from autotrader.atomic import atomic_dir, write_json
from autotrader.console import console, progress
from autotrader.heap import heavy_import
from autotrader.params import DataParams, Params
from autotrader.validation.derive import Window
from autotrader.validation.helper import (
    WorkQueue,
    can_fork,
    helpers,
    largest_first,
    process_count,
    raw_bytes,
)
from autotrader.validation.report import FAMILIES, Finding, InstrumentResult

if TYPE_CHECKING:
    from autotrader.validation.engine import GxEngine

DOCS_DIR = "data_docs"


@dataclass
class ValidationRun:
    """All instruments' results and the GE context that holds them (for the Data Docs build)."""

    results: list[InstrumentResult]
    engine: GxEngine
    processes: int = 1  # the main process and its helpers

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
    """Validate every instrument of the raw store; progress per instrument.

    One GE context holds every result: the main process validates its share in it and adopts the
    helpers' records as they arrive (``helper``); results keep the ``instruments_to_validate`` order.
    """
    raw_root = Path(raw_root or params.paths.raw)
    pairs = instruments_to_validate(params.data, raw_root)
    sizes = raw_bytes(raw_root, pairs)
    processes = process_count(params.validate_, sizes) if can_fork() else 1
    queue = WorkQueue(largest_first(pairs, sizes), shared=processes > 1)
    run_time = datetime.datetime.now(datetime.UTC)
    with heavy_import("great_expectations"):  # imported here, not with this module (see module doc)
        from autotrader.validation.engine import GxEngine
        from autotrader.validation.instrument import validate_stored
    found: dict[tuple[str, str], InstrumentResult] = {}
    # Helpers fork now, sharing the imported GE, and before the progress display starts its thread.
    with helpers(params, raw_root, queue, processes - 1, run_time) as started, progress() as bar:
        engine = GxEngine(run_time=run_time)
        task = bar.add_task("validate", total=len(pairs))
        while (pair := queue.take()) is not None:
            bar.update(task, description=f"validate {pair[0]}/{pair[1]}")
            found[pair] = validate_stored(engine, params, raw_root, *pair)
            bar.advance(task)
        bar.update(task, description="validate: waiting for the helper processes")
        for helper in started:
            for result, exported in helper.results():
                engine.adopt(exported)
                found[(result.broker, result.symbol)] = result
                bar.advance(task)
    return ValidationRun(results=[found[pair] for pair in pairs], engine=engine, processes=processes)


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
    processes = f", {run.processes} processes" if run.processes > 1 else ""
    table = Table(title=f"Data validation (Great Expectations{processes})")
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
    "validate_raw",
    "write_outputs",
)
