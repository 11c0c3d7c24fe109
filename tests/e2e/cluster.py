"""A real Kubernetes control plane on loopback, with the real Argo Rollouts controller, for the e2e tests.

What runs (each an upstream program built from its Go module by ``scripts/build_e2e_tools.sh``):
etcd, kube-apiserver (token auth, RBAC), kube-controller-manager (ReplicaSets, Jobs, namespaces, service
accounts, endpoints), kube-scheduler, kwok (one fake node; pods become Running without a container
runtime; e2e/kwok-stages.yaml leaves Ready to the harness's readiness probe), and ``rollouts-controller``. The CRDs come from the upstream schema folder
(``../shared/schemas``): Argo Rollouts' and Istio's.

What does not: no kubelet, no container runtime, no CNI, no kube-proxy, no DNS, no Envoy. The data plane
stands in for them (tests/e2e/dataplane.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from autotrader.gitops.schemas import find_schema_dir
from autotrader.processes import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build_e2e_tools.sh"
TOOLS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "rollouts-controller",
    "kubectl-argo-rollouts",
    "kwok",
    "argo",
)
NODE = "kwok-node-0"


class ToolsMissing(RuntimeError):
    """The harness programs are not built and cannot be built here (no Go)."""


def tools_dir(build: bool = True) -> Path:
    """The folder of built harness programs; builds what is missing when ``build`` (minutes, cold).

    ``$AUTOTRADER_E2E_BIN`` names a folder of already-built programs instead (nothing is built then).
    """
    if os.environ.get("AUTOTRADER_E2E_BIN"):
        return Path(os.environ["AUTOTRADER_E2E_BIN"])
    args = ["bash", str(BUILD_SCRIPT)] + ([] if build else ["--print-dir"])
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode == 3:
        raise ToolsMissing(done.stderr.strip())
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


class Process:
    """One program of the cluster, its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, grace=15)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy and return it; a TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, KeyError, IndexError, RuntimeError) as exc:
            last, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not reached in {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


class Api:
    """The few Kubernetes API calls the harness makes itself (kubectl does the applying)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, verify=False, timeout=10.0
        )

    def get(self, path: str) -> dict[str, Any]:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def find(self, path: str) -> dict[str, Any] | None:
        response = self.client.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def items(self, path: str, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else None
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()["items"]

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def patch_status(self, path: str, status: dict[str, Any]) -> None:
        """A strategic merge patch of ``status``: pod conditions merge by type, container statuses by name."""
        response = self.client.patch(
            f"{path}/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        response.raise_for_status()

    def close(self) -> None:
        self.client.close()


class Cluster:
    """Start with ``start()``, stop with ``stop()`` (or use as a context manager)."""

    def __init__(self, workdir: Path, bin_dir: Path) -> None:
        self.workdir = workdir
        self.bin = bin_dir
        self.logs = workdir / "logs"
        self.token = secrets.token_hex(16)
        self.kubeconfig = workdir / "kubeconfig"
        self.processes: dict[str, Process] = {}
        self.api: Api | None = None
        self.started_s: dict[str, float] = {}

    # --- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        t0 = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._start("kube-controller-manager", self._controller_manager_args())
            self._start("kube-scheduler", self._scheduler_args())
            self._start_kwok()
            self._install_crds()
            self._start_rollouts_controller()
        except BaseException:
            self.stop()
            raise
        self.started_s["total"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        if self.api is not None:
            self.api.close()

    def _start(self, name: str, argv: list[str]) -> Process:
        proc = Process(name, [str(self.bin / name), *argv], self.logs)
        self.processes[name] = proc
        return proc

    def check_alive(self) -> None:
        """Fail loudly if a component died (its log tail in the message)."""
        for name, proc in self.processes.items():
            if not proc.alive():
                raise RuntimeError(f"{name} exited with {proc.proc.returncode}:\n{proc.tail()}")

    # --- components ----------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._start(
            "etcd",
            [
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=e2e=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_for(
            lambda: httpx.get(f"{self.etcd_url}/health", timeout=2).json()["health"] == "true", 60, "etcd"
        )

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        key = pki / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pki / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (pki / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        port = free_port()
        self.api_url = f"https://127.0.0.1:{port}"
        self._start(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={pki}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={key}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--v=1",
            ],
        )
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "e2e", "cluster": {"server": self.api_url, "insecure-skip-tls-verify": True}}
                    ],
                    "users": [{"name": "admin", "user": {"token": self.token}}],
                    "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
                    "current-context": "e2e",
                }
            )
        )
        self.api = Api(self.api_url, self.token)
        wait_for(lambda: self.api.client.get("/readyz").status_code == 200, 120, "kube-apiserver /readyz")

    def _component_args(self) -> list[str]:
        """What kube-controller-manager and kube-scheduler share: the admin kubeconfig, no leader election."""
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ]

    def _controller_manager_args(self) -> list[str]:
        return [
            *self._component_args(),
            f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
            "--use-service-account-credentials=false",
            "--controllers=*",
        ]

    def _scheduler_args(self) -> list[str]:
        return self._component_args()

    def _start_kwok(self) -> None:
        self._start(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                # the node's heartbeat is a Lease renewed every 10 s, as a kubelet's: without one the node
                # lifecycle controller marks the node NotReady after its grace period (50 s), marks every
                # pod NotReady, and the Rollout controller, seeing no available canary, removes the
                # header route for good (trafficrouting.go: RemoveManagedRoutes)
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.10",
                f"--server-address=127.0.0.1:{free_port()}",
                f"--config={REPO / 'e2e' / 'kwok-stages.yaml'}",
            ],
        )
        self.api.create(
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": NODE,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": NODE,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                },
            },
        )

        def node_ready() -> bool:
            node = self.api.get(f"/api/v1/nodes/{NODE}")
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )

        wait_for(node_ready, 60, "kwok node Ready")
        wait_for(
            lambda: self.api.find(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"),
            60,
            "kwok renewing the node's heartbeat Lease",
        )

    def _install_crds(self) -> None:
        schemas = find_schema_dir(REPO)
        files = [
            *sorted((schemas / "argo-rollouts").glob("*-crd.yaml")),
            *sorted((schemas / "istio").glob("*-crd.yaml")),
            # The controller also watches Experiments, a CRD ../shared/schemas does not hold: the build
            # copies it from the argo-rollouts module the controller is built from.
            self.bin / "experiment-crd.yaml",
        ]
        self.kubectl("apply", "--server-side", *(arg for f in files for arg in ("-f", str(f))))
        names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))

    def _start_rollouts_controller(self) -> None:
        self.rollouts_metrics = free_port()
        self._start(
            "rollouts-controller",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                f"--metricsport={self.rollouts_metrics}",
                f"--healthzPort={free_port()}",
                "--istio-api-version=v1",
                # the notifications config lives in each serving namespace (rollouts/base)
                "--self-service-notification-enabled",
                "--loglevel=info",
            ],
        )
        wait_for(
            lambda: (
                httpx.get(f"http://127.0.0.1:{self.rollouts_metrics}/metrics", timeout=2).status_code == 200
            ),
            60,
            "rollouts-controller metrics",
        )

    # --- clients -------------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / "kubectl"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()[-3000:]}"
            )
        return done

    def apply(self, manifests: str) -> None:
        """``kubectl apply --server-side`` of rendered YAML: what Argo CD's sync does with these objects."""
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=argocd-controller",
            "-f",
            "-",
            stdin=manifests,
        )

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)

    def events(self, namespace: str, involved: str, since: float = 0.0, kind: str = "Rollout") -> list[str]:
        """Events about the ``kind`` named ``involved``, last seen at or after ``since`` (epoch s), oldest
        first, as 'Reason: message'."""
        items = self.api.items(f"/api/v1/namespaces/{namespace}/events")
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))
        mine = [
            e
            for e in items
            if e.get("involvedObject", {}).get("name") == involved
            and e.get("involvedObject", {}).get("kind") == kind
            and (e.get("lastTimestamp") or e.get("eventTime") or "") >= cutoff
        ]
        mine.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [f"{e.get('reason')}: {e.get('message')}" for e in mine]


def kubectl_binary_on_path() -> str | None:
    return shutil.which("kubectl")


@contextlib.contextmanager
def running_cluster(workdir: Path, bin_dir: Path):  # type: ignore[no-untyped-def]
    cluster = Cluster(workdir, bin_dir).start()
    try:
        yield cluster
    finally:
        cluster.stop()
