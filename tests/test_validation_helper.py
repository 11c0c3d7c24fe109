"""Validation shared out among processes (``validation/helper.py``).

Helpers must change nothing but the time: the same verdicts, reports and Data Docs as one process.
Great Expectations must not be imported before the helpers start (the overlap is the point), a
helper's failure must be the stage's clear error, and a helper must not outlive a killed stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from autotrader.errors import AutoTraderError
from autotrader.faults import InjectedFault
from autotrader.params import Instrument, Params, ValidateParams, load_params
from autotrader.validation import validate_raw, write_outputs
from autotrader.validation.helper import MB, process_count, share_out
from tests.conftest import BIN, REPO, Project, tool_env
from tests.test_validation_outputs import END, _negative_volume_on_btc, _write_raw

pytestmark = pytest.mark.xdist_group("validation")

INSTRUMENTS = (
    Instrument(broker="binance", symbol="BTCUSDT"),
    Instrument(broker="binance", symbol="ETHUSDT"),
    Instrument(broker="oanda", symbol="EUR_USD"),
    Instrument(broker="ibkr", symbol="SPY"),  # configured but never extracted: fails has_bars
)


def _params(processes: int) -> Params:
    params = load_params(REPO / "params.yaml")
    data = params.data.model_copy(
        update={"interval": "1h", "lookback_days": 3, "end": "2026-11-20", "instruments": INSTRUMENTS}
    )
    rules = params.validate_.model_copy(update={"processes": processes, "parallel_min_mb": 0})
    return params.model_copy(update={"data": data, "validate_": rules})


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw") / "raw"
    _write_raw(root, list(INSTRUMENTS[:3]), END - pd.Timedelta(days=3), _negative_volume_on_btc)
    return root


def _without_run_identity(value: Any) -> Any:
    """GE's results minus what names the run (run time, ids): everything a verdict says stays."""
    if isinstance(value, dict):
        return {k: _without_run_identity(v) for k, v in value.items() if k not in {"meta", "id"}}
    if isinstance(value, list):
        return [_without_run_identity(v) for v in value]
    return value


def _outputs(params: Params, raw: Path, out: Path) -> tuple[int, dict[str, Any], set[str]]:
    run = validate_raw(params, raw)
    write_outputs(run, out / "validation", out / "validation.json")
    files = {
        p.name: _without_run_identity(json.loads(p.read_text())) for p in (out / "validation").glob("*.json")
    }
    files["summary"] = json.loads((out / "validation.json").read_text())
    # validations/<suite path>/<run name>/<run time>/<batch>.html: the suites, not the run time
    pages = {
        str(p.relative_to(out / "validation" / "data_docs" / "validations").parent.parent.parent)
        for p in (out / "validation" / "data_docs" / "validations").rglob("*.html")
    }
    return run.processes, files, pages


def test_helpers_write_what_one_process_writes(raw: Path, tmp_path: Path) -> None:
    alone, one, one_pages = _outputs(_params(1), raw, tmp_path / "one")
    shared, three, three_pages = _outputs(_params(3), raw, tmp_path / "three")
    assert (alone, shared) == (1, 3)
    assert three == one  # verdicts, counts, examples, messages, GE results: identical
    assert one["summary"]["success"] is False and one["summary"]["failed"] == 3  # BTC volume, SPY ×2
    assert len(one_pages) == 4 * len(INSTRUMENTS) and three_pages == one_pages  # every suite in the docs
    index = (tmp_path / "three" / "validation" / "data_docs" / "index.html").read_text()
    assert all(f"{i.broker}__{i.symbol}/sessions" in index for i in INSTRUMENTS)


def test_a_helpers_failure_is_raised_in_the_main_process(raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTRADER_FAULT", "validate-helper:middle")  # inherited by the helper
    with pytest.raises(InjectedFault, match="validate-helper: injected fault at middle"):
        validate_raw(_params(2), raw)


def test_a_killed_helper_is_a_clear_error(raw: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTRADER_FAULT", "validate-helper:middle:kill")
    with pytest.raises(AutoTraderError, match=r"helper process .* died with exit code -9 while validating"):
        validate_raw(_params(2), raw)


def test_importing_the_stage_does_not_import_great_expectations() -> None:
    """GE takes ~2 s to import; the helpers must be started before the main process pays it."""
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
    stage = subprocess.Popen(
        [str(BIN / "python"), "stages/validate.py"],
        cwd=project.root,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        helper = _wait_for_child(stage.pid, timeout=60)
        os.kill(stage.pid, signal.SIGKILL)
        stage.wait(timeout=30)
        helper.wait(timeout=10)  # raises psutil.TimeoutExpired if the helper outlives its stage
    finally:
        if stage.poll() is None:
            stage.kill()
    assert not (project.root / "metrics" / "validation.json").exists()


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


def test_shares_are_balanced_complete_and_in_configured_order() -> None:
    pairs = [("b", "S1"), ("b", "S2"), ("o", "F1"), ("o", "F2"), ("o", "F3"), ("i", "E1"), ("i", "E2")]
    sizes = dict(zip(pairs, [222, 222, 158, 158, 158, 42, 42], strict=True))
    shares = share_out(pairs, sizes, 2)
    assert sorted(p for share in shares for p in share) == sorted(pairs)  # each exactly once
    assert all(share == [p for p in pairs if p in share] for share in shares)
    loads = [sum(sizes[p] for p in share) for share in shares]
    assert max(loads) - min(loads) <= max(sizes.values())  # no process waits for a lopsided other
    assert share_out(pairs, sizes, 2) == shares  # deterministic
    assert share_out(pairs, sizes, 1) == [pairs]
