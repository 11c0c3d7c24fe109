"""Stage ``extract``: every active instrument's bars for the window → ``paths.raw`` (partitioned Parquet).

The window is [data.end − data.lookback_days, data.end); the clock is read only when ``data.end`` is
"now", so the same params give byte-identical files. The whole raw tree is built aside, checked and
swapped in at the end, and the output is ``persist: true`` in dvc.yaml so DVC does not delete it
first: a source that fails (a ``SourceError`` naming broker/symbol or file), or a run killed at any
point, leaves the previous ``data/raw`` exactly as it was. The run holds ``data/.raw.lock`` and starts
by sweeping what a killed run left beside it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from autotrader import rawstore
from autotrader.atomic import guard_output
from autotrader.console import console, progress, stage_main
from autotrader.errors import SourceError
from autotrader.faults import fault_point
from autotrader.params import Params, load_params
from autotrader.sources import fetch_all


def _span(frame: pd.DataFrame) -> tuple[object, object]:
    """First and last bar time: min/max when the column holds times, else the first and last row as given."""
    ts = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        return ts.min(), ts.max()
    return ts.iloc[0], ts.iloc[-1]


def main() -> int:
    params = load_params()
    if not params.data.active_instruments():  # a params error: fail before touching data/
        raise SourceError(
            f"data.source={params.data.source}: no instruments to extract "
            "(set data.instruments, or data.files for files)"
        )
    with guard_output(params.paths.raw) as swept:
        for path in swept:
            console.print(f"extract: removed {path} (left by a killed run)", soft_wrap=True)
        return extract(params)


def extract(params: Params) -> int:
    fault_point("extract", "start")
    data = params.data
    instruments = data.active_instruments()
    start, end = data.start_ts(), data.end_ts()
    console.print(
        f"extract: source={data.source} interval={data.interval} window [{start}, {end})", soft_wrap=True
    )
    summaries: list[str] = []

    def frames() -> Iterator[tuple[str, str, pd.DataFrame]]:
        with progress() as bar:
            task = bar.add_task("extract", total=len(instruments))
            for instrument, frame in fetch_all(data):
                if frame.empty:
                    raise SourceError(
                        f"{instrument.key}: no bars in [{start}, {end}) from source {data.source}; "
                        "check the symbol, data.end and data.lookback_days"
                    )
                first, last = _span(frame)
                summaries.append(f"  {instrument.key}: {len(frame)} bars, {first} → {last}")
                bar.update(task, advance=1, description=f"extract {instrument.key}")
                yield instrument.broker, instrument.symbol, frame
                fault_point("extract", "middle")  # one instrument written aside, the rest to come
            fault_point("extract", "end")  # the new tree is complete but not yet swapped in

    files = rawstore.write_extract(params.paths.raw, frames())
    for line in summaries:
        console.print(line, soft_wrap=True)
    console.print(
        f"extract: {len(summaries)} instrument(s), {files} day file(s) → {params.paths.raw}", soft_wrap=True
    )
    return 0


if __name__ == "__main__":
    stage_main(main)
