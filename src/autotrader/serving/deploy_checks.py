"""Pre-deployment checks: ``autotrader deploy check`` and ``autotrader deploy integration``.

``deploy_check`` answers "can this model be served here at all?" without starting a server: it loads
the candidate from the registry (or a folder), compares its pinned requirements with what this
environment (the server image) has installed, compares its signature with the feature store's
columns, and smoke-predicts golden inputs twice (deterministic, and equal to recorded outputs when
a golden file is given).

``run_integration`` answers "does the server with this model behave?": it starts ``autotrader serve``
with the candidate on a free loopback port, replays the last bars of the feature store through it
(one request per bar in time order, then the same bars in batches), and checks statuses, the response
schema, signals, the ``model_version`` label, latency, online-return bookkeeping (recomputed here
and compared with /metrics), and that malformed requests get 4xx while the server stays ready.
Each request contributes checks; the run passes when ≥ ``min_pass_rate`` of them pass and every
critical one does. With ``record`` the verdict is written to the registry version as the tags
``integration_passed`` and ``integration_pass_rate`` (production promotion requires "true").
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotrader.atomic import write_json
from autotrader.console import console, progress
from autotrader.errors import AutoTraderError, DeployError
from autotrader.params import Params
from autotrader.processes import AUTOTRADER, ServerProcess, free_port, poll_until
from autotrader.schema import BAR_COLUMNS
from autotrader.serving.model import (
    FeatureBounds,
    LoadedModel,
    ModelOutputError,
    load,
    parse_registry_uri,
    version_label,
)
from autotrader.serving.online import realised_return
from autotrader.serving.schemas import (
    LABEL_SIGNALS,
    MAX_BATCH,
    PredictResponse,
    RequestError,
    iso_utc,
    parse_request,
)

# Packages whose version the model pins and the server must match. scikit-learn must match
# exactly (its estimators are serialised per version); the others by major.minor.
PINNED_PACKAGES: tuple[str, ...] = ("scikit-learn", "numpy", "pandas", "mlflow")
EXACT_PACKAGES: frozenset[str] = frozenset({"scikit-learn"})
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


# ------------------------------------------------------------------------------------------ resolve


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


# ------------------------------------------------------------------------------------- requirements


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def model_requirements(model_dir: Path) -> dict[str, str]:
    """Package → specifier from the model's ``requirements.txt`` (or the pip list of ``conda.yaml``)."""
    from packaging.requirements import InvalidRequirement, Requirement

    lines: list[str] = []
    req_file = model_dir / "requirements.txt"
    conda_file = model_dir / "conda.yaml"
    if req_file.is_file():
        lines = req_file.read_text().splitlines()
    elif conda_file.is_file():
        import yaml

        conda = yaml.safe_load(conda_file.read_text()) or {}
        for dep in conda.get("dependencies", []):
            if isinstance(dep, dict):
                lines.extend(str(x) for x in dep.get("pip", []))
    out: dict[str, str] = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        out[_canonical(req.name)] = str(req.specifier)
    return out


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def compare_requirement(package: str, spec: str | None, installed: str | None) -> Check:
    """One package: the model's pin vs the installed version (see PINNED_PACKAGES for the rule)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    name = f"requirement {package}"
    if installed is None:
        return Check(name, False, f"the model needs {package}{spec or ''} but it is not installed", True)
    if not spec:
        return Check(name, True, f"not pinned by the model; {installed} installed")
    specifiers = list(SpecifierSet(spec))
    if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
        pinned = Version(specifiers[0].version)
        have = Version(installed)
        if pinned == have:
            return Check(name, True, f"{installed} == model pin")
        if package in EXACT_PACKAGES:
            return Check(
                name,
                False,
                f"model pins {package}=={pinned}, server has {installed}: serialised estimators are only "
                "safe with the exact version; retrain or rebuild the image",
                True,
            )
        if (pinned.major, pinned.minor) == (have.major, have.minor):
            return Check(name, True, f"model pins {pinned}, server has {installed} (same major.minor)")
        return Check(
            name, False, f"model pins {package}=={pinned}, server has {installed} (major.minor differ)", True
        )
    ok = SpecifierSet(spec).contains(installed, prereleases=True)
    return Check(name, ok, f"model wants {package}{spec}, server has {installed}", not ok)


def check_requirements(model_dir: Path) -> list[Check]:
    reqs = model_requirements(model_dir)
    if not reqs:
        return [
            Check("requirements", False, f"{model_dir}: no requirements.txt or conda.yaml pip list", True)
        ]
    return [compare_requirement(p, reqs.get(_canonical(p)), installed_version(p)) for p in PINNED_PACKAGES]


# ---------------------------------------------------------------------------------------- signature


def check_signature(model_columns: Sequence[str] | None, store_columns: Sequence[str]) -> Check:
    """The model's input columns must be exactly the store's feature columns (order may differ)."""
    name = "signature matches feature store"
    if model_columns is None:
        return Check(name, False, "the model has no input signature; log it with one (feature columns)", True)
    model_set, store_set = set(model_columns), set(store_columns)
    missing = [c for c in model_columns if c not in store_set]
    extra = [c for c in store_columns if c not in model_set]
    problems = []
    if missing:
        problems.append(f"model needs feature(s) the store does not produce: {', '.join(missing)}")
    if extra:
        problems.append(
            f"store produces feature(s) the model was not trained on: {', '.join(extra)} "
            "(clients send the store's features; the server would refuse them)"
        )
    if problems:
        return Check(name, False, "; ".join(problems), True)
    order = "same order" if list(model_columns) == list(store_columns) else "different order (harmless)"
    return Check(name, True, f"{len(model_columns)} features, {order}")


def store_feature_columns(root: Path) -> list[str]:
    from autotrader.store import feature_columns

    return feature_columns(root)


# ------------------------------------------------------------------------------------------- golden


def _instance(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    values = {}
    for c in columns:
        v = row[c]
        values[c] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return {
        "broker": str(row["broker"]),
        "symbol": str(row["symbol"]),
        "timestamp": iso_utc(pd.Timestamp(row["timestamp"]).to_pydatetime()),
        "close": float(row["close"]),
        "features": values,
    }


def instances_from_frame(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Feature-store rows → /predict instances (JSON ``null`` for a missing feature value)."""
    return [_instance(row, columns) for row in frame.to_dict("records")]


def synthetic_instances(
    columns: Sequence[str], n: int = 32, seed: int = 0, bounds: FeatureBounds | None = None
) -> list[dict[str, Any]]:
    """Seeded features: a deterministic smoke input when there is no store to read.

    Standard normal, except that a feature whose training range the model recorded is drawn
    uniformly inside that range: the server refuses values far outside it (model.FeatureBounds).
    """
    rng = np.random.default_rng(seed)
    ranges: dict[str, tuple[float, float]] = {}
    if bounds is not None:
        for name, lo, hi in zip(bounds.names, bounds.train_lo, bounds.train_hi, strict=True):
            if np.isfinite(lo) and np.isfinite(hi):
                ranges[name] = (float(lo), float(hi))

    def draw(column: str, z: float) -> float:
        if column not in ranges:
            return float(z)
        lo, hi = ranges[column]
        return lo + (hi - lo) * float(0.5 + np.arctan(z) / np.pi)  # z → (0, 1), deterministic

    start = pd.Timestamp("2026-01-05T00:00:00Z")
    return [
        {
            "broker": "binance",
            "symbol": "BTCUSDT",
            "timestamp": iso_utc((start + pd.Timedelta(minutes=5 * i)).to_pydatetime()),
            "close": 60_000.0,
            "features": {
                c: draw(c, v) for c, v in zip(columns, rng.standard_normal(len(columns)), strict=True)
            },
        }
        for i in range(n)
    ]


def replay_slice(root: Path, bars: int) -> pd.DataFrame:
    """The last ``bars`` rows of every instrument in the store, in timestamp order across instruments."""
    from autotrader.store import load_features, read_metadata

    meta = read_metadata(root)
    end_text = (meta.get("time_range") or {}).get("end")
    if not end_text:
        raise DeployError(f"{root}: the feature store is empty; nothing to replay")
    last = pd.Timestamp(end_text)
    last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
    interval = pd.Timedelta(pd.tseries.frequencies.to_offset(meta.get("interval", "5min")))
    # The reader is point-in-time: a bar (stamped with its open) is returned once it has closed, so
    # reading up to the last bar's close returns the last bar too.
    end = last + interval
    # Enough calendar time for `bars` bars even across a weekend or a market holiday.
    span = max(interval * bars * 2, pd.Timedelta(days=1)) + pd.Timedelta(days=4)
    frame = load_features(end - span, end, root=root)
    frame = frame.groupby(["broker", "symbol"], sort=True, group_keys=False).tail(bars)
    return frame.sort_values(["timestamp", "broker", "symbol"], kind="stable").reset_index(drop=True)


def replay_from_run(candidate: Candidate, bars: int) -> pd.DataFrame:
    """The slice of bars recorded with the model's training run (``replay/bars.parquet``).

    A registered version carries its own test bars, so the staging pre-promotion Job can replay them
    against the preview pods with nothing but registry access (no feature store in that image).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from autotrader.modeling.tracking import REPLAY_ARTIFACT

    if candidate.name is None or candidate.version is None:
        raise DeployError(f"{candidate.given}: no feature store to replay from, and not a registry model")
    from autotrader import registry

    run_id = registry.get_version(candidate.name, candidate.version).run_id
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REPLAY_ARTIFACT, tracking_uri=candidate.tracking_uri
        )
    except (MlflowException, OSError) as exc:
        raise DeployError(
            f"{candidate.uri}: no feature store here and run {run_id} has no {REPLAY_ARTIFACT}: {exc}"
        ) from exc
    frame = pd.read_parquet(local)
    frame = frame.groupby(["broker", "symbol"], sort=True, group_keys=False).tail(bars)
    return frame.sort_values(["timestamp", "broker", "symbol"], kind="stable").reset_index(drop=True)


def golden_instances(
    model: LoadedModel, features_root: Path | None, per_instrument: int = 8
) -> list[dict[str, Any]]:
    """Inputs for the smoke prediction: the store's last rows when there is a store, else synthetic."""
    columns = list(model.columns or [])
    if features_root is not None and (features_root / "_metadata.json").is_file():
        frame = replay_slice(features_root, per_instrument)
        if set(columns) <= set(frame.columns):
            return instances_from_frame(frame, columns)
    return synthetic_instances(columns, bounds=model.bounds)


def predict_instances(model: LoadedModel, instances: list[dict[str, Any]]) -> list[int]:
    """Through the same validation as the server, then the model: one signal per instance."""
    body = json.dumps({"instances": instances}).encode()
    parsed = parse_request(body, max_batch=max(MAX_BATCH, len(instances)))
    return model.predict(model.frame(parsed)).tolist()


def read_golden(path: Path) -> dict[str, Any]:
    try:
        golden = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DeployError(f"{path}: golden file not found (record one with --write-golden)") from exc
    except ValueError as exc:
        raise DeployError(f"{path}: golden file is not valid JSON: {exc}") from exc
    if (
        not isinstance(golden, dict)
        or not isinstance(golden.get("instances"), list)
        or not golden["instances"]
    ):
        raise DeployError(f"{path}: golden file needs a non-empty 'instances' list")
    predictions = golden.get("predictions")
    if predictions is not None and (
        not isinstance(predictions, list) or len(predictions) != len(golden["instances"])
    ):
        raise DeployError(f"{path}: 'predictions' must list one signal per instance")
    return golden


def check_golden(
    model: LoadedModel, instances: list[dict[str, Any]], expected: list[int] | None
) -> tuple[list[Check], list[int] | None]:
    """Predict the golden inputs twice: valid, deterministic, and equal to ``expected`` when given."""
    checks: list[Check] = []
    try:
        first = predict_instances(model, instances)
        second = predict_instances(model, instances)
    except RequestError as exc:
        return [Check("golden inputs are valid requests", False, exc.reason, True)], None
    except ModelOutputError as exc:
        return [Check("golden predictions", False, str(exc), True)], None
    except Exception as exc:  # the model's own failure on valid input
        return [Check("golden predictions", False, f"model failed: {type(exc).__name__}: {exc}", True)], None
    checks.append(Check("golden inputs are valid requests", True, f"{len(instances)} instances"))
    same = first == second
    checks.append(
        Check("deterministic", same, "same predictions twice" if same else "two runs disagree", True)
    )
    if expected is not None:
        diff = [i for i, (a, b) in enumerate(zip(first, expected, strict=True)) if a != b]
        detail = (
            f"all {len(expected)} equal the recorded outputs"
            if not diff
            else f"{len(diff)} of {len(expected)} differ from the recorded outputs (first at index {diff[0]}: "
            f"got {first[diff[0]]}, recorded {expected[diff[0]]})"
        )
        checks.append(Check("golden outputs", not diff, detail, True))
    return checks, first


# ------------------------------------------------------------------------------------- deploy check


def _summary(checks: list[Check]) -> dict[str, Any]:
    passed = sum(c.passed for c in checks)
    return {
        "checks": [asdict(c) for c in checks],
        "passed": passed,
        "total": len(checks),
        "pass_rate": round(passed / len(checks), 4) if checks else 0.0,
    }


def _failure_message(what: str, checks: list[Check], limit: int = 4) -> str:
    failed = [c for c in checks if not c.passed]
    parts = [f"{c.name}: {c.detail}" for c in failed[:limit]]
    if len(failed) > limit:
        parts.append(f"… and {len(failed) - limit} more (see the report)")
    return f"{what}: " + "; ".join(parts)


def deploy_check(
    params: Params,
    model_uri: str,
    *,
    golden_path: Path | None = None,
    write_golden_path: Path | None = None,
    features_root: Path | None = None,
    report_path: Path | None = None,
) -> dict[str, Any]:
    """Run every static check; write the report; raise DeployError naming each failed check."""
    features_root = Path(features_root or params.paths.features)
    report_path = Path(report_path or Path(params.paths.reports) / "deploy" / "check.json")
    golden = read_golden(golden_path) if golden_path is not None else None
    candidate = resolve_candidate(params, model_uri)
    checks: list[Check] = []
    golden_out: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="autotrader-deploy-") as tmp:
        model_dir = fetch_model_dir(candidate, Path(tmp))
        checks.extend(check_requirements(model_dir))
        try:
            model = load(str(model_dir))
        except Exception as exc:  # whatever MLflow/the flavour raises: the model cannot be served
            checks.append(Check("model loads", False, f"{type(exc).__name__}: {exc}", True))
            model = None
        if model is not None:
            checks.append(Check("model loads", True, f"{len(model.columns or [])} input columns"))
            try:
                store_cols = store_feature_columns(features_root)
            except AutoTraderError as exc:
                checks.append(
                    Check(
                        "signature matches feature store",
                        False,
                        f"{exc} (pull it with `dvc pull {features_root}` or pass --features-root)",
                        True,
                    )
                )
            else:
                checks.append(check_signature(model.columns, store_cols))
            instances = golden["instances"] if golden else golden_instances(model, features_root)
            expected = golden.get("predictions") if golden else None
            golden_checks, predictions = check_golden(model, instances, expected)
            checks.extend(golden_checks)
            if predictions is not None:
                golden_out = {
                    "model_uri": candidate.uri,
                    "feature_columns": list(model.columns or []),
                    "instances": instances,
                    "predictions": predictions,
                }
    report = {
        "kind": "deploy-check",
        "model_uri": candidate.uri,
        "model_version": candidate.label,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **_summary(checks),
        "ok": all(c.passed for c in checks),
    }
    write_json(report_path, report)
    if not report["ok"]:
        raise DeployError(_failure_message(f"deploy check of {candidate.uri} failed", checks))
    if write_golden_path is not None and golden_out is not None:
        write_json(write_golden_path, golden_out)
    return report


# -------------------------------------------------------------------------------------- integration


@dataclass
class RemoteServer:
    """A server that is already running (e.g. the staging preview Service): nothing to start or stop."""

    url: str
    proc: None = None

    def log_tail(self, chars: int = 3000) -> str:
        return ""


@contextlib.contextmanager
def running_server(
    model_uri: str, version: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """``autotrader serve`` with ``model_uri`` on a free loopback port (output to a temporary file)."""
    port = free_port()
    with ServerProcess(
        [*AUTOTRADER, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "MODEL_URI": model_uri, "MODEL_VERSION": version, **(env or {})},
        url=f"http://127.0.0.1:{port}",
    ) as server:
        yield server


def wait_until_ready(
    server: ServerProcess | RemoteServer, client: Any, timeout: float
) -> tuple[bool, dict[str, Any], float]:
    """Poll /readyz until 200, the process dies, or ``timeout``; returns (ready, last body, seconds).

    The last body's ``reason`` (e.g. why the model did not load) is kept when the server answered;
    otherwise the reason is why it never did (exit code and log, or the connection error).
    """
    last: dict[str, Any] | None = None

    def ready() -> bool:
        nonlocal last
        response = client.get(f"{server.url}/readyz", timeout=2.0)
        last = response.json()
        return bool(response.status_code == 200)

    result = poll_until(ready, timeout, server.proc, lambda: server.log_tail(800))
    exited = server.proc is not None and server.proc.poll() is not None
    if result.ready and last is not None:
        return True, last, result.seconds
    if last is None or exited:
        last = {"reason": f"server {result.reason}"}
    return False, last, result.seconds


def malformed_requests(
    columns: Sequence[str], good: dict[str, Any], max_batch: int
) -> list[tuple[str, bytes, int]]:
    """(name, body, expected status) for the bad inputs every server must refuse without a 500."""
    first = columns[0]
    missing = {**good, "features": {c: v for c, v in good["features"].items() if c != first}}
    unknown = {**good, "features": {**good["features"], "not_a_feature": 0.0}}
    text_value = {**good, "features": {**good["features"], first: "0.1"}}
    naive = {**good, "timestamp": good["timestamp"].rstrip("Z")}
    broker = {**good, "broker": "nasdaq"}
    # Python's json writes (and reads) NaN/Infinity tokens; the server must refuse them.
    nan_close = {**good, "close": float("nan")}
    inf_feature = {**good, "features": {**good["features"], first: float("inf")}}
    return [
        ("not JSON", b"this is not json", 422),
        ("NaN token", json.dumps({"instances": [nan_close]}).encode(), 422),
        ("Infinity feature", json.dumps({"instances": [inf_feature]}).encode(), 422),
        ("missing feature", json.dumps({"instances": [missing]}).encode(), 422),
        ("unknown feature", json.dumps({"instances": [unknown]}).encode(), 422),
        ("string feature value", json.dumps({"instances": [text_value]}).encode(), 422),
        ("timestamp without zone", json.dumps({"instances": [naive]}).encode(), 422),
        ("unknown broker", json.dumps({"instances": [broker]}).encode(), 422),
        ("empty batch", b'{"instances": []}', 422),
        ("batch over the limit", json.dumps({"instances": [good] * (max_batch + 1)}).encode(), 413),
    ]


@dataclass
class _Tally:
    checks: list[Check] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, name: str, passed: bool, detail: str = "", critical: bool = False) -> bool:
        self.checks.append(Check(name, bool(passed), detail, critical))
        return bool(passed)


def _check_prediction_response(
    tally: _Tally, what: str, response: Any, sent: list[dict[str, Any]], label: str
) -> list[int] | None:
    # A 5xx on a valid replayed bar is the server or model failing, never noise: critical, so a model that
    # errors on one call in five cannot pass on the other checks' pass rate (the e2e staging scenario).
    if not tally.add(
        f"{what}: status 200",
        response.status_code == 200,
        f"got {response.status_code}",
        critical=response.status_code >= 500,
    ):
        return None
    try:
        parsed = PredictResponse.model_validate_json(response.content)
    except Exception as exc:  # pydantic ValidationError or bad JSON: the schema check fails either way
        tally.add(f"{what}: response schema", False, str(exc)[:300])
        return None
    tally.add(f"{what}: response schema", True)
    tally.add(
        f"{what}: model_version", parsed.model_version == label, f"{parsed.model_version!r} vs {label!r}"
    )
    preds = parsed.predictions
    echo = len(preds) == len(sent) and all(
        p.broker == s["broker"] and p.symbol == s["symbol"] and p.timestamp == s["timestamp"]
        for p, s in zip(preds, sent, strict=False)
    )
    tally.add(f"{what}: one prediction per instance, in order", echo)
    tally.add(
        f"{what}: signal in {{-1,0,1}} and label matches",
        all(LABEL_SIGNALS[p.label] == p.signal for p in preds),
    )
    return [p.signal for p in preds]


def _metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
    ]


def _sum(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def run_integration(
    params: Params,
    model_uri: str,
    *,
    record: bool = False,
    bars: int = 24,
    batch_size: int = 32,
    max_latency_ms: float = 200.0,
    min_pass_rate: float = 0.95,
    features_root: Path | None = None,
    report_path: Path | None = None,
    startup_timeout: float = 120.0,
    url: str | None = None,
) -> dict[str, Any]:
    """Start a server with the candidate (or use the one at ``url``), replay recorded bars, check;
    report and (optionally) record.

    With ``url`` (a running server, e.g. the staging preview) the replayed bars carry symbols with a
    per-run suffix, so the server's online state for real instruments is neither read nor changed,
    and every metric check compares the server's counters before and after the replay.
    """
    import httpx

    features_root = Path(features_root or params.paths.features)
    report_path = Path(report_path or Path(params.paths.reports) / "deploy" / "integration.json")
    if record and not model_uri.startswith("models:/"):
        raise DeployError(f"--record needs a registry model (models:/<name>/<version>), not {model_uri}")
    candidate = resolve_candidate(params, model_uri)
    if (features_root / "_metadata.json").is_file():
        replay = replay_slice(features_root, bars)
    else:
        replay = replay_from_run(candidate, bars)
    if url is not None:
        suffix = f".itest-{os.urandom(3).hex()}"
        replay = replay.assign(symbol=replay["symbol"].astype(str) + suffix)
    env = {"MODEL_LOAD_ATTEMPTS": "1", "OMP_NUM_THREADS": "1"}
    if candidate.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = candidate.tracking_uri
    tally = _Tally()
    expected_returns: list[float] = []
    started = time.perf_counter()
    server_log = ""
    target = (
        contextlib.nullcontext(RemoteServer(url.rstrip("/")))
        if url is not None
        else running_server(candidate.uri, candidate.label, env)
    )
    with target as server, httpx.Client() as client:
        ready, ready_body, ready_s = wait_until_ready(server, client, startup_timeout)
        tally.add(
            "server ready (/readyz 200)",
            ready,
            f"after {ready_s:.1f}s: {ready_body.get('reason', 'ok')}",
            True,
        )
        if ready:
            _exercise(
                server,
                client,
                tally,
                candidate,
                replay,
                ready_body,
                batch_size,
                max_latency_ms,
                expected_returns,
            )
        else:
            server_log = server.log_tail()
    checks = tally.checks
    critical_ok = all(c.passed for c in checks if c.critical)
    summary = _summary(checks)
    passed = critical_ok and summary["pass_rate"] >= min_pass_rate
    lat = np.array(tally.latencies_ms) if tally.latencies_ms else np.array([np.nan])
    report = {
        "kind": "deploy-integration",
        "model_uri": candidate.uri,
        "model_version": candidate.label,
        "server": url or "started by the run",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bars_replayed": len(replay),
        "instruments": sorted({f"{b}/{s}" for b, s in zip(replay["broker"], replay["symbol"], strict=True)}),
        "online_returns_expected": len(expected_returns),
        "latency_ms": {
            "p50": _round(np.nanpercentile(lat, 50)),
            "p95": _round(np.nanpercentile(lat, 95)),
            "p99": _round(np.nanpercentile(lat, 99)),
            "max": _round(np.nanmax(lat)),
            "threshold": max_latency_ms,
        },
        "min_pass_rate": min_pass_rate,
        "critical_passed": critical_ok,
        "seconds": round(time.perf_counter() - started, 2),
        **summary,
        "integration_passed": passed,
        "recorded": False,
    }
    if server_log:
        report["server_log_tail"] = server_log
    if record and candidate.name is not None and candidate.version is not None:
        from autotrader import registry

        registry.set_version_tags(
            candidate.name,
            candidate.version,
            {
                "integration_passed": "true" if passed else "false",
                "integration_pass_rate": f"{summary['pass_rate']:.4f}",
            },
        )
        report["recorded"] = True
    write_json(report_path, report)
    if not passed:
        why = (
            "a critical check failed"
            if not critical_ok
            else f"pass rate {summary['pass_rate']:.2%} < {min_pass_rate:.0%}"
        )
        raise DeployError(_failure_message(f"integration tests of {candidate.uri} failed ({why})", checks))
    return report


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 3)


def _exercise(
    server: ServerProcess | RemoteServer,
    client: Any,
    tally: _Tally,
    candidate: Candidate,
    replay: pd.DataFrame,
    ready_body: dict[str, Any],
    batch_size: int,
    max_latency_ms: float,
    expected_returns: list[float],
) -> None:
    """The checks against a ready server (split out of run_integration to keep each part readable)."""
    url = server.url
    columns = ready_body.get("features")
    if columns is None:
        columns = [c for c in replay.columns if c not in BAR_COLUMNS]
    missing = [c for c in columns if c not in replay.columns]
    if not tally.add("replay has the model's features", not missing, f"missing: {', '.join(missing)}", True):
        return
    instances = instances_from_frame(replay, columns)
    before = _metrics_snapshot(client, url)
    # One request per bar, in time order: what a live client does.
    singles: list[int | None] = []
    last: dict[tuple[str, str], tuple[float, int]] = {}
    with progress() as bar:
        task = bar.add_task("integration: replaying bars", total=len(instances))
        for i, inst in enumerate(instances):
            t0 = time.perf_counter()
            response = client.post(f"{url}/predict", json={"instances": [inst]}, timeout=10.0)
            ms = (time.perf_counter() - t0) * 1000
            tally.latencies_ms.append(ms)
            tally.add(f"bar {i}: latency ≤ {max_latency_ms:g} ms", ms <= max_latency_ms, f"{ms:.1f} ms")
            signals = _check_prediction_response(tally, f"bar {i}", response, [inst], candidate.label)
            signal = signals[0] if signals else None
            singles.append(signal)
            key = (inst["broker"], inst["symbol"])
            if signal is not None:
                if key in last:
                    prev_close, prev_signal = last[key]
                    expected_returns.append(realised_return(prev_signal, prev_close, inst["close"]))
                last[key] = (inst["close"], signal)
            bar.advance(task)
    # The same bars again in batches: same answers, and no online return counted twice.
    for start in range(0, len(instances), batch_size):
        chunk = instances[start : start + batch_size]
        response = client.post(f"{url}/predict", json={"instances": chunk}, timeout=30.0)
        got = _check_prediction_response(tally, f"batch at {start}", response, chunk, candidate.label)
        if got is not None:
            want = singles[start : start + len(chunk)]
            tally.add(f"batch at {start}: same signals as one by one", got == want)
    # Bad input: 4xx with a reason, never 500, and the server stays ready.
    for name, body, status in malformed_requests(columns, instances[-1], MAX_BATCH):
        response = client.post(
            f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=30.0
        )
        reason = _reason(response)
        tally.add(
            f"malformed ({name}) → {status}",
            response.status_code == status,
            f"got {response.status_code}: {reason}",
            True,
        )
    tally.add("healthz 200 after bad input", client.get(f"{url}/healthz").status_code == 200, critical=True)
    tally.add("readyz 200 after bad input", client.get(f"{url}/readyz").status_code == 200, critical=True)
    _check_metrics(client, url, tally, candidate, len(instances), expected_returns, before)


def _reason(response: Any) -> str:
    try:
        return str(response.json().get("detail", ""))[:200]
    except ValueError:
        return response.text[:200]


def _metrics_snapshot(client: Any, url: str) -> list[tuple[str, dict[str, str], float]]:
    """The server's samples now (empty if /metrics does not answer: the later check reports that)."""
    try:
        response = client.get(f"{url}/metrics")
        return _metric_samples(response.text) if response.status_code == 200 else []
    except Exception:  # a broken exposition is reported by _check_metrics, not here
        return []


def _check_metrics(
    client: Any,
    url: str,
    tally: _Tally,
    candidate: Candidate,
    n_bars: int,
    expected_returns: list[float],
    before: list[tuple[str, dict[str, str], float]],
) -> None:
    """Labels, and the counters' increase over the replay (so a server with history checks the same)."""
    response = client.get(f"{url}/metrics")
    if not tally.add(
        "metrics: /metrics 200", response.status_code == 200, f"got {response.status_code}", True
    ):
        return
    try:
        samples = _metric_samples(response.text)
    except Exception as exc:  # the parser raises ValueError and friends on malformed exposition
        tally.add("metrics: exposition parses", False, str(exc)[:300], True)
        return
    label = candidate.label

    def delta(name: str, **labels: str) -> float:
        return _sum(samples, name, model_version=label, **labels) - _sum(
            before, name, model_version=label, **labels
        )

    info = [lab for n, lab, _ in samples if n == "autotrader_model_info"]
    tally.add(
        "metrics: model_info carries model_version",
        any(lab.get("model_version") == label for lab in info),
        f"labels {info}",
        True,
    )
    tally.add(
        "metrics: model_ready = 1",
        _sum(samples, "autotrader_model_ready", model_version=label) == 1,
        critical=True,
    )
    ok_requests = delta("autotrader_requests_total", route="/predict", status="200")
    tally.add(
        "metrics: /predict 200s counted", ok_requests >= n_bars, f"{ok_requests:g} counted, ≥ {n_bars} sent"
    )
    bad = delta("autotrader_requests_total", route="/predict", status="422")
    tally.add("metrics: 422s counted", bad >= 1, f"{bad:g}")
    n = delta("autotrader_strategy_returns_total")
    tally.add(
        "metrics: online returns counted",
        n == len(expected_returns),
        f"server counted {n:g}, replay expects {len(expected_returns)}",
        True,
    )
    total = delta("autotrader_strategy_return_sum")
    want = math.fsum(expected_returns)
    tally.add(
        "metrics: online return sum matches the replay",
        math.isclose(total, want, rel_tol=1e-6, abs_tol=1e-12),
        f"server {total:.6e}, replay {want:.6e}",
    )
    predictions = delta("autotrader_predictions_total")
    tally.add("metrics: predictions counted", predictions >= n_bars, f"{predictions:g}")


def print_report(report: dict[str, Any], title: str) -> None:
    """A short rich summary: failed checks first, then the counts."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail", overflow="fold")
    failed = [c for c in report["checks"] if not c["passed"]]
    shown = failed[:20] if failed else report["checks"][:20]
    for c in shown:
        table.add_row(c["name"], "[green]ok[/]" if c["passed"] else "[red]FAIL[/]", c["detail"])
    console.print(table)
    console.print(f"{report['passed']}/{report['total']} checks passed ({report['pass_rate']:.2%})")
