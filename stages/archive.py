"""Stage ``archive``: copy the raw bars to the long-term archive (``archive.url``) as gzip CSV days.

Archives only bars the validate stage passed: ``metrics/validation.json`` must say success and carry
the seal of exactly these raw bars and this window (``require_verdict``); a failed, missing or stale
verdict is refused. The archive is write-once: unchanged days are skipped, new ones written, and a day
whose archived content would change is an error naming it, unless ``--replace`` (or
``archive.replace: true``) asks to replace it, keeping the old content. S3 calls have deadlines
(``archive.connect_timeout_s``, ``archive.read_timeout_s``, ``archive.max_attempts``).
``metrics/archive.json`` says what was written and replaced.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autotrader.archive import Deadlines, archive_raw, require_verdict
from autotrader.atomic import write_json
from autotrader.console import console, stage_main
from autotrader.faults import fault_point
from autotrader.metrics_files import write_headline
from autotrader.params import load_params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--replace",
        action="store_true",
        help="replace archived days whose content changed, keeping the old versions",
    )
    args = parser.parse_args()
    params = load_params()
    fault_point("archive", "start")
    settings = params.archive
    paths = params.paths
    require_verdict(Path(paths.metrics) / "validation.json", paths.raw, params.data)
    fault_point("archive", "middle")
    deadlines = Deadlines(settings.connect_timeout_s, settings.read_timeout_s, settings.max_attempts)
    fault_point("archive", "end")
    result = archive_raw(
        paths.raw, settings.url, replace=args.replace or settings.replace, deadlines=deadlines
    )
    metrics = result.as_metrics()
    write_json(Path(paths.metrics) / "archive.json", metrics)
    write_headline(paths.metrics, "archive", metrics)
    console.print(
        f"archive: {metrics['objects_written']} written ({metrics['objects_replaced']} replaced, old "
        f"versions kept), {metrics['objects_skipped']} unchanged "
        f"({metrics['bytes_written']} of {metrics['bytes_total']} bytes sent) → {metrics['url']}"
    )
    return 0


if __name__ == "__main__":
    stage_main(main)
