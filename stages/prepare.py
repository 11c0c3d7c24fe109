"""Stage ``prepare``: the feature store → labelled, time-split train/valid/test in data/prepared/.

Writes ``train.parquet``, ``valid.parquet``, ``test.parquet`` (timestamp, broker, symbol, close,
spread, bar_return, fwd_return, label_end, label + the feature columns) and ``splits.json`` (split
boundaries, counts, class balance, features). The whole folder is swapped in atomically.
"""

from __future__ import annotations

from autotrader.atomic import atomic_dir, write_json, write_parquet
from autotrader.console import console, stage_main
from autotrader.modeling.dataset import SPLITS, SPLITS_FILE, prepare
from autotrader.params import load_params


def main() -> int:
    params = load_params()
    with console.status("prepare: reading the feature store and labelling"):
        result = prepare(params)
    with atomic_dir(params.paths.prepared) as tmp:
        for name in SPLITS:
            write_parquet(tmp / f"{name}.parquet", result.parts[name])
        write_json(tmp / SPLITS_FILE, result.info)
    counts = ", ".join(f"{name} {result.info['splits'][name]['rows']:,}" for name in SPLITS)
    b = result.info["boundaries"]
    console.print(
        f"prepare: {counts} rows; valid from {b['valid_start']}, test from {b['test_start']} "
        f"→ {params.paths.prepared}"
    )
    return 0


if __name__ == "__main__":
    stage_main(main)
