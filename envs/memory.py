"""Small Gymnasium tasks that need memory, registered by ``fwp_rl.envs``:

- "fwp_rl/CartPoleNoVel-v0" (``CartPoleNoVelEnv``): CartPole-v1 seeing only positions; a policy must
  infer the velocities from what it saw before. Harder settings add noise to what it sees and show it late.
- "fwp_rl/Recall-v0" (``RecallEnv``): name a cue shown ``delay`` steps earlier.

Both take ``difficulty="easy"|"medium"|"hard"`` (``DIFFICULTIES``), which sets the task's sizes; a size given
explicitly overrides it. The rest of the memory-task suite, and the numpy vector envs of every task, are in
``fwp_rl.envs.memory_suite``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from fwp_rl.checks import check_choice, check_number, check_size

DIFFICULTIES = ("easy", "medium", "hard")
POSITIONS = [0, 2]  # x and theta in CartPole's state (x, x_dot, theta, theta_dot)
CARTPOLE_STEPS = 500  # CartPoleNoVel's time limit (registered); normalize=True divides the reward by it


def difficulty_sizes(difficulty: str, presets: dict[str, dict[str, Any]], **given: Any) -> dict[str, Any]:
    """The sizes of a task: those of ``presets[difficulty]``, each replaced by the value ``given`` for it unless that
    is None. Raises a ValueError naming ``difficulty`` unless it is one of ``DIFFICULTIES``."""
    check_choice("difficulty", difficulty, DIFFICULTIES)
    return {name: presets[difficulty][name] if value is None else value for name, value in given.items()}


class Sensor:
    """What n copies of a control task observe: the true observation [size] plus Gaussian noise of standard deviation
    ``noise`` (drawn from each copy's generator, none when noise is 0), seen ``delay`` steps late (the first observation
    of an episode until there is an older one). A single env is n = 1."""

    def __init__(self, n: int, size: int, noise: float, delay: int):
        self.noise, self.delay = noise, delay
        self._seen = np.zeros((n, delay + 1, size), dtype=np.float32)  # a ring over the last delay + 1 observations
        self._now = 0

    def start(self, rows: np.ndarray, obs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        """The first observations [len(rows), size] of new episodes in copies ``rows`` -> what those copies see."""
        self._seen[rows] = self._noisy(obs, rngs)[:, None]
        return self._seen[rows, self._now]

    def step(self, obs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        """The true observations [n, size] after a step -> what the copies see [n, size]."""
        self._now = (self._now + 1) % (self.delay + 1)
        self._seen[:, self._now] = self._noisy(obs, rngs)
        return self._seen[:, (self._now + 1) % (self.delay + 1)].copy()

    def _noisy(self, obs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        if self.noise == 0:
            return obs
        return (obs + np.stack([rng.normal(0.0, self.noise, size=obs.shape[1]) for rng in rngs])).astype(np.float32)


class CartPoleNoVelEnv(CartPoleEnv):
    """CartPole-v1 without velocities: observation float32 [2], the cart position x [m] and the pole angle
    theta [rad]; dynamics, actions, reward (+1 per step) and termination as CartPole-v1, truncated after
    500 steps (registered). Since the observation says where the pole is but not where it is going, a
    policy without memory falls within tens of steps; one that remembers the last observation can
    difference positions into velocities and balance for all 500.

    Options: ``noise``, the standard deviation of Gaussian noise added to each observed position (drawn
    from the env's generator each step; 0: none); ``delay``, the steps an observation comes late (the
    episode's first observation is shown until there is one ``delay`` steps old); ``normalize``: a reward
    of 1/500 per step instead of 1, so that the return is the fraction of the 500 steps balanced, in
    [0, 1]. ``difficulty`` sets noise and delay (explicit values override it). The memoryless return
    (normalized) is that of the best linear memoryless policy we tried, push right when theta - 0.5 x > 0
    (500 episodes; the memoryless PPO policy of docs/memory_tasks.md balanced 41 steps on easy, 0.08):

    ========== ===== ===== ================= ==============================================
    difficulty noise delay memoryless return
    ========== ===== ===== ================= ==============================================
    easy       0     0     0.089 (45 steps)  CartPole-v1 seeing positions (the default)
    medium     0.01  0     0.089             velocities from two positions: noise sd 0.7
    hard       0.01  2     0.041             and the observation is 2 steps (0.04 s) old
    ========== ===== ===== ================= ==============================================

    The largest return, 1 (normalized), is within reach of a policy with memory at every difficulty: a
    Kalman filter over the observations (remembering its own pushes) and a linear controller balanced 500
    of 500 episodes for all 500 steps on each (tests/test_memory_suite.py).
    """

    PRESETS = {"easy": {"noise": 0.0, "delay": 0}, "medium": {"noise": 0.01, "delay": 0},
               "hard": {"noise": 0.01, "delay": 2}}

    def __init__(self, difficulty: str = "easy", noise: float | None = None, delay: int | None = None,
                 normalize: bool = False, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        sizes = difficulty_sizes(difficulty, self.PRESETS, noise=noise, delay=delay)
        self.difficulty = difficulty
        self.noise = check_number("noise", sizes["noise"])
        self.delay = check_size("delay", sizes["delay"], minimum=0)
        check_choice("normalize", normalize, (False, True))
        self.normalize = normalize
        high = self.observation_space.high[POSITIONS] + 8 * self.noise  # noise beyond 8 std: p < 1e-15
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self._sensor = Sensor(1, len(POSITIONS), self.noise, self.delay)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return self._sensor.start(np.array([0]), obs[None, POSITIONS], [self.np_random])[0], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        reward = reward / CARTPOLE_STEPS if self.normalize else reward
        return self._sensor.step(obs[None, POSITIONS], [self.np_random])[0], reward, terminated, truncated, info


class RecallEnv(gym.Env):
    """Cue recall: see one of k symbols, wait ``delay`` steps, then name the symbol.

    Observation float32 [k + 1]: at the first step the cue, one-hot in the first k entries (uniformly
    drawn); then ``delay`` blank steps (all zero); then the query step, where only the last entry, the
    flag "answer now", is 1. Action Discrete(k): ignored before the query; the action taken on the query
    step is the answer, rewarded 1 if it is the cue (else 0), and the episode terminates. An episode is
    delay + 2 steps.

    Returns: optimal 1 (remember the cue). Memoryless 1/k in expectation: every query step looks the
    same, so a policy without memory answers every cue alike.

    ``difficulty`` sets k and delay (explicit values override it): easy k = 4, delay = 4 (the default;
    memoryless 0.25); medium k = 4, delay = 8 (the configs in configs/memory; memoryless 0.25); hard
    k = 8, delay = 16 (memoryless 0.125).

    With the defaults (k = 4, delay = 4: 6-step episodes) recurrent PPO with an LSTM core (16 envs,
    32-step rollouts, learning rate 1e-3, MLP torso) reached a mean return of 1 in 50,000 steps.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    PRESETS = {"easy": {"k": 4, "delay": 4}, "medium": {"k": 4, "delay": 8}, "hard": {"k": 8, "delay": 16}}

    def __init__(self, k: int | None = None, delay: int | None = None, render_mode: str | None = None,
                 difficulty: str = "easy"):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not allowed: None or 'rgb_array'")
        self.render_mode = render_mode
        sizes = difficulty_sizes(difficulty, self.PRESETS, k=k, delay=delay)
        self.difficulty = difficulty
        self.k = check_size("k", sizes["k"], minimum=2)
        self.delay = check_size("delay", sizes["delay"], minimum=0)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.k + 1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.k)
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
        return cells_frame(self._observe(), 1, min(self._t, self.delay + 1), self.delay + 1)

    def _observe(self) -> np.ndarray:
        """[k + 1]: the cue at step 0, the flag at the query step delay + 1, zeros otherwise."""
        obs = np.zeros(self.k + 1, dtype=np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        elif self._t == self.delay + 1:
            obs[self.k] = 1.0
        return obs


def cells_frame(obs: np.ndarray, flags: int, step: int, steps: int) -> np.ndarray:
    """RGB [48, 48 D, 3] uint8 of an observation [D] of 0s and 1s: a cell per entry, lit where 1 (blue, the last
    ``flags`` entries amber), and a bar below that fills step / steps of the width."""
    cell = 48
    image = np.full((cell, cell * len(obs), 3), 40, dtype=np.uint8)
    for i, value in enumerate(obs):
        colour = (230, 180, 40) if i >= len(obs) - flags else (60, 160, 230)
        image[6:cell - 12, i * cell + 4:(i + 1) * cell - 4] = colour if value else (80, 80, 80)
    image[cell - 8:cell - 4, :int(image.shape[1] * step / steps)] = 200
    return image
