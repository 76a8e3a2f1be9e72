"""Ctrl-C during a run: the first asks it to stop at its next safe point, the second stops it at once."""

import signal

import pytest
from rich.console import Console

from fwp_rl.progress import StopOnInterrupt, run_progress


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


def test_the_progress_line_counts_in_the_unit_given():
    console = Console(record=True, width=200, force_terminal=False)
    with run_progress(console, "evaluations") as progress:
        progress.add_task("run", total=10, completed=4, status="gen 3")
    text = console.export_text()
    assert "4 evaluations" in text and "gen 3" in text
