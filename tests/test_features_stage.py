"""The ``features`` stage as a process: the validation gate, its metrics, and DVC's persistent output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autotrader.store import read_metadata
from tests.conftest import Project, make_project

pytestmark = pytest.mark.xdist_group("features_stage")


def write_verdict(project: Project, success: bool) -> None:
    path = project.root / "metrics" / "validation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"success": success, "instruments": {}}))


def tree_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project copy whose raw bars came from the real extract stage (sim, 5 days, 2 instruments)."""
    project = make_project(tmp_path_factory.mktemp("features_stage") / "base", with_dvc=False)
    project.set_params(
        **{
            "data.lookback_days": 5,
            "data.instruments": [
                {"broker": "binance", "symbol": "BTCUSDT"},
                {"broker": "ibkr", "symbol": "SPY"},
            ],
        }
    )
    project.stage("extract")
    return project


def copy_of(project: Project, dest: Path) -> Project:
    shutil.copytree(project.root, dest)
    return Project(dest)


def test_stage_refuses_without_a_validation_verdict(extracted, tmp_path):
    project = copy_of(extracted, tmp_path / "p")
    proc = project.stage("features", check=False)
    assert proc.returncode != 0
    assert "metrics/validation.json" in proc.stderr and "validate" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project.root / "data" / "features").exists()


def test_stage_writes_metrics_and_updates_incrementally(extracted, tmp_path):
    project = copy_of(extracted, tmp_path / "p")
    write_verdict(project, success=True)
    raw = project.root / "data" / "raw"
    last_day = sorted(p.name for p in raw.glob("*/*/date=*"))[-1]
    held_back = tmp_path / "held_back"
    for part in raw.glob(f"*/*/{last_day}"):  # the newest day has not arrived yet
        dest = held_back / part.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(part, dest)

    project.stage("features")
    metrics = json.loads((project.root / "metrics" / "features.json").read_text())
    n_files = len(list(raw.rglob("bars.parquet")))
    assert metrics["mode"] == "full" and metrics["partitions_written"] == n_files
    assert metrics["instruments"] == ["binance/BTCUSDT", "ibkr/SPY"] and metrics["feature_count"] == 22
    meta = read_metadata(project.root / "data" / "features")
    assert metrics["rows"] == meta["rows"]["total"] > 0 and metrics["seconds"] >= 0

    arrived = 0
    for part in held_back.glob("*/*/date=*"):
        shutil.move(part, raw / part.relative_to(held_back))
        arrived += 1
    store_before = tree_state(project.root / "data" / "features")
    write_verdict(project, success=False)  # the new day failed validation: nothing may change
    proc = project.stage("features", check=False)
    assert proc.returncode != 0 and "did not succeed" in proc.stderr
    assert tree_state(project.root / "data" / "features") == store_before

    write_verdict(project, success=True)
    project.stage("features")
    metrics = json.loads((project.root / "metrics" / "features.json").read_text())
    assert metrics["mode"] == "incremental"
    assert metrics["partitions_written"] == arrived and metrics["partitions_skipped"] == n_files

    project.stage("features")
    metrics = json.loads((project.root / "metrics" / "features.json").read_text())
    assert metrics["mode"] == "up-to-date" and metrics["partitions_written"] == 0


@pytest.mark.slow
def test_dvc_keeps_the_persistent_store_between_runs(extracted, tmp_path):
    """``persist: true`` in dvc.yaml: DVC must not delete the store before the stage, or nothing is incremental."""
    project = make_project(tmp_path / "dvc")
    project.set_params(
        **{"data.lookback_days": 5, "data.instruments": extracted.params()["data"]["instruments"]}
    )
    shutil.copytree(extracted.root / "data" / "raw", project.root / "data" / "raw")
    write_verdict(project, success=True)
    project.dvc("repro", "--single-item", "features")
    first = json.loads((project.root / "metrics" / "features.json").read_text())
    assert first["mode"] == "full"

    victim = sorted((project.root / "data" / "raw").rglob("bars.parquet"))[-1]
    victim.unlink()  # a day vanishes from raw: DVC reruns the stage, the store keeps it as history
    project.dvc("repro", "--single-item", "features")
    second = json.loads((project.root / "metrics" / "features.json").read_text())
    assert second["mode"] == "up-to-date" and second["partitions_written"] == 0
    assert second["partitions_history"] == 1  # the store survived DVC and kept the vanished day
