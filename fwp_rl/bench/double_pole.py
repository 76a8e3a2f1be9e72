"""``fwp-rl bench double-pole``: neuroevolution on the double pole, success over seeds beside the published table
(runs in this process or in worker processes, fwp_rl.workers, each kept in the JSON file as it finishes), and the
simulated steps per second of our batched evaluation against EvoTorch's VecGymNE, both running a hand-made
controller that balances the whole episode."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from fwp_rl.bench.timing import check_positive, machine_description, sync, timed_evaluation
from fwp_rl.config import ConfigError, parse_device, to_dict
from fwp_rl.files import atomic_write_text
from fwp_rl.learners import load_config
from fwp_rl.workers import WorkerDied, run_bench_jobs


@dataclass(frozen=True)
class DoublePoleOptions:
    """The options of ``fwp-rl bench double-pole`` (their defaults and help: fwp_rl.cli); ``configs`` None: every
    file in configs/double_pole/, ``devices`` None: the CPU and CUDA when there is one, ``only`` None: both parts."""

    configs: list[str] | None
    tasks: list[str]
    seeds: int
    max_evaluations: int | None
    parallel: int
    popsize: int
    larger_popsizes: list[int]
    devices: list[str] | None
    repeats: int
    only: str | None
    compile: bool
    json: str | None


DOUBLE_POLE_CONFIG_DIR = Path("configs/double_pole")
DOUBLE_POLE_KIND = "a neuroevolution double pole config (learner: neuroevolution, env.id: double_pole)"

# Evaluations to solve as published (docs/double_pole.md; means over many runs, setups differ between
# papers): method, with velocities, without velocities (damping fitness), generalization of 625 (None: not given).
PUBLISHED_DOUBLE_POLE = (
    ("random weight guessing", 474_329, 1_232_296, None),
    ("cellular encoding (Gruau 1996)", None, 840_000, 300),
    ("SANE", 12_600, 451_612, None),
    ("CNE", 22_100, 87_623, None),
    ("ESP", 3_800, 26_342, 289),
    ("NEAT", 3_600, 6_929, 286),
    ("CMA-ES (Igel 2003)", 895, 6_061, 250),
    ("CoSyNE", 954, 3_416, None),
)


def _quiet_evotorch() -> None:
    from fwp_rl.agents.neuroevolution import quiet_evotorch

    quiet_evotorch()


def double_pole_config_paths(paths: list[str] | None = None) -> list[str]:
    """``paths``, or every YAML file in configs/double_pole/ (relative to the working directory)."""
    if paths is not None:
        return paths
    found = [str(p) for p in sorted(DOUBLE_POLE_CONFIG_DIR.glob("*.yaml"))]
    if not found:
        raise ConfigError(f"no config files in {DOUBLE_POLE_CONFIG_DIR}/: run from the repository root or give "
                            "--configs")
    return found


def load_double_pole_config(path: str, task: str, seed: int, max_evaluations: int | None = None,
                            compile: bool = False):
    """The config of one bench run: the file at ``path`` with env.options.task, seed and (when given)
    search.max_evaluations overridden, and search.compile set when ``compile``. ConfigError unless the file is a
    neuroevolution double pole config."""
    from fwp_rl.agents.neuroevolution import DOUBLE_POLE
    from fwp_rl.config import load_yaml

    if not Path(path).is_file():
        raise ConfigError(f"--configs: config file {path!r} does not exist; give files of {DOUBLE_POLE_KIND}")
    data = load_yaml(path)
    env = data.get("env")
    env_id = env.get("id", DOUBLE_POLE) if isinstance(env, dict) else DOUBLE_POLE  # EnvConfig's default id
    if data.get("learner") != "neuroevolution" or env_id != DOUBLE_POLE:
        raise ConfigError(f"--configs: {path!r} (learner: {data.get('learner')!r}, env.id: {env_id!r}) is not "
                          f"{DOUBLE_POLE_KIND}")
    overrides = [f"env.options.task={task}", f"seed={seed}"]
    if max_evaluations is not None:
        overrides.append(f"search.max_evaluations={max_evaluations}")
    if compile:
        overrides.append("search.compile=true")
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        raise ConfigError(f"--configs {path!r}: {e}") from None


def run_settings(config) -> str:
    """A digest of everything a bench run's config sets (the file's values, task, seed, budget, compile): two runs
    with the same digest ran the same search."""
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class DoublePoleRun:
    """One seed of one (config, task) of ``bench_double_pole``: how its ``evolve`` ended."""

    config: str  # the config file
    settings: str  # run_settings of its config
    algorithm: str
    controller: str  # the core and the number of evolved weights
    task: str
    seed: int
    max_evaluations: int
    solved: bool
    evaluations: int  # until the solving generation, or all the run made
    generalization: int | None  # starts of 625 that the kept controller's success test passed (None: not run)
    balanced: int | None  # steps it balanced in that test's 100,000-step part (None: no test; non-Markov: 0
    # where the generalization part failed, which skips this part)
    seconds: float  # wall time of the whole run (policy, problem, search and tests)
    flat_params: Tensor  # the kept controller: the solution when solved

    def to_json(self) -> dict:
        return {**asdict(self), "flat_params": self.flat_params.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> DoublePoleRun:
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"a run lacks {', '.join(missing)}")
        return cls(**{**data, "flat_params": torch.tensor(data["flat_params"], dtype=torch.float32)})


class DoublePoleBenchInterrupted(Exception):
    """Ctrl-C, or a worker process that died, stopped ``bench_double_pole``: ``by`` says which; ``runs`` are those
    that had finished, in the runs' order."""

    def __init__(self, runs: list[DoublePoleRun], by: str = "Ctrl-C"):
        super().__init__(f"stopped by {by} after {len(runs)} finished runs")
        self.runs, self.by = runs, by


def read_double_pole_bench(path: str) -> tuple[dict, list[DoublePoleRun]]:
    """The figures in a JSON file that ``fwp-rl bench double-pole --json`` wrote, and its runs; nothing if there is
    no file."""
    if not Path(path).exists():
        return {}, []
    try:
        figures = json.loads(Path(path).read_text())
        return figures, [DoublePoleRun.from_json(run) for run in figures.get("runs", [])]
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"--json {path!r} exists but is not a file of fwp-rl bench double-pole ({e}); give a new "
                          "file, or the file of a bench to continue") from None


def _run_double_pole_seed(path: str, config) -> DoublePoleRun:
    from fwp_rl.agents.neuroevolution import evolve
    from fwp_rl.envs.double_pole import make_config

    start = time.perf_counter()
    result = evolve(config)
    seconds = time.perf_counter() - start
    controller = f"{config.policy.core}, {result.flat_params.numel()} weights"
    test = result.test
    return DoublePoleRun(path, run_settings(config), config.search.algorithm, controller,
                         make_config(**config.env.options).task, config.seed, config.search.max_evaluations,
                         result.solved, result.evaluations, None if test is None else test.generalization,
                         None if test is None else test.balanced, seconds, result.flat_params)


def bench_double_pole(config_paths: list[str], tasks=("markov", "nonmarkov"), seeds: int = 50,
                      max_evaluations: int | None = None, parallel: int = 1, console: Console | None = None,
                      compile: bool = False, finished: list[DoublePoleRun] = (),
                      on_run: Callable[[list[DoublePoleRun]], None] | None = None) -> list[DoublePoleRun]:
    """Seeds 0 .. seeds - 1 of every config at ``config_paths`` on every task, each one ``evolve`` that stops when
    solved or at search.max_evaluations (``max_evaluations`` overrides it; ``compile`` sets search.compile), with one
    torch thread each: ``parallel`` at a time in worker processes, or one after the other in this process. Every
    config is loaded and checked before the first run starts.

    ``finished`` are runs of an earlier bench to keep instead of running them again (ConfigError if one is not a
    run of this bench: another config, task, seed or setting). After each run, ``on_run`` gets every finished run so
    far. Returns the runs in the order config, task, seed; Ctrl-C, or a worker process that died, raises
    DoublePoleBenchInterrupted with the finished ones."""
    from fwp_rl.envs.double_pole import TASKS

    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ConfigError(f"--tasks {','.join(tasks)!r} is not allowed; choose from: {', '.join(TASKS)} "
                            "(comma-separated)")
    check_positive("--seeds", seeds)
    check_positive("--parallel", parallel)
    if max_evaluations is not None:
        check_positive("--max-evaluations", max_evaluations)
    jobs = [(str(path), load_double_pole_config(str(path), task, seed, max_evaluations, compile))
            for path in config_paths for task in dict.fromkeys(tasks) for seed in range(seeds)]
    slots = {(path, config.seed, run_settings(config)): i for i, (path, config) in enumerate(jobs)}
    runs: list[DoublePoleRun | None] = [None] * len(jobs)
    for run in finished:
        if (run.config, run.seed, run.settings) not in slots:
            raise ConfigError(f"the kept run of {run.config} ({run.task}, seed {run.seed}) is not one of this bench's "
                              "runs: its config file, task, seed, budget or compile setting differ; give the same "
                              "options as the bench that wrote it, or a new --json file")
        runs[slots[run.config, run.seed, run.settings]] = run
    todo = {i: job for i, job in enumerate(jobs) if runs[i] is None}
    _quiet_evotorch()

    def finish(i: int, run: DoublePoleRun) -> None:
        runs[i] = run
        if on_run is not None:
            on_run([r for r in runs if r is not None])

    try:
        run_bench_jobs(_run_double_pole_seed, todo, parallel, finish, console or Console(), "double pole runs",
                       len(jobs), setup=_quiet_evotorch)
    except KeyboardInterrupt:
        raise DoublePoleBenchInterrupted([r for r in runs if r is not None]) from None
    except WorkerDied as e:
        raise DoublePoleBenchInterrupted([r for r in runs if r is not None], f"an error: {e}") from None
    return runs


def summarize_double_pole(runs: list[DoublePoleRun]) -> list[dict]:
    """One row per (config, task), in the runs' order: the success rate over all its runs (unsolved ones
    included), evaluations to solve (mean, median) and generalization (mean) over the solved runs, None
    where none solved; the mean wall time per run."""
    groups: dict[tuple[str, str], list[DoublePoleRun]] = {}
    for run in runs:
        groups.setdefault((run.config, run.task), []).append(run)
    rows = []
    for (config, task), group in groups.items():
        solved = [r for r in group if r.solved]
        evaluations = [r.evaluations for r in solved]
        rows.append(dict(
            config=config, name=Path(config).stem, algorithm=group[0].algorithm, controller=group[0].controller,
            task=task, max_evaluations=group[0].max_evaluations, runs=len(group), solved=len(solved),
            success_rate=len(solved) / len(group),
            mean_evaluations=statistics.mean(evaluations) if solved else None,
            median_evaluations=statistics.median(evaluations) if solved else None,
            mean_generalization=statistics.mean(r.generalization for r in solved) if solved else None,
            mean_seconds=statistics.mean(r.seconds for r in group)))
    return rows


def _figure(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_double_pole_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("config", "algorithm", "controller", "task", "max evals", "solved", "evals mean",
                   "evals median", "generalization /625", "s / run"):
        table.add_column(column, justify="left" if column in ("config", "algorithm", "controller", "task")
                         else "right")
    for r in rows:
        table.add_row(r["name"], r["algorithm"], r["controller"], r["task"], f"{r['max_evaluations']:,}",
                      f"{r['solved']}/{r['runs']} ({r['success_rate']:.0%})", _figure(r["mean_evaluations"]),
                      _figure(r["median_evaluations"]), _figure(r["mean_generalization"]),
                      _figure(r["mean_seconds"], 1))
    table.caption = ("evaluations and generalization: over the solved runs; solved: 100,000 steps balanced "
                     "(non-Markov: and at least 200 of the 625 generalization starts)")
    (console or Console()).print(table)


def print_published_comparison(rows: list[dict], console: Console | None = None) -> None:
    """The published table of docs/double_pole.md with ours below it in the same columns."""
    table = Table(title="Evaluations to solve: published (means over many runs) and ours (means over the solved "
                        "runs)")
    for column in ("method", "with velocities", "without velocities (damping fitness)", "generalization (/625)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, markov, nonmarkov, generalization in PUBLISHED_DOUBLE_POLE:
        table.add_row(method, _figure(markov), _figure(nonmarkov), _figure(generalization))
    table.add_section()
    ours: dict[str, dict[str, dict]] = {}
    for r in rows:
        ours.setdefault(r["config"], {})[r["task"]] = r

    def cell(row: dict | None) -> str:
        return "" if row is None else f"{_figure(row['mean_evaluations'])} ({row['solved']}/{row['runs']} solved)"

    for tasks in ours.values():
        first = next(iter(tasks.values()))
        nonmarkov = tasks.get("nonmarkov")
        table.add_row(f"fwp-rl: {first['name']} ({first['algorithm']})", cell(tasks.get("markov")), cell(nonmarkov),
                      "" if nonmarkov is None else _figure(nonmarkov["mean_generalization"]))
    table.caption = ("published: docs/double_pole.md (setups differ between papers: start angle, cart "
                     "friction, network size, fitness window); ours: the configs' own settings")
    (console or Console()).print(table)


# ---------------------------------------------------------------------------------------------- double pole speed
# What the speed comparison runs, on both sides: copies of one hand-made Elman controller (4 inputs, 6 tanh
# units, one output squashed to [0, 1]) that balances the non-Markov double pole for the whole 1,000-step episode,
# so that both simulate the same steps. Ours: fwp_rl's RecurrentPolicy (identity torso, elman core, linear actor,
# action_squash) in DoublePoleProblem, one batched rollout of the torch simulator for the whole population
# (population_fitness). EvoTorch's: VecGymNE on the registered Gymnasium id, one DoublePoleEnv per candidate (made
# by gym.make, stepped one by one in EvoTorch's SyncVectorEnv) and the same network as
# MultiLayered(RNN(4, 6), Linear(6, 1), (tanh + 1) / 2), its parameters in the same order: the same 79 weights.
THROUGHPUT_ENV_ID = "fwp_rl/DoublePoleNoVel-v0"
BALANCING_HIDDEN = 6  # units of the hand-made controller: 3 inputs held, and their 3 one-step differences
_BALANCING_GAIN = 0.1  # its input gain: small, so that every tanh unit stays in its nearly linear range
_RICCATI_ITERATIONS = 2_000  # the closed loop contracts by about 0.98 per step: far past convergence


def balancing_controller() -> tuple[Tensor, ...]:
    """The weights of the hand-made Elman controller, float64: (W_ih [6, 4], W_hh [6, 6], b_ih [6], b_hh [6],
    W_out [1, 6], b_out [1]); the output a becomes o = (tanh(a) + 1) / 2, a force of 10 tanh(a) N.

    A discrete linear-quadratic regulator (Q = I, R = 1) of one control step linearised at the upright state,
    reading the velocities from one-step differences of the non-Markov inputs (x / 4.8, theta1 / 0.52,
    theta2 / 0.52, bias): units 0-2 hold g input_i, units 3-5 g input_i - unit_i(t - 1), about
    g (input_i(t) - input_i(t - 1)) = g velocity 0.02 s / scale, and a force of about 10 a N is the regulator's.
    It balances the whole non-Markov fitness episode (and passes the generalization test); it is made, not
    evolved, so that every candidate of a speed measurement runs the full episode.
    """
    from fwp_rl.envs import double_pole as dp

    smooth = dp.DoublePoleConfig(task="nonmarkov", cart_friction=False)  # sgn(x_dot) has no derivative at rest
    upright, no_force = torch.zeros(6, dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    A, B = torch.autograd.functional.jacobian(lambda s, f: dp.step_physics(s, f, smooth), (upright, no_force))
    A, B = A.numpy(), B.numpy()[:, None]
    P = Q = np.eye(6)
    R = np.eye(1)
    for _ in range(_RICCATI_ITERATIONS):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A - B @ K)
    g, dt, hidden = _BALANCING_GAIN, dp.TIME_STEP * dp.SUBSTEPS, BALANCING_HIDDEN
    W_ih, W_hh, W_out = np.zeros((hidden, 4)), np.zeros((hidden, hidden)), np.zeros((1, hidden))
    for i, column in enumerate((0, 2, 4)):  # the state columns of x, theta1, theta2
        scale = dp.INPUT_SCALES[column]
        W_ih[i, i] = W_ih[3 + i, i] = g
        W_hh[3 + i, i] = -1.0
        W_out[0, i] = -K[0, column] * scale / (dp.MAX_FORCE * g)  # F = -K state
        W_out[0, 3 + i] = -K[0, column + 1] * scale / (dp.MAX_FORCE * g * dt)
    return tuple(torch.from_numpy(w) for w in (W_ih, W_hh, np.zeros(hidden), np.zeros(hidden), W_out, np.zeros(1)))


def _balancing_config(device: str, compile: bool = False):
    from fwp_rl.agents.neuroevolution import EnvConfig, NeuroevolutionConfig, SearchConfig
    from fwp_rl.config import PolicyConfig

    policy = PolicyConfig(torso="identity", core="elman", core_options={"hidden_size": BALANCING_HIDDEN},
                          action_squash=True)
    return NeuroevolutionConfig(env=EnvConfig(options={"task": "nonmarkov"}), policy=policy,
                                search=SearchConfig(device=device, compile=compile))


def balancing_policy(device: str = "cpu"):
    """Our RecurrentPolicy (identity torso, elman core of 6 units, linear actor, action_squash) holding
    ``balancing_controller``."""
    from fwp_rl.agents.neuroevolution import make_policy

    policy = make_policy(_balancing_config(device))
    rnn = policy.core.rnn
    with torch.no_grad():
        for parameter, weight in zip((rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0,
                                      policy.actor.weight, policy.actor.bias), balancing_controller()):
            parameter.copy_(weight)
    return policy


class _Squash(nn.Module):
    """o = (tanh(a) + 1) / 2: how our policy maps its output onto the action Box [0, 1] (``action_squash``)."""

    def forward(self, x: Tensor) -> Tensor:
        return (torch.tanh(x) + 1) / 2


def _our_evaluation(popsize: int, device: str, compile: bool):
    """() -> (control steps simulated, seconds) of one DoublePoleProblem evaluation of the population."""
    from fwp_rl.agents.neuroevolution import make_task
    from fwp_rl.envs.double_pole import NONMARKOV_STEPS

    policy = balancing_policy(device)
    problem = make_task(_balancing_config(device, compile), policy).problem
    values = policy.get_flat_parameters().repeat(popsize, 1)
    dev = torch.device(device)

    def evaluate() -> tuple[int, float]:
        batch = problem.generate_batch(popsize)
        batch.set_values(values)
        sync(dev)
        start = time.perf_counter()
        problem.evaluate(batch)
        sync(dev)
        seconds = time.perf_counter() - start
        balanced = batch.evals[:, 1].to(torch.int64)  # a candidate that fell was simulated for its failing step too
        return int((balanced + 1).clamp(max=NONMARKOV_STEPS).sum()), seconds

    return evaluate, policy.num_flat_parameters


def _vecgymne_evaluation(popsize: int):
    """() -> (control steps simulated, seconds) of one VecGymNE evaluation of the population, on the CPU."""
    from evotorch.neuroevolution import VecGymNE
    from evotorch.neuroevolution.net import MultiLayered
    from evotorch.neuroevolution.net.layers import RNN
    from torch.nn.utils import parameters_to_vector

    rnn, readout = RNN(4, BALANCING_HIDDEN), nn.Linear(BALANCING_HIDDEN, 1)
    with torch.no_grad():
        for parameter, weight in zip((rnn.W1, rnn.W2, rnn.b1, rnn.b2, readout.weight, readout.bias),
                                     balancing_controller()):
            parameter.copy_(weight)
    net = MultiLayered(rnn, readout, _Squash())
    problem = VecGymNE(THROUGHPUT_ENV_ID, net, device="cpu")
    values = parameters_to_vector(net.parameters()).detach().repeat(popsize, 1)

    # VecGymNE's own count of the steps its environments took
    return timed_evaluation(problem, values, lambda: problem.interaction_count), values.shape[1]


def _check_throughput_options(popsize: int, repeats: int, larger_popsizes, devices: list[str] | None) -> None:
    for option, value in (("--popsize", popsize), ("--repeats", repeats),
                          *(("--larger-popsizes", p) for p in larger_popsizes)):
        check_positive(option, value)
    for device in devices or ():
        parse_device(f"--devices {','.join(devices)}: {device!r}", device)


def bench_double_pole_throughput(popsize: int = 64, repeats: int = 3, devices: list[str] | None = None,
                                 compile: bool = False, larger_popsizes: tuple[int, ...] = ()) -> list[dict]:
    """Simulated control steps per second of one population evaluation on the non-Markov task: ours
    (DoublePoleProblem) on each of ``devices`` (default: the CPU, and CUDA when there is one; with ``compile``,
    eager and compiled, ``SearchConfig.compile``) against EvoTorch's VecGymNE on the CPU, all on ``popsize``
    copies of ``balancing_controller`` (see the comment above it). Ours is timed at each of ``larger_popsizes``
    too, against VecGymNE's figure at ``popsize``: VecGymNE steps one Gymnasium env per candidate in a Python
    loop, so its steps per second hardly change with the population, while an evaluation at 65,536 candidates
    would keep it busy for hours.

    Each side counts the steps it simulated (VecGymNE: its interaction count; ours: the steps balanced, plus
    the failing one of a candidate that fell). After one warm-up evaluation each, the ``repeats`` evaluations
    of the sides take turns, so that the load of a shared machine falls on all alike; a row has the medians."""
    _check_throughput_options(popsize, repeats, larger_popsizes, devices)
    if devices is None:
        devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    _quiet_evotorch()
    sides = []  # (row, evaluate)
    variants = (False, True) if compile else (False,)  # eager, then compiled
    for size, device, compiled in ((p, d, c) for p in (popsize, *larger_popsizes) for d in devices for c in variants):
        evaluate, weights = _our_evaluation(size, device, compiled)
        sides.append((dict(side="fwp-rl DoublePoleProblem" + (", compiled" if compiled else ""), device=device,
                           popsize=size, weights=weights,
                           evaluation="one batched rollout of the torch simulator for the whole population"
                                      + (", each control step one torch.compile program (search.compile)"
                                         if compiled else ""),
                           network="RecurrentPolicy: identity torso, elman core (6 units), linear actor, "
                                   "action_squash"), evaluate))
    evaluate, weights = _vecgymne_evaluation(popsize)
    sides.append((dict(side="EvoTorch VecGymNE", device="cpu", popsize=popsize, weights=weights,
                       evaluation=f"{THROUGHPUT_ENV_ID!r}, one Gymnasium env per candidate in EvoTorch's "
                                  "SyncVectorEnv",
                       network="MultiLayered(RNN(4, 6), Linear(6, 1), (tanh + 1) / 2)"), evaluate))
    for _, evaluate in sides:
        evaluate()  # warm-up: our population step is traced (and compiled) once per shapes, VecGymNE makes its envs
    measured: list[list[tuple[int, float]]] = [[] for _ in sides]
    for _ in range(repeats):
        for (_, evaluate), times in zip(sides, measured):
            times.append(evaluate())
    rows = [dict(row, steps=times[-1][0], seconds=statistics.median(s for _, s in times),
                 steps_per_second=statistics.median(n / s for n, s in times))
            for (row, _), times in zip(sides, measured)]
    reference = rows[-1]["steps_per_second"]
    for row in rows:
        row["vs_vecgymne"] = row["steps_per_second"] / reference
    return rows


def print_throughput_table(rows: list[dict], title: str, console: Console | None = None) -> None:
    console = console or Console()
    numbers = ("candidates", "steps / candidate", "median s", "steps/s", "x VecGymNE (CPU)")
    table = Table(title=title)
    for column in ("evaluation", "device", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for r in rows:
        table.add_row(r["side"], r["device"], f"{r['popsize']:,}", f"{r['steps'] / r['popsize']:,.0f}",
                      f"{r['seconds']:.3f}", f"{r['steps_per_second']:,.0f}", f"{r['vs_vecgymne']:.1f}")
    console.print(table)
    console.print("Every candidate is the same hand-made controller (bench.balancing_controller: a linear-quadratic "
                  "regulator on one-step differences) that balances the whole 1,000-step non-Markov episode; "
                  "steps / candidate: the steps each side simulated, divided by the population; "
                  f"x VecGymNE: against VecGymNE's steps/s with {rows[-1]['popsize']:,} candidates.")
    for r in {r["side"]: r for r in rows}.values():
        console.print(f"{r['side']}: {r['evaluation']}; controller {r['network']}, {r['weights']} weights.")


def run_double_pole_bench(options: DoublePoleOptions, console: Console | None = None) -> int:
    """``fwp-rl bench double-pole``: the success table over seeds beside the published one, then the speed
    comparison with VecGymNE (``options.only`` picks one of them). ``options.json`` keeps every figure, and every run
    as soon as it finishes: a bench given the file of an earlier one with the same options keeps its runs and makes
    only the others. Returns the exit status: 130 when Ctrl-C stopped the runs, 1 when a worker process died (after
    printing the table of those that finished)."""
    console = console or Console()
    # checked before hours of runs, not after them
    _check_throughput_options(options.popsize, options.repeats, options.larger_popsizes, options.devices)
    if options.compile:  # checked before any run
        from fwp_rl.envs.double_pole import compile_unavailable

        unavailable = compile_unavailable("cpu")
        if unavailable:
            raise ConfigError(f"--compile is not possible here: {unavailable}")
    figures, finished = read_double_pole_bench(options.json) if options.json else ({}, [])

    def save() -> None:
        if options.json:
            atomic_write_text(options.json, json.dumps(figures))

    if options.only != "throughput":
        if finished:
            console.print(f"keeping the {len(finished)} finished runs in {options.json}")

        def keep(runs: list[DoublePoleRun]) -> None:
            figures.update(runs=[r.to_json() for r in runs], rows=summarize_double_pole(runs))
            save()

        stopped_by = None
        try:
            runs = bench_double_pole(double_pole_config_paths(options.configs), options.tasks, options.seeds,
                                     options.max_evaluations, options.parallel, console, options.compile, finished,
                                     keep)
        except DoublePoleBenchInterrupted as e:
            runs, stopped_by = e.runs, e.by
        keep(runs)
        workers = "" if options.parallel == 1 else f"; {options.parallel} worker processes"
        workers += "; search.compile" if options.compile else ""
        title = f"fwp-rl bench double-pole: seeds 0 to {options.seeds - 1} of each config and task{workers}"
        if stopped_by:
            title += f"; interrupted: the {len(runs)} runs that finished"
        # every run uses one thread (bench_double_pole sees to it), whatever this process has
        machine = machine_description(torch.device("cpu"), threads=1)
        print_double_pole_table(figures["rows"], f"{title}; {machine}", console)
        print_published_comparison(figures["rows"], console)
        if stopped_by:
            again = f"; the same command continues it from {options.json}" if options.json else ""
            console.print(f"[yellow]stopped by {stopped_by}: the runs under way are lost{again}[/yellow]")
            return 130 if stopped_by == "Ctrl-C" else 1
    if options.only != "success":
        rows = bench_double_pole_throughput(options.popsize, options.repeats, options.devices, options.compile,
                                            tuple(options.larger_popsizes))
        machines = "; ".join(dict.fromkeys(machine_description(torch.device(r["device"])) for r in rows))
        print_throughput_table(rows, f"Simulated steps per second of one population evaluation, median of "
                                     f"{options.repeats}; {machines}", console)
        figures.update(throughput=rows)
        save()
    return 0
