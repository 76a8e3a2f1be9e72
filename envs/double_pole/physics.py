"""The plant: Wieland's equations of the cart and its two poles, integrated as the reference codes do, and
``DoublePole``, N simulations on one device.

``step_physics`` (state, force, config) -> state, ``output_to_force``, ``balanced`` and ``observe`` are pure
tensor functions: no in-place writes and no branching on tensor values, so they run on any device and under
``torch.func.vmap``. ``DoublePole.step`` advances the running simulations and freezes the ones that failed,
without synchronizing with the host.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fwp_rl.checks import check_size
from fwp_rl.envs.double_pole.config import (
    ANGLE_LIMIT,
    CART_FRICTION,
    CART_MASS,
    GRAVITY,
    HINGE_FRICTION,
    INPUT_SCALES,
    MAX_FORCE,
    POLE_HALF_LENGTHS,
    POLE_MASSES,
    SUBSTEPS,
    TIME_STEP,
    TRACK_LIMIT,
    DoublePoleConfig,
    check_dtype,
)

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



# ---------------------------------------------------------------------------------------------- starts
def standard_starts(n: int, config: DoublePoleConfig, device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """[n, 6]: all zero but theta1 = config.start_angle."""
    starts = torch.zeros(check_size("n", n), 6, device=device, dtype=dtype)
    starts[:, 2] = config.start_angle
    return starts



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

