"""Fault injection: make a stage fail at a named point, so tests can prove a failure destroys nothing.

Every stage calls ``fault_point(stage, "start" | "middle" | "end")`` at three places: right after
reading its params (nothing done yet), after its main work (nothing written yet), and at the last
moment before its new output becomes visible (built aside, not yet swapped in). The points do nothing
unless ``AUTOTRADER_FAULT`` names them, e.g. ``AUTOTRADER_FAULT=train:middle`` or a comma-separated
list ``extract:end,features:start``; then the stage fails there with an ``InjectedFault`` (an ordinary
pipeline error: exit code 1, one red line), exactly as a real failure at that point would. A
``:kill`` suffix (``train:end:kill``) kills the process with SIGKILL there instead, as ``kill -9``
would: no ``finally``, no ``atexit``, nothing cleaned up. A ``:stall`` suffix blocks there for good,
as a hung process would (a test then kills it, or proves that something else does). Multi-step
commits have their own point (``journal:middle``, after the first rename of an incremental
feature-store commit).

This is the library's own hook, honoured the same way in every environment: the tests inject faults
through the environment and never patch the code under test.
"""

from __future__ import annotations

import os
import signal
import threading

from autotrader.errors import AutoTraderError

FAULT_ENV = "AUTOTRADER_FAULT"
POINTS: tuple[str, ...] = ("start", "middle", "end")


class InjectedFault(AutoTraderError):
    """A failure asked for by ``AUTOTRADER_FAULT``."""


def requested() -> set[str]:
    """The ``stage:point`` names in ``AUTOTRADER_FAULT`` (empty when unset)."""
    raw = os.environ.get(FAULT_ENV, "")
    return {item.strip() for item in raw.split(",") if item.strip()}


def fault_point(stage: str, point: str) -> None:
    """Fail here if ``AUTOTRADER_FAULT`` names ``stage:point``; otherwise do nothing."""
    if point not in POINTS:
        raise ValueError(f"fault point {point!r} is not one of {', '.join(POINTS)}")
    asked = requested()
    if f"{stage}:{point}:kill" in asked:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"{stage}:{point}:stall" in asked:
        threading.Event().wait()
    if f"{stage}:{point}" in asked:
        raise InjectedFault(f"{stage}: injected fault at {point} ({FAULT_ENV}={os.environ[FAULT_ENV]})")
