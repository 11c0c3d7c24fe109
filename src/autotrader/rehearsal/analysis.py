"""Argo Rollouts' canary analysis, read from rendered manifests and measured against a real Prometheus.

``RolloutPlan`` reads the Rollout's steps, background analysis and the AnalysisTemplates' metrics;
``start_run`` resolves ``{{args.*}}`` and compresses every duration by one ``TimeScale``; ``MetricRun``
measures with Argo Rollouts' rules: a measurement is Failed if the failure condition holds, Successful
if the success condition holds, Inconclusive if neither (no data), Error if Prometheus or the
condition fails; a metric is Failed beyond ``failureLimit`` failures, Inconclusive beyond
``inconclusiveLimit``, Error beyond ``consecutiveErrorLimit`` errors in a row, Successful at ``count``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from autotrader.errors import DeployError
from autotrader.gitops.kustomize import one
from autotrader.rehearsal.expr import ExprError, evaluate

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RANGE = re.compile(r"\[((?:\d+(?:ms|s|m|h|d))+)(?::((?:\d+(?:ms|s|m|h|d))+))?\]")
_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.\-]+)\s*\}\}")
PHASE_ORDER = ("Successful", "Running", "Inconclusive", "Error", "Failed")


# --- durations -------------------------------------------------------------------------------------


def parse_duration(text: str | int | float) -> float:
    """Seconds in an Argo/Prometheus duration: ``30s``, ``5m``, ``1h30m`` (a bare number is seconds)."""
    if isinstance(text, int | float):
        return float(text)
    text = str(text).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise DeployError(f"not a duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class TimeScale:
    """One compression factor for every duration of the manifests: a manifest minute → real seconds."""

    seconds_per_minute: float = 0.6
    scrape_interval_s: float = 1.0

    def seconds(self, duration: str | int | float) -> float:
        return parse_duration(duration) / 60.0 * self.seconds_per_minute

    def _window(self, text: str) -> str:
        seconds = self.seconds(text)
        if seconds < 2 * self.scrape_interval_s:
            raise DeployError(
                f"time scale too small: [{text}] becomes {seconds:.2f}s, less than two scrapes "
                f"({self.scrape_interval_s}s); raise seconds_per_minute"
            )
        return f"{round(seconds * 1000)}ms"

    def compress_query(self, query: str) -> str:
        """Every PromQL range ``[5m]`` (and subquery ``[1h:1m]``) compressed by the same factor."""

        def repl(match: re.Match[str]) -> str:
            window = self._window(match.group(1))
            if match.group(2):
                return f"[{window}:{round(self.seconds(match.group(2)) * 1000)}ms]"
            return f"[{window}]"

        return _RANGE.sub(repl, query)


# --- the plan read from the manifests ----------------------------------------------------------------


def _limit(value: Any, default: int) -> int:
    return default if value is None else int(value)


@dataclass(frozen=True)
class MetricSpec:
    """One AnalysisTemplate metric, as written (durations and ``{{args}}`` not yet resolved)."""

    name: str
    query: str
    interval: str
    count: int | None
    initial_delay: str
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int
    success: str
    failure: str

    @classmethod
    def from_manifest(cls, template: str, metric: dict[str, Any]) -> MetricSpec:
        prometheus = (metric.get("provider") or {}).get("prometheus")
        if not prometheus or "query" not in prometheus:
            raise DeployError(
                f"AnalysisTemplate/{template} metric {metric.get('name')}: not a Prometheus query"
            )
        count = metric.get("count")
        return cls(
            name=metric["name"],
            query=prometheus["query"],
            interval=str(metric.get("interval", "0s")),
            count=None if count is None or int(count) <= 0 else int(count),
            initial_delay=str(metric.get("initialDelay", "0s")),
            failure_limit=_limit(metric.get("failureLimit"), 0),
            inconclusive_limit=_limit(metric.get("inconclusiveLimit"), 0),
            consecutive_error_limit=_limit(metric.get("consecutiveErrorLimit"), 4),
            success=metric.get("successCondition", ""),
            failure=metric.get("failureCondition", ""),
        )


@dataclass(frozen=True)
class AnalysisSpec:
    """An analysis block of the Rollout: its templates' metrics and the args it passes."""

    templates: tuple[str, ...]
    metrics: tuple[MetricSpec, ...]
    args: tuple[dict[str, Any], ...]
    defaults: dict[str, str]

    def resolve_args(self, hashes: dict[str, str]) -> dict[str, str]:
        """Arg values as the controller would give them; ``hashes`` maps Latest/Stable → a hash."""
        values = dict(self.defaults)
        for arg in self.args:
            if "value" in arg:
                values[arg["name"]] = str(arg["value"])
                continue
            source = arg.get("valueFrom") or {}
            which = source.get("podTemplateHashValue")
            if which not in hashes:
                raise DeployError(
                    f"arg {arg['name']}: valueFrom {source} is not something a rehearsal can supply"
                )
            values[arg["name"]] = hashes[which]
        return values


def _analysis(objects: list[dict[str, Any]], block: dict[str, Any]) -> AnalysisSpec:
    names, metrics, defaults = [], [], {}
    for ref in block.get("templates") or []:
        template = one(objects, "AnalysisTemplate", ref["templateName"])
        names.append(ref["templateName"])
        metrics += [MetricSpec.from_manifest(ref["templateName"], m) for m in template["spec"]["metrics"]]
        defaults.update(
            {a["name"]: str(a["value"]) for a in template["spec"].get("args") or [] if "value" in a}
        )
    return AnalysisSpec(tuple(names), tuple(metrics), tuple(block.get("args") or ()), defaults)


@dataclass(frozen=True)
class RolloutPlan:
    """What the production Rollout will do, read from the rendered overlay."""

    steps: tuple[dict[str, Any], ...]
    background: AnalysisSpec | None
    starting_step: int
    step_analyses: dict[int, AnalysisSpec]

    @classmethod
    def from_objects(cls, objects: list[dict[str, Any]]) -> RolloutPlan:
        rollout = one(objects, "Rollout")
        canary = rollout["spec"].get("strategy", {}).get("canary")
        if not canary:
            raise DeployError("the rehearsal needs a canary Rollout (the production overlay)")
        steps = tuple(canary.get("steps") or ())
        background = _analysis(objects, canary["analysis"]) if canary.get("analysis") else None
        starting = int((canary.get("analysis") or {}).get("startingStep", 0))
        step_analyses = {i: _analysis(objects, s["analysis"]) for i, s in enumerate(steps) if "analysis" in s}
        return cls(steps, background, starting, step_analyses)

    def header_matches(self) -> list[dict[str, Any]]:
        """The match list of the first setHeaderRoute step (empty when there is none)."""
        for step in self.steps:
            route = step.get("setHeaderRoute")
            if route and route.get("match"):
                return list(route["match"])
        return []


# --- measurements (Argo Rollouts' rules) ----------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    metric: str
    phase: str  # Successful | Failed | Inconclusive | Error
    value: str
    at_s: float
    message: str = ""


def query_prometheus(url: str, query: str, timeout: float = 5.0) -> Any:
    """``/api/v1/query`` → a list of floats (vector) or a float (scalar); DeployError on any failure."""
    import httpx

    try:
        response = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DeployError(f"Prometheus at {url} unreachable: {type(exc).__name__}: {exc}") from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise DeployError(f"Prometheus answered {response.status_code} without JSON") from exc
    if body.get("status") != "success":
        raise DeployError(f"Prometheus refused the query: {body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] == "vector":
        return [float(sample["value"][1]) for sample in data["result"]]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    raise DeployError(f"Prometheus result type {data['resultType']} is not supported (Argo neither)")


def assess(success: str, failure: str, result: Any) -> str:
    """Argo's EvaluateResult: Failed if failure holds; Successful if success holds; else Inconclusive."""
    ok = evaluate(success, result) if success else False
    bad = evaluate(failure, result) if failure else False
    if success and not failure:
        bad = not ok
    elif failure and not success:
        ok = not bad
    elif not success and not failure:
        return "Successful"
    if bad:
        return "Failed"
    return "Successful" if ok else "Inconclusive"


def _format_value(result: Any) -> str:
    if isinstance(result, list):
        return "[" + ",".join(f"{v:.6g}" for v in result) + "]"
    return f"{result:.6g}"


@dataclass
class MetricRun:
    """One metric of an analysis run: its resolved query, its schedule and its tallies."""

    spec: MetricSpec
    query: str
    interval_s: float
    cap: int
    started_s: float
    delay_s: float = 0.0  # initialDelay: the first measurement waits this long after the run starts
    measurements: list[Measurement] = field(default_factory=list)
    phase: str = "Running"
    consecutive_errors: int = 0

    @property
    def next_due_s(self) -> float:
        return self.started_s + self.delay_s + len(self.measurements) * self.interval_s

    def tally(self, phase: str) -> int:
        return sum(1 for m in self.measurements if m.phase == phase)

    def measure(self, prometheus_url: str, now_s: float) -> Measurement:
        try:
            result = query_prometheus(prometheus_url, self.query)
            phase = assess(self.spec.success, self.spec.failure, result)
            measurement = Measurement(self.spec.name, phase, _format_value(result), now_s)
        except (DeployError, ExprError) as exc:
            measurement = Measurement(self.spec.name, "Error", "", now_s, str(exc))
        self.measurements.append(measurement)
        self.consecutive_errors = self.consecutive_errors + 1 if measurement.phase == "Error" else 0
        self.phase = self._assess()
        return measurement

    def _assess(self) -> str:
        spec = self.spec
        if spec.failure_limit >= 0 and self.tally("Failed") > spec.failure_limit:
            return "Failed"
        if self.tally("Inconclusive") > spec.inconclusive_limit:
            return "Inconclusive"
        if self.consecutive_errors > spec.consecutive_error_limit:
            return "Error"
        taken = len(self.measurements)
        if (spec.count is not None and taken >= spec.count) or taken >= self.cap:
            return "Successful"
        return "Running"


@dataclass
class AnalysisRun:
    """All metrics of one analysis (background or a step's); its phase is the worst of theirs."""

    name: str
    metrics: list[MetricRun]

    @property
    def phase(self) -> str:
        phases = [m.phase for m in self.metrics]
        if any(p in ("Failed", "Error", "Inconclusive") for p in phases):
            return max((p for p in phases if p != "Running"), key=PHASE_ORDER.index)
        return "Running" if "Running" in phases else "Successful"

    @property
    def running(self) -> bool:
        return self.phase == "Running"

    def next_due_s(self) -> float:
        return min(m.next_due_s for m in self.metrics if m.phase == "Running")

    def measure_due(self, prometheus_url: str, now_s: float) -> list[Measurement]:
        return [
            m.measure(prometheus_url, now_s)
            for m in self.metrics
            if m.phase == "Running" and m.next_due_s <= now_s + 1e-6
        ]

    def culprits(self) -> list[str]:
        return [
            f"{m.spec.name}: {m.phase}"
            for m in self.metrics
            if m.phase in ("Failed", "Error", "Inconclusive")
        ]


def start_run(
    name: str,
    spec: AnalysisSpec,
    hashes: dict[str, str],
    scale: TimeScale,
    cap: int,
    started_s: float,
) -> AnalysisRun:
    """Resolve args and durations of an analysis block into a run that starts measuring at ``started_s``."""
    args = spec.resolve_args(hashes)
    metrics = []
    for metric in spec.metrics:

        def value(match: re.Match[str], metric: MetricSpec = metric) -> str:
            if match.group(1) not in args:
                raise DeployError(f"metric {metric.name}: {{{{args.{match.group(1)}}}}} has no value")
            return args[match.group(1)]

        query = scale.compress_query(_ARG.sub(value, metric.query))
        interval = scale.seconds(metric.interval) if parse_duration(metric.interval) > 0 else math.inf
        delay = scale.seconds(metric.initial_delay) if parse_duration(metric.initial_delay) > 0 else 0.0
        metrics.append(MetricRun(metric, query, interval, cap, started_s, delay_s=delay))
    return AnalysisRun(name, metrics)
