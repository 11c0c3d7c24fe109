"""GitOps delivery: the model pin in git, rendered and checked manifests, promotion and rollback.

``promote_to_env`` / ``rollback_env`` change ``rollouts/overlays/<env>/model.env`` (a promotion also
the serving image's ``digest:`` in that overlay's kustomization.yaml, when one is known; nothing else)
and check the rendered overlay against the upstream schemas and the pod security policy first.
"""

from autotrader.gitops.promotion import PinChange, check_overlay, finalize, promote_to_env, rollback_env

__all__ = ["PinChange", "check_overlay", "finalize", "promote_to_env", "rollback_env"]
