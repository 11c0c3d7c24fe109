"""GitOps delivery: the model pin in git, rendered and checked manifests, promotion and rollback.

``promote_to_env`` / ``rollback_env`` change ``rollouts/overlays/<env>/model.env`` (and nothing else)
and check the rendered overlay against the upstream schemas and the pod security policy first.
"""

from autotrader.gitops.promotion import PinChange, check_overlay, finalize, promote_to_env, rollback_env

__all__ = ["PinChange", "check_overlay", "finalize", "promote_to_env", "rollback_env"]
