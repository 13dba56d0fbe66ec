"""Progress of a long command (reconcile over many attempts), on stderr so stdout stays the
command's result: a live bar at a terminal, a plain line every so often otherwise (logs)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import IO

from rich.console import Console
from rich.progress import Progress

# Without a terminal: a line per this many items, and at the end.
LINE_EVERY = 100

OnProgress = Callable[[int, int], None]


@contextlib.contextmanager
def progress_reporter(description: str, stream: IO[str] | None = None) -> Iterator[OnProgress]:
    """Yields `on_progress(done, total)`."""
    out = stream or sys.stderr
    if not out.isatty():
        yield _lines(description, out)
        return
    with Progress(console=Console(file=out), transient=True) as progress:
        task = progress.add_task(description, total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield on_progress


def _lines(description: str, out: IO[str]) -> OnProgress:
    def on_progress(done: int, total: int) -> None:
        if done % LINE_EVERY == 0 or done == total:
            print(f"{description}: {done}/{total}", file=out, flush=True)

    return on_progress
