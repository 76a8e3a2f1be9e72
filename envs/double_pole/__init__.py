"""Double pole balancing (Wieland 1991) as the literature runs it, batched in torch.

The specification is ``docs/double_pole.md``; every number here comes from it. Two poles (long: 0.1 kg,
half-length 0.5 m; short: 0.01 kg, half-length 0.05 m) stand on hinges on a 1 kg cart on a 4.8 m track.
A controller outputs o in [0, 1] every 0.02 s; the force F = (o - 0.5) * 20 N is held for two
4th-order Runge-Kutta substeps of h = 0.01 s. A simulation fails when abs(x) > 2.4 m or a pole leans
more than 0.628329 rad (36 degrees).

Modules, from the bottom up (each name is also one of this package's, ``double_pole.X``):

- ``config``: the specification's numbers and ``DoublePoleConfig``, the task and the switches on which the
  reference codes differ;
- ``physics``: the pure tensor functions ``step_physics`` (state, force, config) -> state,
  ``output_to_force``, ``balanced``, ``observe``, and ``DoublePole``, N simulations on one device;
- ``success``: the benchmark's fitness and success test, for any controller (``fitness_and_steps``,
  ``long_test``, ``generalization_test``) and for a policy's parameter vectors driven by a
  ``fwp_rl.population.MemoryController`` (``population_fitness``, ``champion_test`` -> ``SolutionTest``);
- ``render``: ``render_frame``, a picture of one state;
- ``env``: ``DoublePoleEnv`` and ``DoublePoleVectorEnv`` (registered by ``fwp_rl.envs`` as
  "fwp_rl/DoublePole-v0" and "fwp_rl/DoublePoleNoVel-v0").

States are [..., 6] tensors (x [m], x_dot [m/s], theta1 [rad], theta1_dot [rad/s], theta2 [rad],
theta2_dot [rad/s]); angles are measured from the vertical, positive when the pole leans towards +x.
A step count ``t`` is the number of control steps after which a simulation was still balanced: the
step that fails is not counted.
"""

from __future__ import annotations

from fwp_rl.envs.double_pole.config import (
    ANGLE_LIMIT,
    CART_FRICTION,
    CART_MASS,
    DAMPING_MIN_STEPS,
    FITNESS_WINDOWS,
    GENERALIZATION_LEVELS,
    GENERALIZATION_RANGES,
    GENERALIZATION_REQUIRED,
    GENERALIZATION_STARTS,
    GENERALIZATION_STEPS,
    GOMEZ_MIN_FORCE,
    GRAVITY,
    HINGE_FRICTION,
    INPUT_SCALES,
    MARKOV_STEPS,
    MAX_FORCE,
    NONMARKOV_STEPS,
    POLE_HALF_LENGTHS,
    POLE_MASSES,
    SUBSTEPS,
    SUPPORTED_DTYPES,
    TASKS,
    TIME_STEP,
    TRACK_LIMIT,
    DoublePoleConfig,
    check_dtype,
    make_config,
)
from fwp_rl.envs.double_pole.env import DoublePoleEnv, DoublePoleVectorEnv, spaces
from fwp_rl.envs.double_pole.physics import (
    DoublePole,
    balanced,
    observe,
    output_to_force,
    standard_starts,
    step_physics,
)
from fwp_rl.envs.double_pole.render import render_frame
from fwp_rl.envs.double_pole.success import (
    Controller,
    JiggleWindow,
    SolutionTest,
    balance,
    champion_test,
    closed_loop_step,
    compile_unavailable,
    damping_fitness,
    fitness,
    fitness_and_steps,
    generalization_score,
    generalization_starts,
    generalization_test,
    jiggle,
    long_balance,
    long_test,
    population_fitness,
)

__all__ = [
    "ANGLE_LIMIT", "CART_FRICTION", "CART_MASS", "DAMPING_MIN_STEPS", "FITNESS_WINDOWS", "GENERALIZATION_LEVELS",
    "GENERALIZATION_RANGES", "GENERALIZATION_REQUIRED", "GENERALIZATION_STARTS", "GENERALIZATION_STEPS",
    "GOMEZ_MIN_FORCE", "GRAVITY", "HINGE_FRICTION", "INPUT_SCALES", "MARKOV_STEPS", "MAX_FORCE", "NONMARKOV_STEPS",
    "POLE_HALF_LENGTHS", "POLE_MASSES", "SUBSTEPS", "SUPPORTED_DTYPES", "TASKS", "TIME_STEP", "TRACK_LIMIT",
    "Controller", "DoublePole", "DoublePoleConfig", "DoublePoleEnv", "DoublePoleVectorEnv", "JiggleWindow",
    "SolutionTest", "balance", "balanced", "champion_test", "check_dtype", "closed_loop_step", "compile_unavailable",
    "damping_fitness", "fitness", "fitness_and_steps", "generalization_score", "generalization_starts",
    "generalization_test", "jiggle", "long_balance", "long_test", "make_config", "observe", "output_to_force",
    "population_fitness", "render_frame", "spaces", "standard_starts", "step_physics",
]
