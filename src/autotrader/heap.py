"""Where CPython's cyclic garbage collector costs more than it saves, and what to do there.

A full collection walks every tracked object alive. Great Expectations, MLflow and scikit-learn
leave hundreds of thousands of objects behind at import that live as long as the process, so
walking them finds nothing and still costs time. Three places, each measured:

- **importing** such a library: collections fire over and over while its classes are built
  (importing Great Expectations: 2.08 s with the collector, 1.51 s without);
- **a server** that holds one model for its life (``autotrader serve``): each full collection walked
  ~260k objects in the middle of a request;
- **exiting**: interpreter shutdown runs several full collections (0.7 s after importing GE).

``gc.freeze`` moves every object alive into a permanent generation the collector skips; objects
are still freed by reference counting, and cycles among them wait for the process to end.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def heavy_import(module: str) -> Iterator[None]:
    """No collections while ``module`` (and what the block imports with it) is first imported;
    afterwards it is frozen, so later collections do not walk it again. Does nothing once imported
    (a test process imports it once, and must not freeze its own garbage on every call)."""
    if module in sys.modules:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def freeze_long_lived() -> None:
    """Collect once, then freeze what is left: for a process that keeps what it holds until it ends."""
    gc.collect()
    gc.freeze()


def skip_exit_collections() -> None:
    """Just before the process exits: shutdown's collections would walk the whole heap for nothing."""
    gc.freeze()
