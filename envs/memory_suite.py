"""The memory-task suite: small tasks that a policy solves only by remembering, each a Gymnasium env with a numpy
vector env beside it, registered by ``fwp_rl.envs``:

- "fwp_rl/RepeatPrevious-v0" (``RepeatPrevious``): name the symbol seen k steps ago, every step;
- "fwp_rl/CountCards-v0" (``CountCards``): say how many cards of the asked kind have been shown;
- "fwp_rl/RepeatSequence-v0" (``RepeatSequence``): see a sequence of symbols, then say it back in order;
- "fwp_rl/Recall-v0" (``fwp_rl.envs.memory.RecallEnv``): name a cue shown ``delay`` steps earlier;
- "fwp_rl/CartPoleNoVel-v0" (``fwp_rl.envs.memory.CartPoleNoVelEnv``): CartPole seeing positions only, and on
  medium and hard seeing them noisy and late;
- "fwp_rl/PendulumNoVel-v0" (``PendulumNoVelEnv``): Pendulum-v1 seeing its angle only, noisy and late likewise.

Every task takes ``difficulty="easy"|"medium"|"hard"`` (easy by default), which sets its sizes; a size given
explicitly overrides it. The class docstrings give the sizes and the return a policy without memory can expect.
Returns are normalized: to [0, 1] (the fraction of answers right; for CartPoleNoVel with ``normalize=True`` the
fraction of its 500 steps balanced) or to [-1, 0] (the pendulum).

The vector envs (``<Task>VectorEnv``, each id's ``vector_entry_point``: ``gym.make_vec(id, n)`` builds one) step all
n copies with numpy array operations and reset a copy on the step its episode ends (Gymnasium's
``AutoresetMode.SAME_STEP``, as ``fwp_rl.envs.vector`` steps envs for PPO): where terminated or truncated, the
observation returned is already the next episode's first; the last one is not kept, and infos are {}.
``reset(seed=s)`` seeds copy i with s + i (``reset()`` goes on with the copies' generators), and copy i then steps
exactly as the single env ``gym.make(id)`` reset with seed s + i, the time limit ``max_episode_steps`` included, in
Gymnasium's SyncVectorEnv.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import DEFAULT_X, DEFAULT_Y, PendulumEnv, angle_normalize
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fwp_rl.checks import check_choice, check_number, check_size
from fwp_rl.envs.memory import (
    CARTPOLE_STEPS,
    POSITIONS,
    CartPoleNoVelEnv,
    RecallEnv,
    Sensor,
    cells_frame,
    difficulty_sizes,
)

PENDULUM_STEPS = 200  # PendulumNoVel's time limit (registered), as Pendulum-v1's
PENDULUM_MAX_COST = np.pi ** 2 + 0.1 * 8 ** 2 + 0.001 * 2 ** 2  # 16.27: |theta| <= pi, |theta_dot| <= 8, |torque| <= 2


# ---------------------------------------------------------------------------------------------- symbol tasks
class SymbolTask:
    """The rules of a task of discrete symbols, for n copies at once in numpy.

    An episode is ``steps`` steps long and is drawn whole when it starts (``draw``: int64 [episode_size] from the
    copy's generator); ``observe`` and ``reward`` read the episodes [n, episode_size] of all copies at their steps
    t [n] (t = steps: after the last step, a blank observation). Observations are float32 [observation_size] of 0s
    and 1s, the last ``flags`` entries flags (drawn in amber by ``cells_frame``); actions are Discrete(num_actions).
    ``memoryless_return``: the expected return of the best policy without memory.
    """

    PRESETS: dict[str, dict[str, int]]
    flags = 0
    steps: int
    episode_size: int
    observation_size: int
    num_actions: int
    memoryless_return: float

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def observe(self, episodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reward(self, episodes: np.ndarray, t: np.ndarray, actions: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def one_hot(size: int, shown: np.ndarray, index: np.ndarray) -> np.ndarray:
    """float32 [n, size]: row i one-hot at index[i] where shown[i] (bool [n]), zeros elsewhere."""
    out = np.zeros((len(index), size), dtype=np.float32)
    rows = np.flatnonzero(shown)
    out[rows, index[rows]] = 1.0
    return out


def at(episodes: np.ndarray, column: np.ndarray) -> np.ndarray:
    """episodes[i, column[i]] for every row i, with column clipped into the episode."""
    return episodes[np.arange(len(episodes)), np.clip(column, 0, episodes.shape[1] - 1)]


class RepeatPrevious(SymbolTask):
    """Repeat the previous: name the symbol seen k steps ago, at every step.

    Each step shows one of ``num_symbols`` symbols, one-hot (drawn uniformly and independently). From step k on,
    the action at step t is rewarded 1 / length if it names the symbol of step t - k; actions before are ignored.
    An episode is k + length steps, so the return is the fraction of the ``length`` answers that are right, in
    [0, 1]. Observation float32 [num_symbols]; action Discrete(num_symbols).

    Returns: 1 remembering the last k symbols; 1 / num_symbols in expectation without memory, whatever the policy:
    the symbol of step t - k is independent of all that a memoryless policy sees at step t.

    ========== =========== === ====== =================
    difficulty num_symbols k   length memoryless return
    ========== =========== === ====== =================
    easy       4           2   16     0.25
    medium     8           4   32     0.125
    hard       16          8   64     0.0625
    ========== =========== === ====== =================
    """

    PRESETS = {"easy": {"num_symbols": 4, "k": 2, "length": 16}, "medium": {"num_symbols": 8, "k": 4, "length": 32},
               "hard": {"num_symbols": 16, "k": 8, "length": 64}}

    def __init__(self, difficulty: str = "easy", num_symbols: int | None = None, k: int | None = None,
                 length: int | None = None):
        sizes = difficulty_sizes(difficulty, self.PRESETS, num_symbols=num_symbols, k=k, length=length)
        self.difficulty = difficulty
        self.num_symbols = check_size("num_symbols", sizes["num_symbols"], minimum=2)
        self.k = check_size("k", sizes["k"])
        self.length = check_size("length", sizes["length"])
        self.steps = self.episode_size = self.k + self.length
        self.observation_size = self.num_actions = self.num_symbols
        self.memoryless_return = 1 / self.num_symbols

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.num_symbols, size=self.steps)

    def observe(self, episodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        return one_hot(self.num_symbols, t < self.steps, at(episodes, t))

    def reward(self, episodes: np.ndarray, t: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return ((t >= self.k) & (actions == at(episodes, t - self.k))) / self.length


class CountCards(SymbolTask):
    """Count the cards: say how many cards of the asked kind were shown.

    Steps 0 to length - 1 each show a card of one of ``num_kinds`` kinds, one-hot in the first num_kinds entries
    (drawn uniformly and independently); step ``length``, the query, shows only the kind asked, one-hot in the last
    num_kinds entries (drawn uniformly). The action on the query step is the answer, rewarded 1 if it is the number
    of cards of that kind shown (0 to length), and the episode terminates; actions before are ignored. Episodes are
    length + 1 steps. Observation float32 [2 num_kinds]; action Discrete(length + 1).

    Returns: 1 counting every kind; without memory at most the probability of the likeliest count, the largest value
    of the Binomial(length, 1 / num_kinds) distribution, which a memoryless policy answering that count gets: the
    query shows the same whatever the cards were.

    ========== ========= ====== =================
    difficulty num_kinds length memoryless return
    ========== ========= ====== =================
    easy       2         6      0.3125 (count 3)
    medium     4         12     0.2581 (count 3)
    hard       8         32     0.2088 (count 4)
    ========== ========= ====== =================
    """

    PRESETS = {"easy": {"num_kinds": 2, "length": 6}, "medium": {"num_kinds": 4, "length": 12},
               "hard": {"num_kinds": 8, "length": 32}}

    def __init__(self, difficulty: str = "easy", num_kinds: int | None = None, length: int | None = None):
        sizes = difficulty_sizes(difficulty, self.PRESETS, num_kinds=num_kinds, length=length)
        self.difficulty = difficulty
        self.num_kinds = check_size("num_kinds", sizes["num_kinds"], minimum=2)
        self.length = check_size("length", sizes["length"])
        self.flags = self.num_kinds
        self.steps = self.length + 1
        self.episode_size = self.length + 2
        self.observation_size = 2 * self.num_kinds
        self.num_actions = self.length + 1
        p = 1 / self.num_kinds
        self.memoryless_return = max(math.comb(self.length, c) * p ** c * (1 - p) ** (self.length - c)
                                     for c in range(self.length + 1))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """[length + 2]: the cards, the kind asked, the answer."""
        cards = rng.integers(self.num_kinds, size=self.length)
        kind = rng.integers(self.num_kinds)
        return np.concatenate([cards, [kind, np.count_nonzero(cards == kind)]])

    def observe(self, episodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        cards = one_hot(self.num_kinds, t < self.length, at(episodes, t))
        return np.concatenate([cards, one_hot(self.num_kinds, t == self.length, episodes[:, self.length])], 1)

    def reward(self, episodes: np.ndarray, t: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return ((t == self.length) & (actions == episodes[:, self.length + 1])).astype(np.float64)


class RepeatSequence(SymbolTask):
    """Repeat a sequence: see ``length`` symbols, then name them in order.

    Steps 0 to length - 1 each show one of ``num_symbols`` symbols, one-hot in the first num_symbols entries (drawn
    uniformly and independently); steps length to 2 length - 1 show only the last entry, the flag "answer now", and
    the action at step length + i is rewarded 1 / length if it names the i-th symbol; actions while the sequence is
    shown are ignored. Episodes are 2 length steps; the return is the fraction of the symbols named right, in [0, 1].
    Observation float32 [num_symbols + 1]; action Discrete(num_symbols).

    Returns: 1 remembering the sequence; 1 / num_symbols in expectation without memory, whatever the policy: all
    answer steps show the same flag.

    ========== =========== ====== =================
    difficulty num_symbols length memoryless return
    ========== =========== ====== =================
    easy       4           4      0.25
    medium     8           8      0.125
    hard       16          16     0.0625
    ========== =========== ====== =================
    """

    PRESETS = {"easy": {"num_symbols": 4, "length": 4}, "medium": {"num_symbols": 8, "length": 8},
               "hard": {"num_symbols": 16, "length": 16}}
    flags = 1

    def __init__(self, difficulty: str = "easy", num_symbols: int | None = None, length: int | None = None):
        sizes = difficulty_sizes(difficulty, self.PRESETS, num_symbols=num_symbols, length=length)
        self.difficulty = difficulty
        self.num_symbols = check_size("num_symbols", sizes["num_symbols"], minimum=2)
        self.length = check_size("length", sizes["length"])
        self.steps = 2 * self.length
        self.episode_size = self.length
        self.observation_size = self.num_symbols + 1
        self.num_actions = self.num_symbols
        self.memoryless_return = 1 / self.num_symbols

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.num_symbols, size=self.length)

    def observe(self, episodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        shown = one_hot(self.num_symbols, t < self.length, at(episodes, t))
        flag = ((t >= self.length) & (t < self.steps)).astype(np.float32)[:, None]
        return np.concatenate([shown, flag], 1)

    def reward(self, episodes: np.ndarray, t: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return ((t >= self.length) & (actions == at(episodes, t - self.length))) / self.length


class Recall(SymbolTask):
    """The rules of cue recall for its vector env: ``fwp_rl.envs.memory.RecallEnv`` says what the task is, its sizes
    and returns; this draws the cue as it does, so that the copies step as RecallEnvs."""

    PRESETS = RecallEnv.PRESETS
    flags = 1

    def __init__(self, difficulty: str = "easy", k: int | None = None, delay: int | None = None):
        sizes = difficulty_sizes(difficulty, self.PRESETS, k=k, delay=delay)
        self.difficulty = difficulty
        self.k = check_size("k", sizes["k"], minimum=2)
        self.delay = check_size("delay", sizes["delay"], minimum=0)
        self.steps = self.delay + 2
        self.episode_size = 1
        self.observation_size = self.k + 1
        self.num_actions = self.k
        self.memoryless_return = 1 / self.k

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.integers(self.k)])

    def observe(self, episodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        query = (t == self.delay + 1).astype(np.float32)[:, None]
        return np.concatenate([one_hot(self.k, t == 0, episodes[:, 0]), query], 1)

    def reward(self, episodes: np.ndarray, t: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return ((t == self.delay + 1) & (actions == episodes[:, 0])).astype(np.float64)


def symbol_spaces(task: SymbolTask) -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    """(observation space, action space) of one copy of ``task``."""
    observation = gym.spaces.Box(0.0, 1.0, shape=(task.observation_size,), dtype=np.float32)
    return observation, gym.spaces.Discrete(task.num_actions)


class SymbolEnv(gym.Env):
    """One copy of a ``SymbolTask`` (``task_class``, which a subclass names) as a Gymnasium env; options go to the
    task. render_mode: None or "rgb_array" (``cells_frame``: the observation and the episode's progress)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    task_class: type[SymbolTask]

    def __init__(self, render_mode: str | None = None, **options: Any):
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.render_mode = render_mode
        self.task = self.task_class(**options)
        self.observation_space, self.action_space = symbol_spaces(self.task)
        self._episode = np.zeros((1, self.task.episode_size), dtype=np.int64)
        self._t = np.zeros(1, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._episode = self.task.draw(self.np_random)[None]
        self._t[:] = 0
        return self.task.observe(self._episode, self._t)[0], {}

    def step(self, action):
        if not self.action_space.contains(action):
            last = self.task.num_actions - 1
            raise ValueError(f"action={action!r} is not allowed: it must be an integer in [0, {last}]")
        reward = self.task.reward(self._episode, self._t, np.array([int(action)]))
        self._t += 1
        return (self.task.observe(self._episode, self._t)[0], float(reward[0]), bool(self._t[0] >= self.task.steps),
                False, {})

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        t = min(int(self._t[0]), self.task.steps - 1)
        return cells_frame(self.task.observe(self._episode, self._t)[0], self.task.flags, t, self.task.steps - 1)


class RepeatPreviousEnv(SymbolEnv):
    """``RepeatPrevious`` as a Gymnasium env: "fwp_rl/RepeatPrevious-v0"."""

    task_class = RepeatPrevious


class CountCardsEnv(SymbolEnv):
    """``CountCards`` as a Gymnasium env: "fwp_rl/CountCards-v0"."""

    task_class = CountCards


class RepeatSequenceEnv(SymbolEnv):
    """``RepeatSequence`` as a Gymnasium env: "fwp_rl/RepeatSequence-v0"."""

    task_class = RepeatSequence


# ---------------------------------------------------------------------------------------------- vector envs
def seeded(rngs: list[np.random.Generator], seed: int | None) -> list[np.random.Generator]:
    """The copies' generators after ``reset(seed=seed)``: Gymnasium's generator of seed + i for copy i (as
    ``gym.Env.reset(seed=seed + i)`` makes it), or ``rngs`` as they are when seed is None."""
    if seed is None:
        return rngs
    return [seeding.np_random(seed + i)[0] for i in range(len(rngs))]


def time_limit(elapsed: np.ndarray, max_episode_steps: int | None) -> np.ndarray:
    """truncated bool [n]: Gymnasium's TimeLimit, elapsed steps >= max_episode_steps (None: never)."""
    return np.zeros(len(elapsed), dtype=bool) if max_episode_steps is None else elapsed >= max_episode_steps


class MemoryVectorEnv(VectorEnv):
    """What the vector envs of the suite share: num_envs, the time limit, render_mode, the spaces, the copies'
    generators and step counts, same-step autoreset (module docstring)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, max_episode_steps: int | None, render_mode: str | None,
                 single_observation_space: gym.spaces.Box, single_action_space: gym.Space):
        self.num_envs = check_size("num_envs", num_envs)
        self.max_episode_steps = None if max_episode_steps is None else check_size("max_episode_steps",
                                                                                  max_episode_steps)
        self.render_mode = render_mode
        self.single_observation_space, self.single_action_space = single_observation_space, single_action_space
        self.observation_space = batch_space(single_observation_space, num_envs)
        self.action_space = batch_space(single_action_space, num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._elapsed = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed={seed!r} is not allowed: it must be an integer or None")
        super().reset(seed=seed)
        self._rngs = seeded(self._rngs, seed)
        self._elapsed[:] = 0
        return self._start(np.arange(self.num_envs)), {}

    def step(self, actions):
        actions = self._check_actions(actions)
        obs, reward, terminated = self._step(actions)
        self._elapsed += 1
        truncated = time_limit(self._elapsed, self.max_episode_steps)
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            self._elapsed[done] = 0
            obs[done] = self._start(done)
        return obs, reward, terminated, truncated, {}

    def _start(self, rows: np.ndarray) -> np.ndarray:
        """Start new episodes in copies ``rows`` (int [B]) -> their first observations [B, *obs_shape]."""
        raise NotImplementedError

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every copy -> observations [n, *obs_shape], rewards float64 [n], terminated bool [n]."""
        raise NotImplementedError

    def _check_actions(self, actions) -> np.ndarray:
        raise NotImplementedError


class SymbolVectorEnv(MemoryVectorEnv):
    """num_envs copies of a ``SymbolTask`` (``task_class``, which a subclass names) as one Gymnasium VectorEnv in
    numpy: actions int [num_envs]; observations float32 [num_envs, observation_size]; rewards float64, terminations
    and truncations bool [num_envs]. Options go to the task."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}
    task_class: type[SymbolTask]

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
                 **options: Any):
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.task = self.task_class(**options)
        super().__init__(num_envs, max_episode_steps, render_mode, *symbol_spaces(self.task))
        self._episodes = np.zeros((num_envs, self.task.episode_size), dtype=np.int64)
        self._t = np.zeros(num_envs, dtype=np.int64)

    def _start(self, rows: np.ndarray) -> np.ndarray:
        for i in rows:
            self._episodes[i] = self.task.draw(self._rngs[i])
        self._t[rows] = 0
        return self.task.observe(self._episodes[rows], self._t[rows])

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reward = self.task.reward(self._episodes, self._t, actions)
        self._t += 1
        return self.task.observe(self._episodes, self._t), reward, self._t >= self.task.steps

    def _check_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions)
        n, a = self.num_envs, self.task.num_actions
        if actions.shape != (n,) or actions.dtype.kind not in "iu" or actions.min() < 0 or actions.max() >= a:
            raise ValueError(f"actions {actions!r} are not allowed: they must be {n} integers in [0, {a - 1}]")
        return actions

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        obs, last = self.task.observe(self._episodes, self._t), self.task.steps - 1
        return tuple(cells_frame(obs[i], self.task.flags, min(int(self._t[i]), last), last)
                     for i in range(self.num_envs))


class RepeatPreviousVectorEnv(SymbolVectorEnv):
    """``RepeatPrevious`` as a numpy vector env: ``gym.make_vec("fwp_rl/RepeatPrevious-v0", n)``."""

    task_class = RepeatPrevious


class CountCardsVectorEnv(SymbolVectorEnv):
    """``CountCards`` as a numpy vector env: ``gym.make_vec("fwp_rl/CountCards-v0", n)``."""

    task_class = CountCards


class RepeatSequenceVectorEnv(SymbolVectorEnv):
    """``RepeatSequence`` as a numpy vector env: ``gym.make_vec("fwp_rl/RepeatSequence-v0", n)``."""

    task_class = RepeatSequence


class RecallVectorEnv(SymbolVectorEnv):
    """Cue recall (``fwp_rl.envs.memory.RecallEnv``) as a numpy vector env: ``gym.make_vec("fwp_rl/Recall-v0", n)``;
    options k, delay and difficulty as RecallEnv's."""

    task_class = Recall


# ---------------------------------------------------------------------------------------------- control tasks
class PendulumNoVelEnv(PendulumEnv):
    """Pendulum-v1 seeing its angle only: observation float32 [2], cos and sin of the angle theta (0 upright), without
    the angular velocity; dynamics, the torque action Box(-2, 2, (1,)), the random starts (theta uniform in
    [-pi, pi], theta_dot in [-1, 1]) and the 200-step time limit (registered) as Pendulum-v1. A policy must infer
    the velocity from the angles it saw: two consecutive angles give it exactly (theta' = theta + 0.05 theta_dot').

    Reward: Pendulum-v1's, -(theta^2 + 0.1 theta_dot^2 + 0.001 torque^2) with theta in [-pi, pi], divided by
    16.27 x 200 (16.27 = pi^2 + 0.1 x 8^2 + 0.001 x 2^2 is its largest cost per step), so that the return of a
    200-step episode is in [-1, 0]. 0 is out of reach: each episode starts at a random angle, most far from upright.

    Options ``noise``, ``delay`` and ``difficulty`` as ``CartPoleNoVelEnv``'s (noise on cos and sin). Returns of
    500 episodes (tests/test_memory_suite.py): with memory, a filter over the observations (remembering its own
    torques) driving an energy-pumping swing-up and a PD controller near upright; the same controller reading the
    true state gets -0.048 at every difficulty. Without memory, the best of the memoryless policies we tried:
    torque clip(-10 sin theta, -2, 2) (towards upright) on easy and medium, no torque on hard.

    ========== ===== ===== =========== =================
    difficulty noise delay with memory memoryless return
    ========== ===== ===== =========== =================
    easy       0     0     -0.048      -0.32
    medium     0.05  0     -0.048      -0.33
    hard       0.05  2     -0.049      -0.38
    ========== ===== ===== =========== =================

    Easy is Pendulum-v1 seeing its angle (the default); on hard the observation is 2 steps (0.1 s) old.
    """

    PRESETS = {"easy": {"noise": 0.0, "delay": 0}, "medium": {"noise": 0.05, "delay": 0},
               "hard": {"noise": 0.05, "delay": 2}}

    def __init__(self, difficulty: str = "easy", noise: float | None = None, delay: int | None = None,
                 render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        sizes = difficulty_sizes(difficulty, self.PRESETS, noise=noise, delay=delay)
        self.difficulty = difficulty
        self.noise = check_number("noise", sizes["noise"])
        self.delay = check_size("delay", sizes["delay"], minimum=0)
        high = np.ones(2, dtype=np.float32) + 8 * self.noise  # noise beyond 8 std: p < 1e-15
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self._sensor = Sensor(1, 2, self.noise, self.delay)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return self._sensor.start(np.array([0]), obs[None, :2], [self.np_random])[0], info

    def step(self, action):
        state, obs, reward = pendulum_step(self, self.state[None], np.asarray(action).reshape(1, 1))
        self.state = state[0]
        self.last_u = np.clip(action, -self.max_torque, self.max_torque)[0]  # for rendering
        return self._sensor.step(obs, [self.np_random])[0], float(reward[0]), False, False, {}


def pendulum_step(env: PendulumEnv, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """Pendulum-v1's step (PendulumEnv.step's operations in its order, with env's constants) for n pendulums, states
    float64 [n, 2] (theta, theta_dot) and actions [n, 1] -> (the next states, their observations float32 [n, 2]
    (cos and sin of theta), the rewards float64 [n] normalized). Squares are products: PendulumEnv's scalar ``**``
    can round differently, so the single env steps here too."""
    th, thdot = state.T
    u = np.clip(actions, -env.max_torque, env.max_torque)[:, 0]
    costs = np.square(angle_normalize(th)) + 0.1 * np.square(thdot) + 0.001 * np.square(u)
    newthdot = thdot + (3 * env.g / (2 * env.l) * np.sin(th) + 3.0 / (env.m * env.l ** 2) * u) * env.dt
    newthdot = np.clip(newthdot, -env.max_speed, env.max_speed)
    newth = th + newthdot * env.dt
    obs = np.stack([np.cos(newth), np.sin(newth)], 1).astype(np.float32)
    return np.stack([newth, newthdot], 1), obs, -costs / (PENDULUM_MAX_COST * PENDULUM_STEPS)


def box_actions(actions, n: int) -> np.ndarray:
    """Box actions [n, 1] from [n] or [n, 1] (keeping their dtype); else a ValueError."""
    actions = np.asarray(actions)
    if actions.shape not in ((n,), (n, 1)) or actions.dtype.kind not in "iuf":
        raise ValueError(f"actions of shape {actions.shape} and dtype {actions.dtype} are not allowed: they must be "
                         f"numbers of shape ({n}, 1) or ({n},)")
    return actions.reshape(n, 1)


class CartPoleNoVelVectorEnv(MemoryVectorEnv):
    """num_envs copies of ``fwp_rl.envs.memory.CartPoleNoVelEnv`` (options as its) as one Gymnasium VectorEnv in
    numpy: CartPole-v1's Euler steps in float64 on states [num_envs, 4]; actions int [num_envs] (0 left, 1 right);
    observations float32 [num_envs, 2]."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
                 **options: Any):
        self.env = CartPoleNoVelEnv(render_mode=render_mode, **options)  # checks the options; its constants; drawing
        super().__init__(num_envs, max_episode_steps, render_mode, self.env.observation_space, self.env.action_space)
        self._state = np.zeros((num_envs, 4))
        self._sensor = Sensor(num_envs, 2, self.env.noise, self.env.delay)

    def _start(self, rows: np.ndarray) -> np.ndarray:
        for i in rows:
            self._state[i] = self._rngs[i].uniform(low=-0.05, high=0.05, size=(4,))  # as CartPoleEnv.reset
        obs = self._state[rows][:, POSITIONS].astype(np.float32)
        return self._sensor.start(rows, obs, [self._rngs[i] for i in rows])

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e = self.env  # CartPoleEnv.step, its operations in its order
        x, x_dot, theta, theta_dot = self._state.T
        force = np.where(actions == 1, e.force_mag, -e.force_mag)
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + e.polemass_length * np.square(theta_dot) * sintheta) / e.total_mass
        thetaacc = (e.gravity * sintheta - costheta * temp) / (
            e.length * (4.0 / 3.0 - e.masspole * np.square(costheta) / e.total_mass))
        xacc = temp - e.polemass_length * thetaacc * costheta / e.total_mass
        self._state = np.stack([x + e.tau * x_dot, x_dot + e.tau * xacc, theta + e.tau * theta_dot,
                                theta_dot + e.tau * thetaacc], 1)
        x, theta = self._state[:, 0], self._state[:, 2]
        terminated = (x < -e.x_threshold) | (x > e.x_threshold) | (theta < -e.theta_threshold_radians) | (
            theta > e.theta_threshold_radians)
        reward = np.full(self.num_envs, 1.0 / CARTPOLE_STEPS if e.normalize else 1.0)
        obs = self._sensor.step(self._state[:, POSITIONS].astype(np.float32), self._rngs)
        return obs, reward, terminated

    def _check_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.isin(actions, (0, 1)).all():
            raise ValueError(f"actions {actions!r} are not allowed: they must be {self.num_envs} of 0 and 1")
        return actions

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        frames = []
        for state in self._state:
            self.env.state = state
            frames.append(self.env.render())
        return tuple(frames)

    def close(self, **kwargs: Any) -> None:
        self.env.close()
        super().close(**kwargs)


class PendulumNoVelVectorEnv(MemoryVectorEnv):
    """num_envs copies of ``PendulumNoVelEnv`` (options as its) as one Gymnasium VectorEnv in numpy: Pendulum-v1's
    steps in float64 on states [num_envs, 2] (theta, theta_dot); actions float [num_envs, 1] or [num_envs];
    observations float32 [num_envs, 2]."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
                 **options: Any):
        self.env = PendulumNoVelEnv(render_mode=render_mode, **options)  # checks the options; its constants; drawing
        super().__init__(num_envs, max_episode_steps, render_mode, self.env.observation_space, self.env.action_space)
        self._state = np.zeros((num_envs, 2))
        self._torque = np.zeros(num_envs, dtype=np.float32)
        self._sensor = Sensor(num_envs, 2, self.env.noise, self.env.delay)

    def _start(self, rows: np.ndarray) -> np.ndarray:
        high = np.array([DEFAULT_X, DEFAULT_Y])
        for i in rows:
            self._state[i] = self._rngs[i].uniform(low=-high, high=high)  # as PendulumEnv.reset
        theta = self._state[rows, 0]
        obs = np.stack([np.cos(theta), np.sin(theta)], 1).astype(np.float32)
        return self._sensor.start(rows, obs, [self._rngs[i] for i in rows])

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._state, obs, reward = pendulum_step(self.env, self._state, actions)
        self._torque = np.clip(actions, -self.env.max_torque, self.env.max_torque)[:, 0]
        return self._sensor.step(obs, self._rngs), reward, np.zeros(self.num_envs, dtype=bool)

    def _check_actions(self, actions) -> np.ndarray:
        return box_actions(actions, self.num_envs)

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        frames = []
        for state, torque in zip(self._state, self._torque):
            self.env.state, self.env.last_u = state, torque
            frames.append(self.env.render())
        return tuple(frames)

    def close(self, **kwargs: Any) -> None:
        self.env.close()
        super().close(**kwargs)
