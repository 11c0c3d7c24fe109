"""A clone without ``../shared`` (a laptop): the schema tests fail with one line saying what to do.

A copy of the repository's tests and manifests is placed where no ``../shared/schemas`` sits beside it,
with no ``.schemas/`` and ``AUTOTRADER_SCHEMA_DIR`` unset; pytest runs there must end in the hint from
``tests/schema_hint.py`` once per test, and no traceback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, tool_env
from .schema_hint import HINT

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed"
)


def test_without_schemas_each_schema_test_fails_with_one_clear_line(tmp_path: Path) -> None:
    clone = tmp_path / "laptop" / "repo"  # tmp_path/laptop has no shared/ beside the repo
    for folder in ("tests", "rollouts", "scripts"):
        shutil.copytree(REPO / folder, clone / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "params.yaml"):
        shutil.copy2(REPO / name, clone / name)
    env = tool_env()
    env.pop("AUTOTRADER_SCHEMA_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "tests/test_manifests.py",
         "tests/test_mesh_security.py", "-k", "upstream_schemas or validator_bites or fetch_script or mesh_objects"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    headers = [
        line for line in out.splitlines() if line.startswith("_") and ("ERROR at" in line or "test_" in line)
    ]
    assert len(headers) >= 8, out[-3000:]
    assert out.count(HINT) == len(headers), out[-3000:]  # one line per test …
    assert "Traceback" not in out and "DeployError" not in out and "raise " not in out  # … and nothing else
