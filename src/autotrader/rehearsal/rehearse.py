"""Rehearse a production canary on one machine: real servers, real Prometheus, the manifests' own analysis.

What runs: a stable and a canary model server (``autotrader serve`` subprocesses on loopback), a real
Prometheus scraping them every second through file-based service discovery, with target labels that
mimic what Kubernetes service discovery adds (``service``, ``rollouts_pod_template_hash``, ``role``,
``namespace``, ``pod``), and a traffic driver that replays the simulated market, one request per
instrument per tick, each carrying ``x-autotrader-instrument: <broker>/<symbol>``.

What is read from the RENDERED production overlay: the Rollout's steps (setHeaderRoute → which
instruments go to the canary; setWeight → the share of the rest; pause; analysis), its background
analysis and ``startingStep``, the AnalysisTemplates' PromQL queries, ``interval``/``count``/limits and
their success/failure conditions. Queries get their ``{{args.*}}`` substituted (hashes as
``podTemplateHashValue`` would give them) and every duration is compressed by ONE factor
(``TimeScale``: a manifest minute becomes ``seconds_per_minute`` real seconds, so ``[5m]`` and
``interval: 5m`` shrink alike). Conditions are evaluated with ``autotrader.rehearsal.expr`` against
Prometheus' ``/api/v1/query`` answers, with Argo Rollouts' rules for Successful / Failed /
Inconclusive / Error measurements and for failureLimit, inconclusiveLimit and consecutiveErrorLimit.

What it is NOT: the Argo Rollouts controller. No ReplicaSets, no Istio; the "traffic router" is the
driver choosing a server per request, and analysis runs are capped at ``max_measurements`` each so a
rehearsal takes a minute, not three hours. It checks that the analysis, as written, tells a good canary
from a bad one on real metrics; it cannot check the controller's own behaviour.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotrader.atomic import write_json, write_text
from autotrader.errors import DeployError
from autotrader.gitops.kustomize import render
from autotrader.params import Instrument
from autotrader.rehearsal.analysis import (
    AnalysisRun,
    Measurement,
    MetricRun,
    RolloutPlan,
    TimeScale,
    assess,
    parse_duration,
    query_prometheus,
    start_run,
)
from autotrader.rehearsal.servers import (
    PROMETHEUS_HINT,
    ModelServer,
    PrometheusServer,
    find_prometheus,
    free_port,
)
from autotrader.rehearsal.traffic import HEADER, Router, TrafficDriver, header_routes_to_canary

__all__ = [
    "HEADER",
    "PROMETHEUS_HINT",
    "AnalysisRun",
    "Measurement",
    "MetricRun",
    "ModelServer",
    "PrometheusServer",
    "Rehearsal",
    "RehearsalConfig",
    "RehearsalResult",
    "RolloutPlan",
    "TimeScale",
    "assess",
    "demo_models",
    "find_prometheus",
    "free_port",
    "header_routes_to_canary",
    "parse_duration",
    "query_prometheus",
    "rehearsal_instruments",
    "render",
    "start_run",
    "write_reports",
]


@dataclass
class Event:
    at_s: float
    step: str
    detail: str


@dataclass
class RehearsalResult:
    """What happened to one canary: the outcome, why, and every step and measurement on the way."""

    scenario: str
    canary_version: str
    outcome: str  # promoted | aborted | paused | passed-first-analysis
    reason: str
    events: list[Event]
    measurements: list[Measurement]
    traffic: dict[str, dict[str, dict[str, int]]]
    time_scale: float
    seconds: float
    bars_in: tuple[str, ...] = ()  # instruments whose client sent bars (the live path), not vectors

    def failed_metrics(self) -> list[str]:
        return sorted({m.metric for m in self.measurements if m.phase in ("Failed", "Error")})

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "canary_version": self.canary_version,
            "outcome": self.outcome,
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
            "time_scale_seconds_per_minute": self.time_scale,
            "events": [e.__dict__ for e in self.events],
            "measurements": [m.__dict__ for m in self.measurements],
            "traffic": self.traffic,
            "bars_in": list(self.bars_in),
        }

    def to_markdown(self) -> str:
        lines = [
            f"# Canary rehearsal: {self.scenario} (canary version {self.canary_version})",
            "",
            f"**Outcome: {self.outcome}** — {self.reason}",
            "",
            f"Time scale: one manifest minute = {self.time_scale}s; took {self.seconds:.0f}s. "
            "This rehearses the analysis, not the Argo Rollouts controller.",
            "",
            "Live path: "
            + (
                f"{', '.join(self.bars_in)} send their newest bar with its warm-up window to "
                "`POST /predict/bars` (the server computes the features); the others send feature vectors "
                "to `POST /predict`."
                if self.bars_in
                else "every instrument sends feature vectors to `POST /predict`."
            ),
            "",
            "## Steps",
            "",
            "| t (s) | step | what happened |",
            "| ---: | --- | --- |",
        ]
        lines += [f"| {e.at_s:.1f} | {e.step} | {e.detail} |" for e in self.events]
        lines += [
            "",
            "## Measurements",
            "",
            "| t (s) | metric | phase | value | note |",
            "| ---: | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {m.at_s:.1f} | {m.metric} | {m.phase} | {m.value} | {m.message} |" for m in self.measurements
        ]
        lines += ["", "## Traffic (requests by server and HTTP status)", ""]
        for phase, targets in self.traffic.items():
            for target, statuses in sorted(targets.items()):
                lines.append(f"- {phase}, {target}: {statuses}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RehearsalConfig:
    overlay: Path
    scale: TimeScale = field(default_factory=TimeScale)
    max_measurements: int = 3
    tick_s: float = 0.1
    bars_per_request: int = 8
    signal_strength: float = 40.0
    seed: int = 7
    stable_version: str = "1"


class Rehearsal:
    """Prometheus, a stable server and live traffic; canaries are rehearsed one after another."""

    def __init__(
        self,
        config: RehearsalConfig,
        stable_model: str | os.PathLike[str],
        instruments: Sequence[Instrument],
        workdir: str | os.PathLike[str],
    ) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.plan = RolloutPlan.from_objects(render(config.overlay))
        self.instruments = list(instruments)
        self.stable = ModelServer(stable_model, config.stable_version, self.workdir / "logs")
        self.prometheus = PrometheusServer(self.workdir / "prometheus", config.scale.scrape_interval_s)
        self.router = Router(self.stable.url, seed=config.seed)
        self.driver: TrafficDriver | None = None
        self.stable_hash = f"s{config.stable_version}stable"
        self._canaries = 0

    def __enter__(self) -> Rehearsal:
        """Start Prometheus and the stable server (not waited for: start the canaries meanwhile)."""
        try:
            self.prometheus.start()
            self.stable.start()
        except BaseException:
            self.close()
            raise
        return self

    def start_traffic(self) -> None:
        """Wait for stable, let Prometheus scrape it, and start the traffic (all of it to stable)."""
        if self.driver is not None:
            return
        self.stable.wait_ready()
        self.prometheus.add_target(f"127.0.0.1:{self.stable.port}", self._labels(self.stable_hash, "stable"))
        self.prometheus.wait_scraped(f'rollouts_pod_template_hash="{self.stable_hash}"')
        # the canary's header-routed instruments are live clients: they send bars, the servers compute
        # the features, so the analysis measures the live path (the rest send feature vectors)
        matches = self.plan.header_matches()
        self.driver = TrafficDriver(
            self.router,
            self.instruments,
            signal_strength=self.config.signal_strength,
            seed=self.config.seed,
            tick_s=self.config.tick_s,
            bars_per_request=self.config.bars_per_request,
            bars_in=[i.key for i in self.instruments if header_routes_to_canary(matches, HEADER, i.key)],
        ).start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.driver is not None:
            self.driver.stop()
        self.stable.stop()
        self.prometheus.stop()

    def canary(self, model_dir: str | os.PathLike[str], version: str) -> ModelServer:
        """A canary server (started, not yet ready: start several, then rehearse them in turn)."""
        return ModelServer(model_dir, version, self.workdir / "logs").start()

    def _labels(self, pod_hash: str, role: str) -> dict[str, str]:
        return {
            "service": "autotrader-serving",
            "namespace": "rehearsal",
            "rollouts_pod_template_hash": pod_hash,
            "role": role,
            "pod": f"autotrader-serving-{pod_hash}-0",
        }

    def run(
        self,
        scenario: str,
        canary: ModelServer,
        stop_after_first_analysis: bool = False,
        max_measurements: int | None = None,
    ) -> RehearsalResult:
        """Walk the Rollout's steps with ``canary``; return when promoted, aborted, paused or stopped."""
        self.start_traffic()
        assert self.driver is not None
        canary.wait_ready()
        self._canaries += 1
        canary_hash = f"c{canary.version}n{self._canaries}"
        self.prometheus.add_target(f"127.0.0.1:{canary.port}", self._labels(canary_hash, "canary"))
        self.prometheus.wait_scraped(f'rollouts_pod_template_hash="{canary_hash}"')
        hashes = {"Latest": canary_hash, "Stable": self.stable_hash}
        cap = max_measurements or self.config.max_measurements
        runner = _Walk(self, scenario, canary, hashes, stop_after_first_analysis, cap)
        self.driver.scenario = scenario
        try:
            return runner.walk()
        finally:
            self.router.abort()
            self.router.set_canary(None)
            self.driver.scenario = "idle"


class _Walk:
    """One canary's way through the steps (kept apart so Rehearsal stays about processes)."""

    def __init__(
        self,
        rehearsal: Rehearsal,
        scenario: str,
        canary: ModelServer,
        hashes: dict[str, str],
        stop_first: bool,
        cap: int,
    ) -> None:
        self.r = rehearsal
        self.scenario = scenario
        self.canary = canary
        self.hashes = hashes
        self.stop_first = stop_first
        self.events: list[Event] = []
        self.measurements: list[Measurement] = []
        self.background: AnalysisRun | None = None
        self.t0 = time.monotonic()
        self.scale = rehearsal.config.scale
        self.cap = cap

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, step: str, detail: str) -> None:
        self.events.append(Event(round(self.now(), 2), step, detail))

    def _tick(self, runs: list[AnalysisRun]) -> None:
        for run in runs:
            if run.running:
                self.measurements.extend(run.measure_due(self.r.prometheus.url, self.now()))

    def _hold(self, seconds: float | None, step_run: AnalysisRun | None) -> str | None:
        """Measure the active runs until ``seconds`` pass (or ``step_run`` ends); a verdict if one falls."""
        end = math.inf if seconds is None else self.now() + seconds
        while True:
            runs = [r for r in (self.background, step_run) if r is not None]
            self._tick(runs)
            for run in runs:
                if run.phase in ("Failed", "Error"):
                    return f"aborted: {run.name} analysis {run.phase} ({'; '.join(run.culprits())})"
                if run.phase == "Inconclusive":
                    return f"paused: {run.name} analysis Inconclusive ({'; '.join(run.culprits())})"
            if step_run is not None and not step_run.running:
                return None
            if self.now() >= end:
                return None
            due = min((r.next_due_s() for r in runs if r.running), default=math.inf)
            wake = min(due, end)
            if wake == math.inf:
                return None
            time.sleep(max(0.0, wake - self.now()))

    def _result(self, outcome: str, reason: str) -> RehearsalResult:
        traffic = {self.scenario: self.r.driver.snapshot(self.scenario)} if self.r.driver else {}
        return RehearsalResult(
            self.scenario,
            self.canary.version,
            outcome,
            reason,
            self.events,
            self.measurements,
            traffic,
            self.scale.seconds_per_minute,
            self.now(),
            self.r.driver.bars_in if self.r.driver else (),
        )

    def _abort(self, verdict: str) -> RehearsalResult:
        """The rollback path: all traffic back to stable, then check that stable alone serves it."""
        self.r.router.abort()
        self.note("abort", verdict)
        driver = self.r.driver
        assert driver is not None
        driver.scenario = f"{self.scenario}/after-abort"
        time.sleep(max(1.0, 3 * self.r.config.tick_s))
        served = driver.snapshot(f"{self.scenario}/after-abort")
        canary_hits = sum(served.get("canary", {}).values())
        stable_ok = served.get("stable", {}).get("200", 0)
        self.note(
            "rollback",
            f"traffic back on stable: {stable_ok} requests answered 200 by stable, {canary_hits} reached the canary",
        )
        result = self._result("aborted", verdict)
        result.traffic.update({f"{self.scenario}/after-abort": served})
        return result

    def walk(self) -> RehearsalResult:
        plan, router = self.r.plan, self.r.router
        router.abort()
        router.set_canary(self.canary.url)
        self.note(
            "start",
            f"canary v{self.canary.version} ({self.hashes['Latest']}) next to stable ({self.hashes['Stable']})",
        )
        for index, step in enumerate(plan.steps):
            if plan.background is not None and self.background is None and index >= plan.starting_step:
                self.background = start_run(
                    "background", plan.background, self.hashes, self.scale, 10**9, self.now()
                )
                self.note(f"step {index}", "background analysis starts")
            verdict = None
            kind = next(iter(step))
            if kind == "setCanaryScale":
                self.note(f"step {index}", f"setCanaryScale {step[kind]} (one canary server here)")
            elif kind == "setHeaderRoute":
                matches = list(step[kind].get("match") or [])
                router.set_matches(matches)
                routed = [
                    i.key for i in self.r.instruments if header_routes_to_canary(matches, HEADER, i.key)
                ]
                self.note(
                    f"step {index}",
                    f"setHeaderRoute {step[kind].get('name')}: canary gets {routed or 'nothing'}",
                )
            elif kind == "setWeight":
                router.set_weight(int(step[kind]))
                self.note(f"step {index}", f"setWeight {step[kind]}")
            elif kind == "pause":
                duration = step[kind].get("duration") if step[kind] else None
                if duration is None:
                    self.note(
                        f"step {index}", "pause without duration: a person promotes; the rehearsal goes on"
                    )
                    continue
                interval = (
                    min((m.interval_s for m in self.background.metrics), default=1.0)
                    if self.background
                    else 1.0
                )
                seconds = min(self.scale.seconds(duration), (self.cap - 0.5) * interval)
                self.note(f"step {index}", f"pause {duration} → {seconds:.1f}s under background analysis")
                verdict = self._hold(seconds, None)
                if verdict is None and self.stop_first and self.background is not None:
                    return self._result("passed-first-analysis", "stopped after the first analysis")
            elif kind == "analysis":
                run = start_run(
                    f"step {index}", plan.step_analyses[index], self.hashes, self.scale, self.cap, self.now()
                )
                self.note(f"step {index}", f"analysis {', '.join(plan.step_analyses[index].templates)}")
                verdict = self._hold(None, run)
                if verdict is None:
                    self.note(f"step {index}", f"analysis {run.phase}")
                    if self.stop_first:
                        return self._result("passed-first-analysis", "stopped after the first analysis")
            else:
                self.note(f"step {index}", f"{kind}: not rehearsed")
            if verdict is not None and verdict.startswith("paused"):
                self.note("pause", f"{verdict}: Argo Rollouts would wait for a person here")
                return self._result("paused", verdict)
            if verdict is not None:
                return self._abort(verdict)
        self.note("end", "all steps passed: the canary becomes stable")
        return self._result("promoted", "every step and analysis passed")


def write_reports(results: Sequence[RehearsalResult], folder: str | os.PathLike[str]) -> Path:
    """``<folder>/<scenario>.md`` and ``.json`` per result, and ``index.md``; returns the index path."""
    folder = Path(folder)
    rows = [
        "# Canary rehearsals",
        "",
        "| scenario | canary | outcome | reason |",
        "| --- | --- | --- | --- |",
    ]
    for result in results:
        write_text(folder / f"{result.scenario}.md", result.to_markdown())
        write_json(folder / f"{result.scenario}.json", result.to_dict())
        rows.append(
            f"| [{result.scenario}]({result.scenario}.md) | v{result.canary_version} | {result.outcome} | {result.reason} |"
        )
    write_text(folder / "index.md", "\n".join(rows) + "\n")
    return folder / "index.md"


def rehearsal_instruments(
    plan: RolloutPlan, candidates: Sequence[Instrument], others: int = 3
) -> list[Instrument]:
    """The canary instruments of the header route, plus ``others`` that stay on stable at that step."""
    matches = plan.header_matches()
    routed = [i for i in candidates if header_routes_to_canary(matches, HEADER, i.key)]
    rest = [i for i in candidates if i not in routed][:others]
    if matches and not routed:
        raise DeployError(
            "no configured instrument matches the Rollout's setHeaderRoute: nothing would reach the canary"
        )
    return routed + rest


@contextlib.contextmanager
def demo_models(folder: str | os.PathLike[str]) -> Iterator[dict[str, Path]]:
    """The four demo models (good, losing, slow, erroring) saved under ``folder``."""
    from autotrader.rehearsal.demo_models import KINDS, save

    folder = Path(folder)
    yield {kind: save(kind, folder / kind) for kind in KINDS}
