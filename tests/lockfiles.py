"""Read the hash-locked requirement files (``uv pip compile --generate-hashes`` output) and pyproject.

A small parser on purpose: the tests check what the files say, not what a resolver would make of them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
MAIN_LOCK = REPO / "requirements.lock"
SERVING_LOCK = REPO / "requirements-serving.lock"
AUDIT_LOCK = REPO / "requirements-audit.lock"
BOOTSTRAP_LOCK = REPO / "requirements-bootstrap.lock"
LOCKS = (MAIN_LOCK, SERVING_LOCK, AUDIT_LOCK, BOOTSTRAP_LOCK)

# Never in the model-server image: test runners and fakes, linters and validators, and the pipeline's
# own tools (DVC, data validation, drift reports, broker client), with their test-only dependencies.
NOT_IN_SERVING: frozenset[str] = frozenset(
    {
        "pytest",
        "pluggy",
        "iniconfig",
        "execnet",
        "moto",
        "responses",
        "ruff",
        "zizmor",
        "check-jsonschema",
        "jsonschema",
        "kubernetes-validate",
        "dvc",
        "dvc-s3",
        "s3fs",
        "great-expectations",
        "evidently",
        "ib-async",
        "pip-audit",
    }
)

_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    """One locked package: its exact version and the sha256 hashes of its files."""

    name: str
    spec: str  # the whole specifier, "==1.2.3" for a proper pin
    hashes: frozenset[str]

    @property
    def version(self) -> str:
        return self.spec.removeprefix("==")


def read_lock(path: Path) -> dict[str, Pin]:
    """``canonical name → Pin`` for every requirement of a lock file (continuations joined)."""
    entries: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line and not buffer:
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        entries.append(buffer + line)
        buffer = ""
    pins: dict[str, Pin] = {}
    for entry in entries:
        text = _HASH.sub("", entry).strip()
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise AssertionError(f"{path.name}: {name} is listed twice")
        pins[name] = Pin(name, str(requirement.specifier), frozenset(_HASH.findall(entry)))
    return pins


def header_command(path: Path) -> str:
    """The compile command uv wrote in the file's header."""
    lines = path.read_text().splitlines()
    return next(line.lstrip("# ").strip() for line in lines[:3] if "uv pip compile" in line)


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def requirements(items: list[str]) -> dict[str, Requirement]:
    """``canonical name → Requirement`` of a pyproject requirement list."""
    return {canonicalize_name(Requirement(item).name): Requirement(item) for item in items}
