"""Helper processes that validate a share of the instruments beside the main process.

Why: validation is CPU-bound Python — Great Expectations' per-expectation machinery, and ~2 s only to
import GE — and one process uses one core. With ``validate.processes: N`` and at least
``validate.parallel_min_mb`` of raw Parquet, N − 1 helpers each import GE at the same time as the main
process and validate their share; the main process files their GE records in its own context
(``GxEngine.adopt``), so the reports and the Data Docs are those one process would have written.

- **A fresh interpreter** (``python -c '… import main; main()'``), started before the main process
  imports GE so that the two imports overlap. Not ``fork`` (rich's progress thread would be copied
  half-way through something) and not ``multiprocessing``'s spawn, which re-runs the caller's
  ``__main__`` script in the child. Arguments go in on stdin and results come back on a private pipe,
  both pickled: stdout stays free for anything the child's libraries print.
- **A helper writes nothing.** It reads the raw bars and answers through its pipe; the main process
  writes every output, atomically, as before.
- **It dies with its parent** (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the stage leaves no process
  behind; if the helper dies, the main process says which instrument it was validating and exits
  non-zero, writing nothing.

This module imports neither GE nor ``instrument``: importing it must stay cheap.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from autotrader import rawstore
from autotrader.errors import AutoTraderError
from autotrader.faults import fault_point
from autotrader.heap import heavy_import, skip_exit_collections
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
    """How many processes validate: one below ``parallel_min_mb`` (a helper's ~2 s start-up would
    cost more than it saves), never more than there are instruments."""
    if sum(sizes.values()) < rules.parallel_min_mb * MB:
        return 1
    return max(1, min(rules.processes, len(sizes)))


def share_out(pairs: Sequence[Pair], sizes: dict[Pair, int], processes: int) -> list[list[Pair]]:
    """Longest first, each to the least loaded process (share 0 is the main process's); each share
    keeps the configured order. Deterministic: ties go to the lower share."""
    loads = [0] * processes
    owner: dict[Pair, int] = {}
    for pair in sorted(pairs, key=lambda p: -sizes.get(p, 0)):  # stable: equal sizes keep their order
        share = loads.index(min(loads))
        owner[pair] = share
        loads[share] += sizes.get(pair, 0)
    return [[p for p in pairs if owner[p] == share] for share in range(processes)]


class Helper:
    """One helper process validating ``pairs`` in order and sending each result as it is done."""

    def __init__(
        self, params: Params, raw_root: str | Path, pairs: list[Pair], run_time: datetime.datetime
    ) -> None:
        self.pairs = pairs
        read_end, write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import main; main()", str(write_end)],
                stdin=subprocess.PIPE,
                pass_fds=(write_end,),
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # only the child writes; EOF here means it is gone
        self.answers = os.fdopen(read_end, "rb")
        assert self.process.stdin is not None
        with self.process.stdin as stdin:
            pickle.dump((params, str(raw_root), pairs, run_time, os.getpid()), stdin)

    def results(self) -> Iterator[tuple[InstrumentResult, Exported]]:
        """Each instrument's result and GE records, in ``pairs`` order; a helper's error is raised here."""
        for broker, symbol in self.pairs:
            try:
                kind, payload = pickle.load(self.answers)
            except EOFError:
                code = self.process.wait(timeout=10)
                raise AutoTraderError(
                    f"validate: the helper process (validate.processes) died with exit code {code} "
                    f"while validating {broker}/{symbol}; nothing was written"
                ) from None
            if kind == "error":
                raise payload
            yield payload

    def stop(self) -> None:
        """Kill the helper if it still runs (the main process failed, or it has sent everything)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.answers.close()


@contextlib.contextmanager
def helpers(
    params: Params, raw_root: str | Path, shares: Sequence[list[Pair]], run_time: datetime.datetime
) -> Iterator[list[Helper]]:
    """A started helper per non-empty share; all stopped on the way out, whatever happened."""
    started: list[Helper] = []
    try:
        for share in shares:
            if share:
                started.append(Helper(params, raw_root, share, run_time))
        yield started
    finally:
        for helper in started:
            helper.stop()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent goes; elsewhere a write to the closed pipe ends it."""
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


def _serve(answers: BinaryIO) -> int:
    """The helper's side: read its arguments from stdin, answer each instrument on ``answers``."""
    params, raw_root, pairs, run_time, parent_pid = pickle.load(sys.stdin.buffer)
    _die_with_parent(parent_pid)
    with heavy_import("great_expectations"):  # here, not at start-up (see the module doc)
        from autotrader.validation.engine import GxEngine
        from autotrader.validation.instrument import validate_exported

    engine = GxEngine(run_time=run_time)
    for broker, symbol in pairs:
        try:
            answer: tuple[str, Any] = ("ok", validate_exported(engine, params, raw_root, broker, symbol))
            fault_point("validate-helper", "middle")  # validated, not yet sent
        except Exception as exc:
            pickle.dump(("error", _portable(exc, broker, symbol)), answers)
            return 1
        pickle.dump(answer, answers)
        answers.flush()
    return 0


def main() -> None:
    """``python -c 'from autotrader.validation.helper import main; main()' <fd>``: the helper process."""
    with os.fdopen(int(sys.argv[1]), "wb") as pipe:
        status = _serve(pipe)
    skip_exit_collections()
    sys.exit(status)
