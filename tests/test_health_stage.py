"""The health stage end to end: real raw bars, a real feature store, Evidently, exit codes and reports."""

from __future__ import annotations

import json
import runpy

import numpy as np
import pandas as pd
import pytest

from autotrader import rawstore
from autotrader.console import run_guarded
from autotrader.params import FeatureParams, Instrument
from autotrader.sources.sim import SimulatedMarket
from autotrader.store import update_store
from tests.conftest import make_project

# Same worker as the drift tests: Evidently is imported once. One test runs the stage as DVC does
# (a subprocess); the others call the same ``main`` in-process, which is the same code, faster.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("health")]

END = pd.Timestamp("2026-11-20", tz="UTC")
VOLATILITY = ["vol_12", "vol_48", "atr_14", "parkinson_48"]
SCALE_FREE = ["bb_pctb_20", "volume_z_96"]  # unchanged when every price move is tripled


def triple_volatility(bars: pd.DataFrame, since: pd.Timestamp, factor: float = 3.0) -> pd.DataFrame:
    """Every log price move from ``since`` on ×factor (wicks too); volume and relative spread kept."""
    out = bars.copy()
    log_close = np.log(out["close"].to_numpy())
    moves = np.diff(log_close, prepend=log_close[0])
    late = (out["timestamp"] >= since).to_numpy()
    moves[late] *= factor
    close = np.exp(log_close[0] + np.cumsum(moves))
    open_ = np.r_[out["open"].iloc[0], close[:-1]]
    k = np.where(late, factor, 1.0)
    up = np.log(out["high"] / np.maximum(out["open"], out["close"])).to_numpy()
    down = np.log(np.minimum(out["open"], out["close"]) / out["low"]).to_numpy()
    out["high"] = np.maximum(open_, close) * np.exp(k * up)
    out["low"] = np.minimum(open_, close) * np.exp(-k * down)
    out["spread"] = out["spread"] * close / out["close"]
    out["open"], out["close"] = open_, close
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """One instrument, six days; in the last day its volatility triples. Store built like `features` does."""
    project = make_project(tmp_path_factory.mktemp("health") / "project", with_dvc=False)
    instrument = Instrument(broker="binance", symbol="BTCUSDT")
    bars = SimulatedMarket(seed=11).fetch(instrument, END - pd.Timedelta(days=6), END, pd.Timedelta("5min"))
    bars = triple_volatility(bars, END - pd.Timedelta(days=1))
    rawstore.write_extract(project.root / "data" / "raw", [("binance", "BTCUSDT", bars)])
    update_store(
        project.root / "data" / "raw", project.root / "data" / "features", FeatureParams(), "5min", "sim",
        show_progress=False,
    )  # fmt: skip
    project.set_params(
        **{
            "data.instruments": [{"broker": "binance", "symbol": "BTCUSDT"}],
            "data.end": "2026-11-20",
            "health.reference_days": 3,
            "health.current_days": 1,
        }
    )
    return project


def run_in_process(
    project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str]:
    """``python stages/health.py`` without a new interpreter: exit code and what it printed to stderr."""
    monkeypatch.chdir(project.root)
    stage = runpy.run_path(str(project.root / "stages" / "health.py"), run_name="health_stage")
    code = run_guarded(stage["main"])
    return code, capsys.readouterr().err


def _outputs(project) -> tuple[dict, dict, str]:
    metrics = json.loads((project.root / "metrics" / "health.json").read_text())
    psi = json.loads((project.root / "reports" / "drift" / "psi.json").read_text())
    html = (project.root / "reports" / "drift" / "index.html").read_text()
    return metrics, psi, html


def test_drift_fails_the_stage_when_asked_and_the_reports_are_written(project) -> None:
    project.set_params(**{"health.fail_on_drift": True, "data.end": "2026-11-20"})
    proc = project.stage("health", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "binance/BTCUSDT: feature drift" in proc.stderr and "health.psi_threshold" in proc.stderr
    assert "Traceback" not in proc.stderr

    metrics, psi, html = _outputs(project)
    assert metrics["status"] == "fail" and metrics["stale_instruments"] == []
    scores = psi["instruments"]["binance/BTCUSDT"]
    for feature in VOLATILITY:
        assert scores[feature]["psi"] > 0.2 and scores[feature]["drift"], (feature, scores[feature])
        assert f"binance/BTCUSDT:{feature}" in metrics["drift"]["features_above_threshold"]
    for feature in SCALE_FREE:
        assert scores[feature]["psi"] < 0.2, (feature, scores[feature])
    inst = metrics["instruments"]["binance/BTCUSDT"]
    assert inst["freshness"]["stale"] is False and inst["freshness"]["lag_bars"] == 0
    assert inst["drift"]["max_psi"] == metrics["drift"]["max_psi"] > 0.2
    assert metrics["drift"]["report"] == "reports/drift/index.html"
    assert "Dataset Drift" in html and "binance/BTCUSDT:vol_48" in html


def test_drift_only_warns_by_default(project, monkeypatch, capsys) -> None:
    project.set_params(**{"health.fail_on_drift": False, "data.end": "2026-11-20"})
    code, stderr = run_in_process(project, monkeypatch, capsys)
    assert code == 0, stderr
    assert "warning:" in stderr and "binance/BTCUSDT: feature drift" in stderr
    metrics, _, _ = _outputs(project)
    assert metrics["status"] == "warn" and metrics["problems"] == []
    assert metrics["drift"]["drifted"] is True


def test_stale_data_fails_naming_the_instrument_and_still_writes_reports(
    project, monkeypatch, capsys
) -> None:
    # Three hours after the last bar of a 24/7 market: 36 bars behind.
    project.set_params(**{"health.fail_on_drift": False, "data.end": "2026-11-20T03:00:00"})
    code, stderr = run_in_process(project, monkeypatch, capsys)
    assert code == 1
    assert "binance/BTCUSDT: stale" in stderr and "health.max_staleness_bars" in stderr
    metrics, psi, _ = _outputs(project)
    assert metrics["status"] == "fail" and metrics["stale_instruments"] == ["binance/BTCUSDT"]
    assert metrics["instruments"]["binance/BTCUSDT"]["freshness"]["lag_bars"] == 36
    assert psi["windows"]["current"]["end"] == "2026-11-20T03:00:00+00:00"
