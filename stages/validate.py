"""Stage ``validate``: Great Expectations suites over the raw bars; evidence is written even on failure.

Reads ``paths.raw``; writes ``reports/validation/<broker>__<symbol>.json``, the Data Docs site
``reports/validation/data_docs/index.html`` and ``metrics/validation.json``. A rule whose family has
severity ``fail`` makes the stage exit non-zero, one line per broken expectation; ``warn`` only prints.
"""

from __future__ import annotations

from pathlib import Path

from autotrader.console import console, stage_main
from autotrader.errors import ValidationFailed
from autotrader.params import load_params
from autotrader.validation import show, validate_raw, write_outputs


def main() -> int:
    params = load_params()
    reports_dir = Path(params.paths.reports) / "validation"
    run = validate_raw(params)
    index = write_outputs(run, reports_dir, Path(params.paths.metrics) / "validation.json")
    show(run)
    console.print(f"Data Docs: {index}")
    if not run.success:
        raise ValidationFailed(run.failure_message(reports_dir))
    return 0


if __name__ == "__main__":
    stage_main(main)
