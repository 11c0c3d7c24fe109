"""The model under test, resolved from a registry URI, alias or folder, and the named check.

Shared by the static check (``check``) and the integration run (``integration``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from autotrader.errors import DeployError
from autotrader.params import Params
from autotrader.serving.model import (
    parse_registry_uri,
    version_label,
)

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")


@dataclass
class Check:
    """One named check: passed or not, with a sentence a person can act on."""

    name: str
    passed: bool
    detail: str = ""
    critical: bool = False


@dataclass
class Candidate:
    """The model under test, resolved: an immutable URI and, for registry models, name and version."""

    uri: str
    given: str
    name: str | None = None
    version: str | None = None
    label: str = "local"
    tracking_uri: str | None = None


def resolve_candidate(params: Params, model_uri: str) -> Candidate:
    """``models:/name/N``, ``models:/name@alias`` (resolved to N) or a local MLflow model folder."""
    if model_uri.startswith("models:/"):
        from autotrader import registry

        client = registry.connect(params, must_exist=True)  # a check reads; it never creates a registry
        uri = registry.tracking_uri(params)
        if alias := _ALIAS_URI.match(model_uri):
            version = registry.version_for_alias(alias["name"], alias["alias"], client=client)
            if version is None:
                raise DeployError(
                    f"{model_uri}: alias {alias['alias']!r} of {alias['name']!r} is not set in {uri}"
                )
            name = alias["name"]
        elif parsed := parse_registry_uri(model_uri):
            name, version = parsed
            registry.get_version(name, version, client=client)
        else:
            raise DeployError(f"{model_uri}: expected models:/<name>/<version> or models:/<name>@<alias>")
        return Candidate(
            uri=registry.model_uri(name, version),
            given=model_uri,
            name=name,
            version=str(version),
            label=str(version),
            tracking_uri=uri,
        )
    folder = Path(model_uri)
    if not (folder / "MLmodel").is_file():
        raise DeployError(f"{model_uri}: not an MLflow model folder (no MLmodel file) and not a models:/ URI")
    return Candidate(uri=str(folder.resolve()), given=model_uri, label=version_label(model_uri))


def fetch_model_dir(candidate: Candidate, dest: Path) -> Path:
    """A local folder holding the model's files (downloaded from the registry when needed)."""
    if candidate.name is None:
        return Path(candidate.uri)
    import mlflow.artifacts

    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=candidate.uri,
            dst_path=str(dest),
            tracking_uri=candidate.tracking_uri,
            registry_uri=candidate.tracking_uri,
        )
    except Exception as exc:  # MLflow raises several types for a missing or unreadable artifact
        raise DeployError(f"{candidate.uri}: cannot download the model's files: {exc}") from exc
    return Path(path)
