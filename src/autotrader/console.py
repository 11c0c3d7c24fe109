"""Console output, progress bars and the error boundary shared by stages and the CLI.

Progress goes to stderr (rich), so stdout stays clean for anything a caller parses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autotrader.errors import AutoTraderError
from autotrader.heap import skip_exit_collections

console = Console(stderr=True, highlight=False)


def progress() -> Progress:
    """A progress display for long work; silent when stderr is not a terminal beyond a final line."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    )


def run_guarded(main: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``main``; an AutoTraderError becomes one clear red line and its exit code, not a traceback."""
    try:
        result = main(*args, **kwargs)
    except AutoTraderError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    return int(result or 0)


def stage_main(main: Callable[[], Any]) -> None:
    """Entry point for ``stages/*.py``: exit with the stage's code, without shutdown's collections
    (``heap.skip_exit_collections``: 0.7 s of the validate stage)."""
    code = run_guarded(main)
    skip_exit_collections()
    sys.exit(code)
