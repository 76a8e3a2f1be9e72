"""The worker pool of train --seeds --parallel and bench double-pole --parallel: each job reported as it finishes,
in workers of their share of the CPU threads; Ctrl-C that starts no other job; a worker that dies, named, with the
jobs under way; a job taken after the group stopped that does not start."""

from __future__ import annotations

import os
import signal

import pytest
from rich.console import Console

from fwp_rl import progress, workers


def threads_here(job):
    import torch

    return job, torch.get_num_threads()


def test_each_job_is_reported_as_it_finishes_in_workers_with_their_threads():
    reported = []
    workers.run_in_workers(threads_here, [1, 2, 3], 2, lambda job, result: reported.append((job, result)),
                           Console(quiet=True), threads=1)
    assert sorted(reported) == [(k, (k, 1)) for k in (1, 2, 3)]
    assert workers.worker_split(8, 3, threads=None) == (3, max(1, workers.available_cpus() // 3))


def test_ctrl_c_lets_the_jobs_under_way_finish_and_starts_no_other():
    """Two workers, three jobs: Ctrl-C when the first job ends, the second ends too, the third does not start."""
    import time

    reported = []

    def report(job, result):
        if not reported:
            os.kill(os.getpid(), signal.SIGINT)  # as from the terminal; StopOnInterrupt's handler takes it
        reported.append(job)

    workers.run_in_workers(time.sleep, [0.5, 2.0, 0.1], 2, report, Console(quiet=True), threads=1,
                           stop_when="the jobs under way")
    assert reported == [0.5, 2.0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_worker_that_dies_is_named_with_the_jobs_under_way_and_no_other_starts():
    reported = []
    with pytest.raises(workers.WorkerDied, match=r"worker process \d+ ended during a run") as died:
        workers.run_in_workers(os._exit, [3, 4], 1, lambda job, result: reported.append(job), Console(quiet=True),
                               threads=1)
    assert died.value.lost == [3] and reported == []


def test_a_failed_job_raises_here():
    with pytest.raises(TypeError):
        workers.run_in_workers(abs, ["a"], 1, lambda job, result: None, Console(quiet=True), threads=1)


def test_a_worker_starts_no_job_once_the_group_stopped(monkeypatch):
    """A worker that takes a job after the group's Ctrl-C (which it ignored while it started) does not start it."""
    monkeypatch.setattr(progress, "_group_stop", lambda: True)
    assert workers.outcome(lambda job: pytest.fail("a job was started"), 0) == ("not started", None)
