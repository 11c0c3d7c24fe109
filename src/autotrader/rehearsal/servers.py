"""The processes a rehearsal runs on loopback: model servers (``autotrader serve``) and Prometheus."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from autotrader.atomic import write_json, write_text
from autotrader.errors import DeployError
from autotrader.processes import AUTOTRADER, ServerProcess, free_port, http_ok
from autotrader.rehearsal.analysis import query_prometheus

PROMETHEUS_HINT = "install Prometheus (Debian: apt-get install prometheus)"


def find_prometheus() -> str:
    """The Prometheus binary; a DeployError that says how to install it when missing."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if not found:
        raise DeployError(f"no prometheus binary on PATH: {PROMETHEUS_HINT}")
    return found


class ModelServer:
    """``autotrader serve`` for one model folder on a free loopback port."""

    def __init__(self, model_dir: str | os.PathLike[str], version: str, log_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self.version = str(version)
        self.port = free_port()
        self.log = log_dir / f"server-v{self.version}-{self.port}.log"
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = ServerProcess(
            [
                *AUTOTRADER,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--model-uri",
                str(self.model_dir),
                "--model-version",
                self.version,
                "--log-level",
                "warning",
            ],
            env=env,
            log=self.log,
            name=f"model server v{self.version}",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ModelServer:
        self.process.start()
        return self

    def wait_ready(self, timeout: float = 180.0) -> ModelServer:
        self.process.wait_until(http_ok(f"{self.url}/readyz"), timeout)
        return self

    def stop(self) -> None:
        self.process.stop()


class PrometheusServer:
    """A real Prometheus on loopback, scraping every second the targets written to a file_sd file."""

    def __init__(self, workdir: Path, scrape_interval_s: float = 1.0) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.scrape_interval_s = scrape_interval_s
        self.log = workdir / "prometheus.log"
        self.targets_file = workdir / "targets.json"
        self.process: ServerProcess | None = None
        self._targets: dict[str, dict[str, str]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        binary = find_prometheus()
        self.workdir.mkdir(parents=True, exist_ok=True)
        interval = f"{round(self.scrape_interval_s * 1000)}ms"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": "autotrader-serving",
                    "metrics_path": "/metrics",
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        write_text(self.workdir / "prometheus.yml", json.dumps(config, indent=2))
        write_json(self.targets_file, [])
        self.process = ServerProcess(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log=self.log,
            name="prometheus",
        ).start()
        self.process.wait_until(http_ok(f"{self.url}/-/ready"), 60)
        return self

    def add_target(self, address: str, labels: dict[str, str]) -> None:
        """Scrape ``address`` with ``labels`` (replacing the labels if it is already a target)."""
        self._targets[address] = labels
        self._write_targets()

    def remove_target(self, address: str) -> None:
        """Stop scraping ``address`` (a pod that went away); a no-op if it is not a target."""
        if self._targets.pop(address, None) is not None:
            self._write_targets()

    def _write_targets(self) -> None:
        write_json(self.targets_file, [{"targets": [a], "labels": lbl} for a, lbl in self._targets.items()])

    def wait_scraped(self, selector: str, timeout: float = 30.0) -> None:
        """Until ``up{selector} == 1`` has been scraped at least twice (rate() needs two samples)."""
        if self.process is None:
            raise DeployError("prometheus is not started")
        self.process.wait_until(
            lambda: bool(query_prometheus(self.url, f"count_over_time(up{{{selector}}}[1m]) >= 2")),
            timeout,
            f"scrape of {selector}",
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
