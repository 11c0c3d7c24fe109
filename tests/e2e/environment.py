"""One GitOps environment on the e2e cluster: a scratch clone of the repo's delivery files, its namespace,
its data plane, and the commands a person runs (``autotrader promote|rollback``, then what Argo CD's sync
does: render the overlay and ``kubectl apply --server-side``)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotrader.gitops.schemas import SCHEMA_DIR_ENV, find_schema_dir
from autotrader.rehearsal.servers import PrometheusServer

from .cluster import REPO, Cluster, wait_for
from .dataplane import DataPlane, copy_into

ROLLOUT = "autotrader-serving"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@dataclass
class RouteState:
    """What the VirtualService said at one moment: the header route's regex (or None) and the weights."""

    at: float
    header_regex: str | None
    stable: int
    canary: int


class Environment:
    def __init__(
        self,
        env: str,
        overlay: str,
        cluster: Cluster,
        prometheus: PrometheusServer,
        tracking_uri: str,
        workdir: Path,
    ) -> None:
        self.env = env
        self.cluster = cluster
        self.prometheus = prometheus
        self.tracking_uri = tracking_uri
        self.workdir = workdir
        self.repo = workdir / "repo"
        self._clone()
        self.overlay = self.repo / overlay
        settings = self.repo / "e2e" / "overlays" / "production" / "e2e-settings.yaml"
        text = settings.read_text().replace("http://127.0.0.1:9090", prometheus.url)
        settings.write_text(text)
        self.namespace = yaml.safe_load(
            (self.repo / "rollouts" / "overlays" / env / "kustomization.yaml").read_text()
        )["namespace"]
        self._create_namespace()
        files = copy_into({"/etc/autotrader/params.yaml": self.repo / "params.yaml"}, workdir / "image")
        self.plane = DataPlane(cluster, self.namespace, workdir / "plane", prometheus, files).start()
        self.traffic: Any = None  # the TrafficDriver, once a test drives traffic (for diagnose())

    # --- set-up ------------------------------------------------------------------------------------------

    def _clone(self) -> None:
        self.repo.mkdir(parents=True)
        for name in ("rollouts", "e2e/overlays"):
            shutil.copytree(REPO / name, self.repo / name)
        shutil.copy2(REPO / "params.yaml", self.repo / "params.yaml")
        _git(self.repo, "init", "-q", "-b", "main")
        _git(self.repo, "add", "-A")
        _git(
            self.repo,
            "-c",
            "user.email=e2e@autotrader.invalid",
            "-c",
            "user.name=e2e",
            "commit",
            "-qm",
            "init",
        )

    def _create_namespace(self) -> None:
        api = self.cluster.api
        api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
        )
        wait_for(
            lambda: api.find(f"/api/v1/namespaces/{self.namespace}/serviceaccounts/default"),
            60,
            f"default ServiceAccount in {self.namespace}",
        )
        # The Secret the pods read MLFLOW_TRACKING_URI from (in a cluster: created out of band, never in git).
        api.create(
            f"/api/v1/namespaces/{self.namespace}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "autotrader-mlflow"},
                "data": {"tracking-uri": base64.b64encode(self.tracking_uri.encode()).decode()},
            },
        )

    def close(self) -> None:
        self.plane.stop()

    # --- what a person runs --------------------------------------------------------------------------------

    def autotrader(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.update(
            {
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                SCHEMA_DIR_ENV: str(find_schema_dir(REPO)),
                "GIT_AUTHOR_NAME": "e2e",
                "GIT_AUTHOR_EMAIL": "e2e@autotrader.invalid",
                "GIT_COMMITTER_NAME": "e2e",
                "GIT_COMMITTER_EMAIL": "e2e@autotrader.invalid",
            }
        )
        cli = "import sys; from autotrader.cli import main; sys.exit(main())"
        done = subprocess.run(
            [sys.executable, "-c", cli, *args],
            cwd=self.repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise AssertionError(f"autotrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def promote(self, version: str) -> None:
        self.autotrader("promote", "--env", self.env, "--version", version, "--commit")

    def rollback(self) -> None:
        self.autotrader("rollback", "--env", self.env)

    def pinned(self) -> str:
        text = (self.repo / "rollouts" / "overlays" / self.env / "model.env").read_text()
        return dict(line.split("=", 1) for line in text.split())["MODEL_VERSION"]

    def render(self) -> str:
        return self.cluster.kubectl("kustomize", str(self.overlay)).stdout

    def application(self) -> dict[str, Any]:
        return yaml.safe_load(
            (self.repo / "rollouts" / "argocd" / f"application-{self.env}.yaml").read_text()
        )

    def sync(self) -> None:
        """What Argo CD's sync does with the committed overlay, per this environment's Application: a
        server-side apply of the rendered objects in which every ``ignoreDifferences`` field of an object
        that already exists keeps its live value (``RespectIgnoreDifferences=true``)."""
        app = self.application()
        options = set(app["spec"]["syncPolicy"].get("syncOptions") or [])
        assert {"ServerSideApply=true", "RespectIgnoreDifferences=true"} <= options, options
        objects = [o for o in yaml.safe_load_all(self.render()) if o]
        for obj in objects:
            respect_ignored(obj, app["spec"].get("ignoreDifferences") or [], self._live(obj))
        self.cluster.apply(yaml.safe_dump_all(objects, sort_keys=False))

    def _live(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        group, _, version = obj["apiVersion"].rpartition("/")
        plural = {"Service": "services", "Rollout": "rollouts"}.get(obj["kind"])
        if plural is None:
            return None
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        return self.cluster.api.find(f"{base}/namespaces/{self.namespace}/{plural}/{obj['metadata']['name']}")

    # --- what the API server says --------------------------------------------------------------------------

    def rollout(self) -> dict[str, Any]:
        return self.cluster.api.get(
            f"/apis/argoproj.io/v1alpha1/namespaces/{self.namespace}/rollouts/{ROLLOUT}"
        )

    def analysis_runs(self, pod_hash: str | None = None) -> list[dict[str, Any]]:
        selector = f"rollouts-pod-template-hash={pod_hash}" if pod_hash else None
        return self.cluster.api.items(
            f"/apis/argoproj.io/v1alpha1/namespaces/{self.namespace}/analysisruns", selector
        )

    def replica_sets(self) -> list[dict[str, Any]]:
        return self.cluster.api.items(f"/apis/apps/v1/namespaces/{self.namespace}/replicasets")

    def replica_set(self, pod_hash: str) -> dict[str, Any]:
        found = [
            rs
            for rs in self.replica_sets()
            if rs["metadata"]["labels"].get("rollouts-pod-template-hash") == pod_hash
        ]
        assert len(found) == 1, f"ReplicaSets with hash {pod_hash}: {len(found)}"
        return found[0]

    def service(self, name: str) -> dict[str, Any]:
        return self.cluster.api.get(f"/api/v1/namespaces/{self.namespace}/services/{name}")

    def virtual_service(self) -> dict[str, Any]:
        return self.cluster.api.get(
            f"/apis/networking.istio.io/v1/namespaces/{self.namespace}/virtualservices/{ROLLOUT}"
        )

    def wait_rollout(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            self.cluster.check_alive()
            rollout = self.rollout()
            return rollout if predicate(rollout) else None

        try:
            return wait_for(check, timeout, what, interval=0.5)
        except TimeoutError as exc:
            status = self.rollout().get("status", {})
            events = "\n  ".join(self.cluster.events(self.namespace, ROLLOUT)[-15:])
            raise AssertionError(
                f"{exc}\nstatus: {json.dumps(status)[:3000]}\nevents:\n  {events}\n"
                f"{self.diagnose(status.get('currentPodHash'))}"
            ) from exc

    def diagnose(self, pod_hash: str | None) -> str:
        """What a person on call would look at when a rollout is stuck: every measurement of the pod hash's
        AnalysisRuns, what Prometheus holds for its pods (scrape health, request counts), the data plane's
        servers and errors, and where the traffic went."""
        lines: list[str] = []
        try:
            for run in self.analysis_runs(pod_hash) if pod_hash else []:
                lines.append(f"AnalysisRun {run['metadata']['name']}: {run.get('status', {}).get('phase')}")
                for metric in run.get("status", {}).get("metricResults") or []:
                    for m in metric.get("measurements") or []:
                        lines.append(
                            f"  {metric['name']} {m.get('startedAt')} {m.get('phase')} "
                            f"value={m.get('value')} {m.get('message') or ''}".rstrip()
                        )
        except Exception as exc:  # a diagnosis never hides the failure it describes
            lines.append(f"AnalysisRuns unreadable: {exc}")
        try:
            import httpx

            targets = httpx.get(f"{self.prometheus.url}/api/v1/targets", timeout=5).json()["data"]
            for t in targets.get("activeTargets", []):
                labels = t.get("labels", {})
                lines.append(
                    f"target {labels.get('pod')} hash={labels.get('rollouts_pod_template_hash')} "
                    f"health={t.get('health')} lastScrape={t.get('lastScrape')} "
                    f"duration={t.get('lastScrapeDuration')} error={t.get('lastError')!r}"
                )
            from autotrader.rehearsal.analysis import query_prometheus

            if pod_hash:
                for what in ("autotrader_requests_total", "autotrader_strategy_returns_total"):
                    found = query_prometheus(
                        self.prometheus.url,
                        f'sum by (route) ({what}{{rollouts_pod_template_hash="{pod_hash}"}})',
                    )
                    lines.append(f"prometheus {what}{{hash={pod_hash}}}: {found}")
        except Exception as exc:
            lines.append(f"Prometheus unreadable: {exc}")
        try:
            route = route_state(self.virtual_service())
            lines.append(
                f"VirtualService now: header route {route.header_regex!r}, weights {route.stable}/{route.canary}"
            )
            for pod in self.cluster.api.items(f"/api/v1/namespaces/{self.namespace}/pods"):
                ready = [c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"]
                lines.append(
                    f"pod {pod['metadata']['name']} Ready={ready[0]['status'] if ready else None} "
                    f"since {ready[0].get('lastTransitionTime') if ready else None}"
                )
            events = self.cluster.api.items(f"/api/v1/namespaces/{self.namespace}/events")
            node_not_ready = sum(1 for e in events if e.get("reason") == "NodeNotReady")
            lines.append(f"NodeNotReady events on pods (the node missed its heartbeat): {node_not_ready}")
        except Exception as exc:
            lines.append(f"API unreadable: {exc}")
        with self.plane._lock:
            for server in self.plane.servers.values():
                lines.append(
                    f"server {server.name} hash={server.labels.get('rollouts-pod-template-hash')} "
                    f"ready={server.ready} exit={server.proc.poll()} port={server.port}"
                )
        lines += [f"plane error: {e}" for e in self.plane.errors[-10:]]
        if self.traffic is not None:
            lines.append(f"traffic by path, target and status: {json.dumps(self.traffic.by_path())}")
            lines.append(f"instruments out of bars (client stopped): {self.traffic.exhausted}")
        return "diagnosis:\n  " + "\n  ".join(lines)

    def wait_healthy_on(self, version: str, timeout: float = 300) -> dict[str, Any]:
        """Healthy, fully promoted, and the stable ReplicaSet's ready servers all run ``version``."""

        def done(r: dict[str, Any]) -> bool:
            s = r.get("status", {})
            return (
                s.get("phase") == "Healthy"
                and s.get("stableRS") == s.get("currentPodHash")
                and r["metadata"].get("generation") == int(s.get("observedGeneration") or 0)
                and not s.get("abort")
                and self.plane.running_versions(s.get("stableRS", "")) == {version}
            )

        return self.wait_rollout(done, timeout, f"{self.env} Healthy on version {version}")

    @contextlib.contextmanager
    def route_recorder(self) -> Iterator[list[RouteState]]:
        """Every change of the VirtualService's routing, timestamped (wall clock), while the block runs."""
        states: list[RouteState] = []
        stop = threading.Event()

        def record() -> None:
            while not stop.is_set():
                try:
                    state = route_state(self.virtual_service())
                except Exception:
                    stop.wait(0.2)
                    continue
                if not states or (state.header_regex, state.stable, state.canary) != (
                    states[-1].header_regex,
                    states[-1].stable,
                    states[-1].canary,
                ):
                    states.append(state)
                stop.wait(0.2)

        thread = threading.Thread(target=record, daemon=True)
        thread.start()
        try:
            yield states
        finally:
            stop.set()
            thread.join(timeout=5)


def respect_ignored(obj: dict[str, Any], rules: list[dict[str, Any]], live: dict[str, Any] | None) -> None:
    """Argo CD's RespectIgnoreDifferences: an ignored field of an existing object is applied as it is live."""
    if live is None:
        return
    group = obj["apiVersion"].rpartition("/")[0]
    for rule in rules:
        if rule.get("group", "") != group or rule.get("kind") != obj["kind"]:
            continue
        if rule.get("name") not in (None, obj["metadata"]["name"]):
            continue
        for pointer in rule.get("jsonPointers") or []:
            keys = pointer.strip("/").split("/")
            source, target = live, obj
            for key in keys[:-1]:
                source, target = (source or {}).get(key), target.setdefault(key, {})
            if isinstance(source, dict) and keys[-1] in source:
                target[keys[-1]] = source[keys[-1]]
            else:
                target.pop(keys[-1], None)


def route_state(vs: dict[str, Any]) -> RouteState:
    regex = None
    stable = canary = -1
    for http in vs["spec"].get("http") or []:
        if http.get("name") == "canary-instruments":
            for match in http.get("match") or []:
                for spec in (match.get("headers") or {}).values():
                    regex = spec.get("regex") or spec.get("exact") or spec.get("prefix")
        if http.get("name") == "primary":
            for dest in http.get("route") or []:
                subset = dest["destination"].get("subset")
                if subset == "stable":
                    stable = int(dest.get("weight", 0))
                elif subset == "canary":
                    canary = int(dest.get("weight", 0))
    return RouteState(time.time(), regex, stable, canary)


def parse_time(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
