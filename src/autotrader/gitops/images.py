"""The serving image pin: the ``images:`` entry of ``rollouts/overlays/<env>/kustomization.yaml``.

The Rollout's pods and the staging integration Job run ``ghcr.io/autotrader/autotrader-serving``;
each overlay pins it with a kustomize ``images:`` entry. A tag can be moved by anyone who can push to
the registry; a digest cannot. So a promotion writes ``digest: sha256:…`` into that entry whenever it
knows the digest of the image built and tested for the release, and kustomize renders
``name:tag@sha256:…`` (the tag stays for people, the kubelet pulls by digest). Where the digest comes
from, first found wins:

1. ``autotrader promote --image-digest`` (CI passes what its image build pushed);
2. the environment variable ``AUTOTRADER_IMAGE_DIGEST``;
3. the registry tag ``serving_image_digest`` on the model version (whoever built and tested the image
   against that model recorded it).

When none is known, the overlay keeps the pin it has (a tag, or an earlier digest) and the promotion
says so. The file is edited as text, the one entry's lines only, so its comments and layout survive (a
YAML round trip would drop them); the result is parsed again and must differ from the original in that
one field and nothing else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotrader.errors import DeployError
from autotrader.gitops.kustomize import overlay_dir

IMAGE = "ghcr.io/autotrader/autotrader-serving"
KUSTOMIZATION = "kustomization.yaml"
DIGEST_ENV = "AUTOTRADER_IMAGE_DIGEST"
DIGEST_TAG = "serving_image_digest"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ITEM = re.compile(r"^(?P<indent>\s*)-\s+(?P<rest>.*)$")


@dataclass(frozen=True)
class ImagePin:
    """The overlay's pin of the serving image: a tag, a digest, or both."""

    name: str
    tag: str | None
    digest: str | None

    @property
    def ref(self) -> str:
        """The reference kustomize renders into the pods."""
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class DigestChoice:
    """The digest a promotion will pin (None: none known) and where it came from, or why there is none."""

    digest: str | None
    source: str


def kustomization_path(env: str, repo: str | os.PathLike[str] = ".") -> Path:
    return overlay_dir(env, repo) / KUSTOMIZATION


def parse_digest(value: str, source: str) -> str:
    """``sha256:<64 hex>`` from a bare digest or a full reference of the serving image; else a DeployError."""
    text = value.strip()
    name, at, digest = text.rpartition("@")
    if at:
        repository = re.sub(r":[\w][\w.-]*$", "", name)  # drop a tag: name:tag@sha256:… is fine
        if repository != IMAGE:
            raise DeployError(f"{source}: {value!r} is a digest of {repository!r}, not of {IMAGE}")
    if not _DIGEST.match(digest):
        raise DeployError(
            f"{source}: {value!r} is not an image digest (expected sha256: and 64 lowercase hex digits, "
            f"or {IMAGE}@sha256:…)"
        )
    return digest


def choose_digest(option: str | None, tags: Mapping[str, str]) -> DigestChoice:
    """The digest to pin: ``--image-digest``, else ``$AUTOTRADER_IMAGE_DIGEST``, else the version's tag."""
    if option:
        return DigestChoice(parse_digest(option, "--image-digest"), "--image-digest")
    from_env = os.environ.get(DIGEST_ENV, "").strip()
    if from_env:
        return DigestChoice(parse_digest(from_env, DIGEST_ENV), DIGEST_ENV)
    if tags.get(DIGEST_TAG):
        return DigestChoice(
            parse_digest(tags[DIGEST_TAG], f"registry tag {DIGEST_TAG}"), f"registry tag {DIGEST_TAG}"
        )
    return DigestChoice(
        None,
        f"no image digest known (--image-digest, {DIGEST_ENV} and registry tag {DIGEST_TAG} are all unset)",
    )


def _entries(document: Any, source: str) -> list[dict[str, Any]]:
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise DeployError(f"{source}: no images: list (the overlay must pin {IMAGE})")
    return images


def read_image_pin(path: str | os.PathLike[str]) -> ImagePin:
    """The overlay's pin of the serving image; a DeployError when the file has none."""
    path = Path(path)
    entries = [e for e in _entries(yaml.safe_load(path.read_text()), str(path)) if e.get("name") == IMAGE]
    if len(entries) != 1:
        raise DeployError(f"{path}: expected one images: entry named {IMAGE}, found {len(entries)}")
    entry = entries[0]
    tag = entry.get("newTag")
    return ImagePin(
        str(entry.get("newName") or IMAGE), str(tag) if tag is not None else None, entry.get("digest")
    )


def with_digest(text: str, digest: str, source: str = KUSTOMIZATION) -> str:
    """``text`` (a kustomization) with the serving image's entry pinned to ``digest``; all else as it was."""
    digest = parse_digest(digest, source)
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "images:"), None)
    if start is None:
        raise DeployError(f"{source}: no top-level images: block")
    block_end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()
         and not lines[i].startswith(("-", "#"))),
        len(lines),
    )  # fmt: skip
    items = [i for i in range(start + 1, block_end) if _ITEM.match(lines[i])]
    for n, first in enumerate(items):
        last = items[n + 1] if n + 1 < len(items) else block_end
        body = lines[first:last]
        if yaml.safe_load("".join(body))[0].get("name") != IMAGE:
            continue
        indent = " " * (len(_ITEM.match(lines[first])["indent"]) + 2)  # type: ignore[index]
        new_line = f"{indent}digest: {digest}\n"
        existing = [
            j for j in range(first, last) if lines[j].strip().removeprefix("-").strip().startswith("digest:")
        ]
        if existing:
            lines[existing[0]] = new_line
        else:  # after the entry's last line that is not blank or a comment
            at = max(
                j for j in range(first, last) if lines[j].strip() and not lines[j].lstrip().startswith("#")
            )
            if not lines[at].endswith("\n"):
                lines[at] += "\n"
            lines.insert(at + 1, new_line)
        result = "".join(lines)
        _check_only_the_digest_changed(text, result, digest, source)
        return result
    raise DeployError(f"{source}: no images: entry named {IMAGE}")


def _check_only_the_digest_changed(before: str, after: str, digest: str, source: str) -> None:
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    for entry in _entries(new, source):
        if entry.get("name") == IMAGE:
            if entry.get("digest") != digest:
                raise DeployError(f"{source}: the digest did not land in the {IMAGE} entry")
            entry.pop("digest")
    for entry in _entries(old, source):
        if entry.get("name") == IMAGE:
            entry.pop("digest", None)
    if old != new:
        raise DeployError(
            f"{source}: editing the image digest would change more than the digest; not written"
        )
