"""The serving image's security and reproducibility posture, read from the Dockerfile itself.

There is no Docker engine here, so the image is not built in tests; this parses
``docker/serving.Dockerfile`` (line continuations, stages, ARG defaults) and checks what a reviewer
would: multi-stage, a pinned base, wheels-only install from requirements.lock, no build tools in the
final stage, a numeric non-root user, read-only-root-friendly temp dirs, the contract's entrypoint.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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


def test_multi_stage_with_a_pinned_slim_python_311_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert "latest" not in stage.base
        pinned = "@sha256:" in stage.base or re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", stage.base)
        assert pinned, f"base image {stage.base!r} is not pinned by digest or a full version tag"


def test_build_stage_installs_the_lock_from_wheels_only(stages: list[Stage]) -> None:
    build = stages[0]
    assert any("requirements.lock" in arg for arg in build.args("COPY"))
    installs = [arg for arg in build.args("RUN") if "pip install" in arg and "requirements.lock" in arg]
    assert installs, "the build stage must pip install -r requirements.lock"
    assert "--only-binary=:all:" in installs[0] and "--no-deps" in installs[0]


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
    assert allowed == {"requirements.lock", "pyproject.toml", "README.md", "src", "params.yaml"}
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
