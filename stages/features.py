"""Stage ``features``: raw bars → the feature store (incremental), then metrics/features.json.

Refuses to run unless the validate stage said the raw data passed: features from data that broke a
rule would be trained on, and served, as if they were fine. Holds ``data/.features.lock`` for the run
and starts by sweeping what a killed run left (``data/.features.*.tmp``, ``.features.trash``); the
store itself reconciles its metadata with its partitions (``autotrader.store.reconcile``).
"""

from __future__ import annotations

from pathlib import Path

from autotrader.atomic import guard_output, write_json
from autotrader.console import console, stage_main
from autotrader.errors import StoreError
from autotrader.faults import fault_point
from autotrader.jsonfiles import read_json
from autotrader.metrics_files import write_headline
from autotrader.params import load_params
from autotrader.store import update_store


def require_validation(path: Path) -> None:
    """The validate stage's verdict must exist and say ``"success": true``."""
    verdict = read_json(path, StoreError, "run the validate stage before features")
    if not isinstance(verdict, dict) or verdict.get("success") is not True:
        raise StoreError(
            f'{path}: validation did not succeed ("success": {verdict.get("success") if isinstance(verdict, dict) else None!r}); '
            "refusing to build features from data that failed validation"
        )


def main() -> int:
    params = load_params()
    paths = params.paths
    with guard_output(paths.features, also=(Path(paths.metrics) / "features.json",)) as swept:
        for path in swept:
            console.print(f"features: removed {path} (left by a killed run)", soft_wrap=True)
        fault_point("features", "start")
        require_validation(Path(paths.metrics) / "validation.json")
        result = update_store(  # fault points middle and end are inside: before anything is visible
            raw_root=paths.raw,
            store_root=paths.features,
            params=params.features,
            interval=params.data.interval,
            source=params.data.source,
        )
    write_json(Path(paths.metrics) / "features.json", result.as_metrics())
    write_headline(paths.metrics, "features", result.as_metrics())
    console.print(
        f"features: {result.mode} ({result.reason}); wrote {result.partitions_written} partition(s), "
        f"skipped {result.partitions_skipped}, kept {result.partitions_history} from history; "
        f"{result.rows_total:,} rows × {result.feature_count} features in {result.seconds:.1f}s → {paths.features}"
    )
    return 0


if __name__ == "__main__":
    stage_main(main)
