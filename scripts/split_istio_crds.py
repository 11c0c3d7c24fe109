"""Split Istio's one-file CRD bundle (crd-all.gen.yaml) into the four documents the manifests use.

The validator (autotrader.gitops.schemas) reads one CRD per file, as ``../shared/schemas/istio`` holds them.
Each document is written unmodified; the bundle is removed afterwards. Usage: split_istio_crds.py BUNDLE
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

WANTED = {
    "virtualservices.networking.istio.io": "virtualservice-crd.yaml",
    "destinationrules.networking.istio.io": "destinationrule-crd.yaml",
    "authorizationpolicies.security.istio.io": "authorizationpolicy-crd.yaml",
    "peerauthentications.security.istio.io": "peerauthentication-crd.yaml",
}


def split(bundle: Path) -> list[Path]:
    """Write each wanted CRD beside ``bundle`` and delete the bundle; fail naming any CRD not found."""
    missing = dict(WANTED)
    written = []
    for doc in re.split(r"^---[ \t]*\n", bundle.read_text(), flags=re.M):
        name = re.search(r"^  name: (\S+)\s*$", doc, flags=re.M)
        if name and name.group(1) in missing:
            target = bundle.parent / missing.pop(name.group(1))
            target.write_text(doc)
            written.append(target)
    if missing:
        raise SystemExit(f"{bundle}: CRDs not found: {', '.join(sorted(missing))}")
    bundle.unlink()
    return written


if __name__ == "__main__":
    split(Path(sys.argv[1]))
