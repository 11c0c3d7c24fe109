"""Checks of the GitHub Actions workflows: the upstream workflow schema and ``zizmor``'s security audit.

Both tools run offline: check-jsonschema ships the GitHub workflow schema (``vendor.github-workflows``)
and zizmor's ``--offline`` skips the audits that would ask GitHub's API.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def workflow_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])


def schema_problems(files: list[Path]) -> list[str]:
    """check-jsonschema against its built-in (vendored) GitHub workflow schema; [] when every file passes."""
    tool = _tool("check-jsonschema")
    if tool is None:
        return ["check-jsonschema is not installed (it is in requirements.lock)"]
    if not files:
        return []
    proc = subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [] if proc.returncode == 0 else [(proc.stdout + proc.stderr).strip()]


def zizmor_problems(folder: str | Path, config: str | Path | None = None) -> list[str]:
    """zizmor's findings (default persona, offline); [] when there are none."""
    tool = _tool("zizmor")
    if tool is None:
        return ["zizmor is not installed (it is in requirements.lock)"]
    cmd = [tool, "--offline", "--no-progress", "--format", "plain"]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.run([*cmd, str(folder)], capture_output=True, text=True, timeout=120)
    return [] if proc.returncode == 0 else [(proc.stdout + proc.stderr).strip()]
