"""What a run shows while it trains, and how Ctrl-C stops it: shared by every learner and ``--seeds``."""

from __future__ import annotations

import signal
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def run_progress(console: Console, unit: str) -> Progress:
    """A live line per task: its name, a bar, how many ``unit`` are done, a status text, the time elapsed."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn(f"{{task.completed:,.0f}} {unit}"),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)


class StopOnInterrupt:
    """Ctrl-C asks a run to stop where stopping leaves it consistent, instead of killing it.

    Inside ``with StopOnInterrupt(console, "after this update") as stop:`` the first Ctrl-C sets
    ``stop.requested``, calls ``on_request`` and prints what will happen; the loop checks ``stop.requested``
    after each update or generation, and saves. A second Ctrl-C raises KeyboardInterrupt at once. The
    handler that was there before is back when the block ends.
    """

    def __init__(self, console: Console, when: str, on_request: Callable[[], None] | None = None):
        self.console, self.when, self.on_request = console, when, on_request
        self.requested = False

    def __enter__(self) -> StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.on_request is not None:
            self.on_request()
        self.console.print(f"[yellow]stopping {self.when} (Ctrl-C again to stop at once)[/yellow]")
