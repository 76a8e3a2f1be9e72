"""The environments, imported as ``fwp_rl.envs``. Importing it registers the Gymnasium ids:

- "fwp_rl/DoublePole-v0": double pole balancing with velocities (Markov), 100,000 steps per episode;
- "fwp_rl/DoublePoleNoVel-v0": without velocities (non-Markov), 1,000 steps per episode;
- the memory-task suite (``memory_suite``; each with ``difficulty`` easy, medium or hard):
  "fwp_rl/RepeatPrevious-v0", "fwp_rl/CountCards-v0", "fwp_rl/RepeatSequence-v0",
  "fwp_rl/Recall-v0" (name a cue shown ``delay`` steps earlier; ``memory.RecallEnv``),
  "fwp_rl/CartPoleNoVel-v0" (CartPole-v1 without velocities, 500 steps; ``memory.CartPoleNoVelEnv``) and
  "fwp_rl/PendulumNoVel-v0" (Pendulum-v1 without its velocity, 200 steps).

``gym.make(id, max_episode_steps=..., **DoublePoleConfig fields)`` builds one simulation;
``gym.make_vec(id, num_envs)`` builds the batched torch ``DoublePoleVectorEnv``. Every id of the memory suite
registers a numpy vector env likewise (``memory_suite``), which autoresets on the same step: ``vector.make_vector_env``
builds PPO's envs with it.

``vector.make_vector_env`` builds the environments PPO steps: "atari:<game>" through ale-py's C++
vector env (``atari``), any registered Gymnasium id (or "module:EnvId") through Gymnasium's vector envs.
"""

from __future__ import annotations

import gymnasium as gym

from fwp_rl.envs.atari import PRESETS, AtariConfig, AtariEnvs
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
from fwp_rl.envs.memory import DIFFICULTIES, CartPoleNoVelEnv, RecallEnv
from fwp_rl.envs.memory_suite import (
    CartPoleNoVelVectorEnv,
    CountCardsEnv,
    CountCardsVectorEnv,
    PendulumNoVelEnv,
    PendulumNoVelVectorEnv,
    RecallVectorEnv,
    RepeatPreviousEnv,
    RepeatPreviousVectorEnv,
    RepeatSequenceEnv,
    RepeatSequenceVectorEnv,
)
from fwp_rl.envs.vector import Envs, Episode, Step, VectorEnvConfig, make_vector_env

__all__ = [
    "AtariConfig",
    "AtariEnvs",
    "CartPoleNoVelEnv",
    "CartPoleNoVelVectorEnv",
    "CountCardsEnv",
    "CountCardsVectorEnv",
    "DIFFICULTIES",
    "DoublePole",
    "DoublePoleConfig",
    "DoublePoleEnv",
    "DoublePoleVectorEnv",
    "Envs",
    "Episode",
    "PRESETS",
    "PendulumNoVelEnv",
    "PendulumNoVelVectorEnv",
    "RecallEnv",
    "RecallVectorEnv",
    "RepeatPreviousEnv",
    "RepeatPreviousVectorEnv",
    "RepeatSequenceEnv",
    "RepeatSequenceVectorEnv",
    "Step",
    "VectorEnvConfig",
    "balance",
    "fitness",
    "generalization_starts",
    "generalization_test",
    "long_test",
    "make_vector_env",
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
gym.register(id="fwp_rl/CartPoleNoVel-v0", entry_point="fwp_rl.envs.memory:CartPoleNoVelEnv",
             vector_entry_point="fwp_rl.envs.memory_suite:CartPoleNoVelVectorEnv", max_episode_steps=500,
             reward_threshold=475.0)
gym.register(id="fwp_rl/Recall-v0", entry_point="fwp_rl.envs.memory:RecallEnv",
             vector_entry_point="fwp_rl.envs.memory_suite:RecallVectorEnv")
gym.register(id="fwp_rl/PendulumNoVel-v0", entry_point="fwp_rl.envs.memory_suite:PendulumNoVelEnv",
             vector_entry_point="fwp_rl.envs.memory_suite:PendulumNoVelVectorEnv", max_episode_steps=200)
for _task in ("RepeatPrevious", "CountCards", "RepeatSequence"):
    gym.register(id=f"fwp_rl/{_task}-v0", entry_point=f"fwp_rl.envs.memory_suite:{_task}Env",
                 vector_entry_point=f"fwp_rl.envs.memory_suite:{_task}VectorEnv")
