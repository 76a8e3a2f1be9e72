"""``fwp-rl bench gym``: neuroevolution on Gymnasium tasks through the generic path (``GymProblem``: the whole
population in one vector env of population x episodes copies, the policy batched over the candidates).

Two parts. Success over seeds: each config (a neuroevolution config of a Gymnasium id with ``search.target``, the
task's usual threshold) runs seeds 0..N-1 (runs in this process, or in worker processes of ``fwp_rl.workers``); a
row gives how many reached the target, the evaluations they needed (a run is solved by the generation whose best
candidate's mean return over ``env.episodes`` episodes reaches the target) and the mean return of each run's kept
controller over held-out episodes (seeds the search never drew: the run's seed + ``EVAL_SEED_OFFSET``, as the runs'
own evaluations use), so a lucky generation does not pass for a solution. Speed: env steps per second of one
population evaluation of each config's controller beside EvoTorch's VecGymNE on the same task, both with random
candidates from [-1, 1], the sides taking turns.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from fwp_rl.bench.timing import check_positive, machine_description, timed_evaluation
from fwp_rl.config import ConfigError
from fwp_rl.files import atomic_write_text
from fwp_rl.harness import EVAL_SEED_OFFSET
from fwp_rl.learners import load_config
from fwp_rl.workers import WorkerDied, run_bench_jobs

GYM_CONFIG_DIR = Path("configs/gym")
GYM_KIND = "a neuroevolution config of a Gymnasium id with search.target set (learner: neuroevolution)"


@dataclass(frozen=True)
class GymBenchOptions:
    """The options of ``fwp-rl bench gym`` (their defaults and help: fwp_rl.cli); ``configs`` None: every file in
    configs/gym/; ``only`` None: both parts."""

    configs: list[str] | None
    seeds: int
    max_evaluations: int | None
    parallel: int
    held_out_episodes: int
    popsize: int
    repeats: int
    only: str | None
    json: str | None


def gym_config_paths(paths: list[str] | None = None) -> list[str]:
    """``paths``, or every YAML file in configs/gym/ (relative to the working directory)."""
    if paths is not None:
        return paths
    found = [str(p) for p in sorted(GYM_CONFIG_DIR.glob("*.yaml"))]
    if not found:
        raise ConfigError(f"no config files in {GYM_CONFIG_DIR}/: run from the repository root or give --configs")
    return found


def load_gym_config(path: str, seed: int, max_evaluations: int | None = None):
    """The config of one bench run: the file at ``path`` with its seed (and, when given, search.max_evaluations)
    overridden. ConfigError unless it is a neuroevolution config of a Gymnasium id with a target."""
    from fwp_rl.agents.neuroevolution import DOUBLE_POLE

    if not Path(path).is_file():
        raise ConfigError(f"--configs: config file {path!r} does not exist; give files of {GYM_KIND}")
    overrides = [f"seed={seed}"] + ([] if max_evaluations is None else [f"search.max_evaluations={max_evaluations}"])
    try:
        config = load_config(path, overrides)
    except ConfigError as e:
        raise ConfigError(f"--configs {path!r}: {e}") from None
    if config.learner != "neuroevolution" or config.env.id == DOUBLE_POLE or config.search.target is None:
        what = (f"learner: {config.learner}" if config.learner != "neuroevolution" else
                f"env.id: {config.env.id!r}" if config.env.id == DOUBLE_POLE else "no search.target")
        raise ConfigError(f"--configs: {path!r} ({what}) is not {GYM_KIND}")
    return config


@dataclass
class GymRun:
    """One seed of one config of ``bench_gym``: how its search ended."""

    config: str  # the config file
    env_id: str
    controller: str  # the core and the number of evolved weights
    target: float
    seed: int
    max_evaluations: int
    solved: bool
    evaluations: int  # until the solving generation, or all the run made
    held_out_return: float  # the kept controller's mean return over the held-out episodes
    seconds: float  # wall time of the search (the held-out episodes not included)


def _run_gym_seed(path: str, config, held_out_episodes: int) -> GymRun:
    from fwp_rl.agents.neuroevolution import Evolution

    start = time.perf_counter()
    evolution = Evolution(config)
    while not evolution.done:
        evolution.step()
    result = evolution.finish()
    seconds = time.perf_counter() - start
    episodes, _ = evolution.play(config.seed + EVAL_SEED_OFFSET, held_out_episodes, deterministic=True)
    return GymRun(path, config.env.id, f"{config.policy.core}, {result.flat_params.numel()} weights",
                  config.search.target, config.seed, config.search.max_evaluations, result.solved, result.evaluations,
                  statistics.mean(e.raw_return for e in episodes), seconds)


def _quiet_evotorch() -> None:
    from fwp_rl.agents.neuroevolution import quiet_evotorch

    quiet_evotorch()


def bench_gym(config_paths: list[str], seeds: int = 5, max_evaluations: int | None = None, parallel: int = 1,
              held_out_episodes: int = 20, console: Console | None = None,
              on_run: Callable[[list[GymRun]], None] | None = None) -> list[GymRun]:
    """Seeds 0 .. seeds - 1 of every config at ``config_paths``, each a search that stops at its target or at
    search.max_evaluations (``max_evaluations`` overrides it), then ``held_out_episodes`` held-out episodes of its
    kept controller; one torch thread each, ``parallel`` at a time in worker processes or one after the other here.
    Every config is loaded and checked before the first run. ``on_run`` gets every finished run after each. Returns
    the runs in the order config, seed."""
    check_positive("--seeds", seeds)
    check_positive("--parallel", parallel)
    check_positive("--held-out-episodes", held_out_episodes)
    if max_evaluations is not None:
        check_positive("--max-evaluations", max_evaluations)
    jobs = [(str(path), load_gym_config(str(path), seed, max_evaluations), held_out_episodes)
            for path in config_paths for seed in range(seeds)]
    runs: list[GymRun | None] = [None] * len(jobs)
    _quiet_evotorch()

    def finish(i: int, run: GymRun) -> None:
        runs[i] = run
        if on_run is not None:
            on_run([r for r in runs if r is not None])

    run_bench_jobs(_run_gym_seed, dict(enumerate(jobs)), parallel, finish, console or Console(), "gym runs", len(jobs),
                   setup=_quiet_evotorch)
    return runs


def summarize_gym(runs: list[GymRun]) -> list[dict]:
    """One row per config, in the runs' order: runs that reached the target, evaluations to reach it (mean, median,
    over those runs; None where none did), the held-out return (mean, min, over every run) and seconds per run."""
    groups: dict[str, list[GymRun]] = {}
    for run in runs:
        groups.setdefault(run.config, []).append(run)
    rows = []
    for config, group in groups.items():
        solved = [r.evaluations for r in group if r.solved]
        held_out = [r.held_out_return for r in group]
        rows.append(dict(config=config, name=Path(config).stem, env_id=group[0].env_id,
                         controller=group[0].controller, target=group[0].target,
                         max_evaluations=group[0].max_evaluations, runs=len(group), solved=len(solved),
                         mean_evaluations=statistics.mean(solved) if solved else None,
                         median_evaluations=statistics.median(solved) if solved else None,
                         held_out_mean=statistics.mean(held_out), held_out_min=min(held_out),
                         held_out_above_target=sum(h >= group[0].target for h in held_out),
                         mean_seconds=statistics.mean(r.seconds for r in group)))
    return rows


def _figure(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_gym_table(rows: list[dict], title: str, held_out_episodes: int, console: Console | None = None) -> None:
    table = Table(title=title)
    numbers = ("target", "max evals", "reached", "evals mean", "evals median", "held-out mean", "held-out min",
               "held-out >= target", "s / run")
    for column in ("config", "env", "controller", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for r in rows:
        table.add_row(r["name"], r["env_id"], r["controller"], _figure(r["target"]), f"{r['max_evaluations']:,}",
                      f"{r['solved']}/{r['runs']}", _figure(r["mean_evaluations"]), _figure(r["median_evaluations"]),
                      _figure(r["held_out_mean"], 1), _figure(r["held_out_min"], 1),
                      f"{r['held_out_above_target']}/{r['runs']}", _figure(r["mean_seconds"], 1))
    table.caption = (f"reached: a generation's best candidate reached the target (its mean return over env.episodes "
                     f"episodes); evals: over those runs; held-out: each run's kept controller, mean return over "
                     f"{held_out_episodes} episodes the search never saw")
    (console or Console()).print(table)


# ---------------------------------------------------------------------------------------------- speed
def _random_candidates(popsize: int, weights: int) -> torch.Tensor:
    """The candidates both sides of the speed comparison evaluate: uniform in [-1, 1], the same draw every time."""
    return torch.rand(popsize, weights, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _our_evaluation(config, popsize: int) -> tuple[Callable[[], tuple[int, float]], int]:
    """() -> (env steps, seconds) of one ``GymProblem`` evaluation of ``popsize`` random candidates of ``config``'s
    policy, one episode each; and the number of weights."""
    from fwp_rl.agents.neuroevolution import GymProblem, make_policy

    policy = make_policy(config)
    problem = GymProblem(policy, config.env.id, config.env.options, 1, config.search, config.seed)
    values = _random_candidates(popsize, policy.num_flat_parameters)
    return timed_evaluation(problem, values, lambda: problem.env_steps), policy.num_flat_parameters


def _vecgymne_evaluation(env_id: str, options: dict, hidden_size: int, popsize: int
                         ) -> tuple[Callable[[], tuple[int, float]], int]:
    """The same for EvoTorch's VecGymNE with EvoTorch's own LSTM (``hidden_size`` units) and a linear readout."""
    from evotorch.neuroevolution import VecGymNE
    from evotorch.neuroevolution.net import MultiLayered
    from evotorch.neuroevolution.net.layers import LSTM
    from gymnasium import make

    from fwp_rl.envs.vector import flat_observations

    probe = flat_observations(make(env_id, **options), env_id)
    obs, act = probe.observation_space.shape[0], getattr(probe.action_space, "n", None)
    act = int(act) if act is not None else probe.action_space.shape[0]
    probe.close()
    net = MultiLayered(LSTM(obs, hidden_size), nn.Linear(hidden_size, act))
    problem = VecGymNE(env_id, net, env_config=options, device="cpu")
    weights = sum(p.numel() for p in net.parameters())
    return timed_evaluation(problem, _random_candidates(popsize, weights), lambda: problem.interaction_count), weights


def bench_gym_throughput(config_paths: list[str], popsize: int = 64, repeats: int = 3) -> list[dict]:
    """Env steps per second of one population evaluation (``popsize`` random candidates, one episode each) of every
    config's controller, and, on each config's task, of EvoTorch's VecGymNE with an LSTM of the size of the first
    lstm config of that task (8 units if there is none). After one warm-up evaluation each, the ``repeats``
    evaluations of all sides take turns; a row has the medians and its ratio to VecGymNE's steps/s on its task."""
    check_positive("--popsize", popsize)
    check_positive("--repeats", repeats)
    configs = [(path, load_gym_config(path, 0)) for path in config_paths]
    _quiet_evotorch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides on one thread: the envs step in one Python loop on either side
    try:
        sides = []  # (row, evaluate)
        for path, config in configs:
            evaluate, weights = _our_evaluation(config, popsize)
            sides.append((dict(side=f"fwp-rl {Path(path).stem}", env_id=config.env.id, weights=weights,
                               network=f"RecurrentPolicy, {config.policy.core} core"), evaluate))
        for env_id in dict.fromkeys(config.env.id for _, config in configs):
            of_task = [c for _, c in configs if c.env.id == env_id]
            lstm = [c for c in of_task if c.policy.core == "lstm"]
            hidden = lstm[0].policy.core_options.get("hidden_size", 8) if lstm else 8
            evaluate, weights = _vecgymne_evaluation(env_id, of_task[0].env.options, hidden, popsize)
            sides.append((dict(side="EvoTorch VecGymNE", env_id=env_id, weights=weights,
                               network=f"MultiLayered(LSTM(obs, {hidden}), Linear({hidden}, actions))"), evaluate))
        for _, evaluate in sides:
            evaluate()  # warm-up: both sides make their envs
        measured: list[list[tuple[int, float]]] = [[] for _ in sides]
        for _ in range(repeats):
            for (_, evaluate), times in zip(sides, measured):
                times.append(evaluate())
    finally:
        torch.set_num_threads(threads)
    rows = [dict(row, popsize=popsize, steps=statistics.median(n for n, _ in times),
                 seconds=statistics.median(s for _, s in times),
                 steps_per_second=statistics.median(n / s for n, s in times))
            for (row, _), times in zip(sides, measured)]
    reference = {r["env_id"]: r["steps_per_second"] for r in rows if r["side"] == "EvoTorch VecGymNE"}
    for row in rows:
        row["vs_vecgymne"] = row["steps_per_second"] / reference[row["env_id"]]
    return rows


def print_gym_throughput_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    console = console or Console()
    numbers = ("weights", "candidates", "steps / candidate", "median s", "env steps/s", "x VecGymNE")
    table = Table(title=title)
    for column in ("evaluation", "env", "controller", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for r in rows:
        table.add_row(r["side"], r["env_id"], r["network"], f"{r['weights']:,}", f"{r['popsize']:,}",
                      f"{r['steps'] / r['popsize']:,.0f}", f"{r['seconds']:.3f}", f"{r['steps_per_second']:,.0f}",
                      f"{r['vs_vecgymne']:.2f}")
    table.caption = ("random candidates from [-1, 1], one episode each; fwp-rl: GymProblem, one Gymnasium vector env "
                     "of the population; VecGymNE: EvoTorch's, the same way; x VecGymNE: against its steps/s on the "
                     "same env")
    console.print(table)


def run_gym_bench(options: GymBenchOptions, console: Console | None = None) -> int:
    """``fwp-rl bench gym``: the success table, then the speed comparison (``options.only`` picks one);
    ``options.json`` keeps the runs, rows and speeds (rewritten after every run). Returns the exit status: 1 when a
    worker process died (after the table of the runs that finished)."""
    console = console or Console()
    paths = gym_config_paths(options.configs)
    for path in paths:  # every config checked before minutes of runs
        load_gym_config(path, 0, options.max_evaluations)
    figures: dict = {}

    def save() -> None:
        if options.json:
            atomic_write_text(options.json, json.dumps(figures))

    if options.only != "throughput":
        def keep(runs: list[GymRun]) -> None:
            figures.update(runs=[asdict(r) for r in runs], rows=summarize_gym(runs))
            save()

        died = None
        try:
            keep(bench_gym(paths, options.seeds, options.max_evaluations, options.parallel, options.held_out_episodes,
                           console, keep))
        except WorkerDied as e:  # the runs that finished are kept and shown
            died = e
        workers = "" if options.parallel == 1 else f"; {options.parallel} worker processes"
        if figures.get("rows"):
            print_gym_table(figures["rows"], f"fwp-rl bench gym: seeds 0 to {options.seeds - 1} of each config"
                                             f"{workers}{'; the runs that finished' if died else ''}; "
                                             f"{machine_description(torch.device('cpu'), threads=1)}",
                            options.held_out_episodes, console)
        if died is not None:
            console.print(f"[red]stopped: {died}[/red]")
            return 1
    if options.only != "success":
        rows = bench_gym_throughput(paths, options.popsize, options.repeats)
        print_gym_throughput_table(rows, f"Env steps per second of one population evaluation, median of "
                                         f"{options.repeats}; {machine_description(torch.device('cpu'), threads=1)}",
                                   console)
        figures.update(throughput=rows)
        save()
    return 0
