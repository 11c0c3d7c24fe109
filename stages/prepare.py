"""Stage ``prepare``: the feature store → labelled, time-split train/valid/test in data/prepared/.

Writes ``train.parquet``, ``valid.parquet``, ``test.parquet`` (timestamp, broker, symbol, close,
spread, bar_return, fwd_return, label_end, label + the feature columns) and ``splits.json`` (split
boundaries, counts, class balance, features). The whole folder is swapped in atomically, and the
output is ``persist: true`` in dvc.yaml, so a failed or killed run keeps the last good splits.
"""

from __future__ import annotations

from autotrader.atomic import atomic_dir, guard_output, write_json, write_parquet
from autotrader.console import console, stage_main
from autotrader.faults import fault_point
from autotrader.modeling.dataset import SPLITS, SPLITS_FILE, prepare
from autotrader.params import load_params


def main() -> int:
    params = load_params()
    with guard_output(params.paths.prepared) as swept:
        for path in swept:
            console.print(f"prepare: removed {path} (left by a killed run)", soft_wrap=True)
        fault_point("prepare", "start")
        with console.status("prepare: reading the feature store and labelling"):
            result = prepare(params)
        fault_point("prepare", "middle")
        with atomic_dir(params.paths.prepared) as tmp:
            for name in SPLITS:
                write_parquet(tmp / f"{name}.parquet", result.parts[name])
            write_json(tmp / SPLITS_FILE, result.info)
            fault_point("prepare", "end")  # written aside, not yet swapped in
    counts = ", ".join(f"{name} {result.info['splits'][name]['rows']:,}" for name in SPLITS)
    b = result.info["boundaries"]
    console.print(
        f"prepare: {counts} rows; valid from {b['valid_start']}, test from {b['test_start']} "
        f"→ {params.paths.prepared}"
    )
    return 0


if __name__ == "__main__":
    stage_main(main)
