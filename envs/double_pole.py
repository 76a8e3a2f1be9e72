"""Double pole balancing (Wieland 1991) as the literature runs it, batched in torch.

The specification is ``specs/double_pole.md``; every number below comes from it. Two poles (long: 0.1 kg,
half-length 0.5 m; short: 0.01 kg, half-length 0.05 m) stand on hinges on a 1 kg cart on a 4.8 m track.
A controller outputs o in [0, 1] every 0.02 s; the force F = (o - 0.5) * 20 N is held for two
4th-order Runge-Kutta substeps of h = 0.01 s. A simulation fails when abs(x) > 2.4 m or a pole leans
more than 0.628329 rad (36 degrees).

Layers, from the bottom up:

- pure tensor functions: ``step_physics`` (state, force, config) -> state, ``output_to_force``,
  ``balanced``, ``observe``, ``jiggle``, ``damping_fitness``; no in-place writes and no branching on
  tensor values, so they run on any device and under ``torch.func.vmap``;
- ``DoublePole``: N simulations kept on one device; ``step`` advances the running ones and freezes
  the ones that failed, without synchronizing with the host;
- the benchmark: ``fitness`` (one fitness episode per simulation), ``long_test`` (100,000 steps),
  ``generalization_test`` (the 625 starts of ``generalization_starts``), ``balance`` underneath;
- Gymnasium: ``DoublePoleEnv`` and ``DoublePoleVectorEnv`` (registered by ``fwp_rl.envs`` as
  "fwp_rl/DoublePole-v0" and "fwp_rl/DoublePoleNoVel-v0"), with ``render_frame`` for "rgb_array".

States are [..., 6] tensors (x [m], x_dot [m/s], theta1 [rad], theta1_dot [rad/s], theta2 [rad],
theta2_dot [rad/s]); angles are measured from the vertical, positive when the pole leans towards +x.
A step count ``t`` is the number of control steps after which a simulation was still balanced: the
step that fails is not counted.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from fwp_rl.cores.base import check_choice, check_size

# ---------------------------------------------------------------------------------------------- constants
GRAVITY = -9.8  # m/s^2, the sign convention of the reference codes
CART_MASS = 1.0  # kg
POLE_MASSES = (0.1, 0.01)  # kg: long pole, short pole
POLE_HALF_LENGTHS = (0.5, 0.05)  # m
CART_FRICTION = 0.0005  # mu_c, applied as -mu_c * sgn(x_dot)
HINGE_FRICTION = 0.000002  # mu_p
MAX_FORCE = 10.0  # N: o = 0 pushes with -10 N, o = 1 with +10 N
GOMEZ_MIN_FORCE = 10.0 / 256.0  # N: the smallest force magnitude Gomez's code applies
TIME_STEP = 0.01  # s, one RK4 substep
SUBSTEPS = 2  # RK4 substeps per control step (the controller acts every 0.02 s)
TRACK_LIMIT = 2.4  # m
ANGLE_LIMIT = 0.628329  # rad (36 degrees as the reference codes write it)
INPUT_SCALES = (4.8, 2.0, 0.52, 2.0, 0.52, 2.0)  # observation = state / scale (NEAT's scaling)

TASKS = ("markov", "nonmarkov")
FITNESS_WINDOWS = (100, 101)
MARKOV_STEPS = 100_000  # the Markov fitness episode, and the long test of the non-Markov task
NONMARKOV_STEPS = 1_000  # the non-Markov fitness episode
DAMPING_MIN_STEPS = 100  # f2 = 0 below this many balanced steps
GENERALIZATION_STEPS = 1_000  # a generalization start is passed by balancing this many steps
GENERALIZATION_REQUIRED = 200  # starts of 625 a champion must pass (with the long test) to solve the task
GENERALIZATION_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
GENERALIZATION_RANGES = (4.32, 2.70, 0.12566304, 0.30019504)  # x [m], x_dot [m/s], theta1 [rad], theta1_dot [rad/s]
GENERALIZATION_STARTS = len(GENERALIZATION_LEVELS) ** len(GENERALIZATION_RANGES)  # 625 (``generalization_starts``)
SUPPORTED_DTYPES = (torch.float64,)


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DoublePoleConfig:
    """How the benchmark is run: the task and every switch on which the reference codes differ.

    task: "markov" (inputs: the six state variables scaled, and the bias) or "nonmarkov" (x, theta1,
        theta2 scaled, and the bias; damping fitness).
    cart_friction: apply the cart-track friction -mu_c * sgn(x_dot) (Gomez's and Igel's codes; the
        NEAT code declares it but never applies it). sgn(0) = 0.
    fitness_window: the damping fitness sums the jiggle of the last 100 (Igel) or 101 (NEAT) balanced
        states, counting the start state as state 0.
    start_angle: theta1 of the standard start [rad]; 0.07 in the NEAT code and Igel's group
        (Gomez: 4.0156 deg = 0.070086 rad).
    min_force: smallest force magnitude [N], 0 for none; Gomez's code uses 10/256 N
        (``GOMEZ_MIN_FORCE``): a force in [0, 10/256) becomes +10/256 N, one in (-10/256, 0) -10/256 N.
    bias: the constant last input [dimensionless]; 0.5 as in the NEAT code.
    """

    task: str = "markov"
    cart_friction: bool = True
    fitness_window: int = 100
    start_angle: float = 0.07
    min_force: float = 0.0
    bias: float = 0.5

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        if isinstance(self.fitness_window, bool) or not isinstance(self.fitness_window, int):
            # check_choice alone would let 100.0 through (100.0 == 100), which the window's buffer refuses
            raise ValueError(f"fitness_window={self.fitness_window!r} is not allowed; choose one of: "
                             f"{', '.join(map(repr, FITNESS_WINDOWS))} (an int)")
        check_choice("fitness_window", self.fitness_window, FITNESS_WINDOWS)
        if not isinstance(self.cart_friction, bool):
            raise ValueError(f"cart_friction={self.cart_friction!r} is not allowed: it must be True or False")
        _check_number("start_angle", self.start_angle, -ANGLE_LIMIT, ANGLE_LIMIT, "rad (within the failure limit)")
        _check_number("min_force", self.min_force, 0.0, MAX_FORCE, "N")
        _check_number("bias", self.bias, -math.inf, math.inf, "(any finite number)")

    @property
    def markov(self) -> bool:
        return self.task == "markov"

    @property
    def observation_size(self) -> int:
        """Inputs per step: 7 (six state variables and the bias) or 4 (x, theta1, theta2 and the bias)."""
        return 7 if self.markov else 4

    @property
    def episode_steps(self) -> int:
        """Control steps of one fitness episode: 100,000 (Markov) or 1,000 (non-Markov)."""
        return MARKOV_STEPS if self.markov else NONMARKOV_STEPS


def _check_number(name: str, value, low: float, high: float, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
        low <= value <= high
    ):
        raise ValueError(f"{name}={value!r} is not allowed: it must be a number in [{low}, {high}] {unit}")


def make_config(config: DoublePoleConfig | None = None, **fields: Any) -> DoublePoleConfig:
    """``config`` (default: ``DoublePoleConfig()``) with ``fields`` replaced; unknown field names raise."""
    allowed = [f.name for f in dataclasses.fields(DoublePoleConfig)]
    for name in fields:
        if name not in allowed:
            raise TypeError(f"{name!r} is not a field of DoublePoleConfig; the fields are: {', '.join(allowed)}")
    return dataclasses.replace(config or DoublePoleConfig(), **fields)


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """Raise unless dtype is one the simulator supports (float64: float32 changes fitness values)."""
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"dtype={dtype} is not allowed; choose one of: {', '.join(map(str, SUPPORTED_DTYPES))} "
            "(float32 rounding changes how many steps controllers balance)"
        )
    return dtype


# ---------------------------------------------------------------------------------------------- physics
# The simulator is stepped one control step at a time from Python (a controller acts between steps), so for
# small and medium N a step costs what its torch operator calls cost (a few microseconds each), not what they
# compute. The physics is therefore written for few operator calls: the state is gathered once into
# contiguous component-first rows (x, theta1, theta2, x_dot, theta1_dot, theta2_dot), both poles are
# computed at once as [2, N] tensors with per-pole constants [2, 1] made once per device and dtype, and
# products and sums are fused (addcmul, add with alpha).
_ROWS = (0, 2, 4, 1, 3, 5)  # the state column of each row
_ROW_SIZES = (1, 2, 1, 2)  # x | theta1, theta2 | x_dot | theta1_dot, theta2_dot


@dataclass(frozen=True)
class _PhysicsConstants:
    """The constants of ``step_physics`` on one device and dtype: per pole [2, 1] (long pole, short pole)."""

    ml: Tensor  # m_i l_i
    hinge: Tensor  # mu_p / (m_i l_i)
    three_quarter_m: Tensor  # 3/4 m_i
    mass: Tensor  # (M + m_1, m_2): summed over the poles, the masses in the denominator of x_ddot
    half_step_k: Tensor  # h/2 k_i with k_i = -3 / (4 l_i): theta_ddot_i = k_i t_i (``_accelerations``)
    step_k: Tensor  # h k_i
    rk4_weights: Tensor  # [6, 1]: h/6 on each row, times k_i on the theta_dot rows (the stages hold t_i)
    rows: Tensor  # [6] int64: _ROWS
    columns: Tensor  # [6] int64: the row of each state column


@functools.lru_cache(maxsize=None)
def _physics_constants(device: torch.device, dtype: torch.dtype) -> _PhysicsConstants:
    m, l, h = POLE_MASSES, POLE_HALF_LENGTHS, TIME_STEP
    k = [-0.75 / l[i] for i in range(2)]

    def tensor(values, *shape):
        return torch.tensor(values, dtype=torch.float64).reshape(shape).to(device=device, dtype=dtype)

    return _PhysicsConstants(
        ml=tensor([m[i] * l[i] for i in range(2)], 2, 1),
        hinge=tensor([HINGE_FRICTION / (m[i] * l[i]) for i in range(2)], 2, 1),
        three_quarter_m=tensor([0.75 * v for v in m], 2, 1),
        mass=tensor([CART_MASS + m[0], m[1]], 2, 1),
        half_step_k=tensor([0.5 * h * v for v in k], 2, 1),
        step_k=tensor([h * v for v in k], 2, 1),
        rk4_weights=tensor([h / 6] * 4 + [h / 6 * v for v in k], 6, 1),
        rows=torch.tensor(_ROWS, device=device),
        columns=torch.tensor([_ROWS.index(i) for i in range(6)], device=device),
    )


@functools.lru_cache(maxsize=16)
def _gather_indices(device: torch.device, n: int) -> tuple[Tensor, Tensor]:
    """Indices for torch.gather: state [n, 6] -> component-first rows [6, n], and back."""
    c = _physics_constants(device, torch.float64)
    return c.rows[:, None].expand(6, n), c.columns.expand(n, 6)


def _accelerations(theta: Tensor, theta_dot: Tensor, x_dot: Tensor, half_force: Tensor, cart_friction: bool,
                   c: _PhysicsConstants) -> tuple[Tensor, Tensor]:
    """Wieland's equations for one RK4 stage: theta, theta_dot [2, n] (long pole, short pole), x_dot [1, n],
    half_force [n] or [] (F/2 in N) -> (x_ddot [1, n], t [2, n]) with theta_ddot_i = -3 / (4 l_i) t_i."""
    sin, cos = torch.sin(theta), torch.cos(theta)
    hinge_gravity = torch.add(c.hinge * theta_dot, sin, alpha=GRAVITY)  # mu_p theta_dot / (m l) + g sin
    three_quarter_m_cos = c.three_quarter_m * cos
    # F/2 + F~_i in the row of pole i, so that the sum over the poles is F + F~_1 + F~_2
    effective_force = torch.addcmul(torch.addcmul(half_force, c.ml * theta_dot, theta_dot * sin),
                                    three_quarter_m_cos, hinge_gravity)
    push = effective_force.sum(0, keepdim=True)
    if cart_friction:
        push = torch.add(push, torch.sign(x_dot), alpha=-CART_FRICTION)
    # M + m~_1 + m~_2 with m~_i = m_i - 3/4 m_i cos^2
    mass = torch.addcmul(c.mass, three_quarter_m_cos, cos, value=-1.0).sum(0, keepdim=True)
    x_ddot = push / mass
    return x_ddot, torch.addcmul(hinge_gravity, x_ddot, cos)


def step_physics(state: Tensor, force: Tensor, config: DoublePoleConfig) -> Tensor:
    """One control step: two classic RK4 substeps of h = 0.01 s, force held.

    state [..., 6], force [...] (or broadcastable to it) in N -> state [..., 6] 0.02 s later.
    """
    c = _physics_constants(state.device, state.dtype)
    batch_shape = state.shape[:-1]
    n = math.prod(batch_shape)
    half_force = (force * 0.5).broadcast_to(batch_shape).reshape(n)
    friction = config.cart_friction
    h = TIME_STEP
    to_rows, to_columns = _gather_indices(state.device, n)
    y = torch.gather(state.reshape(n, 6).transpose(0, 1), 0, to_rows)  # [6, n]
    for _ in range(SUBSTEPS):
        _, theta, x_dot, theta_dot = y.split(_ROW_SIZES)
        x_ddot1, t1 = _accelerations(theta, theta_dot, x_dot, half_force, friction, c)
        theta_dot2 = torch.addcmul(theta_dot, c.half_step_k, t1)
        x_dot2 = torch.add(x_dot, x_ddot1, alpha=0.5 * h)
        x_ddot2, t2 = _accelerations(torch.add(theta, theta_dot, alpha=0.5 * h), theta_dot2, x_dot2, half_force,
                                     friction, c)
        theta_dot3 = torch.addcmul(theta_dot, c.half_step_k, t2)
        x_dot3 = torch.add(x_dot, x_ddot2, alpha=0.5 * h)
        x_ddot3, t3 = _accelerations(torch.add(theta, theta_dot2, alpha=0.5 * h), theta_dot3, x_dot3, half_force,
                                     friction, c)
        theta_dot4 = torch.addcmul(theta_dot, c.step_k, t3)
        x_dot4 = torch.add(x_dot, x_ddot3, alpha=h)
        x_ddot4, t4 = _accelerations(torch.add(theta, theta_dot3, alpha=h), theta_dot4, x_dot4, half_force,
                                     friction, c)
        # the derivatives of the rows at stage j: (x_dot_j, theta_dot_j, x_ddot_j, t_j), k_i in rk4_weights
        k1, k2, k3, k4 = (torch.cat(k) for k in ((x_dot, theta_dot, x_ddot1, t1), (x_dot2, theta_dot2, x_ddot2, t2),
                                                 (x_dot3, theta_dot3, x_ddot3, t3), (x_dot4, theta_dot4, x_ddot4, t4)))
        y = torch.addcmul(y, c.rk4_weights, torch.add(k1, k2 + k3, alpha=2.0) + k4)
    return torch.gather(y.transpose(0, 1), 1, to_columns).view(state.shape)


def output_to_force(output: Tensor, config: DoublePoleConfig) -> Tensor:
    """Network output o [...] -> force [...] in N: F = (o - 0.5) * 2 * 10 with o clipped to [0, 1].

    With ``config.min_force`` > 0 a force closer to 0 than min_force becomes +-min_force, its sign kept
    (0 counts as positive), as in Gomez's code.
    """
    force = (output.clamp(0.0, 1.0) - 0.5) * (2.0 * MAX_FORCE)
    if config.min_force > 0:
        force = torch.where(force >= 0, force.clamp(min=config.min_force), force.clamp(max=-config.min_force))
    return force


def balanced(state: Tensor) -> Tensor:
    """[..., 6] -> [...] bool: within the limits abs(x) <= 2.4 m and abs(theta_i) <= 0.628329 rad (NaN fails)."""
    return (state[..., 0::2].abs() <= _limits(state.device, state.dtype)).all(-1)


@functools.lru_cache(maxsize=None)
def _limits(device: torch.device, dtype: torch.dtype) -> Tensor:
    """[3]: the limits of abs(x), abs(theta1), abs(theta2)."""
    return torch.tensor([TRACK_LIMIT, ANGLE_LIMIT, ANGLE_LIMIT], dtype=torch.float64).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _observation_constants(device: torch.device, dtype: torch.dtype, markov: bool, bias: float
                           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(state columns [D], their scales [D], is-bias mask [D], bias []) of the inputs; the bias comes last."""
    columns = [0, 1, 2, 3, 4, 5] if markov else [0, 2, 4]

    def floats(values):
        return torch.tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)
    return (torch.tensor(columns + [0], device=device), floats([INPUT_SCALES[i] for i in columns] + [1.0]),
            torch.tensor([False] * len(columns) + [True], device=device), floats(bias))


def observe(state: Tensor, config: DoublePoleConfig) -> Tensor:
    """Controller inputs. state [..., 6] -> [..., 7] (Markov) or [..., 4] (non-Markov), bias last.

    Markov: x/4.8, x_dot/2, theta1/0.52, theta1_dot/2, theta2/0.52, theta2_dot/2; non-Markov: x/4.8,
    theta1/0.52, theta2/0.52.
    """
    columns, scales, is_bias, bias = _observation_constants(state.device, state.dtype, config.markov, config.bias)
    return torch.where(is_bias, bias, torch.index_select(state, -1, columns) / scales)


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
def standard_starts(n: int, config: DoublePoleConfig, device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """[n, 6]: all zero but theta1 = config.start_angle."""
    starts = torch.zeros(check_size("n", n), 6, device=device, dtype=dtype)
    starts[:, 2] = config.start_angle
    return starts


def generalization_starts(device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """[625, 6]: the 5^4 grid of x, x_dot, theta1, theta1_dot at k * range - range / 2 for k in
    (0.05, 0.25, 0.5, 0.75, 0.95), theta2 = theta2_dot = 0; x varies slowest, theta1_dot fastest."""
    levels = torch.tensor(GENERALIZATION_LEVELS, dtype=torch.float64)
    axes = [levels * r - r / 2 for r in GENERALIZATION_RANGES]
    grid = torch.cartesian_prod(*axes)
    return torch.cat([grid, torch.zeros(len(grid), 2, dtype=torch.float64)], dim=1).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------- simulator
class DoublePole:
    """N double pole simulations on one device.

    Attributes, all on ``device``: ``state`` [N, 6]; ``alive`` [N] bool, balanced so far; ``steps`` [N]
    int64, control steps balanced since the start. A simulation that fails keeps the state in which it
    failed, and later steps leave it, its ``alive`` and its ``steps`` as they are.
    """

    def __init__(self, config: DoublePoleConfig | None = None, device=None, dtype: torch.dtype = torch.float64):
        self.config = config or DoublePoleConfig()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = check_dtype(dtype)
        self.state = torch.zeros(0, 6, device=self.device, dtype=dtype)
        self.alive = torch.zeros(0, device=self.device, dtype=torch.bool)
        self.steps = torch.zeros(0, device=self.device, dtype=torch.int64)

    @property
    def num_simulations(self) -> int:
        return self.state.shape[0]

    def reset(self, starts: int | Tensor) -> Tensor:
        """Start over: ``starts`` standard starts, or the given start states [N, 6]. -> observations [N, D]."""
        if isinstance(starts, int):
            starts = standard_starts(starts, self.config, self.device, self.dtype)
        elif not isinstance(starts, Tensor) or starts.dim() != 2 or starts.shape[1] != 6:
            got = tuple(starts.shape) if isinstance(starts, Tensor) else type(starts).__name__
            raise ValueError(f"starts={got} is not allowed: give a number of standard starts or a tensor [N, 6]")
        self.state = starts.to(device=self.device, dtype=self.dtype)
        self.alive = balanced(self.state)
        self.steps = torch.zeros(len(self.state), device=self.device, dtype=torch.int64)
        return self.observe()

    def restart(self, mask: Tensor) -> Tensor:
        """Put the simulations of ``mask`` [N] bool back to the standard start. -> observations [N, D]."""
        start = standard_starts(1, self.config, self.device, self.dtype)
        self.state = torch.where(mask[:, None], start, self.state)
        self.alive = self.alive | mask
        self.steps = torch.where(mask, torch.zeros_like(self.steps), self.steps)
        return self.observe()

    def step(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """Advance the running simulations by one control step.

        outputs [N] or [N, 1]: network outputs o in [0, 1] (clipped). -> (observations [N, D], alive [N]).
        """
        n = self.num_simulations
        if not isinstance(outputs, Tensor) or tuple(outputs.shape) not in ((n,), (n, 1)):
            got = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
            raise ValueError(f"outputs={got} is not allowed: it must be a tensor of shape ({n},) or ({n}, 1)")
        force = output_to_force(outputs.reshape(n).to(device=self.device, dtype=self.dtype), self.config)
        self.state = torch.where(self.alive[:, None], step_physics(self.state, force, self.config), self.state)
        self.alive = self.alive & balanced(self.state)
        self.steps = self.steps + self.alive
        return self.observe(), self.alive

    def observe(self) -> Tensor:
        """Observations [N, D] of the current states (D = config.observation_size)."""
        return observe(self.state, self.config)


# ---------------------------------------------------------------------------------------------- benchmark
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


# ---------------------------------------------------------------------------------------------- rendering
_FRAME_HEIGHT, _FRAME_WIDTH = 300, 600
_PIXELS_PER_METRE = _FRAME_WIDTH / (2 * TRACK_LIMIT + 0.8)
_TRACK_ROW = 240  # pixel row of the track
_CART_SIZE = (24, 50)  # pixels: height, width
_COLORS = {
    "background": (255, 255, 255), "track": (90, 90, 90), "limit": (200, 60, 60), "cart": (40, 70, 140),
    "long pole": (200, 150, 60), "short pole": (60, 160, 90), "hinge": (20, 20, 20),
}


def _draw_segment(frame: np.ndarray, start: tuple[float, float], end: tuple[float, float], width: float,
                  color: tuple[int, int, int]) -> None:
    """Paint the pixels within width/2 of the segment start-end ((row, col) in pixels) in ``color``."""
    (r0, c0), (r1, c1) = start, end
    pad = width / 2 + 1
    rows = np.arange(max(int(min(r0, r1) - pad), 0), min(int(max(r0, r1) + pad) + 1, frame.shape[0]))
    cols = np.arange(max(int(min(c0, c1) - pad), 0), min(int(max(c0, c1) + pad) + 1, frame.shape[1]))
    r, c = np.meshgrid(rows, cols, indexing="ij")
    dr, dc = r1 - r0, c1 - c0
    along = np.clip(((r - r0) * dr + (c - c0) * dc) / max(dr * dr + dc * dc, 1e-12), 0.0, 1.0)
    inside = np.hypot(r - (r0 + along * dr), c - (c0 + along * dc)) <= width / 2
    frame[r[inside], c[inside]] = color


def render_frame(state) -> np.ndarray:
    """A picture of one state (6 numbers): cart, long pole, short pole, track and its limits.

    -> [300, 600, 3] uint8. Both poles stand on one hinge on top of the cart; 1 m is 107 pixels.
    """
    x, _, theta1, _, theta2, _ = (float(v) for v in state)
    frame = np.full((_FRAME_HEIGHT, _FRAME_WIDTH, 3), _COLORS["background"], dtype=np.uint8)

    def column(position: float) -> float:
        return _FRAME_WIDTH / 2 + position * _PIXELS_PER_METRE

    frame[_TRACK_ROW:_TRACK_ROW + 2, :] = _COLORS["track"]
    for limit in (-TRACK_LIMIT, TRACK_LIMIT):
        c = int(round(column(limit)))
        frame[_TRACK_ROW - 30:_TRACK_ROW + 2, max(c - 1, 0):c + 2] = _COLORS["limit"]
    height, width = _CART_SIZE
    centre = column(x)
    left, right = int(round(centre - width / 2)), int(round(centre + width / 2))
    frame[_TRACK_ROW - height:_TRACK_ROW, max(left, 0):max(right, 0)] = _COLORS["cart"]
    hinge = (_TRACK_ROW - height, centre)
    for theta, half_length, name, thickness in ((theta1, POLE_HALF_LENGTHS[0], "long pole", 7),
                                                (theta2, POLE_HALF_LENGTHS[1], "short pole", 5)):
        length = 2 * half_length * _PIXELS_PER_METRE
        tip = (hinge[0] - length * math.cos(theta), hinge[1] + length * math.sin(theta))
        _draw_segment(frame, hinge, tip, thickness, _COLORS[name])
    _draw_segment(frame, hinge, hinge, 6, _COLORS["hinge"])
    return frame


# ---------------------------------------------------------------------------------------------- gymnasium
def spaces(config: DoublePoleConfig) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """(observation space, action space) of one simulation: float32 inputs [D], the output o in [0, 1].

    The inputs have no physical bound (the state in which a simulation fails may lie beyond the limits),
    so the observation bounds are the largest finite float32 (as Gymnasium's CartPole bounds velocities):
    infinite bounds make ``gymnasium.utils.env_checker.check_env`` warn.
    """
    limit = np.finfo(np.float32).max
    observation = gym.spaces.Box(-limit, limit, shape=(config.observation_size,), dtype=np.float32)
    return observation, gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)


class DoublePoleEnv(gym.Env):
    """One double pole simulation as a Gymnasium environment.

    Action: [1] float32, the network output o in [0, 1] (clipped; force (o - 0.5) * 20 N). Observation:
    the scaled inputs of the task (``observe``) as float32 [7] or [4]. Every episode starts from the
    standard start. Reward 1 for each control step after which the poles are still balanced, 0 for the
    step that fails, which terminates the episode; so the return is the step count ``t``. Truncation is
    the TimeLimit wrapper's: ``gym.make(id, max_episode_steps=...)`` (registered: 100,000 steps for
    "fwp_rl/DoublePole-v0", 1,000 for "fwp_rl/DoublePoleNoVel-v0").

    config / fields: a DoublePoleConfig and field overrides, e.g. ``DoublePoleEnv(task="nonmarkov",
    cart_friction=False)``. render_mode: None or "rgb_array" (``render_frame``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, render_mode: str | None = None, config: DoublePoleConfig | None = None, **fields: Any):
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.render_mode = render_mode
        self.config = make_config(config, **fields)
        self.observation_space, self.action_space = spaces(self.config)
        self._sim = DoublePole(self.config)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self._sim.reset(1)[0].numpy().astype(np.float32), {}

    def step(self, action):
        output = torch.as_tensor(np.asarray(action, dtype=np.float64).reshape(1))
        obs, alive = self._sim.step(output)
        balanced_now = bool(alive[0])
        return obs[0].numpy().astype(np.float32), float(balanced_now), not balanced_now, False, {}

    def render(self):
        if self.render_mode == "rgb_array":
            return render_frame(self._sim.state[0])
        return None


class DoublePoleVectorEnv(VectorEnv):
    """num_envs double pole simulations as one Gymnasium VectorEnv on the batched torch simulator.

    numpy in and out: actions [num_envs, 1] (or [num_envs]) float in [0, 1]; observations
    [num_envs, D] float32; rewards, terminations, truncations as for ``DoublePoleEnv``; infos {}.
    The simulations run on ``device`` in ``dtype``.

    Autoreset: next-step (``AutoresetMode.NEXT_STEP``, gymnasium 1.x's default, as SyncVectorEnv). The
    step that ends an episode (terminated, or truncated after ``max_episode_steps`` steps; None: never)
    returns its last observation; the next ``step`` ignores that environment's action, puts it back to
    the standard start and returns the start observation with reward 0 and terminated = truncated = False.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
                 device=None, dtype: torch.dtype = torch.float64, config: DoublePoleConfig | None = None,
                 **fields: Any):
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.num_envs = check_size("num_envs", num_envs)
        self.max_episode_steps = None if max_episode_steps is None else check_size("max_episode_steps",
                                                                                  max_episode_steps)
        self.render_mode = render_mode
        self.config = make_config(config, **fields)
        self.single_observation_space, self.single_action_space = spaces(self.config)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._sim = DoublePole(self.config, device, dtype)
        self._autoreset = torch.zeros(num_envs, dtype=torch.bool, device=self._sim.device)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs = self._sim.reset(self.num_envs)
        self._autoreset = torch.zeros_like(self._autoreset)
        return _to_numpy(obs), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64)
        n = self.num_envs
        if actions.shape not in ((n,), (n, 1)):  # a bare reshape would take [2, 2] for 4 environments
            raise ValueError(f"actions of shape {actions.shape} are not allowed: the shape must be ({n}, 1) or ({n},)")
        _, alive = self._sim.step(torch.from_numpy(actions))
        restarted = self._autoreset
        terminated = ~alive & ~restarted
        truncated = torch.zeros_like(alive) if self.max_episode_steps is None else (
            alive & (self._sim.steps >= self.max_episode_steps) & ~restarted
        )
        reward = (alive & ~restarted).to(torch.float32)
        obs = self._sim.restart(restarted)
        self._autoreset = terminated | truncated
        return _to_numpy(obs), _to_numpy(reward), _to_numpy(terminated), _to_numpy(truncated), {}

    def render(self):
        if self.render_mode == "rgb_array":
            return tuple(render_frame(state) for state in self._sim.state.cpu())
        return None


def _to_numpy(t: Tensor) -> np.ndarray:
    """A CPU numpy copy; floating tensors become float32."""
    array = t.cpu().numpy()
    return array.astype(np.float32) if array.dtype.kind == "f" else array
