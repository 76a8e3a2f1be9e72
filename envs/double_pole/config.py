"""The numbers of the benchmark's specification (``docs/double_pole.md``) and ``DoublePoleConfig``, the switches
on which the reference codes differ."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from fwp_rl.checks import check_choice


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
