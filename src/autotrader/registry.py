"""The MLflow model registry: one place that knows where it is and how versions get their aliases.

Aliases only (``staging``, ``champion``) and always the immutable version number next to them: the
deprecated registry *stages* are never used. A version is what a deployment pins; an alias is a
movable pointer a person or the promote command moves.

``connect(params)`` is the only way in. It resolves the tracking URI (``MLFLOW_TRACKING_URI`` in the
environment wins over params), fails fast with a ``RegistryError`` naming the URI when a remote
server does not answer (a short HTTP check instead of MLflow's minute-long retries), and remembers
the client so the module-level helpers below work without passing it around. It also points MLflow's
process-wide tracking/registry URI at the same place, so ``models:/…`` URIs resolve there.

Artifact locations are portable. Against a server, the server decides (``--serve-artifacts``:
``mlflow-artifacts:/…`` URIs, valid wherever the server is reached). On the local sqlite default, a
relative ``mlflow.artifact_location`` (``mlartifacts``) stays relative to the repository, like
``sqlite:///mlflow.db`` itself: MLflow would store the absolute path it resolves at creation
(``resolve_uri_if_local``), which breaks as soon as the repository is moved or cloned elsewhere, so
``ensure_experiment`` writes the relative form into the experiment row. Runs, logged models and
registered versions inherit it; everything is then read from the repository root (as every stage,
``make`` target and CLI command runs).

Version tags are strings; numbers in them are rounded to ``TAG_DIGITS`` significant digits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from autotrader.errors import RegistryError

# Nothing calls home at run time: MLflow 3 sends usage telemetry unless told not to.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
from autotrader.params import Params

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

STAGING = "staging"
CHAMPION = "champion"
ALIASES: tuple[str, ...] = (STAGING, CHAMPION)
HEALTH_TIMEOUT_S = 3.0
TAG_DIGITS = 4

_client: MlflowClient | None = None


def tracking_uri(params: Params) -> str:
    """The tracking (and registry) URI: ``MLFLOW_TRACKING_URI`` if set, else ``params.mlflow.tracking_uri``."""
    return params.mlflow.resolved_tracking_uri()


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def artifact_location(params: Params) -> str | None:
    """Where a new experiment keeps artifacts: ``params.mlflow.artifact_location``, a relative path kept relative.

    A URI (``s3://…``, ``mlflow-artifacts:/…``) or an absolute path is used as given (the latter as a
    ``file://`` URI). Only for a local backend (sqlite); a remote server decides for itself
    (``--serve-artifacts``: ``mlflow-artifacts:/`` URIs).
    """
    if is_remote(tracking_uri(params)):
        return None
    location = params.mlflow.artifact_location
    if "://" in location or location.startswith("mlflow-artifacts:"):
        return location
    path = Path(location)
    return path.as_uri() if path.is_absolute() else path.as_posix()


def check_reachable(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """One short GET of ``<uri>/health``; a refused connection, a timeout or a 5xx is a RegistryError."""
    if not is_remote(uri):
        return
    import requests

    url = uri.rstrip("/") + "/health"
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise RegistryError(
            f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}); "
            "start it or point MLFLOW_TRACKING_URI / mlflow.tracking_uri elsewhere"
        ) from exc
    if response.status_code >= 500:
        raise RegistryError(f"MLflow tracking server {uri} answered {response.status_code} on /health")


@contextlib.contextmanager
def mlflow_errors(what: str, uri: str | None = None) -> Iterator[None]:
    """Turn MLflow/SQL errors into a RegistryError that says what was being done and where."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except MlflowException as exc:
        where = f" at {uri}" if uri else ""
        raise RegistryError(f"{what}{where} failed: {exc.message}") from exc
    except Exception as exc:  # sqlalchemy / OS errors from a corrupt or unwritable store
        if type(exc).__module__.startswith(("sqlalchemy", "requests", "urllib3", "alembic", "sqlite3")):
            where = f" at {uri}" if uri else ""
            raise RegistryError(f"{what}{where} failed: {type(exc).__name__}: {exc}") from exc
        raise


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///…`` URI (relative to the current folder), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def connect(params: Params, *, timeout: float = HEALTH_TIMEOUT_S, must_exist: bool = False) -> MlflowClient:
    """A client on the configured tracking server/registry, checked to answer; also the module default.

    ``must_exist``: for commands that only read (``deploy check``), a sqlite registry file that is not
    there is an error, not a new empty ``mlflow.db`` left in the current folder.
    """
    global _client
    uri = tracking_uri(params)
    db = sqlite_file(uri)
    if must_exist and db is not None and not db.is_file():
        raise RegistryError(
            f"no MLflow registry at {db} ({uri}); nothing to read there: run the pipeline first, "
            "or point MLFLOW_TRACKING_URI / mlflow.tracking_uri at the registry"
        )
    check_reachable(uri, timeout=timeout)
    # Fewer, shorter retries than MLflow's defaults: the server was just seen alive; a failure later
    # should surface in seconds, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with mlflow_errors("opening the MLflow store", uri):
        client.search_experiments(max_results=1)
    _point_mlflow_at(uri)
    _client = client
    return client


def _point_mlflow_at(uri: str) -> None:
    """Set MLflow's process-wide URIs without its side effect of exporting them to the environment.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI``, which would then masquerade as
    the operator's choice (the environment wins over params) for every later ``connect`` in this process.
    """
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _default(client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        return client
    if _client is not None:
        return _client
    from autotrader.params import load_params

    return connect(load_params())


def ensure_experiment(params: Params, client: MlflowClient | None = None) -> str:
    """The id of ``params.mlflow.experiment``, created (with the params' artifact location) if missing.

    On sqlite with a relative location, the experiment keeps it relative (see the module docstring);
    an experiment an older version created with this repository's absolute path is switched to the
    relative form too, so its next runs are portable (earlier runs keep their absolute paths).
    """
    client = _default(client)
    name = params.mlflow.experiment
    uri = tracking_uri(params)
    location = artifact_location(params)
    with mlflow_errors(f"finding experiment {name!r}", uri):
        found = client.get_experiment_by_name(name)
        if found is None:
            found = _create_experiment(client, name, location)
        experiment_id, stored = found.experiment_id, found.artifact_location
    db = sqlite_file(uri)
    relative = location is not None and _is_relative(location)
    if db is not None and relative and stored != location and _same_folder(stored, str(location)):
        _store_relative_location(db, experiment_id, str(location))
    return experiment_id


def _create_experiment(client: MlflowClient, name: str, location: str | None) -> Any:
    """Create the experiment; when another process created it first (two trainings starting at once
    against one server), use theirs: the loser's ``RESOURCE_ALREADY_EXISTS`` is not an error."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_experiment(client.create_experiment(name, artifact_location=location))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found


def _is_relative(location: str) -> bool:
    return ":" not in location and not Path(location).is_absolute()


def _same_folder(stored: str, relative: str) -> bool:
    """Whether ``stored`` (what MLflow resolved) is ``relative`` resolved from the current folder."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    try:
        return Path(local_file_uri_to_path(stored)).resolve() == Path(relative).resolve()
    except (ValueError, OSError):
        return False


def _store_relative_location(db: Path, experiment_id: str, location: str) -> None:
    """Write ``location`` (relative) as the experiment's artifact location: MLflow has no API for it."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn, conn:
            conn.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                (location, int(experiment_id)),
            )
    except sqlite3.Error as exc:
        raise RegistryError(
            f"keeping the artifact location of experiment {experiment_id} relative in {db} failed: {exc}"
        ) from exc


def model_uri(name: str, version: str | int) -> str:
    """The immutable URI of one registered version: ``models:/<name>/<version>``."""
    return f"models:/{name}/{version}"


def alias_uri(name: str, alias: str) -> str:
    """The movable URI an alias points at: ``models:/<name>@<alias>``."""
    return f"models:/{name}@{alias}"


def tag_number(value: Any, digits: int = TAG_DIGITS) -> str:
    """A number as a tag shows it: ``digits`` significant digits (``1.234``, ``0.5679``, ``1.235e+05``).

    Integers and booleans stay exact; anything else is ``str``.
    """
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.{digits}g}"


def _tag_values(tags: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else tag_number(v) for k, v in (tags or {}).items()}


def register_model(
    source: str,
    name: str,
    *,
    run_id: str | None = None,
    model_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    model_description: str | None = None,
    client: MlflowClient | None = None,
) -> str:
    """Register ``source`` (``models:/<model_id>``, ``runs:/…`` or an artifact URI) as a new version of ``name``.

    Returns the new version number (a string, as MLflow gives it). The registered model is created on
    first use, with ``model_description`` (also given to an existing model whose description is
    empty). ``description`` is the version's (the model card summary). Tags are stringified, numbers
    rounded (``tag_number``).
    """
    from mlflow.exceptions import MlflowException

    client = _default(client)
    with mlflow_errors(f"registering {source} as {name!r}"):
        try:
            client.create_registered_model(name, description=model_description)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
            if model_description and not client.get_registered_model(name).description:
                client.update_registered_model(name, description=model_description)
        extra = {} if source.startswith("runs:/") and model_id is None else {"model_id": model_id}
        version = client.create_model_version(
            name, source, run_id=run_id, tags=_tag_values(tags), description=description, **extra
        )
    return str(version.version)


def set_alias(name: str, alias: str, version: str | int, *, client: MlflowClient | None = None) -> None:
    """Point ``alias`` of ``name`` at ``version`` (moving it if it pointed elsewhere)."""
    client = _default(client)
    with mlflow_errors(f"setting alias {alias!r} of {name!r} to version {version}"):
        client.set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str, *, client: MlflowClient | None = None) -> None:
    client = _default(client)
    with mlflow_errors(f"deleting alias {alias!r} of {name!r}"):
        client.delete_registered_model_alias(name, alias)


def version_for_alias(name: str, alias: str, *, client: MlflowClient | None = None) -> str | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    client = _default(client)
    with mlflow_errors(f"reading alias {alias!r} of {name!r}"):
        try:
            return str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                return None
            raise


def get_version(name: str, version: str | int, *, client: MlflowClient | None = None) -> ModelVersion:
    """One registered version (tags, run id, source, aliases)."""
    client = _default(client)
    with mlflow_errors(f"reading version {version} of {name!r}"):
        return client.get_model_version(name, str(version))


def set_version_tags(
    name: str, version: str | int, tags: Mapping[str, Any], *, client: MlflowClient | None = None
) -> None:
    client = _default(client)
    with mlflow_errors(f"tagging version {version} of {name!r}"):
        for key, value in _tag_values(tags).items():
            client.set_model_version_tag(name, str(version), key, value)


def list_versions(name: str, *, client: MlflowClient | None = None) -> list[str]:
    """Every registered version number of ``name``, ascending; empty when the model does not exist."""
    client = _default(client)
    with mlflow_errors(f"listing versions of {name!r}"):
        found = client.search_model_versions(filter_string=f"name = '{name}'")
    return sorted((str(v.version) for v in found), key=int)


def aliases(name: str, *, client: MlflowClient | None = None) -> dict[str, str]:
    """alias → version for ``name``; empty when the model does not exist."""
    from mlflow.exceptions import MlflowException

    client = _default(client)
    with mlflow_errors(f"reading aliases of {name!r}"):
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return {}
            raise
    return {str(k): str(v) for k, v in (model.aliases or {}).items()}


def snapshot(name: str, *, client: MlflowClient | None = None) -> dict[str, Any]:
    """Versions and aliases of ``name``: what "the registry is unchanged" compares."""
    return {"versions": list_versions(name, client=client), "aliases": aliases(name, client=client)}
