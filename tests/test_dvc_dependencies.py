"""dvc.yaml cannot drift from the code: every stage declares the code it runs and exactly the params it reads.

DVC's promise is that an unchanged ``dvc status`` means the outputs are current. These tests derive
each stage's real dependencies from the source (``tests/depgraph.py``: the import graph, and the
typed ``params.<section>.<key>`` reads of the functions a stage can reach) and hold dvc.yaml to them:

* code: a module a stage imports that no ``deps:`` entry covers is a change ``dvc repro`` misses;
* params: each key of params.yaml is changed in a scratch copy and ``dvc status`` (no run) must say
  that exactly the stages reading it are stale, no more (a needless rerun) and no fewer (a missed one).

``paths`` is left out of the params check: those keys are interpolated into dvc.yaml's own paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from . import depgraph
from .conftest import REPO, Project, make_project

pytestmark = pytest.mark.xdist_group("dvc-dependencies")

SKIPPED_SECTIONS = ("paths",)  # interpolated into dvc.yaml's paths, not params dependencies


def dvc_stages(path: Path = REPO / "dvc.yaml") -> dict[str, dict[str, Any]]:
    return yaml.safe_load(path.read_text())["stages"]


# ---------------------------------------------------------------- code


def test_every_stage_depends_on_the_code_it_imports() -> None:
    missing = depgraph.missing_code_deps(dvc_stages())
    assert not missing, (
        "dvc.yaml deps miss code the stage imports (add the file or its folder):\n" + "\n".join(missing)
    )


def test_the_code_check_catches_a_removed_dependency() -> None:
    stages = dvc_stages()
    for stage, dep in (("evaluate", "src/autotrader/calendars.py"), ("gate", "src/autotrader/registry.py")):
        broken = {name: dict(spec) for name, spec in stages.items()}
        broken[stage]["deps"] = [d for d in broken[stage]["deps"] if d != dep]
        assert f"{stage}: {dep}" in depgraph.missing_code_deps(broken)


def test_the_import_graph_follows_lazy_and_relative_imports_but_not_type_checking(tmp_path: Path) -> None:
    entry = tmp_path / "stage.py"
    entry.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from autotrader import registry\n"
        "def main():\n    from autotrader.modeling import gates\n"
    )
    files = {str(p.relative_to(REPO)) for p in depgraph.imported_modules(entry)}
    assert "src/autotrader/modeling/gates.py" in files
    assert "src/autotrader/modeling/__init__.py" in files  # the package runs first
    assert "src/autotrader/registry.py" not in files


# ---------------------------------------------------------------- params


def leaf_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of params.yaml down to scalars; a list is one key (``data.instruments``)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: node}


def changed(value: Any) -> Any:
    """Another value of the same kind (nothing runs, so it need only differ)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1]] if value else ["x"]
    return "x"


def batches(keys: list[str]) -> list[list[str]]:
    """Keys in groups with one key per top-level section each.

    ``dvc status`` names the declared param entry (``train``, ``train.horizon``) that changed, never
    the leaf; every entry lies inside one section, so with one key per section the entry tells
    which key it was. One status per group instead of one per key.
    """
    by_section: dict[str, list[str]] = {}
    for key in keys:
        by_section.setdefault(key.split(".")[0], []).append(key)
    rounds = max(len(v) for v in by_section.values())
    return [[v[i] for v in by_section.values() if i < len(v)] for i in range(rounds)]


def dvc_status(project: Project) -> dict[str, Any]:
    """``dvc status --json`` of the project, through DVC's own API (the same call, without a CLI start-up
    per round: the rounds take a fifth of the time)."""
    from dvc.repo import Repo

    with Repo(str(project.root)) as repo:
        # named "<path to>/dvc.yaml:<stage>" when the caller's directory is elsewhere
        return {name.rpartition(":")[2]: why for name, why in repo.status().items()}


def stale_stages(project: Project, keys: list[str], values: dict[str, Any]) -> dict[str, set[str]]:
    """Change ``keys`` in the scratch params.yaml; which stages does ``dvc status`` call stale, per key?"""
    original = project.params_path.read_text()
    try:
        project.set_params(**{key: changed(values[key]) for key in keys})
        status = dvc_status(project)
    finally:
        project.params_path.write_text(original)
    stale: dict[str, set[str]] = {key: set() for key in keys}
    for stage, reasons in status.items():
        for reason in reasons:
            if not isinstance(reason, dict):
                raise AssertionError(f"{stage}: stale for another reason than params: {reason}")
            for what, entries in reason.get("changed deps", {}).items():
                if what != "params.yaml":
                    raise AssertionError(f"{stage}: {what} changed, but only params.yaml was edited")
                for entry in entries:
                    owners = [
                        k
                        for k in keys
                        if k == entry or k.startswith(entry + ".") or entry.startswith(k + ".")
                    ]
                    assert len(owners) == 1, f"{stage}: cannot tell which key {entry} is ({owners})"
                    stale[owners[0]].add(stage)
    return stale


def locked_project(dest: Path, dvc_yaml: str | None = None) -> Project:
    """A scratch copy with a dvc.lock recording every stage, made without running anything.

    ``dvc commit -f`` records the deps, params and outs as they are; placeholder outputs suffice,
    since the params check only asks which stages' recorded params differ.
    """
    project = make_project(dest)
    if dvc_yaml is not None:
        (project.root / "dvc.yaml").write_text(dvc_yaml)
    params = project.params()["paths"]
    for stage in dvc_stages(project.root / "dvc.yaml").values():
        for group in ("deps", "outs", "metrics", "plots"):
            for entry in stage.get(group, []):
                rel = next(iter(entry)) if isinstance(entry, dict) else entry
                for key, value in params.items():
                    rel = rel.replace(f"${{paths.{key}}}", value)
                path = project.root / rel
                if path.exists():
                    continue
                if Path(rel).suffix in (".json", ".md", ".prom", ".csv"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}\n" if path.suffix == ".json" else "\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / ".placeholder").write_text("\n")
    project.dvc("commit", "-f", "-q")
    assert not dvc_status(project), "the fresh lock is not up to date"
    return project


def param_mismatches(project: Project, sections: tuple[str, ...] = ()) -> list[str]:
    """Every params key whose stale stages differ from the stages whose code reads it (``sections``: only those)."""
    stages = dvc_stages(project.root / "dvc.yaml")
    reads = {name: depgraph.stage_param_reads(spec["cmd"]) for name, spec in stages.items()}
    values = {
        k: v
        for k, v in leaf_keys(project.params()).items()
        if k.split(".")[0] not in SKIPPED_SECTIONS and (not sections or k.split(".")[0] in sections)
    }
    stale: dict[str, set[str]] = {}
    for group in batches(sorted(values)):
        stale |= stale_stages(project, group, values)
    problems = []
    for key in sorted(values):
        expected = {name for name, got in reads.items() if depgraph.reads_key(got, key)}
        if stale[key] != expected:
            extra, missed = sorted(stale[key] - expected), sorted(expected - stale[key])
            problems.append(
                f"{key}: "
                + (f"read by {missed} but they stay current (declare it); " if missed else "")
                + (f"makes {extra} stale though they never read it (narrow the param)" if extra else "")
            )
    return problems


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A scratch copy with a dvc.lock of every stage (made once per module)."""
    return locked_project(tmp_path_factory.mktemp("deps") / "project")


@pytest.mark.slow
def test_changing_a_param_makes_exactly_the_stages_reading_it_stale(locked: Project) -> None:
    problems = param_mismatches(locked)
    assert not problems, "dvc.yaml params disagree with the code:\n" + "\n".join(problems)


@pytest.mark.slow
def test_the_params_check_catches_a_removed_param(tmp_path: Path) -> None:
    text = (REPO / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    assert "gates" in stages["evaluate"]["params"]
    broken = yaml.safe_load(text)
    broken["stages"]["evaluate"]["params"].remove("gates")
    project = locked_project(tmp_path / "project", yaml.safe_dump(broken, sort_keys=False))
    problems = param_mismatches(project, sections=("gates",))
    gates = sorted(yaml.safe_load((REPO / "params.yaml").read_text())["gates"])
    assert problems == [
        f"gates.{key}: read by ['evaluate'] but they stay current (declare it); " for key in gates
    ]


def test_the_params_derivation_follows_typed_reads() -> None:
    """The card's thresholds come from params.gates inside the library: evaluate reads gates.min_sharpe."""
    stages = dvc_stages()
    evaluate = depgraph.stage_param_reads(stages["evaluate"]["cmd"])
    assert depgraph.reads_key(evaluate, "gates.min_sharpe")
    assert depgraph.reads_key(evaluate, "train.hgb.max_iter")  # hp = train.hgb; hp.max_iter
    assert not depgraph.reads_key(evaluate, "health.alpha")
    extract = depgraph.stage_param_reads(stages["extract"]["cmd"])
    assert depgraph.reads_key(extract, "data.live.ibkr_host")  # self.live.ibkr_host in the IBKR source
