"""Neuroevolution: EvoTorch's search algorithms over the flat parameter vector of a recurrent policy.

The split follows EvoTorch: a *problem* says how good a parameter vector is, a *searcher* (CMA-ES,
SNES, XNES, PGPE, CEM, CoSyNE, a genetic algorithm) proposes the next population. The problems here
evaluate a whole population at once:

- ``DoublePoleProblem``: the torch double pole of ``fwp_rl.envs``; the population runs as one batched
  rollout, one policy call per control step for every candidate (``PolicyPopulation``), finished
  simulations masked, no host synchronisation per step.
- ``GymProblem``: any registered Gymnasium id (or "module:EnvId"), through one Gymnasium vector env of P x E
  copies, observations made one Box as for PPO (``fwp_rl.envs.vector.flat_observations``).

Both drive the population's memory with a ``MemoryController``. An ``Evolution`` searches a *task*, a problem with
the rule that says when a run solved it: ``DoublePoleTask`` (the benchmark's success test) or ``GymTask`` (a target),
one generation at a time, and holds the state a checkpoint saves, so that ``train --resume`` goes on exactly as the
run would have (``docs/neuroevolution.md``); ``evolve`` runs one to its end.

``num_actors`` > 0 spreads each population over EvoTorch's Ray actors (``pip install fwp-rl[distributed]``).

Evaluations during training (``run.eval_every``, Gymnasium ids only) play the solution kept so far as ``fwp-rl
evaluate`` replays it (``Evolution.play``), acting by its most likely action as in its fitness episodes. The double pole
has none: its fitness episode from the standard start is deterministic and logged as best_ever (champion_steps), and
each champion that balances it takes the success test (test_balanced, test_generalization); there is nothing left for
another episode to measure.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import time
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from evotorch import Problem, SolutionBatch
from evotorch.algorithms import CEM, CMAES, PGPE, SNES, XNES, Cosyne, GeneticAlgorithm
from evotorch.algorithms.distributed.gaussian import GaussianSearchAlgorithm
from evotorch.distributions import Distribution
from evotorch.operators import GaussianMutation, SimulatedBinaryCrossOver
from evotorch.optimizers import ClipUp, TorchOptimizer
from rich.console import Console
from torch import Tensor

from fwp_rl.config import ConfigError, PolicyConfig, RunConfig, check_run_name, check_seed, parse_device
from fwp_rl.envs import double_pole
from fwp_rl.envs.vector import ATARI_PREFIX, Episode, check_gym_id, flat_observations
from fwp_rl.evaluate import policy_episodes
from fwp_rl.harness import Run, Trained
from fwp_rl.policy import RecurrentPolicy
from fwp_rl.population import MemoryController

DOUBLE_POLE = "double_pole"
RESTART_KEYS = ("restart_after", "restart_unbalanced_after")  # the search keys that start fresh searches


# ---------------------------------------------------------------------------------------------- config
@dataclass
class EnvConfig:
    """id: "double_pole" (the batched torch simulator; options are DoublePoleConfig fields), a registered
    Gymnasium id or "module:EnvId" (``fwp_rl.envs.vector``; options go to gymnasium.make_vec). episodes: episodes per candidate (Gymnasium ids; the
    double pole starts are deterministic, so one is all there is)."""

    id: str = DOUBLE_POLE
    options: dict = field(default_factory=dict)
    episodes: int = 1

    def validate(self, prefix: str) -> None:
        if self.episodes < 1:
            raise ConfigError(f"{prefix}.episodes={self.episodes} is not allowed: it must be >= 1")
        if self.id == DOUBLE_POLE:
            try:
                double_pole.make_config(**self.options)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{prefix}.options: {e}") from None
            if self.episodes != 1:
                raise ConfigError(f"{prefix}.episodes={self.episodes} is not allowed for {DOUBLE_POLE}: every "
                                  "episode starts from the standard start, so it must be 1")
        elif self.id.startswith(ATARI_PREFIX):
            raise ConfigError(f"{prefix}.id={self.id!r} is not allowed for neuroevolution: 'atari:<game>' is ale-py's "
                              f"vector env of PPO and SB3; use {DOUBLE_POLE!r} or a Gymnasium id (such as 'ALE/Pong-v5')")
        else:
            check_gym_id(self.id, f"{prefix}.id", repr(DOUBLE_POLE))


@dataclass
class SearchConfig:
    """algorithm: one of ALGORITHMS. popsize: None for the algorithm's default (CMA-ES, SNES, XNES).
    stdev_init: initial search spread. init_bound: first centres / populations are drawn from
    [-init_bound, init_bound]. options: more keyword arguments of the EvoTorch class. Stops after the
    generation in which the evaluations reach max_evaluations (whole generations: a run can make up to
    popsize - 1 more), at max_generations, when a Gymnasium population's best reaches target, or when
    the double pole task is solved. compile: the double pole rollouts (evaluations and success tests) run
    the controller and the simulation of each control step as one program made by torch.compile
    (``fwp_rl.envs.double_pole.closed_loop_step``): several times faster per step, after a compile of tens of
    seconds per population size (a few seconds once torch's compile cache has it). A run with compile
    starts by dropping what torch.compile compiled before in this process (``torch._dynamo.reset``).
    restart_after (double pole): when this many evaluations pass without a generation whose champion balanced
    its fitness episode longer than every earlier champion of the search, a new search of the same algorithm
    starts from a new random centre (None: never). Once a champion balances the whole episode nothing can
    improve on it, so the count then runs from there: a search whose champions balance but fail the success
    test gives way to a fresh one. restart_unbalanced_after (double pole): a search none of whose champions
    balanced the whole fitness episode within this many evaluations of its start gives way to a fresh one too,
    however its champions still improve (None: no such limit)."""

    algorithm: str = "cmaes"
    popsize: int | None = None
    stdev_init: float = 0.5
    init_bound: float = 1.0
    options: dict = field(default_factory=dict)
    max_evaluations: int = 100_000
    max_generations: int | None = None
    target: float | None = None
    num_actors: int = 0
    device: str = "cpu"
    compile: bool = False
    restart_after: int | None = None
    restart_unbalanced_after: int | None = None

    @property
    def restarts(self) -> bool:
        """Whether a run can start fresh searches (restart_after or restart_unbalanced_after set)."""
        return any(getattr(self, key) is not None for key in RESTART_KEYS)

    def validate(self, prefix: str) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"{prefix}.algorithm={self.algorithm!r} is not allowed; choose one of: "
                              f"{', '.join(ALGORITHMS)}")
        minimum = MIN_POPSIZE[self.algorithm]
        if self.popsize is None and self.algorithm not in DEFAULT_POPSIZE:
            raise ConfigError(f"{prefix}.popsize must be set for algorithm {self.algorithm!r} (at least {minimum})")
        if self.popsize is not None and self.popsize < minimum:
            raise ConfigError(f"{prefix}.popsize={self.popsize} is too small for {self.algorithm!r}: "
                              f"it needs at least {minimum}")
        if self.algorithm == "pgpe" and self.popsize is not None and self.popsize % 2:
            raise ConfigError(f"{prefix}.popsize={self.popsize} is not allowed for 'pgpe': its symmetric "
                              "sampling needs an even population")
        for key in ("stdev_init", "init_bound", "max_evaluations"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{prefix}.{key}={getattr(self, key)!r} is not allowed: it must be > 0")
        if self.max_generations is not None and self.max_generations < 1:
            raise ConfigError(f"{prefix}.max_generations={self.max_generations} is not allowed: it must be >= 1, or "
                              "null for no such limit")
        for key in RESTART_KEYS:
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}={getattr(self, key)} is not allowed: a number of evaluations "
                                  ">= 1, or null for no such restarts")
        if self.num_actors < 0:
            raise ConfigError(f"{prefix}.num_actors={self.num_actors} is not allowed: 0 (this process) or more")
        parse_device(f"{prefix}.device={self.device!r}", self.device)
        unavailable = self.compile and double_pole.compile_unavailable(self.device)
        if unavailable:
            raise ConfigError(f"{prefix}.compile=true is not possible here: {unavailable}; install one or set "
                              f"{prefix}.compile=false")


@dataclass
class NeuroevolutionConfig:
    """A neuroevolution run: ``fwp-rl train`` on a file with ``learner: neuroevolution``."""

    learner: typing.Literal["neuroevolution"] = "neuroevolution"
    name: str = "neuroevolution"
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(torso="identity", core="direct"))
    search: SearchConfig = field(default_factory=SearchConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, prefix: str) -> None:
        check_seed(self.seed)
        check_run_name(self.name)
        if self.policy.normalize_observations:
            raise ConfigError("policy.normalize_observations=true is not allowed for neuroevolution: its statistics "
                              "learn from PPO's rollouts only (fwp_rl.normalization)")
        if self.search.compile and self.env.id != DOUBLE_POLE:
            raise ConfigError(f"search.compile=true is allowed for env.id={DOUBLE_POLE!r} only (its rollouts are "
                              f"torch programs), got env.id={self.env.id!r}")
        for key in RESTART_KEYS:
            if getattr(self.search, key) is not None and self.env.id != DOUBLE_POLE:
                raise ConfigError(f"search.{key} is allowed for env.id={DOUBLE_POLE!r} only (it counts from its "
                                  f"champions' balanced steps), got env.id={self.env.id!r}")
        if self.search.target is not None and self.env.id == DOUBLE_POLE:
            raise ConfigError(f"search.target is allowed for Gymnasium ids only: env.id={DOUBLE_POLE!r} is solved by "
                              "its success test")
        if self.run.eval_every and self.env.id == DOUBLE_POLE:
            raise ConfigError(f"run.eval_every is allowed for Gymnasium ids only: on env.id={DOUBLE_POLE!r} the "
                              "fitness episode is deterministic, logged as best_ever, and its champions take the "
                              "success test")
        if not self.run.eval_deterministic:
            raise ConfigError("run.eval_deterministic=false is not allowed for neuroevolution: its policies act by "
                              "their most likely action, in their fitness episodes as in evaluations")


# ---------------------------------------------------------------------------------------------- searchers
def _cmaes(problem, c: SearchConfig):
    return CMAES(problem, stdev_init=c.stdev_init, popsize=c.popsize, **c.options)


def _snes(problem, c: SearchConfig):
    return SNES(problem, stdev_init=c.stdev_init, popsize=c.popsize, **c.options)


def _xnes(problem, c: SearchConfig):
    return XNES(problem, stdev_init=c.stdev_init, popsize=c.popsize, **c.options)


def _pgpe(problem, c: SearchConfig):
    options = dict(center_learning_rate=0.1, stdev_learning_rate=0.1, optimizer_config={"max_speed": 0.2}) | c.options
    return PGPE(problem, popsize=c.popsize, stdev_init=c.stdev_init, **options)


def _cem(problem, c: SearchConfig):
    return CEM(problem, popsize=c.popsize, stdev_init=c.stdev_init, **(dict(parenthood_ratio=0.25) | c.options))


def _cosyne(problem, c: SearchConfig):
    options = dict(tournament_size=4, mutation_stdev=c.stdev_init, mutation_probability=0.3, elitism_ratio=0.25)
    return Cosyne(problem, popsize=c.popsize, **(options | c.options))


def _ga(problem, c: SearchConfig):
    options = dict(tournament_size=4, eta=8.0) | c.options
    operators = [SimulatedBinaryCrossOver(problem, tournament_size=options["tournament_size"], eta=options["eta"]),
                 GaussianMutation(problem, stdev=c.stdev_init)]
    return GeneticAlgorithm(problem, popsize=c.popsize, operators=operators)


SEARCHERS: dict[str, Callable] = {"cmaes": _cmaes, "snes": _snes, "xnes": _xnes, "pgpe": _pgpe, "cem": _cem,
                                  "cosyne": _cosyne, "ga": _ga}
ALGORITHMS = tuple(SEARCHERS)
DEFAULT_POPSIZE = ("cmaes", "snes", "xnes")  # EvoTorch picks 4 + 3 ln(n) for these
MIN_POPSIZE = {"cmaes": 4, "snes": 2, "xnes": 2, "pgpe": 2, "cem": 4, "cosyne": 4, "ga": 2}


def make_searcher(problem: Problem, config: SearchConfig):
    """The EvoTorch searcher of ``config.algorithm`` on ``problem``; a bad option is a ConfigError."""
    try:
        return SEARCHERS[config.algorithm](problem, config)
    except TypeError as e:
        raise ConfigError(f"search.options {config.options} do not fit {config.algorithm!r}: {e}") from None


# EvoTorch (0.6.1) gives its searchers no state_dict, so what each carries from one generation to the next is named
# here by hand, by attribute; everything else a searcher holds follows from the config, as a fresh searcher of the
# same config makes it (``load_searcher_state`` restores into one). Every searcher: its generation count (CMA-ES's
# path correction and covariance schedule read it) and its population with its fitnesses (the Gaussian searchers
# step their distribution from them, CoSyNE and the GA breed from them). Besides:
SEARCHER_STATE = {
    # the centre, the step size, the covariance and its factor, the two evolution paths
    CMAES: ("m", "sigma", "C", "A", "p_sigma", "p_c"),
    # SNES, XNES, PGPE, CEM: the distribution (XNES's with its inverse factor), the optimizer of the centre (PGPE's
    # ClipUp or one set in search.options) and whether the first population is still to come
    GaussianSearchAlgorithm: ("_distribution", "_optimizer", "_first_iter"),
    Cosyne: ("_first_generation",),  # whether the first population is still to be evaluated
    GeneticAlgorithm: ("_first_iter",),  # the same
}


def _saved(value):
    """A searcher's attribute as checkpoint data: tensors and plain values only (checkpoints load with
    weights_only), EvoTorch's read-only tensors as plain ones."""
    if isinstance(value, Distribution):
        return {"parameters": {name: _saved(v) for name, v in value.parameters.items()}}
    if isinstance(value, ClipUp):
        return {"velocity": _saved(value._velocity)}
    if isinstance(value, TorchOptimizer):
        return {"optimizer": copy.deepcopy(value.contained_optimizer.state_dict())}  # a copy of its live tensors
    if isinstance(value, Tensor):
        return value.as_subclass(Tensor).clone()
    return value  # None, a bool, an int, a float, a str


def _restored(current, data, device: torch.device):
    """The value ``_saved`` gave ``data`` for, restored into ``current``, the attribute of a fresh searcher."""
    if isinstance(current, Distribution):
        return current.modified_copy(**data["parameters"])
    if isinstance(current, ClipUp):
        current._velocity = data["velocity"].to(device)
        return current
    if isinstance(current, TorchOptimizer):
        current.contained_optimizer.load_state_dict(data["optimizer"])
        return current
    return data.to(device) if isinstance(data, Tensor) else data


def searcher_state(searcher) -> dict:
    """What ``searcher``, which made a generation, carries into its next one (``SEARCHER_STATE``), as checkpoint
    data."""
    population = searcher.population
    names = next(names for cls, names in SEARCHER_STATE.items() if isinstance(searcher, cls))
    return {"steps": searcher.step_count, **{name: _saved(getattr(searcher, name)) for name in names},
            "population": {"values": _saved(population.values), "evals": _saved(population.evals)}}


def load_searcher_state(searcher, state: dict) -> None:
    """Restore ``searcher_state`` into ``searcher``, a fresh searcher of the config that made it."""
    problem = searcher.problem
    searcher._steps_count = state["steps"]
    for name, data in state.items():
        if name not in ("steps", "population"):
            setattr(searcher, name, _restored(getattr(searcher, name), data, problem.device))
    saved = state["population"]
    population = SolutionBatch(problem, popsize=len(saved["values"]), device=problem.device, empty=True)
    population.access_values()[:] = saved["values"]
    population.access_evals()[:] = saved["evals"]
    searcher._population = population


# ---------------------------------------------------------------------------------------------- problems
class _PolicyProblem(Problem):
    """A maximisation problem over ``policy``'s flat parameters, counting every evaluation it makes.

    A NaN or infinite fitness (an env that returns a NaN reward, say) counts as a failure: it is scored -inf, below
    every finite fitness, so that it ranks last in every searcher (they rank candidates by sorting, where NaN would
    rank first) and never becomes a champion or the solution a run keeps. Only SNES, XNES or PGPE given
    ``ranking_method: null`` in search.options weigh raw fitnesses, where a -inf breaks their step."""

    def __init__(self, policy: RecurrentPolicy, search: SearchConfig, seed: int, eval_data_length: int = 0):
        self.policy = policy
        self.evaluations = 0
        # store_solution_stats: EvoTorch's record of the best and worst fitness seen fails on a batch of failures
        # only (-inf all through); Evolution keeps the best of its own.
        super().__init__("max", solution_length=policy.num_flat_parameters, dtype=policy.dtype,
                         initial_bounds=(-search.init_bound, search.init_bound), device=search.device,
                         num_actors=search.num_actors or None, eval_data_length=eval_data_length, seed=seed,
                         store_solution_stats=False)

    def evaluate(self, x):
        self.evaluations += len(x)
        return super().evaluate(x)

    def _evaluate_all(self, batch: SolutionBatch) -> None:
        # The step of Problem.evaluate that evaluates the batch, here or (num_actors > 0) over the actors.
        super()._evaluate_all(batch)
        fitness = batch.access_evals(0)
        fitness[~torch.isfinite(fitness)] = -math.inf

    def state_dict(self) -> dict:
        """What carries over from one generation to the next: the evaluations counted and the problem's generator,
        which every searcher samples its populations from (EvoTorch draws from torch's global generator only for a
        problem without a seed, and ours always have one)."""
        return {"evaluations": self.evaluations, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if self.num_actors:
            # EvoTorch's actors start with the first evaluation and draw their seeds from the generator as they
            # do: started here, before it is restored, they leave the searcher's draws as they were saved.
            self.all_remote_problems()
        self.evaluations = state["evaluations"]
        self.generator.set_state(state["generator"])

    def seed(self, seed: int) -> None:
        # EvoTorch's EvaluationActor (0.6.1) reseeds its copy of a seeded problem with problem.seed(), a method
        # Problem does not have (it is manual_seed): without this, num_actors > 0 fails as the actors start.
        self.manual_seed(seed)


class DoublePoleProblem(_PolicyProblem):
    """Fitness of the double pole task (``fwp_rl.envs.double_pole``), the control steps balanced kept as
    extra evaluation data (the champion test needs them)."""

    def __init__(self, policy: RecurrentPolicy, env: double_pole.DoublePoleConfig, search: SearchConfig, seed: int):
        self.env, self.compile = env, search.compile
        super().__init__(policy, search, seed, eval_data_length=1)

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        fitness, steps = double_pole.population_fitness(self.policy, batch.values, self.env, self.compile)
        batch.set_evals(fitness.to(batch.values.dtype), steps[:, None].to(batch.values.dtype))


class GymProblem(_PolicyProblem):
    """Mean undiscounted return over ``episodes`` episodes per candidate in Gymnasium env ``env_id``, all
    candidates in one vector env of P x E copies (next-step autoreset: a copy's first episode counts). Every
    candidate of an evaluation plays the same E episode seeds (common random numbers: candidates are ranked on the
    same starts, not on the luck of their own; with num_actors > 0, the candidates of each actor's piece), and each
    evaluation the next E. ``env_steps`` counts the steps of the counted episodes that this object's envs took (a
    figure for benches; no checkpoint holds it)."""

    def __init__(self, policy: RecurrentPolicy, env_id: str, options: dict, episodes: int, search: SearchConfig,
                 seed: int):
        self.env_id, self.options, self.episodes = env_id, options, episodes
        self._envs: gym.vector.VectorEnv | None = None
        self._episode_seed = seed
        self.env_steps = 0
        super().__init__(policy, search, seed)

    def seed(self, seed: int) -> None:
        super().seed(seed)
        # EvoTorch seeds each Ray actor's copy with a number of its own, a few apart from the next actor's.
        # Hashed into the first episode seed, it gives each piece of the population episode starts of its own;
        # the run's seed, which every copy carries, would give every piece the same ones.
        self._episode_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])

    def state_dict(self) -> dict:
        """The problem's state (``_PolicyProblem.state_dict``) and the first episode seed of the next evaluation.
        With num_actors > 0 the actors' copies keep episode seeds of their own, which no checkpoint holds."""
        return super().state_dict() | {"episode_seed": self._episode_seed}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._episode_seed = state["episode_seed"]

    def _vector_env(self, n: int) -> gym.vector.VectorEnv:
        if self._envs is None or self._envs.num_envs != n:
            if self._envs is not None:
                self._envs.close()
            self._envs = gym.make_vec(self.env_id, num_envs=n, vectorization_mode="sync",
                                      wrappers=[functools.partial(flat_observations, env_id=self.env_id)],
                                      **self.options)
        return self._envs

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        P, E = len(batch), self.episodes
        envs = self._vector_env(P * E)
        controller = MemoryController(self.policy.population(batch.values), E)
        obs, _ = envs.reset(seed=[self._episode_seed + e for _ in range(P) for e in range(E)])
        self._episode_seed += E
        returns = np.zeros(P * E)
        running = np.ones(P * E, dtype=bool)
        with torch.no_grad():
            while running.any():
                actions = controller(torch.as_tensor(obs, device=self.policy.device)).cpu().numpy()
                obs, reward, terminated, truncated, _ = envs.step(actions)
                returns += np.where(running, reward, 0.0)
                self.env_steps += int(running.sum())
                running &= ~(terminated | truncated)
        batch.set_evals(torch.as_tensor(returns.reshape(P, E).mean(1), dtype=batch.values.dtype))


# ---------------------------------------------------------------------------------------------- training
def make_policy(config: NeuroevolutionConfig) -> RecurrentPolicy:
    """The policy of ``config`` for its environment's spaces."""
    if config.env.id == DOUBLE_POLE:
        observation_space, action_space = double_pole.spaces(double_pole.make_config(**config.env.options))
    else:
        try:
            probe = flat_observations(gym.make(config.env.id, **config.env.options), config.env.id)
        except TypeError as e:  # options the env does not take
            raise ConfigError(f"env.options {config.env.options} do not fit {config.env.id!r}: "
                              f"{str(e).splitlines()[0]}") from None
        observation_space, action_space = probe.observation_space, probe.action_space
        probe.close()
    p = config.policy
    torch.manual_seed(config.seed)
    try:
        policy = RecurrentPolicy(observation_space, action_space, torso=p.torso, torso_options=p.torso_options,
                                 core=p.core, core_options=p.core_options, action_squash=p.action_squash,
                                 core_output=p.core_output, torso_autocast=p.torso_autocast)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"policy: {e}") from None
    return policy.to(device=config.search.device, dtype=getattr(torch, p.dtype))


@dataclass
class GenerationReport:
    """What one generation did, for the progress display and the metrics file."""

    generation: int
    evaluations: int
    best: float  # best fitness of this generation
    mean: float
    best_ever: float
    best_ever_params: Tensor
    seconds: float
    champion_steps: int | None = None  # double pole: steps the champion balanced in its fitness episode
    test: double_pole.SolutionTest | None = None  # double pole: the success test, when the champion was tested
    restarts: int = 0  # searches started again so far (SearchConfig.restarts, and after a collapse: Evolution.step)


@dataclass
class EvolutionResult:
    """The end of a run: the solution kept (the solving champion, or else the best ever seen)."""

    flat_params: Tensor
    fitness: float
    generations: int
    evaluations: int
    solved: bool
    test: double_pole.SolutionTest | None
    seconds: float
    restarts: int = 0


class DoublePoleTask:
    """The double pole benchmark as ``evolve`` runs it: its problem (``DoublePoleProblem``), the success test
    (``double_pole.champion_test``) of each champion that balanced its whole fitness episode, and a run is solved
    by a champion that passes it (``docs/double_pole.md``). The restarts (SearchConfig) count the steps the
    champions balanced; the whole episode is the milestone of ``restart_unbalanced_after``."""

    def __init__(self, policy: RecurrentPolicy, env: double_pole.DoublePoleConfig, search: SearchConfig, seed: int):
        self.policy, self.env, self.compile = policy, env, search.compile
        self.problem = DoublePoleProblem(policy, env, search, seed)
        self.milestone = env.episode_steps

    def judge(self, report: GenerationReport, champion_params: Tensor, champion_evals: Tensor) -> bool:
        """Fill in the report's champion_steps and, for a champion that balanced its whole fitness episode, its
        success test; -> whether the champion solved the task."""
        report.champion_steps = int(champion_evals[1])
        # The success test starts from the standard start, as the fitness episode does: a champion
        # that fell within that episode cannot pass it.
        if report.champion_steps != self.milestone:
            return False
        report.test = double_pole.champion_test(self.policy, champion_params, self.env, report.champion_steps,
                                                self.compile)
        return report.test.solved(self.env)

    def progress(self, report: GenerationReport) -> int:
        """How far the champion of ``judge``'s report got towards the milestone: the steps it balanced."""
        return report.champion_steps

    def test_kept(self, kept: Tensor | None) -> tuple[double_pole.SolutionTest | None, bool]:
        """The success test of the solution kept by a run that no champion solved, and whether it passed."""
        if kept is None:
            return None, False
        test = double_pole.champion_test(self.policy, kept, self.env, compile=self.compile)
        return test, test.solved(self.env)


class GymTask:
    """A Gymnasium id as ``evolve`` runs it: its problem (``GymProblem``), and a run is solved by a generation
    whose best reaches ``search.target`` (None: never). There is no success test, and nothing for restarts to
    count (NeuroevolutionConfig allows them for the double pole only): no progress, a milestone of 0."""

    milestone = 0

    def __init__(self, policy: RecurrentPolicy, env: EnvConfig, search: SearchConfig, seed: int):
        self.problem = GymProblem(policy, env.id, env.options, env.episodes, search, seed)
        self.target = search.target

    def judge(self, report: GenerationReport, champion_params: Tensor, champion_evals: Tensor) -> bool:
        return self.target is not None and report.best >= self.target

    def progress(self, report: GenerationReport) -> int:
        return 0

    def test_kept(self, kept: Tensor | None) -> tuple[None, bool]:
        return None, False


def make_task(config: NeuroevolutionConfig, policy: RecurrentPolicy) -> DoublePoleTask | GymTask:
    """The task of ``config.env`` for ``policy``, with its problem."""
    if config.env.id == DOUBLE_POLE:
        return DoublePoleTask(policy, double_pole.make_config(**config.env.options), config.search, config.seed)
    return GymTask(policy, config.env, config.search, config.seed)


class Evolution:
    """The search of ``config``, one generation at a time: ``step()`` makes a generation and returns its report,
    ``done`` says whether the run ends there (solved, or its budget spent), ``finish()`` tests the solution kept and
    returns the result. ``state_dict`` and ``load_state_dict`` are what a checkpoint holds: a run resumed from one
    goes on as the run would have (``evolve`` runs the loop; ``train`` runs it in a run directory).

    Restarts by hand: EvoTorch's restarters (evotorch.algorithms.restarter) end a search on its own termination
    criteria or a collapsed fitness spread, and here the fitness never stops improving. Per search: the evaluations
    at its start, its champions' furthest progress and the evaluations when it was made. Whether a generation ends
    its search is decided as the next generation starts, from those figures, so a run resumed in between decides
    it as the run would have."""

    def __init__(self, config: NeuroevolutionConfig, policy: RecurrentPolicy | None = None):
        self.config, self.search = config, config.search
        self.policy = policy or make_policy(config)
        if config.search.compile:
            # torch.compile keeps the compiled steps of every policy it saw, and recompiles a function at most 8
            # times; a new run's policy never meets the earlier runs' steps again, so they go (torch's compile
            # cache makes the new compiles quick)
            torch._dynamo.reset()
        self.task = make_task(config, self.policy)
        self.problem = self.task.problem
        self.searcher = make_searcher(self.problem, self.search)
        self.generation, self.kept, self.kept_fitness, self.solved, self.test = 0, None, -math.inf, False, None
        self.restarts, self.started_at, self.longest, self.progress_at = 0, 0, 0, 0
        self.collapsed = False  # the search failed numerically in the last generation: the next one restarts it
        self._clock = time.perf_counter()  # the run's seconds count from here

    @property
    def evaluations(self) -> int:
        return self.problem.evaluations

    @property
    def seconds(self) -> float:
        """Seconds the run has searched, over all its resumes."""
        return time.perf_counter() - self._clock

    @property
    def done(self) -> bool:
        """Whether the run ends after the generations made: solved, or its budget spent."""
        search = self.search
        return (self.solved or self.evaluations >= search.max_evaluations
                or (search.max_generations is not None and self.generation >= search.max_generations))

    def _restart_due(self) -> bool:
        """Whether the search so far gives way to a fresh one (SearchConfig.restart_after, restart_unbalanced_after)."""
        search = self.search
        stalled = search.restart_after is not None and self.evaluations - self.progress_at >= search.restart_after
        unbalanced = (search.restart_unbalanced_after is not None and self.longest < self.task.milestone
                      and self.evaluations - self.started_at >= search.restart_unbalanced_after)
        return self.collapsed or stalled or unbalanced

    def step(self) -> GenerationReport:
        """One generation (of a fresh search when the last one's is over) -> its report."""
        if self._restart_due():
            self.searcher = make_searcher(self.problem, self.search)
            self.restarts, self.started_at, self.longest, self.progress_at = (self.restarts + 1, self.evaluations, 0,
                                                                              self.evaluations)
            self.collapsed = False
        try:
            self.searcher.step()
            champion = self.searcher.status["pop_best"]
        except torch.linalg.LinAlgError:
            # The search collapsed: a covariance that rounding (float32) left not positive definite, whose factor
            # (CMA-ES's Cholesky) fails after the generation was evaluated. Its champion counts, and the next
            # generation starts a fresh search, whatever the restart settings: the collapsed one cannot go on.
            self.collapsed = True
            population = self.searcher.population
            champion = population[population.argbest()]
        self.generation += 1
        champion_params = champion.values.as_subclass(Tensor).clone()  # a plain tensor, not EvoTorch's read-only one
        best = float(champion.evals[0])
        if best > self.kept_fitness:
            self.kept, self.kept_fitness = champion_params, best
        if self.kept is None:
            raise ConfigError(f"every candidate of the first {self.evaluations} evaluations scored a NaN or infinite "
                              f"fitness: {self.config.env.id} gives this policy no finite fitness to search on")
        mean = float(self.searcher.population.evals[:, 0].mean())
        report = GenerationReport(self.generation, self.evaluations, best, mean, self.kept_fitness, self.kept, 0.0,
                                  restarts=self.restarts)
        self.solved = self.task.judge(report, champion_params, champion.evals)
        if self.solved:
            self.kept, self.kept_fitness, self.test = champion_params, best, report.test
            report.best_ever_params = self.kept
        if self.task.progress(report) > self.longest:
            self.longest, self.progress_at = self.task.progress(report), self.evaluations
        report.seconds = self.seconds
        return report

    def finish(self) -> EvolutionResult:
        """The run's result: the solution kept, with its success test when no champion solved the task."""
        if not self.solved:
            self.test, self.solved = self.task.test_kept(self.kept)
        return EvolutionResult(self.kept, self.kept_fitness, self.generation, self.evaluations, self.solved, self.test,
                               self.seconds, self.restarts)

    def play(self, seed: int, episodes: int, deterministic: bool, record: bool = False) -> tuple[list[Episode], dict]:
        """``episodes`` whole episodes of the solution kept, in one env of the run's Gymnasium id made for them and
        seeded with ``seed`` (``fwp_rl.evaluate.policy_episodes``: as ``fwp-rl evaluate`` replays a checkpoint), and
        with ``record`` the first one's recording."""
        self.policy.set_flat_parameters(self.kept)
        env = self.config.env
        return policy_episodes(self.policy, env.id, env.options, episodes, deterministic, seed, record)

    def state_dict(self) -> dict:
        """A checkpoint's payload (``fwp_rl.harness``): ``update`` (the generations made) and ``global_step`` (the
        evaluations) for the harness; the solution kept as the policy's state dict and as the flat vector, with its
        fitness and test, for ``fwp-rl evaluate``; and ``search_state``, the searcher's, the problem's and the
        restarts' state. Tensors and plain values only: checkpoints load with weights_only."""
        self.policy.set_flat_parameters(self.kept)
        search_state = {"searcher": searcher_state(self.searcher), "problem": self.problem.state_dict(),
                        "restarts": self.restarts, "started_at": self.started_at, "longest": self.longest,
                        "progress_at": self.progress_at, "collapsed": self.collapsed, "seconds": self.seconds}
        return {"update": self.generation, "global_step": self.evaluations, "policy": self.policy.state_dict(),
                "flat_params": self.kept.detach().cpu(), "generation": self.generation,
                "evaluations": self.evaluations, "solved": self.solved, "fitness": self.kept_fitness,
                "test": None if self.test is None else dataclasses.asdict(self.test), "search_state": search_state}

    def load_state_dict(self, payload: dict) -> None:
        """Go on from ``payload``, a ``state_dict`` of a run of this config (but for what the learner's
        ``resume_may_change`` lets a resumed run change: ``fwp_rl.learners``)."""
        state = payload["search_state"]
        load_searcher_state(self.searcher, state["searcher"])
        self.problem.load_state_dict(state["problem"])
        self.generation, self.solved, self.kept_fitness = payload["generation"], payload["solved"], payload["fitness"]
        self.kept = payload["flat_params"].to(self.problem.device)
        self.test = None if payload["test"] is None else double_pole.SolutionTest(**payload["test"])
        self.restarts, self.started_at = state["restarts"], state["started_at"]
        self.longest, self.progress_at = state["longest"], state["progress_at"]
        self.collapsed = state.get("collapsed", False)  # checkpoints written before collapses were caught lack it
        self._clock = time.perf_counter() - state["seconds"]


def evolve(config: NeuroevolutionConfig, policy: RecurrentPolicy | None = None,
           on_generation: Callable[[GenerationReport], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> EvolutionResult:
    """Run the search of ``config`` (``Evolution``) until it is done, or until ``should_stop()``, asked after every
    generation, says so; ``on_generation`` sees every generation's report."""
    evolution = Evolution(config, policy)
    while not evolution.done:
        report = evolution.step()
        if on_generation is not None:
            on_generation(report)
        if should_stop is not None and should_stop():
            break
    return evolution.finish()


# ---------------------------------------------------------------------------------------------- runs
def quiet_evotorch() -> None:
    """Keep EvoTorch's messages out of the progress display: its logger announces every problem it makes at
    INFO, and its CMA-ES copies its starting centre with torch.tensor(tensor), which torch warns about."""
    logging.getLogger("evotorch").setLevel(logging.WARNING)  # importing EvoTorch (above) set it to INFO
    warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning, "evotorch")


def train(config: NeuroevolutionConfig, resume: str | Path | None = None, console: Console | None = None) -> Trained:
    """A whole run (or the rest of one, with ``resume`` = its run directory) in ``fwp_rl.harness.Run``: a metrics
    record per generation, an evaluation every ``run.eval_every`` generations and at the end, a checkpoint every
    ``run.checkpoint_every`` generations, at a best evaluation and at the end (or after the generation under way when
    Ctrl-C stops the run), a summary at the end. A resumed run with nothing to continue
    (solved, or its budget spent) says so in one line and stops."""
    quiet_evotorch()
    run = Run(config, resume, console)
    evolution = Evolution(config)  # a policy or search that does not fit fails here, before anything is written
    if run.saved is not None:
        evolution.load_state_dict(run.saved)
        if evolution.done:
            reason = "it solved its task" if evolution.solved else \
                "its budget is spent (raise search.max_evaluations or search.max_generations with --set)"
            run.console.print(f"nothing to continue in {run.run_dir}: {reason}")
            return run.result
    with run.start(total=config.search.max_evaluations, iteration="generation"):
        if config.search.compile:  # the first generation compiles: tens of seconds where torch's cache is empty
            run.show("compiling the rollouts (torch.compile) for the first generation")
        while not evolution.done and not run.stop_requested:
            r = evolution.step()
            values = dict(generation=r.generation, best=r.best, mean=r.mean, best_ever=r.best_ever, seconds=r.seconds,
                          solved=evolution.solved)
            # over the whole run: a generation's own rate drops to nothing where a champion's long test runs in it
            rate = r.evaluations / max(r.seconds, 1e-9)
            status = f"gen {r.generation}  {rate:,.0f} evals/s  best {r.best:.4g}  best ever {r.best_ever:.4g}"
            if config.search.restarts or r.restarts:  # a collapsed search restarts whatever the settings
                values["restarts"] = r.restarts
                status += f"  restarts {r.restarts}"
            if r.champion_steps is not None:
                values["champion_steps"] = r.champion_steps
            if r.test is not None:
                values.update(test_balanced=r.test.balanced, test_generalization=r.test.generalization)
                status += f"  tested: {r.test.generalization}/625, {r.test.balanced:,} steps"
            values |= run.evaluate(evolution.play, final=evolution.done)
            run.log(r.evaluations, **values)
            run.show(status)
            run.checkpoint(evolution.state_dict)
        result = evolution.finish()
        # Only here, after a whole generation: an exception inside one leaves the last checkpoint as it was.
        run.checkpoint(evolution.state_dict, final=True)
    restarted = "" if not (config.search.restarts or result.restarts) else \
        f", {result.restarts} restart{'' if result.restarts == 1 else 's'}"
    lines = [f"evaluations: {result.evaluations:,} in {result.generations} generations{restarted}, "
             f"{result.seconds:.1f} s; best fitness {result.fitness:.6g}"]
    test = result.test
    if test is not None:
        lines.append(f"100,000-step test: balanced {test.balanced:,} steps "
                     f"({'pass' if test.balanced == double_pole.MARKOV_STEPS else 'fail'}); "
                     f"generalization: {test.generalization} of 625")
    lines.append(f"[bold]{'solved' if result.solved else 'not solved'}[/bold]")
    run.summary(lines)
    return run.result


__all__ = ["ALGORITHMS", "DoublePoleProblem", "DoublePoleTask", "EnvConfig", "Evolution", "EvolutionResult",
           "GenerationReport", "GymProblem", "GymTask", "NeuroevolutionConfig", "SearchConfig", "evolve", "make_policy",
           "make_searcher", "make_task", "train"]
