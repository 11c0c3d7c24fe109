"""Stage ``validate``: Great Expectations suites over the raw bars; evidence is written even on failure.

Reads ``paths.raw``; writes ``reports/validation/<broker>__<symbol>.json``, the Data Docs site
``reports/validation/data_docs/index.html`` and ``metrics/validation.json``. A rule whose family has
severity ``fail`` makes the stage exit non-zero, one line per broken expectation; ``warn`` only prints.
The verdict carries a seal (the raw bars' fingerprint and the window, ``rawstore.seal``), so the
archive can refuse a verdict that is stale for the bars it is about to archive.
"""

from __future__ import annotations

import json
from pathlib import Path

from autotrader import rawstore
from autotrader.atomic import guard_output
from autotrader.console import console, stage_main
from autotrader.errors import ValidationFailed
from autotrader.faults import fault_point
from autotrader.metrics_files import write_headline
from autotrader.params import Params, load_params
from autotrader.validation import show, validate_raw, write_outputs


def main() -> int:
    params = load_params()
    reports_dir = Path(params.paths.reports) / "validation"
    verdict_path = Path(params.paths.metrics) / "validation.json"
    with guard_output(reports_dir, also=(verdict_path,)) as swept:  # a killed run's temp files go
        for path in swept:
            console.print(f"validate: removed {path} (left by a killed run)", soft_wrap=True)
        return validate(params, reports_dir, verdict_path)


def validate(params: Params, reports_dir: Path, verdict_path: Path) -> int:
    fault_point("validate", "start")
    sealed = rawstore.seal(params.paths.raw, params.data)  # which bars and window the verdict is about
    run = validate_raw(params)
    fault_point("validate", "middle")
    fault_point("validate", "end")
    index = write_outputs(run, reports_dir, verdict_path)
    rawstore.add_seal(verdict_path, sealed)  # archive refuses a verdict about other bars or another window
    write_headline(verdict_path.parent, "validation", json.loads(verdict_path.read_text()))
    show(run)
    console.print(f"Data Docs: {index}")
    if not run.success:
        raise ValidationFailed(run.failure_message(reports_dir))
    return 0


if __name__ == "__main__":
    stage_main(main)
