"""The benchmark's fitness and its success test (``docs/double_pole.md``), for any controller and for policies.

- any ``Controller`` (observations of N simulations -> their outputs): ``fitness_and_steps`` (one fitness
  episode per simulation), ``long_test`` (100,000 steps), ``generalization_test`` (the 625 starts of
  ``generalization_starts``), ``balance`` underneath, each step ``closed_loop_step``;
- a ``RecurrentPolicy``'s parameter vectors, each driven by a ``MemoryController``: ``population_fitness``
  (a population's fitness episodes in one batched rollout), ``generalization_score``, ``long_balance`` and
  ``champion_test``, the success test of one vector, whose result is a ``SolutionTest``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from fwp_rl.checks import check_size
from fwp_rl.envs.double_pole.config import (
    DAMPING_MIN_STEPS,
    GENERALIZATION_LEVELS,
    GENERALIZATION_RANGES,
    GENERALIZATION_REQUIRED,
    GENERALIZATION_STARTS,
    GENERALIZATION_STEPS,
    MARKOV_STEPS,
    NONMARKOV_STEPS,
    DoublePoleConfig,
)
from fwp_rl.envs.double_pole.physics import DoublePole
from fwp_rl.population import MemoryController

if TYPE_CHECKING:
    from fwp_rl.policy import RecurrentPolicy


# ---------------------------------------------------------------------------------------------- fitness
def jiggle(state: Tensor) -> Tensor:
    """[..., 6] -> [...]: abs(x) + abs(x_dot) + abs(theta1) + abs(theta1_dot), the term the damping fitness sums."""
    return state[..., :4].abs().sum(-1)


def damping_fitness(steps: Tensor, jiggle_total: Tensor) -> Tensor:
    """Gruau et al.'s damping fitness F = 0.1 f1 + 0.9 f2 of non-Markov episodes. [N], [N] -> [N].

    steps: control steps balanced (at most 1,000); jiggle_total: the jiggle summed over the last
    ``fitness_window`` balanced states. f1 = steps / 1000; f2 = 0.75 / jiggle_total, or 0 below 100 steps.
    """
    f1 = steps.to(jiggle_total.dtype) / NONMARKOV_STEPS
    f2 = torch.where(steps >= DAMPING_MIN_STEPS, 0.75 / jiggle_total, torch.zeros_like(jiggle_total))
    return 0.1 * f1 + 0.9 * f2


# ---------------------------------------------------------------------------------------------- starts
def generalization_starts(device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """[625, 6]: the 5^4 grid of x, x_dot, theta1, theta1_dot at k * range - range / 2 for k in
    (0.05, 0.25, 0.5, 0.75, 0.95), theta2 = theta2_dot = 0; x varies slowest, theta1_dot fastest."""
    levels = torch.tensor(GENERALIZATION_LEVELS, dtype=torch.float64)
    axes = [levels * r - r / 2 for r in GENERALIZATION_RANGES]
    grid = torch.cartesian_prod(*axes)
    return torch.cat([grid, torch.zeros(len(grid), 2, dtype=torch.float64)], dim=1).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------- any controller
Controller = Callable[[Tensor], Tensor]
"""observations [N, D] -> outputs [N] or [N, 1] in [0, 1]. Called once per control step, first with the
observations of the start states; a controller with memory must start each call of the helpers below
from a fresh (reset) memory."""

_EARLY_EXIT_EVERY = 10  # control steps between checks whether any simulation still runs (one host sync each)


class JiggleWindow:
    """The jiggle of the last ``size`` balanced states of each of N simulations.

    Slot k % size holds the jiggle of the state after control step k (k = 0: the start state) of every
    simulation still balanced after step k; so once a simulation has failed, its slots keep its last
    ``size`` balanced states. ``record`` must be called after every control step, in order. The slot counter
    is a tensor, so that a compiled step that records into the window is the same program at every step.
    """

    def __init__(self, start_states: Tensor, size: int):
        self.values = torch.zeros(size, len(start_states), device=start_states.device, dtype=start_states.dtype)
        self.values[0] = jiggle(start_states)
        self.slot = torch.zeros((), device=start_states.device, dtype=torch.int64)  # of the last state recorded

    def record(self, states: Tensor, alive: Tensor) -> None:
        """states [N, 6] after the next control step; alive [N] bool: balanced up to and including it."""
        self.slot = (self.slot + 1) % len(self.values)
        slot = self.slot[None]  # index_select and index_copy_: indexing with a tensor would read it on the host
        self.values.index_copy_(0, slot, torch.where(alive, jiggle(states), self.values.index_select(0, slot)))

    def total(self) -> Tensor:
        """[N]: the jiggle summed over the window (complete once a simulation balanced size - 1 steps)."""
        return self.values.sum(0)


def _closed_loop_step(sim: DoublePole, controller: Controller, obs: Tensor, window: JiggleWindow | None
                      ) -> tuple[Tensor, Tensor]:
    obs, alive = sim.step(controller(obs))
    if window is not None:
        window.record(sim.state, alive)
    return obs, alive


@functools.cache
def _compiled_closed_loop_step() -> Callable:
    # Made on first use: torch.compile's machinery is slow to import, and most runs never need it.
    # The lru_cache-wrapped helpers it traces through make constant tensors of a device and dtype, the
    # same on every call, so its warning that it ignores their caches is noise here.
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`-wrapped function")
    return torch.compile(_closed_loop_step, dynamic=False)


def compile_unavailable(device: str | torch.device) -> str | None:
    """Why ``closed_loop_step(..., compile=True)`` cannot run on ``device`` (torch.compile on the CPU needs a C++
    compiler: torch's own search for one), or None when it can."""
    if torch.device(device).type != "cpu":
        return None
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except RuntimeError as e:
        return f"torch.compile on the CPU needs a C++ compiler ({e})"
    return None


def closed_loop_step(sim: DoublePole, controller: Controller, obs: Tensor, window: JiggleWindow | None = None,
                     compile: bool = False) -> tuple[Tensor, Tensor]:
    """One control step of the closed loop, ``sim.step(controller(obs))`` and then, when given, ``window.record``
    -> (observations [N, D], alive [N]).

    compile=True runs it as one program made by torch.compile, for each shape the first time it is seen (tens of
    seconds on a CPU, a few from torch's compile cache once this machine has made it before). The step then costs
    a fraction of the eager one, whose time is the Python dispatch of a few hundred operations on tiny tensors.
    Its numbers differ from eager ones in the last bits (operations are fused and reordered), so a trajectory that
    is chaotic can end elsewhere. A controller that builds something on its first call (the policy's traced
    graph) must make that call eagerly: the helpers below run their first step without compile.
    """
    step = _compiled_closed_loop_step() if compile else _closed_loop_step
    return step(sim, controller, obs, window)


def _run(sim: DoublePole, controller: Controller, max_steps: int, window: JiggleWindow | None = None,
         compile: bool = False) -> Tensor:
    """Step ``sim`` (already reset) with ``controller`` up to max_steps times; stops early once all failed."""
    obs = sim.observe()
    for k in range(1, check_size("max_steps", max_steps) + 1):
        obs, alive = closed_loop_step(sim, controller, obs, window, compile and k > 1)
        if k % _EARLY_EXIT_EVERY == 0 and not bool(alive.any()):
            break
    return sim.steps


def balance(controller: Controller, starts: int | Tensor, max_steps: int, config: DoublePoleConfig | None = None,
            device=None, dtype: torch.dtype = torch.float64, compile: bool = False) -> Tensor:
    """Control steps balanced [N] int64, at most max_steps, from ``starts`` (a number of standard starts or
    start states [N, 6]). compile: see ``closed_loop_step``, as in every helper below."""
    sim = DoublePole(config, device, dtype)
    sim.reset(starts)
    return _run(sim, controller, max_steps, compile=compile)


def fitness_and_steps(controller: Controller, n: int, config: DoublePoleConfig | None = None, device=None,
                      dtype: torch.dtype = torch.float64, compile: bool = False) -> tuple[Tensor, Tensor]:
    """One fitness episode from the standard start for each of n simulations -> (fitness [n] (dtype),
    control steps balanced [n] int64).

    Markov: fitness = control steps balanced, at most 100,000. Non-Markov: the damping fitness of at most
    1,000 steps (``damping_fitness``). The controller sees observations [n, D]: a population of n
    candidates is evaluated in lockstep.
    """
    config = config or DoublePoleConfig()
    sim = DoublePole(config, device, dtype)
    sim.reset(n)
    if config.markov:
        steps = _run(sim, controller, MARKOV_STEPS, compile=compile)
        return steps.to(dtype), steps
    window = JiggleWindow(sim.state, config.fitness_window)
    steps = _run(sim, controller, NONMARKOV_STEPS, window, compile)
    return damping_fitness(steps, window.total()), steps


def fitness(controller: Controller, n: int, config: DoublePoleConfig | None = None, device=None,
            dtype: torch.dtype = torch.float64, compile: bool = False) -> Tensor:
    """The fitness [n] of ``fitness_and_steps``."""
    return fitness_and_steps(controller, n, config, device, dtype, compile)[0]


def long_test(controller: Controller, n: int = 1, config: DoublePoleConfig | None = None, device=None,
              dtype: torch.dtype = torch.float64, steps: int = MARKOV_STEPS, compile: bool = False) -> Tensor:
    """[n] bool: balanced ``steps`` (100,000) control steps from the standard start."""
    return balance(controller, n, steps, config, device, dtype, compile) == steps


def generalization_test(controller: Controller, config: DoublePoleConfig | None = None, device=None,
                        dtype: torch.dtype = torch.float64, compile: bool = False) -> Tensor:
    """[625] bool: balanced 1,000 steps from each generalization start (``generalization_starts``).

    The controller sees observations [625, D], one row per start, so each start begins with fresh memory.
    The non-Markov task is solved by a champion that passes ``long_test`` and at least 200 of these.
    """
    starts = generalization_starts(device, dtype)
    return balance(controller, starts, GENERALIZATION_STEPS, config, device, dtype, compile) == GENERALIZATION_STEPS


# ---------------------------------------------------------------------------------------------- policies
def population_fitness(policy: RecurrentPolicy, flat_params: Tensor, env: DoublePoleConfig,
                       compile: bool = False) -> tuple[Tensor, Tensor]:
    """One fitness episode per parameter vector, all in one batched rollout (compile: see ``closed_loop_step``).

    flat_params [P, num_flat_parameters] -> (fitness [P], control steps balanced [P]), on the policy's device.
    """
    controller = MemoryController(policy.population(flat_params), 1)
    with torch.no_grad():
        return fitness_and_steps(controller, len(flat_params), env, policy.device, compile=compile)


def generalization_score(policy: RecurrentPolicy, flat_params: Tensor, env: DoublePoleConfig,
                         compile: bool = False) -> int:
    """How many of the 625 generalization starts one parameter vector [num_flat_parameters] balances 1,000 steps
    from, its memory fresh at each start (625 rows of one batched rollout)."""
    controller = MemoryController(policy.population(flat_params[None]), GENERALIZATION_STARTS)
    with torch.no_grad():
        return int(generalization_test(controller, env, policy.device, compile=compile).sum())


def long_balance(policy: RecurrentPolicy, flat_params: Tensor, env: DoublePoleConfig, steps: int = MARKOV_STEPS,
                 check_every: int = 1_000, compile: bool = False) -> int:
    """Control steps (at most ``steps``) one parameter vector balances from the standard start.

    Exact shortcut: every ``check_every`` steps the whole closed-loop state (the simulation and the
    controller's memory) is kept, and if a later state within the next ``check_every`` steps equals it
    bit for bit, the trajectory is periodic from there on. It repeats states that were all balanced, so
    the controller balances every remaining step: the result is the same as simulating to the end.
    """
    sim = DoublePole(env, policy.device)
    obs = sim.reset(1)
    controller = MemoryController(policy.population(flat_params[None]), 1)
    snapshot = None
    with torch.no_grad():
        for t in range(1, steps + 1):
            obs, alive = closed_loop_step(sim, controller, obs, compile=compile and t > 1)
            if not bool(alive[0]):
                return int(sim.steps[0])
            closed_loop = torch.cat([sim.state.flatten(),
                                     *(s.flatten().to(sim.state.dtype) for s in controller.state)])
            if t % check_every == 0:
                snapshot = closed_loop
            elif snapshot is not None and torch.equal(closed_loop, snapshot):
                return steps
    return steps


@dataclass
class SolutionTest:
    """The success test of a double pole champion (``docs/double_pole.md``)."""

    balanced: int  # control steps balanced from the standard start, at most 100,000
    generalization: int | None  # starts passed of 625 (None: not run)

    def solved(self, env: DoublePoleConfig) -> bool:
        long_ok = self.balanced == MARKOV_STEPS
        if env.markov:
            return long_ok
        return long_ok and self.generalization is not None and self.generalization >= GENERALIZATION_REQUIRED


def champion_test(policy: RecurrentPolicy, flat_params: Tensor, env: DoublePoleConfig,
                  episode_steps: int | None = None, compile: bool = False) -> SolutionTest:
    """Run the success test on one parameter vector: generalization first (625 x 1,000 steps in one
    batch), then the 100,000-step test only for the non-Markov task when the generalization passed.

    episode_steps: the steps the vector balanced in its fitness episode, when known. A Markov fitness
    episode is the 100,000-step test itself (the same start, the same number of steps), so it is not run
    again."""
    generalization = generalization_score(policy, flat_params, env, compile)
    if env.markov and episode_steps is not None:
        return SolutionTest(balanced=episode_steps, generalization=generalization)
    if not env.markov and generalization < GENERALIZATION_REQUIRED:
        return SolutionTest(balanced=0, generalization=generalization)
    return SolutionTest(balanced=long_balance(policy, flat_params, env, compile=compile),
                        generalization=generalization)
