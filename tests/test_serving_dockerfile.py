"""The serving image's security and reproducibility posture, read from the Dockerfile itself.

There is no Docker engine here, so the image is not built in tests; this parses
``docker/serving.Dockerfile`` (line continuations, stages, ARG defaults) and checks what a reviewer
would: multi-stage, a base pinned by digest (and replaceable by build arg), a wheels-only, hash-checked
install of the runtime lock with no test or dev package in it, no build tools in the final stage, a
numeric non-root user, read-only-root-friendly temp dirs, the contract's entrypoint.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .lockfiles import NOT_IN_SERVING, SERVING_LOCK, pyproject, read_lock, requirements

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "serving.Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "clang", "make ", "cmake", "python3-dev", "libc6-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (INSTRUCTION, arguments) in order."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=image, name=name))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, value = rest.split("=", 1)
                args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def test_multi_stage_with_a_slim_python_311_base_pinned_by_digest(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", stage.base), (
            f"base image {stage.base!r} is not a full version tag pinned by digest"
        )


def test_every_stage_takes_its_base_from_the_build_arg() -> None:
    text = DOCKERFILE.read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms and all(image == "${BASE_IMAGE}" for image in froms), froms
    local = "registry.local/python:3.11-bookworm@sha256:" + "0" * 64
    _, parsed = parse(re.sub(r"^ARG BASE_IMAGE=.*$", f"ARG BASE_IMAGE={local}", text, count=1, flags=re.M))
    assert {stage.base for stage in parsed} == {local}


def serving_installs(stages: list[Stage]) -> list[str]:
    return [arg for arg in stages[0].args("RUN") if "pip install" in arg and " -r " in arg]


def test_build_stage_installs_the_serving_lock_from_wheels_with_hashes(stages: list[Stage]) -> None:
    build = stages[0]
    assert any("requirements-serving.lock" in arg for arg in build.args("COPY"))
    installs = serving_installs(stages)
    assert len(installs) == 1, "the build stage must pip install -r one lock file"
    assert installs[0].split()[-1] == "requirements-serving.lock"
    for flag in ("--only-binary=:all:", "--no-deps", "--require-hashes"):
        assert flag in installs[0], flag


def test_the_image_installs_no_test_or_dev_package(stages: list[Stage]) -> None:
    lock = REPO / serving_installs(stages)[0].split()[-1]
    assert lock == SERVING_LOCK
    installed = set(read_lock(lock))
    dev = set(requirements(pyproject()["project"]["optional-dependencies"]["dev"]))
    assert not (dev | NOT_IN_SERVING) & installed, sorted((dev | NOT_IN_SERVING) & installed)
    assert {"fastapi", "uvicorn", "mlflow", "scikit-learn"} <= installed


def test_final_stage_has_no_build_tools_and_copies_the_venv(stages: list[Stage]) -> None:
    final = stages[-1]
    for kw, arg in final.instructions:
        if kw == "RUN":
            assert "apt-get install" not in arg and "pip install" not in arg, arg
            for tool in BUILD_TOOLS:
                assert tool not in arg, f"{tool.strip()} in the final stage: {arg}"
    copies = final.args("COPY")
    assert any(arg.startswith(f"--from={stages[0].name}") and "/opt/venv" in arg for arg in copies)
    assert not any("requirements" in arg or arg.startswith("src") for arg in copies)


def test_final_stage_runs_as_numeric_non_root(stages: list[Stage]) -> None:
    users = stages[-1].args("USER")
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, users[-1]


def test_read_only_root_filesystem_posture(stages: list[Stage]) -> None:
    env = " ".join(stages[-1].args("ENV"))
    for needed in (
        "TMPDIR=/tmp",
        "HOME=/tmp",
        "XDG_CACHE_HOME=/tmp",
        "MPLCONFIGDIR=/tmp",
        "PYTHONDONTWRITEBYTECODE=1",
    ):
        assert needed in env, needed


def test_contract_entrypoint_port_and_no_healthcheck(stages: list[Stage]) -> None:
    final = stages[-1]
    assert final.args("EXPOSE") == ["8080"]
    assert json.loads(final.args("ENTRYPOINT")[-1]) == [
        "autotrader",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert all(kw != "HEALTHCHECK" for stage in stages for kw, _ in stage.instructions)


def test_dockerignore_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from excluding everything"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"requirements-serving.lock", "pyproject.toml", "README.md", "src", "params.yaml"}
    # Everything the build stage copies must be allowed in.
    build = parse(DOCKERFILE.read_text())[1][0]
    for arg in build.args("COPY"):
        sources = shlex.split(arg)[:-1]
        for source in sources:
            assert source.rstrip("/") in allowed, source


def test_the_parser_sees_through_continuations_and_arg_defaults() -> None:
    args, parsed = parse(
        "ARG BASE=python:3.11.9-slim\nFROM ${BASE} AS a\nRUN apt-get update \\\n    && apt-get install -y gcc\n"
        "FROM ${BASE}\nUSER root\n"
    )
    assert args == {"BASE": "python:3.11.9-slim"}
    assert [s.base for s in parsed] == ["python:3.11.9-slim"] * 2
    assert parsed[0].args("RUN") == ["apt-get update  && apt-get install -y gcc"]
    assert parsed[1].args("USER") == ["root"]
