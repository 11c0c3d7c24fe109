"""The per-broker fan-out of the nightly Argo run is DVC's ``extract`` stage, byte for byte.

argo/data-pipeline.yaml runs one `autotrader pipeline extract --broker <b>` pod per broker, then
records the union with `dvc commit extract`. That is only honest if the union is exactly what
`dvc repro extract` writes, and if DVC then sees the stage as up to date. Both are checked here on a
copy of the project (simulated market, a two-day window).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from autotrader.params import BROKERS
from tests.conftest import tree_hashes

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

SMALL = {
    "data.end": "2026-11-20",
    "data.lookback_days": 2,
    "data.interval": "15min",
    "data.instruments": [
        {"broker": "binance", "symbol": "BTCUSDT"},
        {"broker": "binance", "symbol": "ETHUSDT"},
        {"broker": "oanda", "symbol": "EUR_USD"},
        {"broker": "ibkr", "symbol": "SPY"},
    ],
}


def test_per_broker_extraction_then_dvc_commit_equals_dvc_repro_extract(project, tmp_path: Path) -> None:
    project.set_params(**SMALL)
    raw = project.root / "data" / "raw"

    # What the Argo fan-out does: one pod per broker, each writing only its own partitions (the
    # first through the real command line, the others through the same function, to save time).
    from autotrader.orchestration.extract import extract_broker
    from autotrader.params import load_params

    workspaces = []
    for broker in BROKERS:
        out = tmp_path / f"ws-{broker}"
        if broker == BROKERS[0]:
            proc = project.run(
                str(BIN / "autotrader"), "pipeline", "extract", "--broker", broker, "--out", str(out)
            )
            assert f"extract {broker}:" in proc.stderr
        else:
            extract_broker(load_params(project.params_path), broker, out)
        assert sorted(p.name for p in (out / "data" / "raw").iterdir()) == [f"broker={broker}"]
        workspaces.append(out)

    # The `extract` step: the union of the workspaces, recorded by DVC without running the stage.
    for out in workspaces:
        shutil.copytree(out, project.root, dirs_exist_ok=True)
    union = tree_hashes(raw)
    project.dvc("commit", "--force", "extract")
    status = project.dvc("status", "extract")
    assert "up to date" in status.stdout, status.stdout

    # What `dvc repro extract` writes from scratch is the same tree, byte for byte.
    shutil.rmtree(raw)
    project.dvc("repro", "--force", "--single-item", "extract")
    assert tree_hashes(raw) == union
    assert len(union) == 2 * len(SMALL["data.instruments"])  # two days per instrument


def test_a_broker_without_instruments_writes_nothing(project, tmp_path: Path) -> None:
    project.set_params(**{**SMALL, "data.instruments": [{"broker": "binance", "symbol": "BTCUSDT"}]})
    from autotrader.orchestration.extract import extract_broker
    from autotrader.params import load_params

    result = extract_broker(load_params(project.params_path), "ibkr", tmp_path / "ws")
    assert (result.instruments, result.files) == (0, 0)
    assert not (tmp_path / "ws").exists()
