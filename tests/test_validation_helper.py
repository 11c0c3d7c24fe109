"""Validation shared out among processes (``validation/helper.py``).

Helpers must change nothing but the time: the same verdicts, reports and Data Docs as one process.
A helper's failure must be the stage's clear error, a helper must not outlive a killed stage, and
importing the stage must not import Great Expectations (only validating needs it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import psutil
import pytest

from autotrader.params import Instrument, ValidateParams
from autotrader.validation.helper import MB, WorkQueue, largest_first, process_count
from tests.conftest import BIN, REPO, Project, make_project, tool_env
from tests.test_validation_outputs import END, _negative_volume_on_btc, _write_raw

pytestmark = pytest.mark.xdist_group("validation")

INSTRUMENTS = (
    Instrument(broker="binance", symbol="BTCUSDT"),
    Instrument(broker="binance", symbol="ETHUSDT"),
    Instrument(broker="oanda", symbol="EUR_USD"),
    Instrument(broker="ibkr", symbol="SPY"),  # configured but never extracted: fails has_bars
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Three instruments with bars (BTC with two negative volumes) and SPY configured without any."""
    project = make_project(tmp_path_factory.mktemp("helpers") / "project", with_dvc=False)
    project.set_params(
        **{
            "data.interval": "1h",
            "data.lookback_days": 3,
            "data.end": "2026-11-20",
            "data.instruments": [i.model_dump() for i in INSTRUMENTS],
            "validate.parallel_min_mb": 0,
        }
    )
    raw = project.root / "data" / "raw"
    _write_raw(raw, list(INSTRUMENTS[:3]), END - pd.Timedelta(days=3), _negative_volume_on_btc)
    return project


def _validate(project: Project, processes: int, fault: str | None = None) -> subprocess.CompletedProcess:
    """The stage as a user runs it: its own single-threaded process, which is what lets helpers fork."""
    project.set_params(**{"validate.processes": processes})
    return project.stage("validate", check=False, env={"AUTOTRADER_FAULT": fault} if fault else None)


def _without_run_identity(value: Any) -> Any:
    """GE's results minus what names the run (run time, ids): everything a verdict says stays."""
    if isinstance(value, dict):
        return {k: _without_run_identity(v) for k, v in value.items() if k not in {"meta", "id"}}
    if isinstance(value, list):
        return [_without_run_identity(v) for v in value]
    return value


def _outputs(project: Project) -> tuple[dict[str, Any], set[str]]:
    reports = project.root / "reports" / "validation"
    files = {p.name: _without_run_identity(json.loads(p.read_text())) for p in reports.glob("*.json")}
    files["summary"] = json.loads((project.root / "metrics" / "validation.json").read_text())
    # validations/<suite path>/<run name>/<run time>/<batch>.html: the suites, not the run time
    pages = {
        str(p.relative_to(reports / "data_docs" / "validations").parent.parent.parent)
        for p in (reports / "data_docs" / "validations").rglob("*.html")
    }
    return files, pages


def _snapshot(project: Project) -> dict[str, bytes]:
    """Every output file's bytes: a failed run must leave them exactly so."""
    roots = (project.root / "reports" / "validation", project.root / "metrics")
    return {str(p): p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def test_helpers_write_what_one_process_writes(project: Project) -> None:
    alone = _validate(project, 1)
    one, one_pages = _outputs(project)
    shared = _validate(project, 3)
    three, three_pages = _outputs(project)
    assert (alone.returncode, shared.returncode) == (1, 1)  # BTC's negative volume, SPY without bars
    assert "3 processes" in shared.stderr and "processes" not in alone.stderr
    assert three == one  # verdicts, counts, examples, messages, GE results: identical
    assert one["summary"]["failed"] == 3
    assert len(one_pages) == 4 * len(INSTRUMENTS) and three_pages == one_pages  # every suite in the docs
    index = (project.root / "reports" / "validation" / "data_docs" / "index.html").read_text()
    assert all(f"{i.broker}__{i.symbol}/sessions" in index for i in INSTRUMENTS)


def test_a_helpers_failure_is_the_stages_error_and_writes_nothing(project: Project) -> None:
    _validate(project, 1)
    before = _snapshot(project)
    proc = _validate(project, 2, fault="validate-helper:middle")
    assert proc.returncode == 1 and "validate-helper: injected fault at middle" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(project) == before


def test_a_killed_helper_is_a_clear_error_and_writes_nothing(project: Project) -> None:
    _validate(project, 1)
    before = _snapshot(project)
    proc = _validate(project, 2, fault="validate-helper:middle:kill")
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(
        r"helper process \(validate.processes\) died with exit code -9 while validating \w+/\w+", err
    )
    assert "nothing was written" in err
    assert _snapshot(project) == before


def test_importing_the_stage_does_not_import_great_expectations() -> None:
    """GE takes ~1.5 s to import: only validating pays it, not every command that imports the package."""
    code = (
        "import runpy, sys; runpy.run_path('stages/validate.py', run_name='not_main'); "
        "import autotrader.validation; print('great_expectations' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=tool_env(), capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "False", proc.stderr


def test_a_helper_dies_with_a_killed_stage(project_factory: Callable[..., Project]) -> None:
    project = project_factory(with_dvc=False)
    project.set_params(
        **{
            "data.interval": "1h",
            "data.lookback_days": 3,
            "data.instruments": [i.model_dump() for i in INSTRUMENTS[:3]],
            "validate.processes": 2,
            "validate.parallel_min_mb": 0,
        }
    )
    _write_raw(project.root / "data" / "raw", list(INSTRUMENTS[:3]), END - pd.Timedelta(days=3), _keep)
    stage = subprocess.Popen(  # the helper hangs after its first instrument: only its stage's death ends it
        [str(BIN / "python"), "stages/validate.py"],
        cwd=project.root,
        env=tool_env({"AUTOTRADER_FAULT": "validate-helper:middle:stall"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    helper: psutil.Process | None = None
    try:
        helper = _wait_for_child(stage.pid, timeout=60)
        time.sleep(2)  # the stage now waits on the stalled helper
        assert stage.poll() is None and helper.is_running()
        os.kill(stage.pid, signal.SIGKILL)
        stage.wait(timeout=30)
        helper.wait(timeout=10)  # raises psutil.TimeoutExpired if the helper outlives its stage
    finally:
        if stage.poll() is None:
            stage.kill()
        if helper is not None and helper.is_running():
            helper.kill()  # the test failed: leave no stalled helper behind


def _keep(_inst: Instrument, bars: pd.DataFrame) -> pd.DataFrame:
    return bars


def _wait_for_child(pid: int, timeout: float) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        if children:
            return children[0]
        time.sleep(0.02)
    raise AssertionError(f"the validate stage (pid {pid}) started no helper within {timeout} s")


def _rules(processes: int, min_mb: float) -> ValidateParams:
    return ValidateParams(processes=processes, parallel_min_mb=min_mb)


def test_one_process_below_the_threshold_and_never_more_than_instruments() -> None:
    sizes = {("binance", "BTCUSDT"): 12 * MB, ("oanda", "EUR_USD"): 7 * MB}
    assert process_count(_rules(2, 20), sizes) == 1  # 19 MB < 20 MB: a helper would cost more than it saves
    assert process_count(_rules(2, 19), sizes) == 2
    assert process_count(_rules(8, 0), sizes) == 2  # two instruments: two processes at most
    assert process_count(_rules(1, 0), sizes) == 1


def test_the_queue_hands_out_each_instrument_once_largest_first() -> None:
    pairs = [("b", "S1"), ("b", "S2"), ("o", "F1"), ("i", "E1"), ("i", "E2")]
    sizes = dict(zip(pairs, [158, 222, 222, 42, 0], strict=True))
    order = largest_first(pairs, sizes)
    assert order == [("b", "S2"), ("o", "F1"), ("b", "S1"), ("i", "E1"), ("i", "E2")]  # ties keep order
    for shared in (False, True):
        queue = WorkQueue(order, shared=shared)
        assert [queue.take() for _ in range(len(pairs) + 2)] == [*order, None, None]
