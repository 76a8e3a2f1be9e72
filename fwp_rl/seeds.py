"""Several seeds of one config: ``fwp-rl train CONFIG --seeds 0,1,2 [--parallel N]`` (or ``--seeds 0-13``).

The seeds of one call form a group: a group directory holding one ordinary run directory per seed,

    runs/<name>/seed_0/   runs/<name>/seed_1/   ...

(runs/<name>-2/ and so on when runs/<name> exists already, as for single runs). Each seed's config.yaml
says ``seed: <k>``, ``name: seed_<k>``, ``run.root: runs/<name>`` and ``run.group: <name>`` (the group
directory's name), so a seed resumes like any run (``fwp-rl train --resume runs/<name>/seed_1``) and
``fwp-rl compare runs/<name>`` finds all of them. W&B keeps the learner's group (the task, e.g. the env
id), so the seeds of every core sit there beside the LSTM baseline's; each seed's W&B run is named
<name>/seed_<k> and tagged <name> (``fwp_rl.runs.start_wandb``).

Seeds run one after another, or ``parallel`` at a time in spawned worker processes that split the CPU
threads between them; a worker shows no progress display, only each seed's end is reported. Ctrl-C
stops the seeds under way after their update (or generation), saved, and starts no other seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fwp_rl.config import MAX_SEED, ConfigError
from fwp_rl.harness import Trained
from fwp_rl.learners import learner
from fwp_rl.progress import StopOnInterrupt, ctrl_c_ignored, group_stop_requested, stop_with_group
from fwp_rl.runs import unique_run_dir


@dataclass
class SeedRun:
    """One seed's run: its run directory, and whether it trained to its end (False: stopped by Ctrl-C, or
    ``lost``: its worker process ended in the middle, say killed by the system for memory)."""

    seed: int
    run_dir: Path | None
    finished: bool
    lost: bool = False


MAX_SEEDS = 10_000  # runs of one call: a range typed wrong (0-1000000000) is refused before it is built


def parse_seeds(text: str) -> list[int]:
    """The seeds of ``--seeds``: at most MAX_SEEDS distinct integers from 0 to MAX_SEED, comma-separated, each
    item a single seed or an inclusive range ``a-b`` with a <= b ("0,1,2", "0-13", "0-4,10,20-22"), in the
    order given."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.partition("-")
            if not dash:
                seeds.append(int(part))
                continue
            low, high = int(first), int(last)  # "-1", "1-" and "1-2-3" fail here: no negative seeds
            if low > high or high > MAX_SEED or len(seeds) + high - low >= MAX_SEEDS:
                raise ValueError(part)
            seeds.extend(range(low, high + 1))
    except ValueError:
        seeds = []
    if (not seeds or len(seeds) > MAX_SEEDS or any(not 0 <= s <= MAX_SEED for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"--seeds {text!r} is not allowed: give at most {MAX_SEEDS:,} distinct integers from 0 to "
                          f"{MAX_SEED} separated by commas, or ranges a-b with a <= b, e.g. --seeds 0,1,2 or "
                          "--seeds 0-4,10,20-22")
    return seeds


def train_run(config, console: Console | None = None) -> Trained:
    """Train one run of ``config``, of any learner (``fwp_rl.learners``) -> (its run directory, whether it
    trained to its end rather than being stopped by Ctrl-C)."""
    return learner(config.learner).train(config, console=console)


def train_seeds(config, seeds: list[int], parallel: int = 1, console: Console | None = None) -> list[SeedRun]:
    """Train ``config`` once per seed into one new group directory (see the module docstring); ``parallel``
    > 1 trains that many seeds at a time in worker processes. Returns the seeds trained, in seed order."""
    console = console or Console()
    group_dir = unique_run_dir(config.run.root, config.name)
    run = dataclasses.replace(config.run, root=str(group_dir), group=group_dir.name)
    configs = [dataclasses.replace(config, seed=seed, name=f"seed_{seed}", run=run) for seed in seeds]
    try:
        if parallel > 1:
            runs = _train_in_workers(configs, parallel, console)
        else:
            runs = _train_in_turn(configs, console)
    except BaseException:
        with contextlib.suppress(OSError):
            group_dir.rmdir()  # only when empty: the first seed failed before it made its run directory
        raise
    if not runs:  # Ctrl-C came while the workers started
        group_dir.rmdir()
        console.print("stopped by Ctrl-C before any seed started: nothing was trained")
        return []
    table = Table("seed", "run directory", "status", title=f"group {group_dir}")
    trained = {r.seed: r for r in runs}
    for seed in seeds:
        r = trained.get(seed)
        status = ("not started" if r is None else "lost: its worker process ended" if r.lost else
                  "finished" if r.finished else "stopped early")
        table.add_row(str(seed), "" if r is None or r.run_dir is None else str(r.run_dir), status)
    console.print(table)
    if any(r.lost for r in runs):
        console.print("[yellow]a worker process ended in the middle of a seed (killed by the system, say for "
                      "memory): the seeds under way stopped there, each run directory keeps what it saved, and no "
                      "other seed started[/yellow]")
    console.print(f"compare the seeds: fwp-rl compare {group_dir}")
    return sorted(runs, key=lambda r: r.seed)


def _train_in_turn(configs: list, console: Console) -> list[SeedRun]:
    runs = []
    for config in configs:
        console.rule(f"seed {config.seed}")
        run_dir, finished = train_run(config, console)
        runs.append(SeedRun(config.seed, run_dir, finished))
        if not finished:
            break  # Ctrl-C stopped this seed: the user wants to stop, not to start the next one
    return runs


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(threads: int, group_stop) -> None:
    import torch

    torch.set_num_threads(threads)
    stop_with_group(group_stop.is_set)


def _train_quietly(config) -> SeedRun | None:
    if group_stop_requested():
        return None  # Ctrl-C came while this worker started
    run_dir, finished = train_run(config, Console(quiet=True))
    return SeedRun(config.seed, run_dir, finished)


def _train_in_workers(configs: list, parallel: int, console: Console) -> list[SeedRun]:
    workers = min(parallel, len(configs))
    threads = max(1, _available_cpus() // workers)
    console.print(f"training seeds {', '.join(str(c.seed) for c in configs)} in {workers} worker processes "
                  f"({threads} CPU threads each); each seed is reported when it ends")

    def report(r: SeedRun) -> None:
        if r.lost:
            console.print(f"seed {r.seed}: lost, its worker process ended")
        else:
            console.print(f"seed {r.seed}: {'finished' if r.finished else 'stopped early'}, {r.run_dir}")

    # spawn, not fork: a forked copy of a process that has started torch's threads can deadlock.
    context = multiprocessing.get_context("spawn")
    group_stop = context.Event()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(threads, group_stop)) as pool:
        runs = run_in_turns(pool, _train_quietly, configs, workers, report, console, group_stop.set)
    by_seed = {c.seed: c for c in configs}
    for run in runs:
        if run.lost:  # what the worker made before it ended, if anything
            made = Path(by_seed[run.seed].run.root) / by_seed[run.seed].name
            run.run_dir = made if made.is_dir() else None
    return runs


def run_in_turns(pool: Executor, train: Callable, configs: list, workers: int, report: Callable[[SeedRun], None],
                 console: Console, on_stop: Callable[[], None]) -> list[SeedRun]:
    """``train(config)`` on ``pool`` for each config, ``workers`` at a time, calling ``report`` as each ends;
    ``train`` returns a SeedRun, or None for a seed it did not start.

    A seed is handed to the pool only when a worker is free: the pool would start whatever it holds, and after
    Ctrl-C none may start. Ctrl-C reaches every process of the terminal. The workers, started with Ctrl-C ignored,
    do not die of it while idle, and their learners stop after the update under way, by their own handler or
    because ``on_stop`` (called at the first Ctrl-C here) told the workers the group stops.

    A worker process that ends abruptly breaks the pool: the seeds under way come back as SeedRuns marked
    ``lost`` (run directory unknown here: None), and no other seed starts.
    """
    waiting, running, runs = list(configs), {}, []  # running: future -> its config

    def submit_next() -> None:
        config = waiting.pop(0)
        running[pool.submit(train, config)] = config

    with StopOnInterrupt(console, "the seeds under way after their update; no other seed starts", on_stop) as stop:
        with ctrl_c_ignored():  # the pool starts a worker process at each of these first submissions
            for _ in range(min(workers, len(waiting))):
                submit_next()
        broken = False
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                config = running.pop(future)
                try:
                    run = future.result()
                except BrokenExecutor:
                    run, broken = SeedRun(config.seed, None, finished=False, lost=True), True
                if run is not None:
                    runs.append(run)
                    report(run)
            while waiting and len(running) < workers and not stop.requested and not broken:
                submit_next()
    return runs
