"""The double pole as Gymnasium environments: ``DoublePoleEnv`` (one simulation) and ``DoublePoleVectorEnv``
(the batched torch simulator), registered by ``fwp_rl.envs`` as "fwp_rl/DoublePole-v0" and
"fwp_rl/DoublePoleNoVel-v0"."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from fwp_rl.checks import check_choice, check_size
from fwp_rl.envs.double_pole.config import DoublePoleConfig, make_config
from fwp_rl.envs.double_pole.physics import DoublePole
from fwp_rl.envs.double_pole.render import render_frame


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
