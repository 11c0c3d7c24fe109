"""The data plane of the e2e cluster, stood in for faithfully: what a kubelet, kube-proxy and Envoy would do.

- **Kubelet:** for every pod kwok marks Ready, a real ``autotrader serve`` process runs the pod's own
  command and args, with the pod's environment resolved from its ConfigMap and Secret references (so the
  pinned ``MODEL_URI`` comes from the API server). Host and port are the only rewrite: a loopback port
  instead of the pod's network namespace. A pod that goes away takes its process with it. Job pods run
  their container command to completion and the pod's phase is set from the exit code (kwok's own
  "every Job succeeds" stage is not loaded).
- **Prometheus service discovery:** each ready server is a file_sd target labelled from its pod
  (``service``, ``namespace``, ``pod``, ``rollouts_pod_template_hash``, ``role``), as the relabelling of
  Kubernetes SD would label it.
- **kube-proxy + DNS:** ``http://<service>:<port>`` in a container's args or env is a loopback proxy that
  forwards to a ready pod matching the Service's live selector (the controller edits the selectors).
- **Envoy:** ``MeshRouter`` reads the live VirtualService and DestinationRule on every refresh and routes
  each request as Istio would: the first http route whose header match fits, else ``primary``; a weighted
  pick among its destinations; the subset's labels (stamped by the controller with the pod-template hash)
  choose the pods.
"""

from __future__ import annotations

import http.server
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from autotrader.processes import free_port, stop_process
from autotrader.rehearsal.servers import PrometheusServer

from .cluster import Cluster

BIN = Path(sys.executable).parent
SERVICE_URL = re.compile(r"http://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _owner_kind(pod: dict[str, Any]) -> str | None:
    owners = pod["metadata"].get("ownerReferences") or []
    return owners[0]["kind"] if owners else None


@dataclass
class PodProcess:
    """A pod's container, run on this machine."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    root: Path
    proc: subprocess.Popen[bytes]
    port: int | None = None
    ready: bool = False
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


class ServiceProxy:
    """One Service's ClusterIP, on loopback: each request goes to a ready endpoint of the live selector."""

    def __init__(self, plane: DataPlane, service: str) -> None:
        self.plane = plane
        self.service = service
        self.port = free_port()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                urls = proxy.plane.service_endpoints(proxy.service)
                if not urls:
                    self.send_error(503, f"no ready endpoints for service {proxy.service}")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                try:
                    upstream = httpx.request(
                        self.command,
                        random.choice(urls) + self.path,
                        content=body,
                        headers=headers,
                        timeout=30,
                    )
                except httpx.HTTPError as exc:
                    self.send_error(502, str(exc))
                    return
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name=f"svc-{service}").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DataPlane:
    """Runs the namespace's pods as processes, feeds Prometheus their targets, proxies Services."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        workdir: Path,
        prometheus: PrometheusServer,
        files: dict[str, Path] | None = None,
    ) -> None:
        self.cluster = cluster
        self.api = cluster.api
        self.namespace = namespace
        self.workdir = workdir
        self.prometheus = prometheus
        self.files = (
            files or {}
        )  # path inside the image → file on this machine (e.g. /etc/autotrader/params.yaml)
        self.servers: dict[str, PodProcess] = {}
        self.jobs: dict[str, PodProcess] = {}
        self.job_results: dict[str, int] = {}
        self.proxies: dict[str, ServiceProxy] = {}
        self._services: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"dataplane-{namespace}")
        self.errors: list[str] = []

    def start(self) -> DataPlane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            for proc in [*self.servers.values(), *self.jobs.values()]:
                proc.stop()
            for proxy in self.proxies.values():
                proxy.stop()

    # --- what the tests ask ---------------------------------------------------------------------------

    def endpoints(self, selector: dict[str, str]) -> list[str]:
        """URLs of ready servers whose pod labels include ``selector``."""
        with self._lock:
            return [
                s.url
                for s in self.servers.values()
                if s.ready and all(s.labels.get(k) == v for k, v in selector.items())
            ]

    def service_endpoints(self, service: str) -> list[str]:
        selector = self._services.get(service)
        if selector is None:
            return []
        return self.endpoints(selector)

    def service_url(self, service: str) -> str:
        with self._lock:
            if service not in self.proxies:
                self.proxies[service] = ServiceProxy(self, service)
            return self.proxies[service].url

    def running_versions(self, pod_hash: str) -> set[str]:
        """The MODEL_VERSIONs that ready servers of the ReplicaSet with ``pod_hash`` serve."""
        with self._lock:
            return {
                s.labels.get("__model_version", "")
                for s in self.servers.values()
                if s.ready and s.labels.get("rollouts-pod-template-hash") == pod_hash
            }

    # --- the loop --------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.25)

    def _sync(self) -> None:
        ns = self.namespace
        services = self.api.items(f"/api/v1/namespaces/{ns}/services")
        self._services = {s["metadata"]["name"]: dict(s["spec"].get("selector") or {}) for s in services}
        pods = self.api.items(f"/api/v1/namespaces/{ns}/pods")
        seen = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            deleting = pod["metadata"].get("deletionTimestamp") is not None
            if _owner_kind(pod) == "Job":
                if pod["status"].get("phase") == "Running" and uid not in self.jobs and not deleting:
                    self._start_job(pod)
                continue
            running = pod["status"].get("phase") == "Running" and pod["status"].get("podIP")
            if running and not deleting:
                if uid not in self.servers:
                    self._start_server(pod)
                self._refresh_server(uid, pod)
            elif uid in self.servers:
                self._stop_server(uid)
        for uid in [u for u in self.servers if u not in seen]:
            self._stop_server(uid)
        self._finish_jobs()

    # --- kubelet stand-in ------------------------------------------------------------------------------

    def _env(self, pod: dict[str, Any], container: dict[str, Any], root: Path) -> dict[str, str]:
        ns = self.namespace
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "configmaps" if "configMapRef" in source else "secrets"
            obj = self.api.find(f"/api/v1/namespaces/{ns}/{kind}/{ref['name']}")
            if obj is None:
                if ref.get("optional"):
                    continue
                raise RuntimeError(f"pod {pod['metadata']['name']}: {kind} {ref['name']} not found")
            env.update(_decode(obj, kind))
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), var["value"])
                continue
            ref = (var.get("valueFrom") or {}).get("secretKeyRef") or (var.get("valueFrom") or {}).get(
                "configMapKeyRef"
            )
            if ref is None:
                continue
            kind = "secrets" if "secretKeyRef" in var["valueFrom"] else "configmaps"
            obj = self.api.find(f"/api/v1/namespaces/{ns}/{kind}/{ref['name']}")
            data = _decode(obj, kind) if obj else {}
            if ref["key"] in data:
                env[var["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                raise RuntimeError(
                    f"pod {pod['metadata']['name']}: {kind} {ref['name']} has no key {ref['key']}"
                )
        # The container's filesystem: /tmp is the pod's own folder; HOME=/tmp follows it.
        env = {k: self._rewrite(v, root) for k, v in env.items()}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODEL_", "KUBECONFIG"))}
        base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
        return {**base, **env}

    def _rewrite(self, text: str, root: Path) -> str:
        """Image paths → this machine's files; /tmp → the pod's tmp; service URLs → loopback proxies."""
        for inside, outside in self.files.items():
            if text == inside or text.startswith(inside):
                return str(outside) + text[len(inside) :]
        if text == "/tmp" or text.startswith("/tmp/"):
            return str(root / "tmp") + text[len("/tmp") :]
        return SERVICE_URL.sub(
            lambda m: self.service_url(m.group(1)) if m.group(1) in self._services else m.group(0), text
        )

    def _spawn(self, pod: dict[str, Any], argv_rewrite: Any) -> PodProcess:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        root = self.workdir / "pods" / meta["name"]
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        env = self._env(pod, container, root)
        args = [
            VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), a) for a in container.get("args") or []
        ]
        args = [self._rewrite(a, root) for a in args]
        command = list(container.get("command") or [])
        program = str(BIN / command[0]) if command and (BIN / command[0]).exists() else command[0]
        argv, port = argv_rewrite([program, *command[1:], *args])
        log = root / "container.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
        labels = dict(meta.get("labels") or {})
        labels["__model_version"] = env.get("MODEL_VERSION", "")
        return PodProcess(self.namespace, meta["name"], meta["uid"], labels, root, proc, port, log=log)

    def _start_server(self, pod: dict[str, Any]) -> None:
        def rewrite(argv: list[str]) -> tuple[list[str], int]:
            port = free_port()
            out = list(argv)
            for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
                if flag in out:
                    out[out.index(flag) + 1] = value
                else:
                    out += [flag, value]
            return out, port

        server = self._spawn(pod, rewrite)
        with self._lock:
            self.servers[server.uid] = server

    def _refresh_server(self, uid: str, pod: dict[str, Any]) -> None:
        server = self.servers[uid]
        labels = dict(pod["metadata"].get("labels") or {})
        labels["__model_version"] = server.labels.get("__model_version", "")
        changed = labels != server.labels
        server.labels = labels
        if server.proc.poll() is not None:
            self.errors.append(f"server of pod {server.name} exited with {server.proc.returncode}")
            self._stop_server(uid)
            return
        if not server.ready:
            try:
                server.ready = httpx.get(f"{server.url}/readyz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return
            changed = server.ready
        if server.ready and not _ready(pod):
            self._set_ready(pod, True)  # the readiness probe passed: what the kubelet reports
        if changed and server.ready:
            self.prometheus.add_target(f"127.0.0.1:{server.port}", self._target_labels(server))

    def _set_ready(self, pod: dict[str, Any], ready: bool) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        flag = "True" if ready else "False"
        self.api.patch_status(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}",
            {
                "conditions": [
                    {"type": "Ready", "status": flag, "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    {**c, "ready": ready} for c in pod["status"].get("containerStatuses") or []
                ],
            },
        )

    def _target_labels(self, server: PodProcess) -> dict[str, str]:
        labels = {
            "service": "autotrader-serving",
            "namespace": server.namespace,
            "pod": server.name,
            "rollouts_pod_template_hash": server.labels.get("rollouts-pod-template-hash", ""),
        }
        if "role" in server.labels:
            labels["role"] = server.labels["role"]
        return labels

    def _stop_server(self, uid: str) -> None:
        with self._lock:
            server = self.servers.pop(uid, None)
        if server is None:
            return
        if server.port is not None:
            self.prometheus.remove_target(f"127.0.0.1:{server.port}")
        server.stop()

    def _start_job(self, pod: dict[str, Any]) -> None:
        job = self._spawn(pod, lambda argv: (argv, None))
        self.jobs[job.uid] = job

    def _finish_jobs(self) -> None:
        for uid, job in list(self.jobs.items()):
            code = job.proc.poll()
            if code is None or uid in self.job_results:
                continue
            self.job_results[uid] = code
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            name = self._container_name(job)
            self.api.patch_status(
                f"/api/v1/namespaces/{self.namespace}/pods/{job.name}",
                {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                    "containerStatuses": [
                        {
                            "name": name,
                            "image": "autotrader",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "started": False,
                            "state": {
                                "terminated": {
                                    "exitCode": code,
                                    "reason": "Completed" if code == 0 else "Error",
                                    "startedAt": now,
                                    "finishedAt": now,
                                }
                            },
                        }
                    ],
                },
            )

    def _container_name(self, job: PodProcess) -> str:
        pod = self.api.get(f"/api/v1/namespaces/{self.namespace}/pods/{job.name}")
        return pod["spec"]["containers"][0]["name"]


def _decode(obj: dict[str, Any] | None, kind: str) -> dict[str, str]:
    import base64

    if obj is None:
        return {}
    data = obj.get("data") or {}
    if kind == "secrets":
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
    return dict(data)


# --- Envoy stand-in --------------------------------------------------------------------------------


def header_match(match: dict[str, Any], headers: dict[str, str]) -> bool:
    """An Istio HTTPMatchRequest's ``headers`` (exact / prefix / regex, RE2 full match) against a request."""
    for name, spec in (match.get("headers") or {}).items():
        value = headers.get(name.lower())
        if value is None:
            return False
        if "exact" in spec and value != spec["exact"]:
            return False
        if "prefix" in spec and not value.startswith(spec["prefix"]):
            return False
        if "regex" in spec and not re.fullmatch(spec["regex"], value):
            return False
    return True


class MeshRouter:
    """Routes a request as the sidecar would, from the live VirtualService and DestinationRule."""

    def __init__(self, plane: DataPlane, virtual_service: str, destination_rule: str, seed: int = 0) -> None:
        self.plane = plane
        self.vs_path = (
            f"/apis/networking.istio.io/v1/namespaces/{plane.namespace}/virtualservices/{virtual_service}"
        )
        self.dr_path = (
            f"/apis/networking.istio.io/v1/namespaces/{plane.namespace}/destinationrules/{destination_rule}"
        )
        self._rng = random.Random(seed)
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self._cache: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._stop = threading.Event()
        self._refresh()
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="mesh-router-config")
        self._thread.start()

    def _refresh(self) -> None:
        try:
            objects = (self.plane.api.get(self.vs_path), self.plane.api.get(self.dr_path))
        except httpx.HTTPError:
            return  # keep routing on the last config
        with self._lock:
            self._cache = objects

    def _refresh_loop(self) -> None:
        """Like a sidecar, take config updates asynchronously (every 0.25 s): a slow or erroring API server
        delays an update, never a request (fetching on the request path stalled every instrument's traffic
        for the API client's 10 s timeout per try)."""
        while not self._stop.wait(0.25):
            self._refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _objects(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The last routing config seen (None before the first answer)."""
        with self._lock:
            return self._cache

    def route(self, key: str) -> tuple[str, str | None]:
        """(subset, URL) for a request carrying ``x-autotrader-instrument: key``; URL None = 503 no upstream."""
        from autotrader.rehearsal.traffic import HEADER

        objects = self._objects()
        if objects is None:
            return "none", None
        vs, dr = objects
        headers = {HEADER: key}
        chosen = None
        for rule in vs["spec"].get("http") or []:
            matches = rule.get("match")
            if not matches or any(header_match(m, headers) for m in matches):
                chosen = rule
                break
        if chosen is None:
            return "none", None
        destinations = chosen.get("route") or []
        weights = [d.get("weight", 100 if len(destinations) == 1 else 0) for d in destinations]
        if sum(weights) <= 0:
            return "none", None
        with self._lock:
            destination = self._rng.choices(destinations, weights=weights)[0]["destination"]
        subset = destination.get("subset", "")
        labels = next(
            (s.get("labels") or {} for s in dr["spec"].get("subsets") or [] if s["name"] == subset), {}
        )
        urls = self.plane.endpoints(labels)
        if not urls:
            return subset, None
        return subset, urls[next(self._rr) % len(urls)]


def copy_into(files: dict[str, Path], root: Path) -> dict[str, Path]:
    """Copy files that the image would ship (e.g. params.yaml) under ``root``: image path → local path."""
    out = {}
    for inside, source in files.items():
        target = root / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        out[inside] = target
    return out
