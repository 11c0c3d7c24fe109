"""Stage ``promote``: register the gated model in MLflow and point ``staging`` at it, or record why not.

Thin, like every stage: params in, ``autotrader.promotion.promote_model`` does the work. The gates
saying no is an outcome (``metrics/promotion.json`` with ``"promoted": false``, exit 0); a stale
gates file, a signature that does not match the store or a missing training run is an error and the
registry stays as it was.
"""

from __future__ import annotations

from autotrader.console import stage_main
from autotrader.params import load_params
from autotrader.promotion import promote_model


def main() -> int:
    promote_model(load_params(), if_approved=True)
    return 0


if __name__ == "__main__":
    stage_main(main)
