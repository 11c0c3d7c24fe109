"""Helper processes that validate a share of the instruments beside the main process.

Why: validation is CPU-bound Python (Great Expectations' per-expectation machinery) and one process
uses one core. With ``validate.processes: N`` and at least ``validate.parallel_min_mb`` of raw
Parquet, N − 1 helpers validate beside the main process. The instruments wait in one queue, largest
first, and whichever process is free takes the next (``WorkQueue``), so no process idles while
another still has two to go. The main process files the helpers' GE records in its own context
(``GxEngine.adopt``), so the reports and the Data Docs are those one process would write.

- **Forked after Great Expectations is imported**, before anything else starts: a helper shares the
  imported library's memory (copy-on-write; ``heap.heavy_import`` froze it, so the collector does not
  touch those pages) instead of importing it again, ~2 s of CPU per helper. At that moment no other
  thread runs (the progress display starts after), which is what makes a fork safe.
- **A helper writes nothing.** It reads the raw bars and answers through its pipe; the main process
  writes every output, atomically, as before.
- **It dies with its parent** (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the stage leaves no process
  behind; if the helper dies, the main process says which instrument it was validating and exits
  non-zero, writing nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import multiprocessing
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from autotrader import rawstore
from autotrader.errors import AutoTraderError
from autotrader.faults import fault_point
from autotrader.params import Params, ValidateParams

if TYPE_CHECKING:
    from autotrader.validation.engine import Exported
    from autotrader.validation.report import InstrumentResult

Pair = tuple[str, str]
PR_SET_PDEATHSIG = 1
MB = 1024 * 1024


def raw_bytes(raw_root: str | Path, pairs: Sequence[Pair]) -> dict[Pair, int]:
    """Bytes of each instrument's day files: how much validating it costs, known without reading it."""
    return {pair: sum(f.stat().st_size for f in rawstore.partition_files(raw_root, *pair)) for pair in pairs}


def process_count(rules: ValidateParams, sizes: dict[Pair, int]) -> int:
    """How many processes validate: one below ``parallel_min_mb`` (a helper's fork, GE context and
    results' trip back cost more than a small store saves), never more than there are instruments."""
    if sum(sizes.values()) < rules.parallel_min_mb * MB:
        return 1
    return max(1, min(rules.processes, len(sizes)))


def largest_first(pairs: Sequence[Pair], sizes: dict[Pair, int]) -> list[Pair]:
    """The order instruments are handed out: largest first, so the last to finish is a small one."""
    return sorted(pairs, key=lambda pair: -sizes.get(pair, 0))  # stable: equal sizes keep their order


class WorkQueue:
    """Instruments taken one at a time by whichever process is free; forked helpers share the counter."""

    def __init__(self, pairs: Sequence[Pair], shared: bool) -> None:
        self.pairs = list(pairs)
        self._next = multiprocessing.get_context("fork").Value("i", 0) if shared else None
        self._local = 0

    def take(self) -> Pair | None:
        if self._next is None:
            index, self._local = self._local, self._local + 1
        else:
            with self._next.get_lock():
                index = self._next.value
                self._next.value += 1
        return self.pairs[index] if index < len(self.pairs) else None


class Helper:
    """One forked process taking instruments from the queue and sending each result as it is done."""

    def __init__(
        self, params: Params, raw_root: str | Path, queue: WorkQueue, run_time: datetime.datetime
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child_end = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_serve,
            args=(child_end, params, str(raw_root), queue, run_time, os.getpid()),
            name="validate-helper",
        )
        self.process.start()
        child_end.close()  # only the child writes; EOF here means it is gone

    def results(self) -> Iterator[tuple[InstrumentResult, Exported]]:
        """Each result and its GE records as the helper sends them; a helper's error is raised here."""
        doing = "its first instrument"
        while True:
            try:
                kind, payload = self.conn.recv()
            except EOFError:
                self.process.join(timeout=10)
                raise AutoTraderError(
                    f"validate: the helper process (validate.processes) died with exit code "
                    f"{self.process.exitcode} while validating {doing}; nothing was written"
                ) from None
            if kind == "taken":
                doing = "/".join(payload)
            elif kind == "error":
                raise payload
            elif kind == "done":
                return
            else:
                yield payload

    def stop(self) -> None:
        """Kill the helper if it still runs (the main process failed, or it has sent everything)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def can_fork() -> bool:
    """A fork is safe only where it exists and while no other thread runs (one could hold a lock)."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


@contextlib.contextmanager
def helpers(
    params: Params, raw_root: str | Path, queue: WorkQueue, count: int, run_time: datetime.datetime
) -> Iterator[list[Helper]]:
    """``count`` started helpers; all stopped on the way out, whatever happened."""
    started: list[Helper] = []
    try:
        for _ in range(count):
            started.append(Helper(params, raw_root, queue, run_time))
        yield started
    finally:
        for helper in started:
            helper.stop()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent goes; elsewhere a send to the closed pipe ends it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _portable(exc: BaseException, broker: str, symbol: str) -> BaseException:
    """The exception itself when it crosses a pipe intact (every ``AutoTraderError`` does), else its
    traceback as text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception(exc))
        return RuntimeError(f"validate helper, {broker}/{symbol}:\n{text}")


def _serve(
    conn: Connection,
    params: Params,
    raw_root: str,
    queue: WorkQueue,
    run_time: datetime.datetime,
    parent_pid: int,
) -> None:
    """The helper's side (forked): validate what it takes in an engine of its own, send each answer."""
    _die_with_parent(parent_pid)
    from autotrader.validation.engine import GxEngine  # already imported by the parent: free here
    from autotrader.validation.instrument import validate_exported

    engine = GxEngine(run_time=run_time)
    while (pair := queue.take()) is not None:
        conn.send(("taken", pair))  # so a death can be blamed on the right instrument
        try:
            answer = validate_exported(engine, params, raw_root, *pair)
            fault_point("validate-helper", "middle")  # validated, not yet sent
        except Exception as exc:
            conn.send(("error", _portable(exc, *pair)))
            return
        conn.send(("ok", answer))
    conn.send(("done", None))
