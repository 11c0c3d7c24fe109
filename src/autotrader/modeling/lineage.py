"""Where a model came from: the data version, the git commit and a content hash of the model folder.

The data version is DVC's own hash of the feature store when ``dvc.lock`` records one (so it matches
``dvc status``/``dvc exp show``); outside DVC it is a hash of the store's fingerprint and source hash
(``_metadata.json``), which changes exactly when the stored features would.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from autotrader.store import read_metadata


def _norm(path: str) -> str:
    return os.path.normpath(path).rstrip("/")


def data_version(features_root: str, lock_path: str | os.PathLike[str] = "dvc.lock") -> dict[str, str]:
    """``{"data_version": …, "data_version_source": "dvc.lock" | "store-metadata"}``."""
    lock = Path(lock_path)
    if lock.is_file():
        try:
            content = yaml.safe_load(lock.read_text()) or {}
        except yaml.YAMLError:
            content = {}
        for stage in (content.get("stages") or {}).values():
            for out in stage.get("outs", []) or []:
                if _norm(str(out.get("path", ""))) == _norm(features_root) and out.get("md5"):
                    return {"data_version": str(out["md5"]), "data_version_source": "dvc.lock"}
    meta = read_metadata(features_root)
    blob = f"{meta.get('fingerprint')}:{meta.get('source_hash')}".encode()
    return {"data_version": hashlib.sha256(blob).hexdigest(), "data_version_source": "store-metadata"}


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
