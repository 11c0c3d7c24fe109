"""Stage ``extract``: every active instrument's bars for the window → ``paths.raw`` (partitioned Parquet).

The window is [data.end − data.lookback_days, data.end); the clock is read only when ``data.end`` is
"now", so the same params give byte-identical files. The whole raw tree is built aside and swapped in
at the end: a source that fails (a ``SourceError`` naming broker/symbol or file) leaves the previous
``data/raw`` exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from autotrader import rawstore
from autotrader.console import console, progress, stage_main
from autotrader.errors import SourceError
from autotrader.params import load_params
from autotrader.sources import fetch_all


def _span(frame: pd.DataFrame) -> tuple[object, object]:
    """First and last bar time: min/max when the column holds times, else the first and last row as given."""
    ts = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        return ts.min(), ts.max()
    return ts.iloc[0], ts.iloc[-1]


def main() -> int:
    params = load_params()
    data = params.data
    instruments = data.active_instruments()
    if not instruments:
        raise SourceError(
            f"data.source={data.source}: no instruments to extract (set data.instruments, or data.files for files)"
        )
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

    files = rawstore.write_extract(params.paths.raw, frames())
    for line in summaries:
        console.print(line, soft_wrap=True)
    console.print(
        f"extract: {len(summaries)} instrument(s), {files} day file(s) → {params.paths.raw}", soft_wrap=True
    )
    return 0


if __name__ == "__main__":
    stage_main(main)
