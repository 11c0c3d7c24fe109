"""Post a pipeline notification to the team's incoming webhook (Slack-compatible ``{"text": …}``).

The webhook URL is a credential (anyone holding it can post), so it comes only from the environment
(the Secret ``autotrader-notify``) and never appears in an error message.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from autotrader.errors import AutoTraderError, ConfigError

WEBHOOK_ENV = "AUTOTRADER_NOTIFY_WEBHOOK_URL"


class NotifyError(AutoTraderError):
    """The webhook refused the message or could not be reached."""


def failed_nodes(failures: str | None) -> list[dict[str, str]]:
    """Argo's ``workflow.failures`` JSON → [{node, message}] (an unparsable value is kept as one entry)."""
    if not failures or failures.strip() in ("", "[]", "null"):
        return []
    try:
        nodes = json.loads(failures)
    except json.JSONDecodeError:
        return [{"node": "?", "message": failures.strip()}]
    out = []
    for node in nodes if isinstance(nodes, list) else [nodes]:
        if isinstance(node, dict):
            out.append({"node": str(node.get("displayName", "?")), "message": str(node.get("message", ""))})
    return out


def build_payload(
    status: str, message: str, failures: str | None = None, workflow: str = ""
) -> dict[str, Any]:
    nodes = failed_nodes(failures)
    icon = {"Succeeded": "✅", "promoted": "🚀"}.get(status, "🚨")
    lines = [f"{icon} *{status}* — {message}"]
    lines += [f"• `{n['node']}`: {n['message']}" for n in nodes]
    return {"text": "\n".join(lines), "status": status, "workflow": workflow, "failures": nodes}


def send(payload: dict[str, Any], url: str | None = None, timeout: float = 10.0) -> None:
    url = url or os.environ.get(WEBHOOK_ENV, "")
    if not url:
        raise ConfigError(
            f"{WEBHOOK_ENV} is not set (it comes from the Secret autotrader-notify, key webhook-url)"
        )
    try:
        response = httpx.post(url, json=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        raise NotifyError(f"notification webhook ({WEBHOOK_ENV}) unreachable: {type(exc).__name__}") from exc
    if response.status_code >= 300:
        raise NotifyError(f"notification webhook ({WEBHOOK_ENV}) answered HTTP {response.status_code}")
