"""Where a model came from: the data version, the git commit and a content hash of the model folder.

The data version is DVC's own hash of the feature store folder (``<md5>.dir``, what ``dvc.lock``
records and ``dvc status``/``dvc exp show`` compare), computed here the way DVC computes it
(``dvc_dir_md5``), so it is known with or without DVC and is never stale: ``data_version_source``
says whether ``dvc.lock`` records the same hash. A step that has only ``data/prepared`` (the Argo
training pipeline pulls no store) takes the lock's record. The store is read, not declared as a DVC
dependency of ``train`` (that would make every training step pull it): ``data/prepared`` is, and it
changes whenever the rows the model sees do. The data version is also the digest of the
``feature-store`` dataset the training run logs with ``mlflow.log_input`` (36 characters: what
MLflow's digest column holds).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from autotrader.errors import ModelError


def _norm(path: str) -> str:
    return os.path.normpath(path).rstrip("/")


def file_md5(path: str | os.PathLike[str]) -> str:
    """md5 of a file's bytes: DVC 3's hash of a file (``md5`` in dvc.lock and in a folder's listing)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_dir_md5(folder: str | os.PathLike[str]) -> str:
    """DVC 3's hash of a folder: md5 of the sorted ``[{"md5": …, "relpath": …}]`` JSON, plus ``.dir``.

    As ``dvc_data.hashfile.tree.Tree.digest`` does it (file md5 over raw bytes, relative POSIX paths,
    ``json.dumps(sort_keys=True)``); the feature store holds no file ``.dvcignore`` would skip.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (the feature store; run the features stage)")
    entries = sorted(
        (
            {"md5": file_md5(path), "relpath": path.relative_to(folder).as_posix()}
            for path in folder.rglob("*")
            if path.is_file()
        ),
        key=lambda entry: entry["relpath"],
    )
    blob = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(blob, usedforsecurity=False).hexdigest() + ".dir"


def locked_md5(path: str, lock_path: str | os.PathLike[str] = "dvc.lock") -> str | None:
    """The md5 ``dvc.lock`` records for the output ``path``, or None (no lock, no such output)."""
    lock = Path(lock_path)
    if not lock.is_file():
        return None
    try:
        content = yaml.safe_load(lock.read_text()) or {}
    except yaml.YAMLError:
        return None
    for stage in (content.get("stages") or {}).values():
        for out in stage.get("outs", []) or []:
            if _norm(str(out.get("path", ""))) == _norm(path) and out.get("md5"):
                return str(out["md5"])
    return None


def data_version(features_root: str, lock_path: str | os.PathLike[str] = "dvc.lock") -> dict[str, str]:
    """``{"data_version": <DVC md5 of the store>, "data_version_source": …}``.

    With the store here, its hash is computed and the source is ``dvc.lock`` when the lock records
    this very hash, ``computed (no dvc.lock entry)`` outside DVC, ``computed (dvc.lock records …: the
    store changed outside DVC)`` when they disagree. Without it (a training step that pulled only
    ``data/prepared``, as the Argo training pipeline does) the lock's record is the version:
    ``dvc.lock (store not present to check)``. Neither: a ModelError naming both.
    """
    recorded = locked_md5(features_root, lock_path)
    if not Path(features_root).is_dir():
        if recorded is None:
            raise ModelError(
                f"{features_root}: no feature store here and no md5 for it in {lock_path}: the data "
                "version is unknown (run the features stage, or dvc pull features)"
            )
        return {"data_version": recorded, "data_version_source": "dvc.lock (store not present to check)"}
    computed = dvc_dir_md5(features_root)
    if recorded == computed:
        source = "dvc.lock"
    elif recorded is None:
        source = "computed (no dvc.lock entry)"
    else:
        source = f"computed (dvc.lock records {recorded}: the store changed outside DVC)"
    return {"data_version": computed, "data_version_source": source}


def git_commit(cwd: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """``{"git_commit": sha | None, "git_dirty": bool | None}`` of the checkout at ``cwd``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": sha or None, "git_dirty": bool(dirty)}


def model_hash(folder: str | os.PathLike[str]) -> str:
    """sha256 over every file of the model folder (relative path and bytes), in sorted order."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
