"""Worker processes that run jobs a few at a time: the one pool of ``fwp-rl train --seeds --parallel``
(fwp_rl.seeds) and of ``fwp-rl bench double-pole --parallel`` and ``bench gym --parallel`` (``run_bench_jobs``).

- The workers are spawned, not forked: a forked copy of a process that has started torch's threads can deadlock.
  Each has its share of the CPU threads (``worker_split``), or as many as its caller asks.
- A job is handed to a worker only when that worker is free, so that after Ctrl-C, or once a worker died, no other
  job starts; each job is reported as it finishes.
- Ctrl-C reaches every process of the terminal. The workers start with it ignored, so they do not die of it while
  idle or importing. Then either the jobs under way stop by themselves: the first Ctrl-C here sets the group stop
  that the workers' StopOnInterrupt sees (fwp_rl.progress.stop_with_group) and a worker given a job after it does
  not start it; or (``stop_when`` None: a job stopped half way is worth nothing) Ctrl-C raises KeyboardInterrupt
  here at once and the workers are killed, their jobs lost.
- With ``stop_when``, SIGTERM to this process stops as the first Ctrl-C does (fwp_rl.progress.StopOnInterrupt).
- A worker process that ends in the middle of a job (killed by the system, say for memory) raises WorkerDied
  naming it and the jobs under way, which are lost: the other workers are killed. Killed with SIGKILL, not
  terminated with SIGTERM: a worker's run takes SIGTERM as a request to stop after its update.

Written on multiprocessing's processes and pipes rather than a library pool: concurrent.futures'
ProcessPoolExecutor, when a worker dies, breaks the whole pool without saying which worker or job it was and
offers no public way to stop its workers at once, and multiprocessing.Pool waits forever for a job whose worker
died. Here the end of a worker's pipe is its death, seen at once and for that worker alone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fwp_rl.progress import StopOnInterrupt, ctrl_c_ignored, group_stop_requested, stop_with_group

_DONE, _NOT_STARTED, _FAILED = "done", "not started", "failed"


class WorkerDied(Exception):
    """A worker process ended during a job; ``lost``: the jobs under way then, none of which finished."""

    def __init__(self, pid: int | None, lost: list):
        super().__init__(f"worker process {pid} ended during a run (killed by the system? out of memory?)")
        self.lost = lost


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_split(parallel: int, jobs: int, threads: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads of each) for ``jobs`` jobs ``parallel`` at a time: no more workers than jobs,
    and unless ``threads`` is given, the CPUs this process may use split between them."""
    workers = min(parallel, jobs)
    return workers, threads or max(1, available_cpus() // workers)


def outcome(fn: Callable, job) -> tuple[str, object]:
    """What a worker sends back for ``fn(job)``: done and its result; not started, when the group was asked to stop
    before the job came (Ctrl-C came while this worker started); or failed and the exception."""
    if group_stop_requested():
        return _NOT_STARTED, None
    try:
        return _DONE, fn(job)
    except Exception as e:  # raised again by run_in_workers
        return _FAILED, e


def _work(connection, fn: Callable, threads: int, setup: Callable[[], None] | None, group_stop) -> None:
    import torch

    torch.set_num_threads(threads)
    stop_with_group(group_stop.is_set)
    if setup is not None:
        setup()
    while (job := connection.recv()) is not None:
        connection.send(outcome(fn, job))


def run_in_workers(fn: Callable, jobs: Sequence, parallel: int, report: Callable[[object, object], None],
                   console: Console, threads: int | None = None, setup: Callable[[], None] | None = None,
                   stop_when: str | None = None) -> None:
    """``fn(job)`` for each of ``jobs`` in worker processes, ``parallel`` at a time, calling ``report(job, result)``
    as each finishes (see the module docstring). ``fn`` and ``setup`` (called once in each worker as it starts) are
    functions of a module; ``threads`` overrides the split of the CPU threads. ``stop_when``: what the first Ctrl-C
    stops (e.g. "the seeds under way after their update"), printed then; None: Ctrl-C raises KeyboardInterrupt at
    once. A job that raised raises here too."""
    workers, threads = worker_split(parallel, len(jobs), threads)
    context = multiprocessing.get_context("spawn")
    group_stop = context.Event()
    waiting, processes, running = list(jobs), {}, {}  # processes: connection -> its process; running: -> its job
    ended = False  # every worker was told to end after its last job

    def hand_out(stop: StopOnInterrupt | None) -> None:
        for connection in [c for c in processes if c not in running]:
            if not waiting or (stop is not None and stop.requested):
                return
            running[connection] = waiting.pop(0)
            try:
                connection.send(running[connection])
            except OSError:  # the worker has ended
                raise WorkerDied(processes[connection].pid, list(running.values())) from None

    try:
        with ctrl_c_ignored():  # the workers start here
            for _ in range(workers):
                here, there = context.Pipe()
                process = context.Process(target=_work, args=(there, fn, threads, setup, group_stop))
                process.start()
                there.close()  # the worker's end: once it ends, reading here finds the end of the pipe
                processes[here] = process
        with StopOnInterrupt(console, stop_when, group_stop.set) if stop_when else contextlib.nullcontext() as stop:
            hand_out(stop)
            while running:
                for connection in wait(list(running)):
                    try:
                        status, result = connection.recv()
                    except EOFError:
                        raise WorkerDied(processes[connection].pid, list(running.values())) from None
                    job = running.pop(connection)
                    if status == _FAILED:
                        raise result
                    if status == _DONE:
                        report(job, result)
                hand_out(stop)
        for connection in processes:
            with contextlib.suppress(OSError):  # one that ended after its last job needs no telling
                connection.send(None)
        ended = True
    finally:
        for process in processes.values():
            if not ended:
                process.kill()  # a no-op for one that has ended; SIGTERM would only ask its run to stop
            process.join()


def _call(job: tuple[object, Callable, tuple]) -> object:
    return job[1](*job[2])


def run_bench_jobs(fn: Callable, jobs: dict[int, tuple], parallel: int, report: Callable[[int, object], None],
                   console: Console, title: str, total: int, setup: Callable[[], None] | None = None) -> None:
    """``fn(*jobs[i])`` for every job of a bench, each with one torch thread so that its sums do not depend on
    ``parallel``: one after the other in this process when ``parallel`` is 1 (its thread count restored after), else
    ``parallel`` at a time in worker processes (``run_in_workers``; ``fn`` and ``setup`` are functions of a module).
    ``report(i, result)`` as each finishes, under a progress bar ``title`` over ``total`` jobs, of which those not in
    ``jobs`` were done before. WorkerDied and Ctrl-C's KeyboardInterrupt reach the caller."""
    import torch

    columns = [TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(title, total=total, completed=total - len(jobs))

        def done(i: int, result: object) -> None:
            progress.advance(bar)
            report(i, result)

        if parallel == 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for i, args in jobs.items():
                    done(i, fn(*args))
            finally:
                torch.set_num_threads(threads)
        elif jobs:
            run_in_workers(_call, [(i, fn, args) for i, args in jobs.items()], parallel,
                           lambda job, result: done(job[0], result), console, threads=1, setup=setup)
