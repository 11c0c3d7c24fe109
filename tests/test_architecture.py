"""Imports point one way: sources → validation, features → store → modeling → registry → serving, gitops → rehearsal.

Read from the source with ``ast`` (nothing is imported), so a wrong-way import fails here before it
turns into a cycle or a server that quietly trains.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "autotrader"

# Each top-level part of the library and its layer; a part may import its own layer's shared
# foundation (layer 0) and anything in a lower layer, never a higher one or a sibling part.
LAYERS: dict[str, int] = {
    "errors": 0, "atomic": 0, "console": 0, "params": 0, "schema": 0, "calendars": 0, "faults": 0, "journal": 0,
    "metrics_files": 0, "processes": 0, "jsonfiles": 0, "heap": 0,
    "sources": 1, "rawstore": 1,
    "validation": 2, "features": 2,
    "store": 3, "archive": 3, "datarollback": 3,
    "health": 4, "modeling": 4,
    "registry": 5,
    "serving": 6, "gitops": 6, "promotion": 6,
    "orchestration": 7, "rehearsal": 7,
    "cli": 8,
}  # fmt: skip


def _part(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name == "autotrader" or name.startswith("autotrader."):
                parts = name.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
            if name == "stages" or name.startswith("stages."):
                found.add("<stages>")
    return found


def library_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_every_library_part_has_a_layer() -> None:
    parts = {_part(p) for p in library_modules()}
    assert parts <= set(LAYERS), f"add these to LAYERS: {sorted(parts - set(LAYERS))}"


def test_imports_point_one_way() -> None:
    wrong: list[str] = []
    for path in library_modules():
        part = _part(path)
        for target in _imported_parts(path):
            if target == "<stages>":
                wrong.append(f"{path.relative_to(REPO)} imports stages/ (the library never does)")
                continue
            if target == part or target not in LAYERS:
                continue
            if LAYERS[target] >= LAYERS[part] and LAYERS[target] != 0:
                wrong.append(f"{path.relative_to(REPO)} ({part}) imports autotrader.{target}")
    assert not wrong, "\n".join(wrong)


def test_stages_never_import_each_other() -> None:
    offenders = []
    for path in sorted((REPO / "stages").glob("*.py")):
        if "<stages>" in _imported_parts(path):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_the_checker_catches_a_wrong_way_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from autotrader.modeling import train\nimport stages.extract\n")
    assert _imported_parts(bad) == {"modeling", "<stages>"}
