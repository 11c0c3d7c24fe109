"""What each DVC stage really depends on, read from the source with ``ast`` (nothing is imported).

Two derivations, both independent of dvc.yaml so they can check it:

* **code**: the modules a stage's entry point imports, transitively (the same ``ast`` walk as
  ``tests/test_architecture.py``, at module rather than part granularity). Importing ``a.b.c`` also
  runs ``a/__init__`` and ``a/b/__init__``, so those count. Imports under ``if TYPE_CHECKING:`` do not
  run and do not count; imports inside functions do.
* **params**: the ``params.yaml`` keys those modules read. Params are typed (``autotrader.params``),
  so a name annotated with a params model (``train: TrainParams``), bound to ``load_params()`` or to a
  typed attribute (``data = params.data``) is followed through attribute reads: ``params.train.horizon``
  reads ``train.horizon``; ``params.costs.model_dump()`` or a model method (``data.start_ts()``, whose
  ``self.`` reads are parsed from params.py) read what they touch. A model passed on as an argument is
  not a read: the callee's annotation takes it from there. Module granularity over-approximates (every
  function of an imported module counts), which errs on the side of rerunning.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from .test_architecture import REPO, SRC

PARAMS_PY = SRC / "params.py"
ROOT_MODEL = "Params"

# Imported by (nearly) every stage but unable to change what a stage computes, so dvc.yaml need not
# list them: console output, exception classes, test-only fault injection, the atomic-write mechanism,
# the JSON-read-with-a-hint mechanism, garbage-collector timing (heap.py), the package marker. params.py is tracked per key through each
# stage's `params:` instead.
PLUMBING = {
    "src/autotrader/__init__.py",
    "src/autotrader/console.py",
    "src/autotrader/errors.py",
    "src/autotrader/faults.py",
    "src/autotrader/atomic.py",
    "src/autotrader/jsonfiles.py",
    "src/autotrader/heap.py",
    "src/autotrader/params.py",
}


# ---------------------------------------------------------------- the import graph


def module_file(name: str) -> Path | None:
    """``autotrader.modeling.train`` → its file, or None when it is not a module of the library."""
    parts = name.split(".")
    if parts[0] != "autotrader":
        return None
    base = SRC.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def imported_modules(path: Path) -> set[Path]:
    """Library module files that running ``path`` imports directly (packages' __init__ included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    package = _module_name(path) if path.is_relative_to(SRC) else ""
    if package and path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # a submodule, if it is one
    found: set[Path] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way run too
            file = module_file(".".join(parts[:i]))
            if file is not None:
                found.add(file)
    return found


def closure(entry: Path) -> set[Path]:
    """Every library module file that running ``entry`` imports, transitively, plus ``entry``."""
    seen: set[Path] = {entry}
    todo = [entry]
    while todo:
        for dep in imported_modules(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def stage_entry(cmd: str) -> Path:
    """The file a stage's ``cmd`` runs: ``python stages/x.py``, or the CLI module of ``autotrader <sub>``."""
    words = cmd.split()
    if words[:1] == ["python"]:
        return REPO / words[1]
    if words[:1] == ["autotrader"]:
        return SRC / "cli" / f"{words[1]}.py"
    raise AssertionError(f"cannot tell which code `{cmd}` runs")


def code_files(entry: Path) -> set[str]:
    """Repo-relative code files the stage runs, minus the plumbing that cannot change its results."""
    return {str(p.relative_to(REPO)) for p in closure(entry)} - PLUMBING


def missing_code_deps(stages: dict[str, dict]) -> list[str]:
    """``stage: file`` for every code file a stage runs that none of its dvc.yaml deps covers."""
    missing: list[str] = []
    for name, stage in stages.items():
        deps = [str(d).rstrip("/") for d in stage.get("deps", [])]
        for file in sorted(code_files(stage_entry(stage["cmd"]))):
            if not any(file == d or file.startswith(d + "/") for d in deps):
                missing.append(f"{name}: {file}")
    return missing


# ---------------------------------------------------------------- params reads


@dataclass
class Model:
    fields: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # attr → (yaml key, model)
    methods: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)  # name → self.… chains


def _annotation_models(annotation: ast.expr | None, models: dict[str, Model]) -> str | None:
    """The params model an annotation names (``Params``, ``"TrainParams"``, ``X | None``), if any."""
    if annotation is None:
        return None
    text = ast.unparse(annotation).strip("'\"")
    for word in re.findall(r"[A-Za-z_]+", text):
        if word in models:
            return word
    return None


def _chain(node: ast.expr) -> tuple[str, list[str]] | None:
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node.id, attrs[::-1]
    return None


def params_models() -> dict[str, Model]:
    """Every pydantic model of params.py: its fields (yaml key and model type) and methods' self reads."""
    tree = ast.parse(PARAMS_PY.read_text())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    models = {c.name: Model() for c in classes}
    for cls in classes:
        model = models[cls.name]
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                attr = item.target.id
                key = attr
                if isinstance(item.value, ast.Call):
                    for kw in item.value.keywords:
                        if kw.arg == "alias" and isinstance(kw.value, ast.Constant):
                            key = kw.value.value
                if attr == "model_config" or ast.unparse(item.annotation).startswith("ClassVar"):
                    continue  # configuration, and where a model's defaults sit in params.yaml
                sub = _annotation_models(item.annotation, models)
                if sub is not None and re.match(r"(tuple|list|dict)\[", ast.unparse(item.annotation)):
                    sub = None  # a list of models is one key in params.yaml (data.instruments)
                model.fields[attr] = (key, sub)
            elif isinstance(item, ast.FunctionDef):
                chains: set[tuple[str, ...]] = set()
                for node in ast.walk(item):
                    if isinstance(node, ast.Call) and ast.unparse(node).startswith("getattr(self"):
                        chains.add(("model_dump",))  # any field, by name: the whole model
                    got = _chain(node) if isinstance(node, ast.Attribute) else None
                    if got and got[0] == "self" and got[1]:
                        chains.add(tuple(got[1]))
                model.methods[item.name] = chains
    return models


def _resolve(
    model_name: str, attrs: list[str], models: dict[str, Model], prefix: tuple[str, ...]
) -> set[str]:
    """The yaml keys an attribute chain from a value of ``model_name`` (at ``prefix``) reads."""
    model = models[model_name]
    if not attrs:
        return set()  # the model itself, handed on: the callee's annotation decides
    head, rest = attrs[0], attrs[1:]
    if head in ("model_dump", "model_dump_json"):
        return {".".join(prefix)} if prefix else set()
    if head in model.methods:
        out: set[str] = set()
        for chain in model.methods[head]:
            out |= _resolve(model_name, list(chain), models, prefix) if chain[0] != head else set()
        return out
    if head not in model.fields:
        return set()
    key, sub = model.fields[head]
    path = (*prefix, key)
    if sub is None:
        return {".".join(path)}
    deeper = _resolve(sub, rest, models, path)
    return deeper if rest else set()


def _model_paths(models: dict[str, Model]) -> dict[str, list[tuple[str, ...]]]:
    """Where each model sits under Params: ``TrainParams`` → [("train",)]; a shared model has several."""
    where: dict[str, list[tuple[str, ...]]] = {ROOT_MODEL: [()]}
    todo = [ROOT_MODEL]
    while todo:
        name = todo.pop()
        for key, sub in models[name].fields.values():
            if sub is not None:
                for prefix in where[name]:
                    where.setdefault(sub, []).append((*prefix, key))
                todo.append(sub)
    return where


def _chain_model(model: str, attrs: list[str], models: dict[str, Model]) -> str | None:
    for attr in attrs:
        sub = models[model].fields.get(attr, (None, None))[1]
        if sub is None:
            return None
        model = sub
    return model


def _typed_names(scope: ast.AST, models: dict[str, Model], typed: dict[str, set[str]]) -> dict[str, set[str]]:
    """Names bound to a params model in ``scope``: annotated args, ``load_params()``, typed chains.

    A name bound twice (``hp = train.hgb`` … ``hp = train.logreg``) holds both models.
    """
    typed = {k: set(v) for k, v in typed.items()}
    for node in ast.walk(scope):
        if isinstance(node, ast.arg) and (m := _annotation_models(node.annotation, models)):
            typed.setdefault(node.arg, set()).add(m)
    for _ in range(3):  # x = params.data; y = x.sim: until stable
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                value, target = node.value, node.targets[0]
                name = target.id if isinstance(target, ast.Name) else None
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                    name = f"self.{target.attr}" if target.value.id == "self" else None
                if name is None:
                    continue
                if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("load_params"):
                    typed.setdefault(name, set()).add(ROOT_MODEL)
                elif (got := _chain(value)) and got[0] in typed:
                    for model in list(typed[got[0]]):
                        if (sub := _chain_model(model, got[1], models)) is not None:
                            typed.setdefault(name, set()).add(sub)
    return typed


def _reads_in(scope: ast.AST, typed: dict[str, set[str]], models: dict[str, Model]) -> set[str]:
    where = _model_paths(models)
    reads: set[str] = set()
    for node in ast.walk(scope):
        if not isinstance(node, ast.Attribute) or (got := _chain(node)) is None:
            continue
        root, attrs = got
        if root == "self" and attrs and f"self.{attrs[0]}" in typed:
            root, attrs = f"self.{attrs[0]}", attrs[1:]
        for model in typed.get(root, ()):
            for prefix in where.get(model, []):
                reads |= _resolve(model, attrs, models, prefix)
    return reads


@dataclass
class _Module:
    path: Path
    tree: ast.Module
    functions: dict[str, ast.AST]  # top-level function or class name → node
    bindings: dict[str, tuple[Path, str | None]]  # imported name → (module file, attribute or None)


def _load(path: Path, cache: dict[Path, _Module]) -> _Module:
    if path not in cache:
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = {
            n.name: n
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        package = _module_name(path) if path.is_relative_to(SRC) else ""
        if package and path.name != "__init__.py":
            package = package.rpartition(".")[0]
        bindings: dict[str, tuple[Path, str | None]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    module = ".".join(
                        base[: len(base) - (node.level - 1)] + ([node.module] if node.module else [])
                    )
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = module_file(f"{module}.{alias.name}")
                    if sub is not None:
                        bindings[alias.asname or alias.name] = (sub, None)
                    elif (file := module_file(module)) is not None:
                        bindings[alias.asname or alias.name] = (file, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if (file := module_file(alias.name)) is not None and alias.asname:
                        bindings[alias.asname] = (file, None)
        cache[path] = _Module(path, tree, functions, bindings)
    return cache[path]


def reachable(entry: Path) -> list[tuple[_Module, ast.AST]]:
    """Functions and classes a stage can run, from its entry module's code, by name (call graph).

    ``f`` and ``mod.f`` resolve through the module's own definitions and its imports (re-exports
    followed); ``obj.m(...)`` on an object of unknown type counts every method ``m`` of a class in the
    stage's modules, and a class counts whole (all its methods): over, never under.
    """
    cache: dict[Path, _Module] = {}
    files = closure(entry)
    methods: dict[str, list[tuple[Path, ast.AST]]] = {}
    for file in files:
        for node in _load(file, cache).functions.values():
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        methods.setdefault(item.name, []).append((file, node))
    seen: set[tuple[Path, str]] = set()
    out: list[tuple[_Module, ast.AST]] = []
    todo: list[tuple[Path, ast.AST]] = []

    def visit(file: Path, name: str, depth: int = 0) -> None:
        mod = _load(file, cache)
        if name in mod.functions:
            if (file, name) not in seen:
                seen.add((file, name))
                todo.append((file, mod.functions[name]))
        elif name in mod.bindings and depth < 10:
            target, attr = mod.bindings[name]
            if attr is not None:
                visit(target, attr, depth + 1)

    entry_mod = _load(entry, cache)
    body = ast.Module(
        body=[n for n in entry_mod.tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))],
        type_ignores=[],
    )
    todo.append((entry, body))
    for name in entry_mod.functions:
        visit(entry, name)
    while todo:
        file, node = todo.pop()
        mod = _load(file, cache)
        out.append((mod, node))
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                visit(file, sub.id)
            elif isinstance(sub, ast.Attribute):
                got = _chain(sub)
                if got and got[0] in mod.bindings and len(got[1]) >= 1:
                    target, attr = mod.bindings[got[0]]
                    if attr is None:
                        visit(target, got[1][0])
                for mfile, cls in methods.get(sub.attr, []):
                    if (mfile, cls.name) not in seen:
                        seen.add((mfile, cls.name))
                        todo.append((mfile, cls))
    return out


def stage_param_reads(cmd: str) -> set[str]:
    """Every params.yaml key the code a stage can run reads (its entry and the library it reaches)."""
    models = params_models()
    reads: set[str] = set()
    for mod, node in reachable(stage_entry(cmd)):
        if mod.path == PARAMS_PY:
            continue
        module_typed = _typed_names(
            ast.Module(body=[n for n in mod.tree.body if isinstance(n, ast.Assign)], type_ignores=[]),
            models,
            {},
        )
        if isinstance(node, ast.ClassDef):  # dataclass fields holding a model: self.health.top_features
            for item in node.body:
                m = _annotation_models(item.annotation, models) if isinstance(item, ast.AnnAssign) else None
                if m is not None and isinstance(item.target, ast.Name):
                    module_typed.setdefault(f"self.{item.target.id}", set()).add(m)
        reads |= _reads_in(node, _typed_names(node, models, module_typed), models)
    return reads


def reads_key(reads: set[str], key: str) -> bool:
    """A stage reads ``key`` when it reads the key, a section holding it, or a part of it."""
    return any(r == key or key.startswith(r + ".") or r.startswith(key + ".") for r in reads)
