"""MLflow logging for the training pipeline, and reading the model folder back.

Takes an already-connected MLflow (``autotrader.registry.connect`` sets the process-wide tracking URI)
and uses the fluent API, because ``log_model`` logs into the active run. The model folder at
``params.paths.model`` is a download of exactly the logged model, so its ``MLmodel`` names the run and
the logged-model id that ``evaluate``, ``gate`` and ``promote`` report to.

A training process killed with ``kill -9`` never ends its MLflow run, which would stay RUNNING
forever. Each training run therefore carries its owner (host, pid and the pid's start time,
``run_owner_tags``), and the next training start marks FAILED every RUNNING training run whose
owner is gone (``fail_abandoned_runs``).

The fit runs inside the run (``training_run``): a run's duration is the training's, and a failure
leaves a FAILED run that says why (tag ``error``, the traceback as ``error.txt``, the run's
description). The feature store the model learnt from is the run's input dataset
(``log_feature_store``): name ``feature-store``, digest = DVC's hash of the store, source its path in
the repository. Evaluate adds the test split it backtests (``log_test_split``, context ``evaluation``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotrader.errors import ModelError

# Nothing calls home at run time: MLflow 3 sends usage telemetry unless told not to.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MODEL_ARTIFACT = "model"
STAGE_TAG = "autotrader.stage"
OWNER_HOST_TAG = "autotrader.owner.host"
OWNER_PID_TAG = "autotrader.owner.pid"
OWNER_START_TAG = "autotrader.owner.started"  # the pid's start time (clock ticks since boot): pids get reused
ABANDONED_TAG = "autotrader.abandoned"
CARD_ARTIFACT = "model_card.md"
ERROR_TAG = "error"
ERROR_ARTIFACT = "error.txt"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
FEATURE_STORE_DATASET = "feature-store"
TEST_SPLIT_DATASET = "test-split"  # evaluate's input: data/prepared/test.parquet, digest its md5
MAX_TAG_CHARS = 5000  # MLflow refuses tag values over 8000 characters


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    model_id: str | None
    model_uri: str


@dataclass
class LocalModel:
    """A model folder loaded for prediction, with what its ``MLmodel`` says about it."""

    path: Path
    model: Any  # sklearn Pipeline
    inputs: list[str]
    run_id: str | None
    model_id: str | None


def pip_requirements() -> list[str]:
    """Pinned requirements written beside the model (explicit: MLflow's inference spawns a slow probe)."""
    import mlflow
    import sklearn
    import skops

    return [
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"skops=={skops.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
    ]


TRUSTED_PREFIXES: tuple[str, ...] = ("numpy.", "sklearn.", "scipy.", "builtins.")


def skops_trusted_types(model: Any) -> list[str]:
    """Types skops will not load by default that our own Pipeline contains (e.g. ``numpy.dtype``).

    Only numpy / scikit-learn / scipy types are accepted: anything else in the model is a bug, not
    something to trust silently.
    """
    import skops.io

    untrusted = sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise ModelError(f"the model contains types outside numpy/scikit-learn: {', '.join(foreign)}")
    return untrusted


def input_example(X: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few complete rows of the training inputs (JSON has no NaN), as float64."""
    complete = X.dropna()
    example = complete.head(rows) if len(complete) else X.head(rows).fillna(0.0)
    return example.astype("float64").reset_index(drop=True)


def flat_params(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flat_params(name, value))
        elif isinstance(value, list | tuple):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only (MLflow metrics are floats); None, NaN and non-numbers are left out."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


FEATURE_BOUNDS_KEY = "feature_bounds"  # read by autotrader.serving.model (same key)


def feature_bounds(X: pd.DataFrame) -> dict[str, list[float] | None]:
    """Per feature, [min, max] of its finite training values (None for a column without any).

    Stored in the model's MLmodel ``metadata``: the server refuses (422) values far outside what the
    model was fitted on, instead of overflowing in it (docs/serving.md, "Input validation").
    """
    out: dict[str, list[float] | None] = {}
    for column in X.columns:
        values = X[column].to_numpy(dtype=np.float64, na_value=np.nan)
        values = values[np.isfinite(values)]
        out[str(column)] = [float(values.min()), float(values.max())] if len(values) else None
    return out


def log_model(
    model: Any, X: pd.DataFrame, name: str = MODEL_ARTIFACT, feature_set: Mapping[str, Any] | None = None
) -> LoggedModel:
    """Log the sklearn Pipeline into the active run with a signature (feature columns → class) and an example.

    ``feature_set`` (``autotrader.features.contract.feature_set_record``: the store's feature params,
    their hash, interval, fingerprint, warm-up) goes into the MLmodel metadata, so the server's
    bars-in endpoint computes exactly the features this model was trained on.
    """
    import mlflow
    from mlflow.models import infer_signature

    example = input_example(X)
    signature = infer_signature(example, pd.Series(model.predict(example), name="signal").astype("int64"))
    info = mlflow.sklearn.log_model(
        model,
        name=name,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
        serialization_format="skops",
        skops_trusted_types=skops_trusted_types(model) or None,
        metadata={
            FEATURE_BOUNDS_KEY: feature_bounds(X),
            **({"feature_set": dict(feature_set)} if feature_set else {}),
        },
    )
    return LoggedModel(run_id=info.run_id, model_id=getattr(info, "model_id", None), model_uri=info.model_uri)


REPLAY_ARTIFACT = "replay/bars.parquet"
REPLAY_COLUMNS: tuple[str, ...] = ("timestamp", "broker", "symbol", "close")


def replay_rows(frame: pd.DataFrame, features: list[str], bars: int = 48) -> pd.DataFrame:
    """The last ``bars`` rows per instrument: the recorded slice integration tests replay through a server.

    Taken from the validation split (never the test window), in timestamp order across instruments.
    """
    cols = [*REPLAY_COLUMNS, *features]
    tail = frame.loc[:, cols].groupby(["broker", "symbol"], sort=True, group_keys=False).tail(bars)
    return tail.sort_values(["timestamp", "broker", "symbol"], kind="stable").reset_index(drop=True)


def log_replay_rows(rows: pd.DataFrame) -> None:
    """Record the replay slice in the active run, so a registered version carries its own test bars."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(REPLAY_ARTIFACT).name
        rows.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(REPLAY_ARTIFACT).parent))


def download_model(model_uri: str, dest: Path) -> None:
    """Copy a logged model's files into ``dest`` (an empty folder)."""
    import mlflow

    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        for item in sorted(local.iterdir()):
            item.rename(dest / item.name)


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (field 22 of /proc/<pid>/stat), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def run_owner_tags() -> dict[str, str]:
    """Who runs this training: tags that let a later start tell a live run from an abandoned one."""
    pid = os.getpid()
    return {
        OWNER_HOST_TAG: socket.gethostname(),
        OWNER_PID_TAG: str(pid),
        OWNER_START_TAG: _process_start(pid) or "",
    }


def _owner_alive(tags: Mapping[str, str]) -> bool | None:
    """True/False when the run's owner is on this host; None when it cannot be told (another host, no tags)."""
    if tags.get(OWNER_HOST_TAG) != socket.gethostname() or not tags.get(OWNER_PID_TAG, "").isdigit():
        return None
    started = _process_start(int(tags[OWNER_PID_TAG]))
    return started is not None and started == tags.get(OWNER_START_TAG, started)


def fail_abandoned_runs(
    client: Any, experiment_id: str, tracking_uri: str, stage: str = "train"
) -> list[str]:
    """Mark FAILED the RUNNING ``stage`` runs whose process is gone; returns their ids.

    The caller holds the stage's output lock, so no other run of the stage in this repository is
    alive. A run whose owner is on this host is judged by its pid (and the pid's start time). One
    without an owner on this host is failed only if the store is local (sqlite or a folder, which no
    other machine writes); on a shared remote server it may be another machine's live run.
    """
    local_store = not tracking_uri.startswith(("http://", "https://", "databricks"))
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{STAGE_TAG}` = '{stage}'"
    )
    failed = []
    for run in runs:
        alive = _owner_alive(run.data.tags)
        if alive is False or (alive is None and local_store):
            client.set_tag(
                run.info.run_id, ABANDONED_TAG, "its process died; marked FAILED by the next start"
            )
            client.set_terminated(run.info.run_id, status="FAILED")
            failed.append(run.info.run_id)
    return failed


def signature_inputs(meta: Any) -> list[str]:
    """Column names of a model's input signature (empty when it has none)."""
    signature = getattr(meta, "signature", None)
    if signature is None or signature.inputs is None:
        return []
    return [str(name) for name in signature.inputs.input_names()]


def load_local_model(path: str | Path) -> LocalModel:
    """Load the model folder; a ModelError names the folder and what is wrong with it."""
    import mlflow
    from mlflow.models import Model

    path = Path(path)
    if not (path / "MLmodel").is_file():
        raise ModelError(f"{path}: no MLmodel file — not an MLflow model folder (run the train stage)")
    try:
        meta = Model.load(str(path))
        model = mlflow.sklearn.load_model(str(path))
    except Exception as exc:  # a damaged file surfaces as many exception types (YAML, zip, skops, pickle)
        raise ModelError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from exc
    if not hasattr(model, "predict_proba"):
        raise ModelError(f"{path}: the model has no predict_proba (not the signal classifier)")
    return LocalModel(
        path=path,
        model=model,
        inputs=signature_inputs(meta),
        run_id=getattr(meta, "run_id", None),
        model_id=getattr(meta, "model_id", None),
    )


def load_registered_model(uri: str) -> LocalModel:
    """Load a registry URI (``models:/name/version``) the same way; a ModelError names the URI."""
    import mlflow
    from mlflow.models import get_model_info

    try:
        info = get_model_info(uri)
        model = mlflow.sklearn.load_model(uri)
    except Exception as exc:
        raise ModelError(f"{uri}: cannot load the model ({type(exc).__name__}: {exc})") from exc
    return LocalModel(
        path=Path(uri),
        model=model,
        inputs=signature_inputs(info),
        run_id=getattr(info, "run_id", None),
        model_id=getattr(info, "model_id", None),
    )


def check_inputs(model: LocalModel, features: list[str], where: str) -> None:
    """The model's signature must list exactly these feature columns, in this order."""
    if model.inputs != list(features):
        missing = [f for f in features if f not in model.inputs]
        extra = [f for f in model.inputs if f not in features]
        detail = f"missing {missing}" if missing else ""
        detail += f"{'; ' if detail else ''}unexpected {extra}" if extra else ""
        raise ModelError(
            f"{model.path}: the model's input signature does not match the features of {where}"
            f" ({detail or 'same names, different order'})"
        )


@contextlib.contextmanager
def training_run(experiment_id: str, run_name: str, tags: Mapping[str, str]) -> Iterator[Any]:
    """An MLflow run around the whole training; on failure it ends FAILED and says why.

    The ``error`` tag and the run's description carry ``<Exception>: <message>``, ``error.txt`` the
    traceback. Recording the error never hides it: if MLflow itself is what failed, the original
    exception still propagates.
    """
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as run:
        try:
            yield run
        except BaseException as exc:
            record_error(run.info.run_id, exc)
            raise


def record_error(run_id: str, exc: BaseException) -> None:
    """Tag ``run_id`` with the error and log its traceback; best effort (the caller re-raises ``exc``)."""
    import mlflow

    message = f"{type(exc).__name__}: {exc}"[:MAX_TAG_CHARS]
    try:
        client = mlflow.MlflowClient()
        client.set_tag(run_id, ERROR_TAG, message)
        client.set_tag(run_id, NOTE_TAG, f"**Training failed.** {message}")
        client.log_text(run_id, "".join(traceback.format_exception(exc)), ERROR_ARTIFACT)
    except Exception:  # the run is failing already; the original error is what matters
        pass


def metadata_dataset(path: str, name: str, digest: str, features: Sequence[str]) -> Any:
    """A metadata-only MLflow dataset (nothing uploaded): ``path`` as given (relative to the repository,
    so it is valid in every clone), ``digest`` (≤ 36 characters), the feature columns as doubles."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    return MetaDataset(
        get_dataset_source_from_json(json.dumps({"uri": path}), source_type="local"),
        name=name,
        digest=digest,
        schema=Schema([ColSpec("double", column) for column in features]),
    )


def log_feature_store(
    path: str, digest: str, features: Sequence[str], *, digest_source: str, context: str = "training"
) -> None:
    """Record the feature store as the active run's input dataset (shown in the MLflow UI's Datasets)."""
    import mlflow

    mlflow.log_input(
        metadata_dataset(path, FEATURE_STORE_DATASET, digest, features),
        context=context,
        tags={"dvc.path": path, "digest_source": digest_source[:MAX_TAG_CHARS]},
    )


def log_test_split(
    client: Any, run_id: str, path: str, digest: str, features: Sequence[str], rows: int
) -> None:
    """Record the test split evaluate backtests as an ``evaluation`` input of the training run.

    Through the client, not by resuming the run: a resumed run would end again and its duration would
    include the time between train and evaluate.
    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = metadata_dataset(path, TEST_SPLIT_DATASET, digest, features)
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, "evaluation"), InputTag("rows", str(rows))]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])


def card_of_run(run_id: str) -> str:
    """The model card logged to ``run_id`` (evaluate's final one, else train's); empty when there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{CARD_ARTIFACT}")
    except (MlflowException, OSError):
        return ""
