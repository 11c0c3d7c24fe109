"""The health stage end to end: real raw bars, a real feature store, Evidently, exit codes and reports."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from autotrader import rawstore
from autotrader.console import run_guarded
from autotrader.health import inject
from autotrader.params import FeatureParams, Instrument
from autotrader.sources.sim import SimulatedMarket
from autotrader.store import load_features, update_store
from tests.conftest import make_project

# Same worker as the drift tests: Evidently is imported once. One test runs the stage as DVC does
# (a subprocess); the others call the same ``main`` in-process, which is the same code, faster.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("health")]

END = pd.Timestamp("2026-11-20", tz="UTC")
KEY = "binance/BTCUSDT"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """One instrument, eight days; in the last day its volatility triples. Store built like `features` does."""
    project = make_project(tmp_path_factory.mktemp("health") / "project", with_dvc=False)
    instrument = Instrument(broker="binance", symbol="BTCUSDT")
    bars = SimulatedMarket(seed=11, regime_switching=False).fetch(
        instrument, END - pd.Timedelta(days=8), END, pd.Timedelta("5min")
    )
    bars = inject.volatility(bars, END - pd.Timedelta(days=1), factor=3.0)
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


def _outputs(project) -> tuple[dict, dict, dict, str]:
    metrics = json.loads((project.root / "metrics" / "health.json").read_text())
    details = json.loads((project.root / "metrics" / "health_details.json").read_text())
    psi = json.loads((project.root / "reports" / "drift" / "psi.json").read_text())
    html = (project.root / "reports" / "drift" / "index.html").read_text()
    return metrics, details, psi, html


def test_drift_fails_the_stage_when_asked_and_the_reports_are_written(project) -> None:
    project.set_params(**{"health.fail_on_drift": True, "data.end": "2026-11-20"})
    proc = project.stage("health", check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"{KEY}: drift" in proc.stderr and "health.alpha" in proc.stderr
    assert "Traceback" not in proc.stderr

    metrics, details, psi, html = _outputs(project)
    assert metrics["status"] == "fail" and metrics["stale_instruments"] == 0
    assert metrics["drifted_instruments"] == 1 and metrics["max_psi"] > 0.2
    # Headline metrics stay small: numbers only at the top level, one line of words per instrument.
    numbers = [v for v in metrics.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    assert len(numbers) <= 12
    assert metrics["instruments"][KEY].startswith("drift: ")
    signals = psi["instruments"][KEY]
    for name in ("abs_ret", "log_range"):  # what tripled
        assert signals[name]["drift"] and signals[name]["psi"] >= signals[name]["threshold"], signals[name]
    for name in ("volume", "rel_spread"):  # kept as they were
        assert not signals[name]["drift"], signals[name]
    inst = details["instruments"][KEY]
    assert inst["freshness"]["stale"] is False and inst["freshness"]["lag_bars"] == 0
    assert set(inst["drifted_signals"]) >= {"abs_ret", "log_range"}
    assert inst["top_features"] and all("feature" in f for f in inst["top_features"])
    assert details["report"] == "reports/drift/index.html"
    assert f"{KEY}:abs_ret" in html


def test_drift_only_warns_by_default(project, monkeypatch, capsys) -> None:
    project.set_params(**{"health.fail_on_drift": False, "data.end": "2026-11-20"})
    code, stderr = run_in_process(project, monkeypatch, capsys)
    assert code == 0, stderr
    assert "warning:" in stderr and f"{KEY}: drift" in stderr
    metrics, _, _, _ = _outputs(project)
    assert metrics["status"] == "warn" and metrics["problems"] == []


def test_an_unchanged_day_is_ok(project, monkeypatch, capsys) -> None:
    """The day before the shift, judged on its own: no drift, no problem."""
    project.set_params(**{"health.fail_on_drift": True, "data.end": "2026-11-19"})
    code, stderr = run_in_process(project, monkeypatch, capsys)
    assert code == 0, stderr
    metrics, _, _, _ = _outputs(project)
    assert metrics["status"] == "ok" and metrics["drifted_instruments"] == 0, metrics
    assert metrics["instruments"] == {KEY: "ok"}


def _pit(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank CDF of each value among the reference, written apart from the library (scipy's ranks)."""
    # v's average rank among reference + [v] is 1 + #below + #equal/2: minus one, over n, is the mid-rank CDF
    return np.array([(rankdata(np.r_[reference, v])[-1] - 1) / len(reference) for v in values])


def test_psi_json_is_what_evidently_reports_for_the_same_windows(project, monkeypatch, capsys) -> None:
    """Rebuild each signal's windows from psi.json and the store, run Evidently's ValueDrift: same PSI."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    project.set_params(**{"health.fail_on_drift": False, "data.end": "2026-11-20"})
    run_in_process(project, monkeypatch, capsys)
    _, _, psi, _ = _outputs(project)
    rows = load_features(None, END, root=project.root / "data" / "features")
    stamps = rows["timestamp"]
    ret = np.abs(np.diff(np.log(rows["close"].to_numpy()), prepend=np.nan))
    series = {
        "abs_ret": ret,
        "log_range": np.log(rows["high"] / rows["low"]).to_numpy(),
        "volume": rows["volume"].to_numpy(),
        "rel_spread": (rows["spread"] / rows["close"]).to_numpy(),
        "ret_1": rows["ret_1"].to_numpy(),
    }
    checked = 0
    for name, values in series.items():
        entry = psi["instruments"][KEY][name]
        windows = []
        for side in ("reference", "current"):
            span = entry[side]
            inside = (
                (stamps >= pd.Timestamp(span["start"])) & (stamps < pd.Timestamp(span["end"]))
            ).to_numpy()
            picked = values[inside][::-1][:: span["stride"]][::-1]
            windows.append(picked[np.isfinite(picked)])
        ref, cur = windows
        assert (len(ref), len(cur)) == (entry["reference"]["values"], entry["current"]["values"])
        frame_ref = pd.DataFrame({name: _pit(ref, ref)})
        frame_cur = pd.DataFrame({name: _pit(ref, cur)})
        definition = DataDefinition(numerical_columns=[name])
        snapshot = Report([ValueDrift(column=name, method="psi", threshold=entry["threshold"])]).run(
            Dataset.from_pandas(frame_cur, data_definition=definition),
            Dataset.from_pandas(frame_ref, data_definition=definition),
        )
        value = float(snapshot.dict()["metrics"][0]["value"])
        assert entry["psi"] == pytest.approx(value, abs=1e-6), name
        assert entry["drift"] == (value >= entry["threshold"])
        checked += 1
    assert checked == 5


def test_stale_data_fails_naming_the_instrument_and_still_writes_reports(
    project, monkeypatch, capsys
) -> None:
    # Three hours after the last bar of a 24/7 market: 36 bars behind.
    project.set_params(**{"health.fail_on_drift": False, "data.end": "2026-11-20T03:00:00"})
    code, stderr = run_in_process(project, monkeypatch, capsys)
    assert code == 1
    assert f"{KEY}: stale" in stderr and "health.max_staleness_bars" in stderr
    metrics, details, _, _ = _outputs(project)
    assert metrics["status"] == "fail" and metrics["stale_instruments"] == 1 and metrics["lag_bars"] == 36
    assert details["instruments"][KEY]["freshness"]["lag_bars"] == 36
    assert "stale (lag 36 bars)" in metrics["instruments"][KEY]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found: apt-get install prometheus")
def test_the_prometheus_textfile_is_valid_and_carries_the_verdicts(project, monkeypatch, capsys) -> None:
    project.set_params(**{"health.fail_on_drift": False, "data.end": "2026-11-20T03:00:00"})
    run_in_process(project, monkeypatch, capsys)
    text = (project.root / "metrics" / "health.prom").read_text()
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'autotrader_health_instrument_stale{{instrument="{KEY}"}} 1.0' in text
    assert f'autotrader_health_instrument_drift{{instrument="{KEY}"}} 1.0' in text
    assert 'autotrader_health_status{status="fail"} 1.0' in text
