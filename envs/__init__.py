"""The environments, imported as ``fwp_rl.envs``. Importing it registers the Gymnasium ids:

- "fwp_rl/DoublePole-v0": double pole balancing with velocities (Markov), 100,000 steps per episode;
- "fwp_rl/DoublePoleNoVel-v0": without velocities (non-Markov), 1,000 steps per episode.

``gym.make(id, max_episode_steps=..., **DoublePoleConfig fields)`` builds one simulation;
``gym.make_vec(id, num_envs)`` builds the batched torch ``DoublePoleVectorEnv``.
"""

from __future__ import annotations

import gymnasium as gym

from fwp_rl.envs.double_pole import (
    DoublePole,
    DoublePoleConfig,
    DoublePoleEnv,
    DoublePoleVectorEnv,
    balance,
    fitness,
    generalization_starts,
    generalization_test,
    long_test,
    step_physics,
)

__all__ = [
    "DoublePole",
    "DoublePoleConfig",
    "DoublePoleEnv",
    "DoublePoleVectorEnv",
    "balance",
    "fitness",
    "generalization_starts",
    "generalization_test",
    "long_test",
    "step_physics",
]

for _id, _task, _steps in (("fwp_rl/DoublePole-v0", "markov", 100_000),
                           ("fwp_rl/DoublePoleNoVel-v0", "nonmarkov", 1_000)):
    gym.register(
        id=_id,
        entry_point="fwp_rl.envs.double_pole:DoublePoleEnv",
        vector_entry_point="fwp_rl.envs.double_pole:DoublePoleVectorEnv",
        max_episode_steps=_steps,
        kwargs={"task": _task},
    )
