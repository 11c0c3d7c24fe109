"""The two images, built here and run: the model server answering as its non-root user, and a pipeline stage.

``scripts/build_images.sh`` (``make images``) builds a Debian bookworm + Python 3.11 base with debootstrap,
then ``docker/serving.Dockerfile`` and ``docker/pipeline.Dockerfile`` on it with buildah (vfs storage, chroot
isolation: no registry, no Docker engine, no working OCI runtime on this machine). Images are tagged by a
content hash of what they are built from, so a warm cache makes the fixture a few seconds. Containers run
with ``buildah run --isolation chroot``: the host's network, so a loopback port of the container is the
host's. Without buildah, debootstrap or root the tests skip with the reason; under ``CI=true`` that is a
failure, never a skip (``.ci/run`` installs both from Debian).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow.pyfunc
import pytest
import yaml

from tests.test_serving_support import feature_columns, free_port, instance, simulated_features, train_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build_images.sh"
STORAGE = ["--storage-driver", "vfs"]
UID = "10001"

# A cold build (base, both images) takes minutes on 2 cores, far past the suite's 600 s default.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("images"), pytest.mark.timeout(2700)]


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(
            f"{reason} (CI builds the images: .ci/run installs buildah and debootstrap)", pytrace=False
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """BASE_IMAGE, SERVING_IMAGE, PIPELINE_IMAGE: built now, or the cached build of the same inputs."""
    if shutil.which("buildah") is None:
        _missing("buildah is not installed (apt-get install buildah): the images cannot be built here")
    check = subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    if check.returncode == 3:
        _missing(check.stderr.strip())
    done = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=2400)
    if done.returncode == 3:
        _missing(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-4000:]
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert set(found) == {"BASE_IMAGE", "SERVING_IMAGE", "PIPELINE_IMAGE"}, done.stdout
    return found


def buildah(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(["buildah", *STORAGE, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


@contextlib.contextmanager
def container(image: str) -> Iterator[str]:
    """A working container of ``image`` (a full copy of its root filesystem under vfs), removed after."""
    name = buildah("from", "--pull=never", image).strip().splitlines()[-1]
    try:
        yield name
    finally:
        subprocess.run(["buildah", *STORAGE, "rm", name], capture_output=True, timeout=300)


def run_in(name: str, *command: str, volumes: tuple[str, ...] = (), timeout: float = 600) -> str:
    """``command`` in the container as the image's own user (USER of its config), output returned."""
    done = subprocess.run(
        [
            "buildah",
            *STORAGE,
            "run",
            "--isolation",
            "chroot",
            *(f"-v={v}" for v in volumes),
            name,
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def server_uids(port: int) -> set[str]:
    """Real and effective UIDs of the processes serving on ``port`` (buildah's own process left out)."""
    uids: set[str] = set()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and str(port).encode() in argv and b"buildah" not in argv[0]:
                status = (proc / "status").read_text()
                uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
                uids |= set(uid_line.split()[1:3])
    return uids


def test_the_serving_image_answers_readyz_and_predict_as_its_non_root_user(
    images: dict[str, str], tmp_path: Path
) -> None:
    frame = simulated_features(days=4)
    model = train_model(tmp_path / "model", frame)
    tmp_path.chmod(0o755)  # the server's user (10001) reads the model through the bind mount
    for path in [model, *model.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    cols = feature_columns(frame)
    row = frame.dropna(subset=cols).iloc[-1]
    expected = int(mlflow.pyfunc.load_model(str(model)).predict(frame.loc[[row.name], cols])[0])

    assert (
        buildah(
            "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", images["SERVING_IMAGE"]
        ).strip()
        == f"{UID}:{UID}"
    )
    port = free_port()
    log = tmp_path / "server.log"
    with container(images["SERVING_IMAGE"]) as name:
        assert run_in(name, "id", "-u").strip() == UID
        with log.open("wb") as out:
            run = ["buildah", *STORAGE, "run", "--isolation", "chroot", f"-v={model}:/model:ro"]
            env = ["-e", "MODEL_URI=/model", "-e", "MODEL_LOAD_ATTEMPTS=1"]
            serve = ["autotrader", "serve", "--host", "127.0.0.1", "--port", str(port)]
            proc = subprocess.Popen(
                [*run, *env, name, "--", *serve],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            ready = None
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    ready = httpx.get(f"{url}/readyz", timeout=2)
                    if ready.status_code == 200:
                        break
                time.sleep(0.5)
            assert ready is not None and ready.status_code == 200, log.read_text()[-3000:]
            assert ready.json()["ready"] is True
            answer = httpx.post(f"{url}/predict", json={"instances": [instance(row, cols)]}, timeout=30)
            assert answer.status_code == 200, answer.text
            (prediction,) = answer.json()["predictions"]
            assert (prediction["symbol"], prediction["signal"]) == (row["symbol"], expected)
            uids = server_uids(port)
            assert uids and uids <= {UID}, f"the server runs as {uids}, not as the image's user {UID}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_pipeline_image_runs_the_extract_stage_with_dvc(images: dict[str, str]) -> None:
    shrink = (
        "import yaml; p = yaml.safe_load(open('params.yaml')); p['data']['lookback_days'] = 2; "
        "yaml.safe_dump(p, open('params.yaml', 'w'), sort_keys=False)"
    )
    with container(images["PIPELINE_IMAGE"]) as name:
        assert run_in(name, "id", "-u").strip() == UID
        tools = run_in(name, "sh", "-c", "kubectl version --client; kubectl-argo-rollouts version --short")
        assert "Client Version" in tools and "kubectl-argo-rollouts" in tools
        run_in(name, "python", "-c", shrink)
        run_in(name, "dvc", "repro", "extract", timeout=900)
        lock = run_in(name, "cat", "dvc.lock")
        assert "extract:" in lock and "data/raw" in lock
        listing = (
            "import json, pathlib; "
            "print(json.dumps([str(p) for p in pathlib.Path('data/raw').rglob('*.parquet')]))"
        )
        partitions = json.loads(run_in(name, "python", "-c", listing))
        symbols = {part for path in partitions for part in Path(path).parts if part.startswith("symbol=")}
        instruments = yaml.safe_load((REPO / "params.yaml").read_text())["data"]["instruments"]
        assert symbols == {f"symbol={i['symbol']}" for i in instruments}, (
            partitions
        )  # every instrument's bars
