"""Shared fixtures: a throw-away copy of the project to run DVC stages in, and params overrides.

Tests never run stages in the working tree: they copy the pipeline (dvc.yaml, params.yaml, stages/,
src/) into a temporary folder, so parallel tests and a developer's own outputs never collide.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .schema_hint import pytest_runtest_makereport  # noqa: F401  (no schemas: one line, not a traceback)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for subprocesses: the venv's tools first on PATH, no analytics, headless plots."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.pop("MLFLOW_TRACKING_URI", None)
    if extra:
        env.update(extra)
    return env


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path → sha256: "byte-for-byte unchanged" in one comparison."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def set_param(params: dict[str, Any], dotted: str, value: Any) -> None:
    node = params
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


class Project:
    """A copy of the pipeline in a temporary folder, with helpers to edit params and run stages."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def params(self) -> dict[str, Any]:
        return yaml.safe_load(self.params_path.read_text())

    def set_params(self, **overrides: Any) -> None:
        """``set_params(**{"data.lookback_days": 5})`` edits params.yaml like ``dvc exp run -S`` would."""
        params = self.params()
        for dotted, value in overrides.items():
            set_param(params, dotted, value)
        self.params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    def run(self, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600):
        proc = subprocess.run(
            list(args), cwd=self.root, env=tool_env(env), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc

    def dvc(self, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600):
        return self.run(str(BIN / "dvc"), *args, check=check, env=env, timeout=timeout)

    def stage(self, name: str, check: bool = True, env: dict[str, str] | None = None):
        """Run one stage's command directly (no DVC bookkeeping), as the stage's cmd line says."""
        return self.run(str(BIN / "python"), f"stages/{name}.py", check=check, env=env)


# The small pipeline the slow end-to-end tests build (2 instruments, 30 days, one candidate) with gates
# that always pass: tests that need a registered model, not a judgement of it.
SMALL_PIPELINE: dict[str, object] = {
    "data.lookback_days": 30,
    "data.instruments": [
        {"broker": "binance", "symbol": "BTCUSDT"},
        {"broker": "oanda", "symbol": "EUR_USD"},
    ],
    "train.lookback_days": 25,
    "train.test_days": 3,
    "train.oos_windows": 2,
    "train.bootstrap_samples": 100,
    "train.cv_folds": 2,
    "train.candidates": ["logreg"],
    "gates.min_sharpe": -100.0,
    "gates.max_drawdown": 1.0,
    "gates.min_win_rate": 0.0,
    "gates.min_trades": 0,
    "gates.min_dsr": 0.0,
}


def make_project(dest: Path, with_dvc: bool = True) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    for folder in ("stages", "src", "plots"):  # plots/: the Vega-Lite templates dvc.yaml names
        shutil.copytree(
            REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    (dest / "data" / "external").mkdir(parents=True, exist_ok=True)
    (dest / "data" / "external" / ".gitkeep").touch()
    project = Project(dest)
    if with_dvc:
        project.run("git", "init", "-q")
        project.dvc("init", "-q")
        project.dvc("config", "core.analytics", "false")
    return project


def use_eurusd_file(project: Project, **extra: Any) -> None:
    """Point ``project`` at the real hourly EURUSD bars shipped with ``backtesting`` (the README's example):
    the files source, a 290-day window ending 2018-02-08, 4 × 30-day test windows; ``extra`` overrides."""
    import importlib.resources

    source = importlib.resources.files("backtesting") / "test" / "EURUSD.csv"
    shutil.copy(str(source), project.root / "data" / "external" / "EURUSD.csv")
    project.set_params(
        **{
            "data.source": "files",
            "data.interval": "1h",
            "data.end": "2018-02-08",
            "data.lookback_days": 290,
            "data.files": [
                {
                    "path": "data/external/EURUSD.csv",
                    "broker": "oanda",
                    "symbol": "EUR_USD",
                    "timezone": "UTC",
                }
            ],
            "validate.severity.completeness": "warn",
            "train.lookback_days": 280,
            "train.test_days": 30,
            "train.oos_windows": 4,
            **extra,
        }
    )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A fresh copy of the pipeline with git and DVC initialised."""
    return make_project(tmp_path / "project")


@pytest.fixture
def project_factory(tmp_path: Path) -> Callable[..., Project]:
    counter = iter(range(1000))

    def factory(with_dvc: bool = True) -> Project:
        return make_project(tmp_path / f"project{next(counter)}", with_dvc=with_dvc)

    return factory
