"""Stage ``archive``: copy the raw bars to the long-term archive (``archive.url``) as gzip CSV days.

Runs after ``validate`` (it depends on ``metrics/validation.json``), so only bars that passed the
rules are archived. Unchanged days are skipped; ``metrics/archive.json`` says what was written.
"""

from __future__ import annotations

from pathlib import Path

from autotrader.archive import archive_raw
from autotrader.atomic import write_json
from autotrader.console import console, stage_main
from autotrader.params import load_params


def main() -> int:
    params = load_params()
    result = archive_raw(params.paths.raw, params.archive.url)
    metrics = result.as_metrics()
    write_json(Path(params.paths.metrics) / "archive.json", metrics)
    console.print(
        f"archive: {metrics['objects_written']} written, {metrics['objects_skipped']} unchanged "
        f"({metrics['bytes_written']} of {metrics['bytes_total']} bytes sent) → {metrics['url']}"
    )
    return 0


if __name__ == "__main__":
    stage_main(main)
