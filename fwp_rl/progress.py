"""What a run shows while it trains, and how Ctrl-C (or SIGTERM) stops it: shared by every learner and ``--seeds``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def run_progress(console: Console, unit: str) -> Progress:
    """A live line per task: its name, a bar, how many ``unit`` are done, a status text, the time elapsed."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn(f"{{task.completed:,.0f}} {unit}"),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)


@contextlib.contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ctrl-C is ignored inside the block, and by every process started inside it from that process's very start (a
    signal's disposition to be ignored survives exec, and Python then installs no KeyboardInterrupt handler; a
    blocked signal would not do: the spawned interpreter starts with none blocked). Start worker processes inside
    it, and nothing else: a Ctrl-C in the milliseconds that takes is lost."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# In a worker process that trains one seed of a group after another (fwp_rl.seeds): whether the group was asked to
# stop. The worker ignores Ctrl-C until its learner's handler is in place, so its own handler can miss the Ctrl-C
# that the group's process took.
_group_stop: Callable[[], bool] | None = None


def stop_with_group(requested: Callable[[], bool]) -> None:
    """Makes every StopOnInterrupt of this process also stop once ``requested()`` is true."""
    global _group_stop
    _group_stop = requested


def group_stop_requested() -> bool:
    return _group_stop is not None and _group_stop()


# The signal that last asked a StopOnInterrupt of this process to stop (None: none did since the last one began):
# ``fwp-rl train`` exits with 128 + SIGTERM when SIGTERM stopped its run (``terminated``).
_stopped_by: int | None = None


def terminated() -> bool:
    """Whether SIGTERM asked the latest StopOnInterrupt of this process to stop."""
    return _stopped_by == signal.SIGTERM


class StopOnInterrupt:
    """Ctrl-C, or SIGTERM (what ``kill`` and job schedulers send), asks a run to stop where stopping leaves it
    consistent, instead of killing it.

    Inside ``with StopOnInterrupt(console, "after this update") as stop:`` the first Ctrl-C or SIGTERM sets
    ``stop.requested``, calls ``on_request`` and prints what will happen; the loop checks ``stop.requested``
    after each update or generation, and saves. A second one (Ctrl-C or SIGTERM) raises KeyboardInterrupt at
    once. The handlers that were there before are back when the block ends. ``terminated()`` tells afterwards
    whether it was SIGTERM that asked.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, console: Console, when: str, on_request: Callable[[], None] | None = None):
        self.console, self.when, self.on_request = console, when, on_request
        self._requested = False

    @property
    def requested(self) -> bool:
        """Whether Ctrl-C asked this run to stop, or (in a worker process of a seed group) the group was asked."""
        return self._requested or group_stop_requested()

    def __enter__(self) -> StopOnInterrupt:
        global _stopped_by
        _stopped_by = None
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum, frame) -> None:
        global _stopped_by
        if self._requested:
            raise KeyboardInterrupt
        self._requested, _stopped_by = True, signum
        if self.on_request is not None:
            self.on_request()
        if signum == signal.SIGTERM:
            self.console.print(f"[yellow]SIGTERM: stopping {self.when} (Ctrl-C or SIGTERM again to stop at "
                               "once)[/yellow]")
        else:
            self.console.print(f"[yellow]stopping {self.when} (Ctrl-C again to stop at once)[/yellow]")
