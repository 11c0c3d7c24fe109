"""The model pin: ``rollouts/overlays/<env>/model.env``, the one file a promotion changes.

It holds exactly ``MODEL_URI=models:/<name>/<N>`` and ``MODEL_VERSION=<N>``: an immutable registry
version, never an alias (``@champion``) or ``latest``, so that what runs is what git says.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from autotrader.errors import DeployError
from autotrader.gitops.kustomize import overlay_dir

PIN_FILE = "model.env"
_URI = re.compile(r"^models:/(?P<name>[A-Za-z0-9_.\-]+)/(?P<version>[1-9][0-9]*)$")


@dataclass(frozen=True)
class Pin:
    """A pinned registry version."""

    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def text(self) -> str:
        """The file's exact content (stable bytes: same pin, same file)."""
        return f"MODEL_URI={self.uri}\nMODEL_VERSION={self.version}\n"


def pin_path(env: str, repo: str | os.PathLike[str] = ".") -> Path:
    return overlay_dir(env, repo) / PIN_FILE


def parse_pin(text: str, source: str = PIN_FILE) -> Pin:
    """Parse and check a pin file's text; a DeployError names the file and the rule it breaks."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DeployError(f"{source}:{number}: expected KEY=VALUE, got {raw!r}")
        if key in values:
            raise DeployError(f"{source}:{number}: {key} is set twice")
        values[key.strip()] = value.strip()
    if set(values) != {"MODEL_URI", "MODEL_VERSION"}:
        raise DeployError(f"{source}: must hold exactly MODEL_URI and MODEL_VERSION, has {sorted(values)}")
    match = _URI.match(values["MODEL_URI"])
    if match is None:
        raise DeployError(
            f"{source}: MODEL_URI={values['MODEL_URI']!r} is not an immutable version "
            "models:/<name>/<N> (aliases and 'latest' are not pins)"
        )
    if match["version"] != values["MODEL_VERSION"]:
        raise DeployError(
            f"{source}: MODEL_VERSION={values['MODEL_VERSION']} does not match MODEL_URI version {match['version']}"
        )
    return Pin(name=match["name"], version=match["version"])


def read_pin(path: str | os.PathLike[str]) -> Pin:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise DeployError(f"{path}: the model pin is missing") from exc
    return parse_pin(text, str(path))


def make_pin(name: str, version: str | int) -> Pin:
    """A checked pin for ``name`` version ``version`` (a positive integer)."""
    return parse_pin(Pin(name=name, version=str(version)).text(), f"pin for {name} v{version}")
