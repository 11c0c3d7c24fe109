"""The pipeline image every Argo step runs in, read from docker/pipeline.Dockerfile (no Docker engine here).

Checks what the steps rely on and what a reviewer would: dependencies from requirements.lock, the
project and its DVC pipeline in /app, DVC usable without git, kubectl and the Rollouts plugin, a
numeric non-root user, no credentials baked in, and a build context (the Dockerfile's own
.dockerignore) that lets in exactly what the COPY lines need and nothing like data or secrets.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "pipeline.Dockerfile"
IGNORE = REPO / "docker" / "pipeline.Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    logical, buffer = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buffer):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    return [(line.split(" ", 1)[0].upper(), line.split(" ", 1)[1] if " " in line else "") for line in logical]


def included(path: str) -> bool:
    """.dockerignore semantics, simplified: the last matching pattern wins; `!` re-includes."""
    keep = True
    for raw in IGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(Path(path).name, pattern):
            keep = negate
    return keep


def copied_sources() -> list[str]:
    sources = []
    for keyword, args in instructions():
        if keyword == "COPY" and "--from=" not in args:
            sources += args.split()[:-1]
    return sources


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [args for kw, args in instructions() if kw == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"


def test_installs_exactly_the_lock_file_and_the_project() -> None:
    runs = " ".join(args for kw, args in instructions() if kw == "RUN")
    assert "uv pip sync" in runs and "--require-hashes requirements.lock" in runs
    assert "--no-deps -e ." in runs
    assert "dvc config --local core.no_scm true" in runs  # no .git in the image: DVC without SCM


def test_the_base_is_pinned_by_digest_and_replaceable_by_build_arg() -> None:
    args = dict(a.split("=", 1) for kw, a in instructions() if kw == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", args["BASE_IMAGE"])
    froms = [a.split()[0] for kw, a in instructions() if kw == "FROM"]
    assert froms[-1] == "${BASE_IMAGE}", "the final stage must build on the BASE_IMAGE build arg"
    # The same verified base as the serving image: one digest to check and to update.
    serving = (REPO / "docker" / "serving.Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={args['BASE_IMAGE']}\n" in serving


def test_has_the_tools_the_deployment_steps_call() -> None:
    text = DOCKERFILE.read_text()
    assert "kubectl.sha256" in text and "sha256sum --check" in text
    assert "kubectl-argo-rollouts" in text
    assert "AUTOTRADER_SCHEMA_DIR=/opt/schemas" in text and "fetch_schemas.sh" in text


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    sources = copied_sources()
    for expected in ("requirements.lock", "src", "stages", "dvc.yaml", "params.yaml", ".dvc/config"):
        assert expected in sources
    for source in sources:
        if "*" in source:
            continue
        assert (REPO / source).exists(), source
        assert included(source), f"{source} is excluded by {IGNORE.name}"
        if (REPO / source).is_dir():
            files = [
                p
                for p in (REPO / source).rglob("*")
                if p.is_file()
                and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
            ]
            assert files and all(included(str(p.relative_to(REPO))) for p in files[:50]), source


def test_nothing_sensitive_or_heavy_enters_the_build_context() -> None:
    for path in (".venv/bin/python", ".git/config", "data/raw/x.parquet", "models/model/MLmodel", "mlflow.db",
                 ".dvc/config.local", ".dvc/cache/files/md5/00/x", "metrics/gates.json", "argo/data-pipeline.yaml"):  # fmt: skip
        assert not included(path), path
    assert not included("src/autotrader/__pycache__/x.pyc")


def test_no_credentials_are_baked_in() -> None:
    for keyword, args in instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)\s*=", args, re.I), args
        assert keyword != "ADD", "ADD fetches and unpacks implicitly; use COPY or a checked RUN"
