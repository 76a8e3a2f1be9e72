"""Small Gymnasium tasks that need memory, registered by ``fwp_rl.envs``:

- "fwp_rl/CartPoleNoVel-v0" (``CartPoleNoVelEnv``): CartPole-v1 seeing only positions; a policy must
  infer the velocities from what it saw before.
- "fwp_rl/Recall-v0" (``RecallEnv``): name a cue shown ``delay`` steps earlier.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from fwp_rl.checks import check_size


POSITIONS = [0, 2]  # x and theta in CartPole's state (x, x_dot, theta, theta_dot)


class CartPoleNoVelEnv(CartPoleEnv):
    """CartPole-v1 without velocities: observation float32 [2], the cart position x [m] and the pole angle
    theta [rad]; dynamics, actions, reward (+1 per step) and termination as CartPole-v1, truncated after
    500 steps (registered). Since the observation says where the pole is but not where it is going, a
    policy without memory falls within tens of steps; one that remembers the last observation can
    difference positions into velocities and balance for all 500.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        high = self.observation_space.high[POSITIONS]
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[POSITIONS], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[POSITIONS], reward, terminated, truncated, info


class RecallEnv(gym.Env):
    """Cue recall: see one of k symbols, wait ``delay`` steps, then name the symbol.

    Observation float32 [k + 1]: at the first step the cue, one-hot in the first k entries (uniformly
    drawn); then ``delay`` blank steps (all zero); then the query step, where only the last entry, the
    flag "answer now", is 1. Action Discrete(k): ignored before the query; the action taken on the query
    step is the answer, rewarded 1 if it is the cue (else 0), and the episode terminates. An episode is
    delay + 2 steps.

    Returns: optimal 1 (remember the cue). Memoryless 1/k in expectation: every query step looks the
    same, so a policy without memory answers every cue alike.

    With the defaults (k = 4, delay = 4: 6-step episodes) recurrent PPO with an LSTM core (16 envs,
    32-step rollouts, learning rate 1e-3, MLP torso) reached a mean return of 1 in 50,000 steps.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, k: int = 4, delay: int = 4, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not allowed: None or 'rgb_array'")
        self.render_mode = render_mode
        self.k = check_size("k", k, minimum=2)
        self.delay = check_size("delay", delay, minimum=0)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(k + 1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(k)
        self._cue = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.k))
        self._t = 0
        return self._observe(), {}

    def step(self, action):
        self._t += 1
        if self._t <= self.delay + 1:
            return self._observe(), 0.0, False, False, {}
        return self._observe(), float(int(action) == self._cue), True, False, {}

    def render(self) -> np.ndarray:
        """RGB [48, 48 (k + 1), 3] uint8: the observation as k cue cells and the question cell, lit where 1,
        and a bar below that fills up over the delay."""
        cell = 48
        image = np.full((cell, cell * (self.k + 1), 3), 40, dtype=np.uint8)
        obs = self._observe()
        for i in range(self.k + 1):
            colour = (230, 180, 40) if i == self.k else (60, 160, 230)
            image[6:cell - 12, i * cell + 4:(i + 1) * cell - 4] = colour if obs[i] else (80, 80, 80)
        image[cell - 8:cell - 4, :int(image.shape[1] * min(self._t, self.delay + 1) / (self.delay + 1))] = 200
        return image

    def _observe(self) -> np.ndarray:
        """[k + 1]: the cue at step 0, the flag at the query step delay + 1, zeros otherwise."""
        obs = np.zeros(self.k + 1, dtype=np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        elif self._t == self.delay + 1:
            obs[self.k] = 1.0
        return obs
