"""The shell scripts of argo/dvc-stage.yaml, executed: pull → repro/commit → push → state hand-off.

Each "pod" is a fresh copy of an image folder (a small DVC project, no data, no git — like the
pipeline image), with the template's script run by bash exactly as written in the YAML, only with
/work and /tmp/outputs moved into the test's temporary folder. The DVC remote is a real S3 server on
loopback (moto), configured from environment variables as the Secret would provide them. Nothing
carries data between pods except the remote and the `state` folder the previous pod saved — as in Argo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.s3server import S3Server, s3_bucket_fixture, s3_server_fixture  # noqa: F401

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEMPLATES = {
    t["name"]: t for t in yaml.safe_load((REPO / "argo" / "dvc-stage.yaml").read_text())["spec"]["templates"]
}

# A three-stage pipeline with the shapes that matter: a cached directory (raw), an uncached metric
# that the next stage depends on (validation.json), and a persisted store extended night after night.
TOY_DVC = {
    "stages": {
        "extract": {"cmd": "python toy.py extract", "outs": ["data/raw"]},
        "validate": {
            "cmd": "python toy.py validate",
            "deps": ["toy.py", "data/raw"],
            "metrics": [{"metrics/validation.json": {"cache": False}}],
        },
        "features": {
            "cmd": "python toy.py features",
            "deps": ["toy.py", "data/raw", "metrics/validation.json"],
            "params": ["data.end"],
            "outs": [{"data/features": {"persist": True}}],
        },
    }
}
TOY_PY = textwrap.dedent(
    """
    import json, sys, pathlib, yaml
    stage = sys.argv[1]
    if stage == "validate":
        files = sorted(str(p) for p in pathlib.Path("data/raw").rglob("*") if p.is_file())
        pathlib.Path("metrics").mkdir(exist_ok=True)
        pathlib.Path("metrics/validation.json").write_text(json.dumps({"files": len(files)}))
    elif stage == "features":
        end = yaml.safe_load(open("params.yaml"))["data"]["end"]
        files = json.loads(pathlib.Path("metrics/validation.json").read_text())["files"]
        log = pathlib.Path("data/features/log.txt")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"{end} {files}\\n")
    else:
        sys.exit("extract runs per broker in Argo; the workflow only commits it")
    """
)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image") / "app"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(yaml.safe_dump(TOY_DVC, sort_keys=False))
    (root / "toy.py").write_text(TOY_PY)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([str(BIN / "dvc"), *args], cwd=root, check=True, env=env, capture_output=True)
    return root


class Pod:
    """A fresh container of the image, running one template's script."""

    def __init__(self, image: Path, base: Path, name: str, s3: S3Server, bucket: str) -> None:
        self.root = base / name
        self.app = self.root / "app"
        shutil.copytree(image, self.app)
        (self.root / "work").mkdir()
        self.outputs = self.root / "outputs"
        self.env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.root),
            "DVC_NO_ANALYTICS": "1",
            "MPLBACKEND": "Agg",
            # What the Secret autotrader-dvc-remote provides.
            "DVC_REMOTE_URL": f"s3://{bucket}/dvc",
            "AWS_ENDPOINT_URL": s3.endpoint_url,
            **{k: v for k, v in s3.env.items() if k != "AWS_ENDPOINT_URL_S3"},
        }

    def give(self, artifact: str, source: Path) -> None:
        """An input artifact, placed where the template's `inputs.artifacts[].path` says."""
        shutil.copytree(source, self.root / "work" / artifact)

    def run(self, template: str, **inputs: str) -> subprocess.CompletedProcess[str]:
        spec = TEMPLATES[template]
        script = (
            spec["script"]["source"]
            .replace("/work/", f"{self.root}/work/")
            .replace("/tmp/outputs", str(self.outputs))
        )
        env = dict(self.env)
        declared = {p["name"]: p.get("value", "") for p in spec["inputs"]["parameters"]}
        for var in spec["script"]["env"]:
            if "value" in var and var["value"].startswith("{{inputs.parameters."):
                name = var["value"][len("{{inputs.parameters.") : -2]
                env[var["name"]] = inputs.get(name.replace("-", "_"), declared.get(name, ""))
        return subprocess.run(
            ["bash", "-c", script], cwd=self.app, env=env, capture_output=True, text=True, timeout=300
        )

    def state(self) -> Path:
        return self.root / "work" / "state-out"


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )


def fetched_raw(base: Path) -> Path:
    """What the per-broker steps uploaded: the workspace artifact (two brokers' partitions)."""
    ws = base / "workspace"
    for broker, symbol in (("binance", "BTCUSDT"), ("oanda", "EUR_USD")):
        day = ws / "data" / "raw" / f"broker={broker}" / f"symbol={symbol}" / "date=2026-11-19"
        day.mkdir(parents=True)
        (day / "bars.parquet").write_bytes(f"{broker}-{symbol}".encode())
    return ws


def test_commit_repro_publish_hand_off_through_s3_and_state(
    image: Path, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    night = {"set_params": "", "data_end": "2026-11-20"}

    extract = Pod(image, tmp_path, "extract", s3_server, s3_bucket)
    extract.give("workspace-in", fetched_raw(tmp_path))
    ok(extract.run("run", stages="extract", mode="commit", **night))
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert len(keys) == 3 and all(k.startswith("dvc/files/md5/") for k in keys)  # 2 files + the .dir

    # Two stages in one step; it pulls raw and (first run: nothing yet) its own persisted store.
    features = Pod(image, tmp_path, "features", s3_server, s3_bucket)
    features.give("state-in", extract.state())
    ok(features.run("run", stages="validate features", pull="extract features", **night))
    assert (features.app / "data" / "features" / "log.txt").read_text() == "2026-11-20 2\n"
    assert json.loads((features.state() / "metrics" / "validation.json").read_text()) == {"files": 2}

    store = Pod(image, tmp_path, "store", s3_server, s3_bucket)
    store.give("state-in", features.state())
    ok(store.run("publish", verify="extract features"))
    lock = yaml.safe_load((store.state() / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"extract", "validate", "features"}
    assert json.loads((store.state() / "state.json").read_text()) == {
        "data_end": "2026-11-20",
        "stages": ["extract", "validate", "features"],
    }
    # The Argo output parameters every step writes.
    assert (features.outputs / "data-end").read_text() == "2026-11-20\n"
    assert (features.outputs / "decision").read_text() == "none\n"

    # The next night: the persisted store is pulled and extended, not rebuilt; validation.json, which
    # is not in the remote (cache: false), comes from the published state alone.
    tomorrow = Pod(image, tmp_path, "features-next-night", s3_server, s3_bucket)
    tomorrow.give("state-in", store.state())
    ok(tomorrow.run("run", stages="features", pull="extract features", data_end="2026-11-21", set_params=""))
    assert (tomorrow.app / "data" / "features" / "log.txt").read_text() == "2026-11-20 2\n2026-11-21 2\n"


def test_a_failing_step_fails_and_still_saves_its_state(
    image: Path, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    # Nothing was ever pushed to this bucket: the pull the step needs must fail the step.
    lockless = tmp_path / "state"
    (lockless / "metrics").mkdir(parents=True)
    lock = {"schema": "2.0", "stages": {"extract": {"cmd": "python toy.py extract", "outs": [
        {"path": "data/raw", "hash": "md5", "md5": "0" * 32 + ".dir", "size": 1, "nfiles": 1}]}}}  # fmt: skip
    (lockless / "dvc.lock").write_text(yaml.safe_dump(lock))
    (lockless / "state.json").write_text(json.dumps({"data_end": "2026-11-20", "stages": ["extract"]}))
    pod = Pod(image, tmp_path, "validate", s3_server, s3_bucket)
    pod.give("state-in", lockless)
    proc = pod.run("run", stages="validate", pull="extract", data_end="2026-11-20", set_params="")
    assert proc.returncode != 0
    assert "data/raw" in proc.stderr  # DVC names what it could not fetch
    assert not (pod.app / "metrics" / "validation.json").exists()  # the stage never ran
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=s3_bucket)  # nothing was pushed
    # The EXIT trap saved the state and the outputs anyway (a failed health still reports).
    assert json.loads((pod.state() / "state.json").read_text())["stages"] == ["extract", "validate"]
    assert (pod.outputs / "max-psi").read_text() == "NaN\n"


def test_a_misspelt_params_override_fails_before_any_stage_runs(
    image: Path, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    pod = Pod(image, tmp_path, "validate", s3_server, s3_bucket)
    proc = pod.run("run", stages="validate", pull="", data_end="2026-11-20", set_params="data.lookbak_days=3")
    assert proc.returncode == 2
    assert "data.lookbak_days" in proc.stderr and "Running stage" not in proc.stdout
