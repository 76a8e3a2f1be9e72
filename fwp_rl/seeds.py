"""Several seeds of one config: ``fwp-rl train CONFIG --seeds 0,1,2 [--parallel N]`` (or ``--seeds 0-13``).

The seeds of one call form a group: a group directory holding one ordinary run directory per seed,

    runs/<name>/seed_0/   runs/<name>/seed_1/   ...

(runs/<name>-2/ and so on when runs/<name> exists already, as for single runs). Each seed's config.yaml
says ``seed: <k>``, ``name: seed_<k>``, ``run.root: runs/<name>`` and ``run.group: <name>`` (the group
directory's name), so a seed resumes like any run (``fwp-rl train --resume runs/<name>/seed_1``) and
``fwp-rl compare runs/<name>`` finds all of them. In W&B the group is <name> too, so the seeds are one line apart
from every other experiment's; each seed's W&B run is named <name>/seed_<k> (``fwp_rl.runs.start_run_wandb``).

Seeds run one after another, or ``parallel`` at a time in spawned worker processes (fwp_rl.workers) that split the CPU
threads between them; a worker shows no progress display, only each seed's end is reported. Ctrl-C (or SIGTERM)
stops the seeds under way after their update (or generation), saved, and starts no other seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fwp_rl.config import MAX_SEED, ConfigError
from fwp_rl.harness import Trained
from fwp_rl.learners import learner
from fwp_rl.runs import NonFiniteError, unique_run_dir
from fwp_rl.workers import WorkerDied, run_in_workers, worker_split


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
    """Train one seed's run of ``config``, of any learner (``fwp_rl.learners``) -> (its run directory, whether it
    trained to its end rather than being stopped by Ctrl-C). A nan or an infinity stops the group, naming the seed."""
    try:
        return learner(config.learner).train(config, console=console)
    except NonFiniteError as e:
        raise NonFiniteError(f"seed {config.seed}: {e}") from None


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


def _train_quietly(config) -> SeedRun:
    run_dir, finished = train_run(config, Console(quiet=True))
    return SeedRun(config.seed, run_dir, finished)


def _train_in_workers(configs: list, parallel: int, console: Console) -> list[SeedRun]:
    workers, threads = worker_split(parallel, len(configs))
    console.print(f"training seeds {', '.join(str(c.seed) for c in configs)} in {workers} worker processes "
                  f"({threads} CPU threads each); each seed is reported when it ends")
    runs = []

    def report(config, run: SeedRun) -> None:
        runs.append(run)
        if run.lost:
            console.print(f"seed {run.seed}: lost, its worker process ended")
        else:
            console.print(f"seed {run.seed}: {'finished' if run.finished else 'stopped early'}, {run.run_dir}")

    try:
        run_in_workers(_train_quietly, configs, parallel, report, console, threads=threads,
                       stop_when="the seeds under way after their update; no other seed starts")
    except WorkerDied as e:
        for config in e.lost:  # with what its worker made before it ended, if anything
            made = Path(config.run.root) / config.name
            report(config, SeedRun(config.seed, made if made.is_dir() else None, finished=False, lost=True))
    return runs
