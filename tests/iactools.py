"""Throw-away virtualenvs with the infrastructure-as-code checkers (checkov, python-hcl2), outside the repo.

Why not in the project's lock: checkov brings a large dependency tree that nothing else uses. Why two venvs:
checkov depends on its own fork of the HCL parser (bc-python-hcl2), which installs the same ``hcl2`` package
as python-hcl2 and overwrites it, so one venv cannot hold both. Each lives under
``~/.cache/autotrader-iac/<tool>-<hash of its pin>``, created on first use and reused while the pin stays;
``$AUTOTRADER_IAC_VENV_<TOOL>`` (CHECKOV, HCL2) points at an existing venv instead. Where a venv cannot be
created (no network to PyPI) the caller skips, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PINS: dict[str, str] = {"checkov": "checkov==3.3.30", "hcl2": "python-hcl2==8.1.4"}
PROBES: dict[str, str] = {"checkov": "bin/checkov", "hcl2": "bin/hcl2tojson"}


class IacToolsMissing(RuntimeError):
    """A checker's venv is not there and could not be created."""


def venv_dir(tool: str) -> Path:
    """Where the venv for ``tool``'s current pin lives."""
    override = os.environ.get(f"AUTOTRADER_IAC_VENV_{tool.upper()}")
    if override:
        return Path(override)
    key = hashlib.sha256(PINS[tool].encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "autotrader-iac" / f"{tool}-{key}"


def ensure_venv(tool: str, timeout: float = 1500.0) -> Path:
    """The venv of ``tool``, created with its pinned version if missing; IacToolsMissing when that fails."""
    venv = venv_dir(tool)
    if os.environ.get(f"AUTOTRADER_IAC_VENV_{tool.upper()}"):
        if not (venv / PROBES[tool]).is_file():
            raise IacToolsMissing(f"{venv} has no {PROBES[tool]}")
        return venv
    if (venv / ".complete").is_file():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True, timeout=120
        )
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PINS[tool]],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise IacToolsMissing(f"could not create {venv}: {exc}") from exc
    if done.returncode != 0:
        raise IacToolsMissing(f"pip install {PINS[tool]} failed: {done.stderr.strip()[-1500:]}")
    (venv / ".complete").write_text(PINS[tool] + "\n")
    return venv


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(PINS):
        print(ensure_venv(name))
