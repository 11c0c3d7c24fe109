"""No stage destroys good data when it fails, and a killed pipeline leaves no litter (issue 9, items 1 and 6).

One module-scoped run of the real pipeline (``dvc repro``, a deliberately small config: two
instruments, a month of bars) is the baseline; every test works on its own copy of it.

- The issue's reproduction: ``data.source: live`` with the brokers unreachable, then ``dvc repro
  extract``: ``data/raw`` must survive (DVC deletes a stage's outputs before running it unless
  they are ``persist``).
- A nightly run (``data.end`` one day later, so every stage has real work) where each stage fails at
  its start, middle and end in turn, injected through ``AUTOTRADER_FAULT`` (the library's own hook,
  no patching): ``data/raw``, ``data/features``, ``data/prepared`` and ``models/model`` stay
  byte-identical unless the stage that owns them succeeded, and ``dvc status`` reports exactly the
  outputs that differ from what ``dvc.lock`` records.
- A feature-store commit killed (SIGKILL) after its first rename is finished by the next run: the
  partitions and ``_metadata.json`` agree and equal a full rebuild.
- A training killed inside its MLflow run leaves the run RUNNING; the next training start marks it
  FAILED, and sweeps the temp folders the kill left.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from autotrader.faults import FAULT_ENV, POINTS
from autotrader.orchestration.plan import load_dvc_stages

from .conftest import BIN, SMALL_PIPELINE, Project, make_project, tool_env, tree_hashes

pytestmark = [pytest.mark.xdist_group("data-safety"), pytest.mark.slow]

# A small pipeline: two instruments, 30 days, one logistic candidate, lenient gates (this is about
# data safety, not model quality; the gates still run).
SMALL = {**SMALL_PIPELINE, "health.reference_days": 5, "health.current_days": 1}
PROTECTED = {
    "extract": "data/raw",
    "features": "data/features",
    "prepare": "data/prepared",
    "train": "models/model",
}


def small_project(dest: Path) -> Project:
    project = make_project(dest)
    project.set_params(**SMALL)
    return project


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = small_project(tmp_path_factory.mktemp("safety") / "project")
    project.dvc("repro", timeout=1500)
    return project


def copy_of(built: Project, dest: Path) -> Project:
    shutil.copytree(built.root, dest, symlinks=True)
    return Project(dest)


def state(project: Project, rel: str) -> dict[str, str] | None:
    """An output's content: file hashes of a folder, the hash of a file, None if it is gone."""
    path = project.root / rel
    if path.is_dir():
        return tree_hashes(path)
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return None


def changed_outs(project: Project) -> tuple[dict, dict[str, str]]:
    """``dvc status --json`` and the outputs it reports as changed (path → "modified"/"deleted"/…)."""
    status = json.loads(project.dvc("status", "--json").stdout or "{}")
    outs: dict[str, str] = {}
    for entries in status.values():
        for entry in entries:
            if isinstance(entry, dict):
                outs.update(entry.get("changed outs", {}))
    return status, outs


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_live_extract_keeps_the_raw_bars(built: Project, tmp_path: Path) -> None:
    """Issue 9's reproduction: Oanda (and Binance) unreachable, ``dvc repro extract`` → data/raw intact."""
    project = copy_of(built, tmp_path / "copy")
    before = state(project, "data/raw")
    dead = f"http://127.0.0.1:{closed_port()}"
    project.set_params(
        **{
            "data.source": "live",
            "data.live.oanda_url": dead,
            "data.live.binance_url": dead,
            "data.live.max_attempts": 1,
            "data.live.backoff_s": 0.01,
            "data.live.timeout_s": 1.0,
        }
    )
    proc = project.dvc("repro", "extract", check=False, env={"OANDA_API_TOKEN": "not-a-real-token"})
    assert proc.returncode != 0, proc.stdout
    assert state(project, "data/raw") == before, "a failed extract changed or deleted data/raw"
    status, outs = changed_outs(project)
    assert "data/raw" not in outs  # not deleted, not modified: the truth
    assert "extract" in status  # its params changed and it has not run successfully since


@pytest.mark.timeout(3600)
def test_every_stage_failing_at_start_middle_and_end_destroys_nothing(built: Project, tmp_path: Path) -> None:
    project = copy_of(built, tmp_path / "copy")
    stages = load_dvc_stages(project.root / "dvc.yaml", project.params_path)
    outs = {name: [o.path for o in stage.outs] for name, stage in stages.items()}
    every_out = [path for paths in outs.values() for path in paths]
    locked = {path: state(project, path) for path in every_out}  # what dvc.lock describes (all in sync)
    assert changed_outs(project) == ({}, {})
    project.set_params(**{"data.end": "2026-11-21"})  # the next night: every stage has work to do

    for name in stages:
        for point in POINTS:
            before = {path: state(project, path) for path in every_out}
            proc = project.dvc("repro", check=False, env={FAULT_ENV: f"{name}:{point}"})
            log = proc.stdout + proc.stderr
            assert proc.returncode != 0 and f"{name}: injected fault at {point}" in log, log[-3000:]
            ran = {s for s in stages if f"Running stage '{s}'" in log} - {name}
            for done in ran:  # these succeeded (DVC stops at the first failure) and updated dvc.lock
                for path in outs[done]:
                    locked[path] = state(project, path)
            for stage_name, path in PROTECTED.items():
                if stage_name not in ran:
                    assert state(project, path) == before[path], f"{name}:{point} changed {path}"
            _, reported = changed_outs(project)
            for path in every_out:
                differs = state(project, path) != locked[path]
                assert (path in reported) == differs, (
                    f"after {name}:{point}, dvc status says {reported.get(path, 'unchanged')} for {path}, "
                    f"which {'differs from' if differs else 'matches'} dvc.lock"
                )
    project.dvc("repro")  # without faults the night completes
    assert changed_outs(project) == ({}, {})


def test_a_feature_store_commit_killed_mid_rename_is_finished_by_the_next_run(
    built: Project, tmp_path: Path
) -> None:
    from autotrader.store import read_metadata

    project = copy_of(built, tmp_path / "copy")
    project.set_params(**{"data.end": "2026-11-21"})
    project.dvc("repro", "validate")
    store = project.root / "data" / "features"
    before = state(project, "data/features")
    killed = project.stage("features", check=False, env={FAULT_ENV: "journal:middle:kill"})
    assert killed.returncode == -9, killed.stderr
    assert (store / "_journal.json").is_file() and state(project, "data/features") != before  # half done

    project.stage("features")
    meta = read_metadata(store)
    on_disk = sorted(
        "/".join(p.name.split("=", 1)[1] for p in (f.parent.parent.parent, f.parent.parent, f.parent))
        for f in store.glob("broker=*/symbol=*/date=*/features.parquet")
    )
    assert on_disk == sorted(meta["partitions"])
    assert not list(store.glob(".staging-*")) and not (store / "_journal.json").exists()

    # The same night without the kill, in another copy: the finished commit must equal it.
    reference = copy_of(built, tmp_path / "reference")
    reference.set_params(**{"data.end": "2026-11-21"})
    reference.dvc("repro", "validate")
    reference.stage("features")
    want = reference.root / "data" / "features"
    assert {k: v for k, v in tree_hashes(store).items() if k != "_metadata.json"} == {
        k: v for k, v in tree_hashes(want).items() if k != "_metadata.json"
    }
    volatile = ("created_at", "updated_at", "last_update")  # wall-clock times and what the last run did
    assert {k: v for k, v in meta.items() if k not in volatile} == {
        k: v for k, v in read_metadata(want).items() if k not in volatile
    }


def running_runs(project: Project) -> list[str]:
    with sqlite3.connect(project.root / "mlflow.db") as db:
        return [row[0] for row in db.execute("select run_uuid from runs where status = 'RUNNING'")]


def test_a_killed_training_leaves_no_running_run_and_no_litter_after_the_next_start(
    built: Project, tmp_path: Path
) -> None:
    """kill -9 from outside, the moment the new model folder is being built beside the old one."""
    project = copy_of(built, tmp_path / "copy")
    model = state(project, "models/model")
    models = project.root / "models"
    proc = subprocess.Popen(
        [str(BIN / "python"), "stages/train.py"],
        cwd=project.root,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(".model.") and p.name.endswith(".tmp") for p in models.iterdir()):
            proc.send_signal(signal.SIGKILL)  # inside the MLflow run, the new model half downloaded
            break
        time.sleep(0.005)
    assert proc.wait() == -9, "training finished before its model folder was seen being built"
    abandoned = running_runs(project)
    assert len(abandoned) == 1  # the kill skipped MLflow's end_run
    litter = sorted(p.name for p in (project.root / "models").iterdir() if p.name.endswith(".tmp"))
    assert litter, "the kill inside the model swap left its temp folder"
    assert state(project, "models/model") == model

    rerun = project.stage("train")
    assert running_runs(project) == []
    with sqlite3.connect(project.root / "mlflow.db") as db:
        status = db.execute("select status from runs where run_uuid = ?", (abandoned[0],)).fetchone()[0]
    assert status == "FAILED"
    assert f"marked run {abandoned[0]} FAILED" in rerun.stderr.replace("\n", "")
    left = [p.name for p in (project.root / "models").iterdir() if p.name.endswith((".tmp", ".trash"))]
    assert left == [] and "removed" in rerun.stderr
    assert (project.root / "models" / "model" / "MLmodel").is_file()


# --------------------------------------------------------------------------- chaos: kill -9 at random points

CHAOS_KILLS = int(os.environ.get("AUTOTRADER_CHAOS_KILLS", "3"))  # the issue asks for 20: set this to 20
CHAOS_SEED = int(os.environ.get("AUTOTRADER_CHAOS_SEED", "20261129"))
# Up to train: the stages that write temp trees, the feature store and MLflow runs. The stages after it
# depend on the registry's history by design (the deflated Sharpe counts every earlier trial, versions
# number up), so an interrupted history legitimately changes them; the fault matrix above covers them.
CHAOS_TARGET = "train"
CHAOS_SEEDS = {"A": 7, "B": 8}  # data.sim.seed: flipping it gives every stage new work on each run
LITTER = re.compile(r"^\..+\.(tmp|trash)$|^tmp[a-z0-9_]{8}$|^\.staging-|^_journal\.json$")


def _model_behaviour(root: Path) -> str:
    """The model by what it does: a hash of its class probabilities on every prepared test row.

    The skops archive's bytes cannot be compared: its member names are Python object ids.
    """
    from autotrader.modeling.dataset import read_prepared
    from autotrader.modeling.tracking import load_local_model

    prepared = read_prepared(root / "data/prepared")
    features = list(prepared.info["features"])
    model = load_local_model(root / "models/model")
    proba = model.model.predict_proba(prepared.parts["test"][features])
    return hashlib.sha256(proba.tobytes()).hexdigest()


def _without(path: Path, keys: tuple[str, ...], loader=json.loads) -> dict:
    data = loader(path.read_text())
    return {k: v for k, v in data.items() if k not in keys}


def snapshot(project: Project) -> dict[str, object]:
    """Every output up to train, with what legitimately differs between two runs taken out.

    Taken out: wall-clock times and what the last run did (feature-store metadata and metrics), the
    MLflow run and logged-model ids, the trial count (it counts every earlier training, killed ones
    included), ``data_version`` (DVC's hash of the store, whose metadata holds those times), the skops
    archive's bytes (its member names are object ids: the model is compared by its probabilities on
    the test rows), and the Great Expectations Data Docs (run timestamps and ids). Everything else is
    compared byte for byte.
    """
    root = project.root
    out: dict[str, object] = {}
    for rel in ("data/raw", "data/features", "data/prepared", "models/model"):
        for name, digest in tree_hashes(root / rel).items():
            out[f"{rel}/{name}"] = digest
    out["data/features/_metadata.json"] = _without(
        root / "data/features/_metadata.json", ("created_at", "updated_at", "last_update")
    )
    out["models/model/MLmodel"] = _without(
        root / "models/model/MLmodel",
        ("artifact_path", "model_id", "model_uuid", "run_id", "utc_time_created"),
        yaml.safe_load,
    )
    out["models/model/model.skops"] = _model_behaviour(root)
    out["metrics/validation.json"] = json.loads((root / "metrics/validation.json").read_text())
    out["metrics/features.json"] = _without(
        root / "metrics/features.json",
        ("mode", "reason", "partitions_written", "partitions_skipped", "rows_written", "seconds"),
    )
    out["metrics/train.json"] = _without(
        root / "metrics/train.json",
        ("run_id", "model_id", "model_uri", "model_hash", "trials", "data_version"),
    )
    return out


def _differences(got: dict, want: dict) -> list[str]:
    out = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key), want.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                out.append(f"{key}: {sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))}")
            else:
                out.append(key)
    return out


def litter(project: Project) -> list[str]:
    found = []
    for folder in ("data", "models", "reports", "metrics"):
        for path in (project.root / folder).rglob("*"):
            if LITTER.match(path.name):
                found.append(str(path.relative_to(project.root)))
    return sorted(found)


def _running_stage(log: Path) -> str:
    stages = re.findall(r"Running stage '(\w+)'", log.read_text(errors="replace"))
    return stages[-1] if stages else "(before any stage)"


@pytest.mark.timeout(900 + 300 * CHAOS_KILLS)
def test_chaos_kill_9_at_random_points_then_rerun(built: Project, tmp_path: Path) -> None:
    """SIGKILL ``dvc repro train`` (its whole process group) at seeded random times, rerun, compare.

    The runs alternate between two sim seeds, so every run has real work in every stage and the
    rerun must run the stage that was killed (sweeping its litter). After each rerun the outputs
    equal an uninterrupted run's, no temp litter is left and no MLflow run is RUNNING.
    """
    project = copy_of(built, tmp_path / "chaos")
    refs = {"A": snapshot(project)}
    project.set_params(**{"data.sim.seed": CHAOS_SEEDS["B"]})
    started = time.monotonic()
    project.dvc("repro", CHAOS_TARGET, timeout=1500)
    span = time.monotonic() - started
    refs["B"] = snapshot(project)
    assert refs["A"] != refs["B"]

    rng = random.Random(CHAOS_SEED)
    current, outcomes, problems = "B", [], []
    for i in range(1, CHAOS_KILLS + 1):
        current = "A" if current == "B" else "B"
        project.set_params(**{"data.sim.seed": CHAOS_SEEDS[current]})
        delay = rng.uniform(0.5, span)
        log = tmp_path / f"kill{i}.log"
        with open(log, "w") as sink:
            proc = subprocess.Popen(
                [str(BIN / "dvc"), "repro", CHAOS_TARGET],
                cwd=project.root,
                env=tool_env({"PYTHONUNBUFFERED": "1"}),  # the log says which stage was running
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the stage's python dies with dvc
            )
            launched = time.monotonic()
            try:
                proc.wait(timeout=delay)
                where = f"finished before the kill (exit {proc.returncode})"
                span = min(span, time.monotonic() - launched)  # later kills land inside a run
            except subprocess.TimeoutExpired:
                where = f"during {_running_stage(log)}"
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        rerun = project.dvc("repro", CHAOS_TARGET, check=False, timeout=1500)
        swept = len(re.findall(r"removed .* \(left by a killed run\)", rerun.stdout + rerun.stderr))
        verdict = []
        if rerun.returncode != 0:
            verdict.append(f"rerun exited {rerun.returncode}: {(rerun.stdout + rerun.stderr)[-1500:]}")
        else:
            snap = snapshot(project)
            if snap != refs[current]:
                verdict.append(f"outputs differ: {_differences(snap, refs[current])}")
        if left := litter(project):
            verdict.append(f"litter {left}")
        if running := running_runs(project):
            verdict.append(f"RUNNING runs {running}")
        outcome = "; ".join(verdict) or f"rerun identical, no litter, 0 RUNNING ({swept} stale path(s) swept)"
        line = f"kill {i}/{CHAOS_KILLS} (seed {CHAOS_SEED}): SIGKILL at {delay:.1f}s {where} → {outcome}"
        print(line)
        outcomes.append(line)
        if verdict:
            problems.append(line)
    assert not problems, "\n".join(problems)
