"""Ctrl-C (or SIGTERM) during a run: the first asks it to stop at its next safe point, the second stops it at once."""

import signal
import subprocess
import sys

import pytest
from rich.console import Console

from fwp_rl import progress
from fwp_rl.progress import StopOnInterrupt, ctrl_c_ignored, run_progress


def test_first_ctrl_c_requests_a_stop_the_second_raises_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    console = Console(record=True, width=200)
    asked = []
    with pytest.raises(KeyboardInterrupt):
        with StopOnInterrupt(console, "after this update", on_request=lambda: asked.append(1)) as stop:
            assert not stop.requested
            signal.raise_signal(signal.SIGINT)
            assert stop.requested and asked == [1]
            signal.raise_signal(signal.SIGINT)
    assert asked == [1]
    assert signal.getsignal(signal.SIGINT) is before
    assert "stopping after this update (Ctrl-C again to stop at once)" in console.export_text()


def test_sigterm_asks_to_stop_as_ctrl_c_does_and_is_told_apart():
    """SIGTERM (kill, a job scheduler) requests a stop like the first Ctrl-C; a second signal raises at once; the old
    handlers come back; ``terminated()`` says whether SIGTERM asked."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    console = Console(record=True, width=200)
    with StopOnInterrupt(console, "after this update") as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and progress.terminated()
    assert "SIGTERM: stopping after this update" in console.export_text()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with pytest.raises(KeyboardInterrupt):
        with StopOnInterrupt(console, "after this update"):
            assert not progress.terminated()  # a new block forgets the last one's
            signal.raise_signal(signal.SIGINT)
            assert not progress.terminated()
            signal.raise_signal(signal.SIGTERM)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_group_stop_stops_a_worker_run_that_missed_the_ctrl_c(monkeypatch):
    """In a worker of a seed group: the group's stop request stops the run after its update, and the run's own
    first Ctrl-C still only requests a stop (it does not count the group's as its first)."""
    group = []
    monkeypatch.setattr(progress, "_group_stop", lambda: bool(group))
    with StopOnInterrupt(Console(quiet=True), "after this update") as stop:
        assert not stop.requested
        group.append(1)
        assert stop.requested
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_ctrl_c_ignored_is_ignored_by_the_processes_started_inside_and_then_taken_again():
    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_ignored():
        signal.raise_signal(signal.SIGINT)  # lost, no KeyboardInterrupt
        code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "True"
    assert signal.getsignal(signal.SIGINT) is before


def test_the_progress_line_counts_in_the_unit_given():
    console = Console(record=True, width=200, force_terminal=False)
    with run_progress(console, "evaluations") as progress:
        progress.add_task("run", total=10, completed=4, status="gen 3")
    text = console.export_text()
    assert "4 evaluations" in text and "gen 3" in text
