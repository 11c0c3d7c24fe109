"""Can this environment serve the model: its pinned requirements and its signature against the store."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from pathlib import Path

from autotrader.serving.deploy_checks.candidate import Check

# Packages whose version the model pins and the server must match. scikit-learn must match
# exactly (its estimators are serialised per version); the others by major.minor.
PINNED_PACKAGES: tuple[str, ...] = ("scikit-learn", "numpy", "pandas", "mlflow")
EXACT_PACKAGES: frozenset[str] = frozenset({"scikit-learn"})


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def model_requirements(model_dir: Path) -> dict[str, str]:
    """Package → specifier from the model's ``requirements.txt`` (or the pip list of ``conda.yaml``)."""
    from packaging.requirements import InvalidRequirement, Requirement

    lines: list[str] = []
    req_file = model_dir / "requirements.txt"
    conda_file = model_dir / "conda.yaml"
    if req_file.is_file():
        lines = req_file.read_text().splitlines()
    elif conda_file.is_file():
        import yaml

        conda = yaml.safe_load(conda_file.read_text()) or {}
        for dep in conda.get("dependencies", []):
            if isinstance(dep, dict):
                lines.extend(str(x) for x in dep.get("pip", []))
    out: dict[str, str] = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        out[_canonical(req.name)] = str(req.specifier)
    return out


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def compare_requirement(package: str, spec: str | None, installed: str | None) -> Check:
    """One package: the model's pin vs the installed version (see PINNED_PACKAGES for the rule)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    name = f"requirement {package}"
    if installed is None:
        return Check(name, False, f"the model needs {package}{spec or ''} but it is not installed", True)
    if not spec:
        return Check(name, True, f"not pinned by the model; {installed} installed")
    specifiers = list(SpecifierSet(spec))
    if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
        pinned = Version(specifiers[0].version)
        have = Version(installed)
        if pinned == have:
            return Check(name, True, f"{installed} == model pin")
        if package in EXACT_PACKAGES:
            return Check(
                name,
                False,
                f"model pins {package}=={pinned}, server has {installed}: serialised estimators are only "
                "safe with the exact version; retrain or rebuild the image",
                True,
            )
        if (pinned.major, pinned.minor) == (have.major, have.minor):
            return Check(name, True, f"model pins {pinned}, server has {installed} (same major.minor)")
        return Check(
            name, False, f"model pins {package}=={pinned}, server has {installed} (major.minor differ)", True
        )
    ok = SpecifierSet(spec).contains(installed, prereleases=True)
    return Check(name, ok, f"model wants {package}{spec}, server has {installed}", not ok)


def check_requirements(model_dir: Path) -> list[Check]:
    reqs = model_requirements(model_dir)
    if not reqs:
        return [
            Check("requirements", False, f"{model_dir}: no requirements.txt or conda.yaml pip list", True)
        ]
    return [compare_requirement(p, reqs.get(_canonical(p)), installed_version(p)) for p in PINNED_PACKAGES]


def check_signature(model_columns: Sequence[str] | None, store_columns: Sequence[str]) -> Check:
    """The model's input columns must be exactly the store's feature columns (order may differ)."""
    name = "signature matches feature store"
    if model_columns is None:
        return Check(name, False, "the model has no input signature; log it with one (feature columns)", True)
    model_set, store_set = set(model_columns), set(store_columns)
    missing = [c for c in model_columns if c not in store_set]
    extra = [c for c in store_columns if c not in model_set]
    problems = []
    if missing:
        problems.append(f"model needs feature(s) the store does not produce: {', '.join(missing)}")
    if extra:
        problems.append(
            f"store produces feature(s) the model was not trained on: {', '.join(extra)} "
            "(clients send the store's features; the server would refuse them)"
        )
    if problems:
        return Check(name, False, "; ".join(problems), True)
    order = "same order" if list(model_columns) == list(store_columns) else "different order (harmless)"
    return Check(name, True, f"{len(model_columns)} features, {order}")


def store_feature_columns(root: Path) -> list[str]:
    from autotrader.store import feature_columns

    return feature_columns(root)
