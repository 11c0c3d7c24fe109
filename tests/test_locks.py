"""The hash-locked requirements that `make install`, the two images and CI's pip-audit install.

- every pin in every lock is exact and carries sha256 hashes, and the installs demand them
  (``--require-hashes``): a file on the index that changed under the same version fails the install;
- ``requirements-serving.lock`` (the model-server image) is a subset of ``requirements.lock`` with the
  same versions and the same hashes (CI tested those), with no test, lint or pipeline-only package;
- the ``serving`` dependency group repeats the project's own ranges, so the two cannot drift apart;
- ``make lock`` regenerates all four with hashes, the same uv and Python as the header says, and the
  uv that installs everything is itself installed from a hashed lock, at the Makefile's UV_VERSION.
"""

from __future__ import annotations

import re

import pytest
from packaging.utils import canonicalize_name

from .lockfiles import (
    AUDIT_LOCK,
    BOOTSTRAP_LOCK,
    LOCKS,
    MAIN_LOCK,
    NOT_IN_SERVING,
    REPO,
    SERVING_LOCK,
    header_command,
    pyproject,
    read_lock,
    requirements,
)


def makefile_recipe(target: str) -> list[str]:
    """The recipe lines of ``target`` in the Makefile (tab-indented lines after ``target:``)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_pin_is_exact_and_hashed(lock) -> None:
    pins = read_lock(lock)
    assert pins, lock.name
    for pin in pins.values():
        assert re.fullmatch(r"==[0-9][0-9A-Za-z.+!-]*", pin.spec), f"{lock.name}: {pin.name}{pin.spec}"
        assert pin.hashes, f"{lock.name}: {pin.name} has no --hash (install with --require-hashes fails)"
    command = header_command(lock)
    assert "--generate-hashes" in command and "--python-version 3.11" in command, command


def test_the_serving_lock_is_the_main_lock_minus_what_serving_does_not_need() -> None:
    main, serving = read_lock(MAIN_LOCK), read_lock(SERVING_LOCK)
    for name, pin in serving.items():
        assert name in main, (
            f"{name} is in the serving lock but not in requirements.lock (not what CI tested)"
        )
        assert pin.spec == main[name].spec, (
            f"{name}: serving {pin.spec} vs requirements.lock {main[name].spec}"
        )
        assert pin.hashes == main[name].hashes, f"{name}: other files than requirements.lock's"
    assert len(serving) < len(main) / 2, "the serving image should carry well under half of the full lock"


def test_the_serving_lock_has_no_test_or_dev_package() -> None:
    serving = read_lock(SERVING_LOCK)
    dev = set(requirements(pyproject()["project"]["optional-dependencies"]["dev"]))
    assert dev, "the dev extra is read"
    present = sorted((dev | NOT_IN_SERVING) & set(serving))
    assert not present, f"test/dev/pipeline packages in requirements-serving.lock: {present}"
    # What the server imports is there (the staging Job also runs `autotrader deploy` in this image).
    for needed in ("fastapi", "uvicorn", "httptools", "mlflow", "scikit-learn", "boto3", "prometheus-client"):
        assert needed in serving, needed


def test_the_serving_group_repeats_the_project_ranges() -> None:
    project = pyproject()
    runtime = requirements(project["project"]["dependencies"])
    serving = requirements(project["dependency-groups"]["serving"])
    for name, requirement in serving.items():
        assert name in runtime, f"serving group has {name}, which is not a runtime dependency of the project"
        assert requirement.specifier == runtime[name].specifier, f"{name}: {requirement} vs {runtime[name]}"
        assert requirement.extras == runtime[name].extras, f"{name}: {requirement} vs {runtime[name]}"


def test_the_audit_lock_agrees_with_the_main_lock() -> None:
    main, audit = read_lock(MAIN_LOCK), read_lock(AUDIT_LOCK)
    assert "pip-audit" in audit
    for name in set(main) & set(audit):
        assert audit[name].spec == main[name].spec and audit[name].hashes == main[name].hashes, name


def test_make_install_demands_hashes() -> None:
    lines = (REPO / "Makefile").read_text().splitlines()
    syncs = [line for line in lines if "uv pip sync" in line]
    assert syncs, "make install syncs the venv with uv"
    for line in syncs:
        assert "--require-hashes" in line and line.rstrip().endswith("requirements.lock"), line
    # uv itself: pip installs it from the bootstrap lock, hashes required, before anything else.
    bootstrap = makefile_recipe("$(BIN)/python")
    assert any(
        "pip install" in line and "--require-hashes -r requirements-bootstrap.lock" in line
        for line in bootstrap
    )
    assert not any("pip install" in line and "requirements-bootstrap.lock" not in line for line in bootstrap)


def test_the_bootstrap_lock_pins_the_makefiles_uv() -> None:
    uv_version = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert uv_version, "the Makefile names its uv version"
    assert set(read_lock(BOOTSTRAP_LOCK)) == {"uv"}
    assert read_lock(BOOTSTRAP_LOCK)["uv"].spec == f"=={uv_version.group(1)}"
    assert (
        requirements(pyproject()["dependency-groups"]["bootstrap"])["uv"].specifier
        == f"=={uv_version.group(1)}"
    )


def test_make_lock_writes_the_hashed_locks() -> None:
    recipe = makefile_recipe("lock")
    outputs = {}
    for line in recipe:
        assert "uv pip compile" in line and "--generate-hashes" in line and "--python-version 3.11" in line, (
            line
        )
        outputs[line.split(" -o ")[-1].strip()] = line
    assert set(outputs) == {lock.name for lock in LOCKS}
    # The derived locks take requirements.lock's versions (constraints), so they cannot drift from it.
    for derived in (SERVING_LOCK, AUDIT_LOCK):
        assert "-c requirements.lock" in outputs[derived.name]


def test_the_parser_reads_continuations_and_hashes(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# header\n#    uv pip compile --generate-hashes --python-version 3.11 -o x.lock\n"
        f"Foo_Bar==1.0 \\\n    --hash=sha256:{'a' * 64} \\\n    --hash=sha256:{'b' * 64}\n    # via x\n"
        "baz>=2\n"
    )
    pins = read_lock(lock)
    assert pins[canonicalize_name("Foo_Bar")].hashes == {f"sha256:{'a' * 64}", f"sha256:{'b' * 64}"}
    assert pins["baz"].spec == ">=2" and not pins["baz"].hashes
