"""Pre-deployment checks: ``autotrader deploy check`` and ``autotrader deploy integration``, by concern.

- ``check``: ``deploy_check`` answers "can this model be served here at all?" without a server;
- ``integration``: ``run_integration`` answers "does the server with this model behave?";
- ``candidate``: the model under test resolved (registry URI, alias or folder) and the ``Check`` record;
- ``compatibility``: pinned requirements against what is installed, the signature against the store;
- ``inputs``: replayed store bars, the run's recorded bars, synthetic and golden inputs;
- ``report``: summaries, failure messages and the printed table.

The names below are the package's public API (the CLI and the tests import them from here).
"""

from __future__ import annotations

from autotrader.serving.deploy_checks.candidate import Candidate, Check, fetch_model_dir, resolve_candidate
from autotrader.serving.deploy_checks.check import deploy_check
from autotrader.serving.deploy_checks.compatibility import (
    EXACT_PACKAGES,
    PINNED_PACKAGES,
    check_requirements,
    check_signature,
    compare_requirement,
    installed_version,
    model_requirements,
    store_feature_columns,
)
from autotrader.serving.deploy_checks.inputs import (
    check_golden,
    golden_instances,
    instances_from_frame,
    predict_instances,
    read_golden,
    replay_from_run,
    replay_slice,
    synthetic_instances,
)
from autotrader.serving.deploy_checks.integration import (
    RemoteServer,
    malformed_requests,
    run_integration,
    running_server,
    wait_until_ready,
)
from autotrader.serving.deploy_checks.report import failure_message, print_report, summarize

__all__ = [
    "EXACT_PACKAGES",
    "PINNED_PACKAGES",
    "Candidate",
    "Check",
    "RemoteServer",
    "check_golden",
    "check_requirements",
    "check_signature",
    "compare_requirement",
    "deploy_check",
    "failure_message",
    "fetch_model_dir",
    "golden_instances",
    "installed_version",
    "instances_from_frame",
    "malformed_requests",
    "model_requirements",
    "predict_instances",
    "print_report",
    "read_golden",
    "replay_from_run",
    "replay_slice",
    "resolve_candidate",
    "run_integration",
    "running_server",
    "store_feature_columns",
    "summarize",
    "synthetic_instances",
    "wait_until_ready",
]
