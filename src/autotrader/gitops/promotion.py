"""GitOps promotion and rollback: move a model version by editing one pin file in git.

A promotion edits ``rollouts/overlays/<env>/model.env`` and, when the serving image's digest is known
(``autotrader.gitops.images``), the ``digest:`` of that overlay's image entry in ``kustomization.yaml``;
nothing else. It renders the overlay with kustomize and checks it (upstream schemas, pod security,
references); any failure puts both files back byte for byte. With ``commit=True`` the change becomes one
commit touching those files alone; Argo CD then syncs it and Argo Rollouts rolls it out. Rollback pins
the previous model version found in the pin file's git history by a NEW commit (history is never
rewritten) and moves the registry alias back; it leaves the image pin as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotrader import registry
from autotrader.atomic import write_bytes
from autotrader.console import console
from autotrader.errors import DeployError, PromotionRefused, RegistryError
from autotrader.gitops import git as gitops_git
from autotrader.gitops.images import (
    DigestChoice,
    ImagePin,
    choose_digest,
    kustomization_path,
    read_image_pin,
    with_digest,
)
from autotrader.gitops.kustomize import overlay_dir, render
from autotrader.gitops.pins import Pin, make_pin, parse_pin, pin_path, read_pin
from autotrader.gitops.policy import pod_security_violations, reference_violations
from autotrader.gitops.schemas import find_schema_dir, validate_objects
from autotrader.params import Params

INTEGRATION_TAG = "integration_passed"
PREVIOUS_TAG = "previous_production_version"
ENV_ALIAS = {"staging": registry.STAGING, "production": registry.CHAMPION}


@dataclass(frozen=True)
class PinChange:
    """What a promotion or rollback did."""

    env: str
    action: str  # promote | rollback
    version: str
    previous: str | None
    path: Path
    changed: bool
    commit: str | None = None
    alias_moved: str | None = None  # "champion: 7 → 6" when a rollback moved an alias
    image: str | None = None  # the serving image the overlay now renders (promotions)
    image_note: str | None = None  # where its digest came from, or that none is known

    def summary(self) -> str:
        image = f"; image {self.image} ({self.image_note})" if self.image else ""
        if not self.changed:
            return f"{self.env}: already pinned to version {self.version}; nothing to do{image}"
        was = f" (was {self.previous})" if self.previous else ""
        where = f", commit {self.commit[:10]}" if self.commit else " (not committed)"
        alias = f"; alias {self.alias_moved}" if self.alias_moved else ""
        return f"{self.env}: {self.action} to version {self.version}{was} in {self.path}{where}{alias}{image}"


def check_overlay(directory: str | os.PathLike[str], schema_dir: str | os.PathLike[str] | None = None) -> int:
    """Render an overlay and check it: schemas, pod security, references. Returns the object count."""
    directory = Path(directory)
    objects = render(directory)
    folder = schema_dir if schema_dir is not None else find_schema_dir(directory.parents[2])
    problems = [str(p) for p in validate_objects(objects, folder)]
    problems += pod_security_violations(objects)
    problems += reference_violations(objects)
    if problems:
        listed = "\n  ".join(problems)
        raise DeployError(f"{directory}: {len(problems)} problem(s) in the rendered manifests:\n  {listed}")
    return len(objects)


def _write_checked(
    path: Path, pin: Pin, schema_dir: str | os.PathLike[str] | None, extra: dict[Path, bytes] | None = None
) -> None:
    """Write ``pin`` (and ``extra`` files of the same overlay) and check the overlay; on any failure
    every file gets its exact old bytes back."""
    writes = {path: pin.text().encode(), **(extra or {})}
    originals = {p: p.read_bytes() for p in writes}
    try:
        for target, data in writes.items():
            write_bytes(target, data)
        check_overlay(path.parent, schema_dir)
    except BaseException:
        _restore(originals)
        raise


def _restore(originals: dict[Path, bytes]) -> None:
    for target, data in originals.items():
        write_bytes(target, data)


def _image_lines(image: ImagePin, choice: DigestChoice) -> list[str]:
    """Commit-message lines about the serving image: pinned by digest (and from where), or by tag only."""
    if image.digest and choice.digest:
        return [f"image: {image.ref} (digest from {choice.source})"]
    if image.digest:
        return [f"image: {image.ref} (digest kept from the overlay; {choice.source})"]
    return [f"image: {image.ref} (by tag only: {choice.source})"]


def _describe_version(name: str, version: str, client: Any) -> list[str]:
    """Message lines with the version's registry tags (gate results, integration) and run metrics."""
    mv = registry.get_version(name, version, client=client)
    lines = []
    tags = dict(mv.tags or {})
    if tags:
        lines.append("registry tags (gates, integration):")
        lines += [f"  {key} = {tags[key]}" for key in sorted(tags)]
    if mv.run_id:
        try:
            metrics = client.get_run(mv.run_id).data.metrics
        except Exception as exc:  # a missing run must not block the commit message
            lines.append(f"metrics: unavailable ({type(exc).__name__})")
        else:
            if metrics:
                lines.append(f"metrics (run {mv.run_id}):")
                lines += [f"  {key} = {metrics[key]:.6g}" for key in sorted(metrics)]
    return lines


def _message(
    action: str, env: str, pin: Pin, previous: str | None, body: list[str], image_digest: str | None = None
) -> str:
    head = f"{action}({env}): {pin.name} version {pin.version}"
    if previous:
        head += f" (was {previous})"
    trailers = [
        f"{gitops_git.TRAILER_ACTION}: {action}",
        f"{gitops_git.TRAILER_VERSION}: {pin.version}",
    ]
    if previous:
        trailers.append(f"{gitops_git.TRAILER_PREVIOUS}: {previous}")
    if image_digest:
        trailers.append(f"{gitops_git.TRAILER_IMAGE}: {image_digest}")
    parts = [head, f"pin: {pin.uri}", *(["\n".join(body)] if body else []), "\n".join(trailers)]
    return "\n\n".join(parts) + "\n"


def _default_version(params: Params, env: str, repo: Path, client: Any) -> str:
    name = params.mlflow.model_name
    if env == "staging":
        found = registry.version_for_alias(name, registry.STAGING, client=client)
        if found is None:
            raise PromotionRefused(
                f"{name}: no version carries the alias '{registry.STAGING}' (run the pipeline's promote stage "
                "or pass --version)"
            )
        return found
    # Production takes what staging runs: the version its integration tests were run against.
    return read_pin(pin_path("staging", repo)).version


def promote_to_env(
    params: Params,
    env: str,
    version: str | int | None = None,
    commit: bool = False,
    repo: str | os.PathLike[str] = Path("."),
    schema_dir: str | os.PathLike[str] | None = None,
    image_digest: str | None = None,
) -> PinChange:
    """Pin ``version`` in ``env``'s overlay (checked, restored on failure), optionally as a git commit.

    staging: ``version`` defaults to the registry alias ``staging``. production: defaults to the version
    pinned in staging, and is refused (PromotionRefused) unless the version carries
    ``integration_passed=true`` (set by ``autotrader deploy integration --record``).

    The serving image is pinned by digest in the same change when one is known: ``image_digest``
    (``--image-digest``), else ``$AUTOTRADER_IMAGE_DIGEST``, else the version's registry tag
    ``serving_image_digest``. Otherwise the overlay's image pin stays as it is and the result (summary
    and commit message) says that no digest is known.
    """
    repo = Path(repo)
    path = pin_path(env, repo)
    if not overlay_dir(env, repo).is_dir():
        raise DeployError(f"{overlay_dir(env, repo)}: overlay not found (run from the repository root)")
    current = read_pin(path)
    client = registry.connect(params)
    name = params.mlflow.model_name
    chosen = str(version) if version is not None else _default_version(params, env, repo, client)
    pin = make_pin(name, chosen)
    mv = registry.get_version(name, pin.version, client=client)
    tags = dict(mv.tags or {})
    if env == "production" and tags.get(INTEGRATION_TAG) != "true":
        raise PromotionRefused(
            f"{name} version {pin.version}: production needs registry tag {INTEGRATION_TAG}=true "
            f"(has {INTEGRATION_TAG}={tags.get(INTEGRATION_TAG)!r}); run `autotrader deploy integration --record` "
            "against staging first"
        )
    choice = choose_digest(image_digest, tags)
    kpath = kustomization_path(env, repo)
    image = read_image_pin(kpath)
    extra: dict[Path, bytes] = {}
    if choice.digest and choice.digest != image.digest:
        extra[kpath] = with_digest(kpath.read_text(), choice.digest, str(kpath)).encode()
        image = ImagePin(image.name, image.tag, choice.digest)
    previous = current.version if current.name == name else None
    note = f"digest from {choice.source}" if choice.digest else choice.source
    if current == pin and not extra:
        return PinChange(env, "promote", pin.version, previous, path, False, image=image.ref, image_note=note)
    originals = {p: p.read_bytes() for p in (path, *extra)}
    _write_checked(path, pin, schema_dir, extra)
    sha = None
    if commit:
        try:
            body = [*_image_lines(image, choice), *_describe_version(name, pin.version, client)]
            message = _message("promote", env, pin, previous, body, image.digest)
            sha = gitops_git.commit_files([path, *extra], message)
        except BaseException:
            _restore(originals)
            raise
    if env == "production" and previous:
        # Rollback reads git history; the tag lets a person see the same thing in the registry UI.
        registry.set_version_tags(name, pin.version, {PREVIOUS_TAG: previous}, client=client)
    return PinChange(env, "promote", pin.version, previous, path, True, sha, image=image.ref, image_note=note)


def pin_stack(path: Path) -> list[str]:
    """The versions deployed through the pin's git history, replayed: promotions push, rollbacks pop.

    The last element is the committed current version; the one before it is what a rollback restores.
    """
    stack: list[str] = []
    for rev in gitops_git.file_history(path):
        try:
            version = parse_pin(rev.text, f"{path}@{rev.commit[:10]}").version
        except DeployError:
            continue  # a broken historical pin is skipped, never restored
        if rev.trailers.get(gitops_git.TRAILER_ACTION) == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def rollback_env(
    params: Params,
    env: str,
    commit: bool = True,
    repo: str | os.PathLike[str] = Path("."),
    schema_dir: str | os.PathLike[str] | None = None,
) -> PinChange:
    """Pin the previously deployed version of ``env`` again (a new commit) and move its alias back.

    The previous version comes from the pin file's git history. The alias of the environment
    (``staging``, or ``champion`` for production) is moved back only if it points at the version
    being rolled back (a production canary that was never finalized left ``champion`` alone).

    Git history is the authority on what ran before: if the registry this command talks to does not
    know that version (a laptop's sqlite registry next to a cluster's server), the pin is still
    restored — an incident must not wait on it — and the aliases are left alone, with a warning.
    """
    repo = Path(repo)
    path = pin_path(env, repo)
    current = read_pin(path)
    stack = pin_stack(path)
    if stack and stack[-1] != current.version:
        stack.append(current.version)  # an uncommitted promotion is what is being rolled back
    if len(stack) < 2:
        raise PromotionRefused(
            f"{path}: no previous version in its git history (versions seen: {stack or 'none'}); nothing to roll back to"
        )
    target = make_pin(current.name, stack[-2])
    client = registry.connect(params)
    try:
        registry.get_version(current.name, target.version, client=client)
        known = True
    except RegistryError:
        known = False
        console.print(
            f"[yellow]warning:[/] version {target.version} of {current.name!r} is not in "
            f"{registry.tracking_uri(params)}: restoring the pin from git history and leaving the aliases "
            "alone (is MLFLOW_TRACKING_URI the cluster's registry?)"
        )
    original = path.read_bytes()
    _write_checked(path, target, schema_dir)
    sha = None
    if commit:
        try:
            body = [f"rolled back from version {current.version}"]
            if known:
                body += _describe_version(current.name, target.version, client)
            else:
                body.append(f"version {target.version} is not in this registry; restored from git history")
            sha = gitops_git.commit_file(path, _message("rollback", env, target, current.version, body))
        except BaseException:
            write_bytes(path, original)
            raise
    alias = ENV_ALIAS[env]
    moved = None
    if known and registry.version_for_alias(current.name, alias, client=client) == current.version:
        registry.set_alias(current.name, alias, target.version, client=client)
        moved = f"{alias}: {current.version} → {target.version}"
    return PinChange(env, "rollback", target.version, current.version, path, True, sha, moved)


def finalize(params: Params, version: str | int, repo: str | os.PathLike[str] = Path(".")) -> str:
    """After a successful production rollout of ``version``: alias ``champion`` → it. Returns the old champion."""
    pinned = read_pin(pin_path("production", repo))
    if pinned.version != str(version):
        raise PromotionRefused(
            f"production runs version {pinned.version} (rollouts/overlays/production/model.env), not {version}: "
            "only the rolled-out version can become champion"
        )
    client = registry.connect(params)
    name = params.mlflow.model_name
    registry.get_version(name, pinned.version, client=client)
    old = registry.version_for_alias(name, registry.CHAMPION, client=client)
    registry.set_alias(name, registry.CHAMPION, pinned.version, client=client)
    return old or "none"
