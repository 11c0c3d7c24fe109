"""``autotrader data rollback``: after a bad day, yesterday's raw bars and feature store come back byte for byte.

One module-scoped scratch pipeline on real hourly EURUSD bars (the files source): day 1 is ``dvc repro
features`` and a commit (and ``dvc push`` to a folder remote); day 2 moves ``data.end`` one day on with
that day's bars corrupted in the vendor file (every price 0.4 % off: plausible, so validation passes it
through) and commits too. Every test works on its own copy of that project.
"""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

import pandas as pd
import pytest

from .conftest import BIN, Project, make_project, tree_hashes

pytestmark = [pytest.mark.xdist_group("data-rollback"), pytest.mark.slow]

DAY1, DAY2 = "2018-01-17", "2018-01-18"
BAD_DAY = "2018-01-17"
TREES = ("data/raw", "data/features")


def git(project: Project, *args: str) -> str:
    return project.run(
        "git", "-c", "user.email=ci@autotrader.invalid", "-c", "user.name=autotrader-ci", *args
    ).stdout.strip()


def snapshot(project: Project) -> dict[str, dict[str, str]]:
    return {tree: tree_hashes(project.root / tree) for tree in TREES}


def leftovers(project: Project) -> list[str]:
    """Temporary or parked trees beside the data (a rollback leaves none, finished or refused)."""
    return sorted(p.name for p in (project.root / "data").iterdir() if p.name.endswith((".tmp", ".trash")))


def rollback(project: Project, rev: str):
    return project.run(str(BIN / "autotrader"), "data", "rollback", "--to", rev, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, dict[str, dict[str, str]]]:
    base = tmp_path_factory.mktemp("data-rollback")
    project = make_project(base / "project")
    csv = project.root / "data" / "external" / "EURUSD.csv"
    shutil.copy(str(importlib.resources.files("backtesting") / "test" / "EURUSD.csv"), csv)
    project.set_params(
        **{
            "data.source": "files",
            "data.interval": "1h",
            "data.end": DAY1,
            "data.lookback_days": 30,
            "data.files": [
                {
                    "path": "data/external/EURUSD.csv",
                    "broker": "oanda",
                    "symbol": "EUR_USD",
                    "timezone": "UTC",
                }
            ],
            "validate.severity.completeness": "warn",
        }
    )
    (base / "remote").mkdir()
    project.dvc("remote", "add", "-d", "store", str(base / "remote"))
    project.dvc("repro", "features")
    day1 = snapshot(project)
    assert day1["data/raw"] and "_metadata.json" in day1["data/features"]
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "day 1")
    project.dvc("push")

    # day 2: the vendor's file has the bad day, every price 0.4 % off
    frame = pd.read_csv(csv, index_col=0)
    bad = frame.index.str.startswith(BAD_DAY)
    assert bad.sum() >= 10
    frame.loc[bad, ["Open", "High", "Low", "Close"]] *= 1.004
    frame.to_csv(csv)
    project.set_params(**{"data.end": DAY2})
    project.dvc("repro", "features")
    day2 = snapshot(project)
    for tree in TREES:
        assert day2[tree] != day1[tree], f"day 2 did not change {tree}"
    assert any(f"date={BAD_DAY}" in name for name in day2["data/raw"])
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "day 2 (bad)")
    return project, day1


@pytest.fixture
def copy(built: tuple[Project, dict], tmp_path: Path) -> tuple[Project, dict[str, dict[str, str]]]:
    project, day1 = built
    dest = tmp_path / "copy"
    shutil.copytree(project.root, dest, symlinks=True)
    return Project(dest), day1


def test_rollback_restores_yesterdays_raw_bars_and_feature_store_byte_for_byte(copy) -> None:
    project, day1 = copy
    proc = rollback(project, "HEAD~1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "restored data/raw" in out and "restored data/features" in out and "hashes verified" in out
    assert snapshot(project) == day1
    assert leftovers(project) == []
    # the bad day is gone from the bars and the store's metadata is yesterday's
    assert not any(f"date={BAD_DAY}" in name for name in tree_hashes(project.root / "data/raw"))


def test_rollback_pulls_from_the_remote_when_the_cache_lacks_the_data(copy) -> None:
    project, day1 = copy
    shutil.rmtree(project.root / ".dvc" / "cache")
    proc = rollback(project, "HEAD~1")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(project) == day1


def test_refuses_when_neither_cache_nor_remote_has_the_data_and_changes_nothing(copy) -> None:
    project, _ = copy
    # the remote is the one the commit's .dvc/config names (DVC reads it at that revision): take it away
    remote = Path(project.dvc("remote", "list").stdout.split()[1])
    parked = remote.with_name(remote.name + ".away")
    shutil.rmtree(project.root / ".dvc" / "cache")
    before = snapshot(project)
    remote.rename(parked)
    try:
        proc = rollback(project, "HEAD~1")
    finally:
        parked.rename(remote)
    assert proc.returncode != 0
    assert "cannot be found" in proc.stderr and "Nothing was changed" in proc.stderr, proc.stderr
    assert "data/raw" in proc.stderr
    assert snapshot(project) == before
    assert leftovers(project) == []


def test_a_corrupted_cache_object_is_refused_before_anything_is_swapped(copy) -> None:
    project, _ = copy
    before = snapshot(project)
    # yesterday's feature metadata differs from today's: corrupt its cache object
    lock = project.run("git", "show", "HEAD~1:dvc.lock").stdout
    import yaml

    outs = {o["path"]: o for s in yaml.safe_load(lock)["stages"].values() for o in s.get("outs", [])}
    cache = project.root / ".dvc" / "cache" / "files" / "md5"
    listing = cache / outs["data/features"]["md5"][:2] / outs["data/features"]["md5"][2:]
    import json

    meta = next(e for e in json.loads(listing.read_text()) if e["relpath"] == "_metadata.json")
    obj = cache / meta["md5"][:2] / meta["md5"][2:]
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes().replace(b"{", b"[", 1))
    proc = rollback(project, "HEAD~1")
    assert proc.returncode != 0 and "does not hash to" in proc.stderr, proc.stderr
    assert snapshot(project) == before
    assert leftovers(project) == []


def test_an_unknown_revision_is_refused(copy) -> None:
    project, _ = copy
    before = snapshot(project)
    proc = rollback(project, "no-such-rev")
    assert proc.returncode != 0 and "'no-such-rev' is not a commit" in proc.stderr
    assert snapshot(project) == before
