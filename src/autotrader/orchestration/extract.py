"""One broker's share of the ``extract`` stage, for the per-broker fan-out of the nightly Argo run.

It is the same library path as stages/extract.py — ``sources.fetch_all`` then ``rawstore.write_extract``
— over the active instruments of one broker only. Brokers own disjoint partitions
(``broker=<b>/…``), so the union of the per-broker trees is exactly the tree the whole stage writes;
``dvc commit extract`` then records it without fetching a second time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autotrader import rawstore
from autotrader.console import console, progress
from autotrader.errors import ConfigError, SourceError
from autotrader.params import BROKERS, DataParams, Params
from autotrader.sources import fetch_all


@dataclass(frozen=True)
class BrokerExtract:
    broker: str
    instruments: int
    files: int
    root: Path


def broker_data(data: DataParams, broker: str) -> DataParams:
    """``data`` narrowed to one broker's instruments (and files, for the files source)."""
    if broker not in BROKERS:
        raise ConfigError(f"broker {broker!r} is not one of {', '.join(BROKERS)}")
    return data.model_copy(
        update={
            "instruments": tuple(i for i in data.instruments if i.broker == broker),
            "files": tuple(f for f in data.files if f.broker == broker),
        }
    )


def extract_broker(params: Params, broker: str, out_dir: str | Path) -> BrokerExtract:
    """Write ``broker``'s bars under ``out_dir/<paths.raw>``; nothing at all when it has no instruments."""
    data = broker_data(params.data, broker)
    instruments = data.active_instruments()
    root = Path(out_dir) / params.paths.raw
    if not instruments:
        console.print(
            f"extract {broker}: no {broker} instruments in params (data.source={data.source}); nothing to do"
        )
        return BrokerExtract(broker, 0, 0, root)
    start, end = data.start_ts(), data.end_ts()

    def frames() -> Iterator[tuple[str, str, pd.DataFrame]]:
        with progress() as bar:
            task = bar.add_task(f"extract {broker}", total=len(instruments))
            for instrument, frame in fetch_all(data):
                if frame.empty:
                    raise SourceError(
                        f"{instrument.key}: no bars in [{start}, {end}) from source {data.source}; "
                        "check the symbol, data.end and data.lookback_days"
                    )
                bar.update(task, advance=1, description=f"extract {instrument.key}")
                yield instrument.broker, instrument.symbol, frame

    files = rawstore.write_extract(root, frames())
    console.print(f"extract {broker}: {len(instruments)} instrument(s), {files} day file(s) → {root}")
    return BrokerExtract(broker, len(instruments), files, root)
