"""Small envs with every kind of observation space, for tests/test_spaces.py; importing this module registers them
as "spaces/<Kind>-v0" (so "spaces_envs:spaces/<Kind>-v0" names them for gymnasium.make).

Each episode is ``len(OBSERVATIONS)`` steps long: the first observation is ``FIRST[kind]``, whose flattened form
``FLAT_FIRST[kind]`` is written out by hand, and the rest are fixed samples of the space. The reward is 1 for
action t % 2 at step t, else 0.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_STEPS = 4
_inner = spaces.Dict({"pos": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32), "key": spaces.Discrete(3, start=1)})

SUPPORTED = {
    "Discrete": spaces.Discrete(4),
    "MultiDiscrete": spaces.MultiDiscrete([2, 3]),
    "MultiBinary": spaces.MultiBinary(3),
    "Dict": spaces.Dict({"doors": spaces.MultiBinary(2), "grid": spaces.MultiDiscrete([2, 3]), "inner": _inner}),
    "Tuple": spaces.Tuple((spaces.Discrete(2), _inner, spaces.Box(0.0, 5.0, shape=(1,), dtype=np.float32))),
}
FIRST = {
    "Discrete": 2,
    "MultiDiscrete": np.array([1, 0]),
    "MultiBinary": np.array([1, 0, 1], dtype=np.int8),
    "Dict": {"doors": np.array([0, 1], dtype=np.int8), "grid": np.array([0, 2]),
             "inner": {"pos": np.array([0.5, -0.25], dtype=np.float32), "key": 3}},
    "Tuple": (1, {"pos": np.array([-1.0, 0.75], dtype=np.float32), "key": 1}, np.array([4.5], dtype=np.float32)),
}
# Discrete and MultiDiscrete parts one-hot (Discrete(3, start=1): 3 is the third), Dict parts in key order.
FLAT_FIRST = {
    "Discrete": [0, 0, 1, 0],
    "MultiDiscrete": [0, 1, 1, 0, 0],
    "MultiBinary": [1, 0, 1],
    "Dict": [0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0.5, -0.25],
    "Tuple": [0, 1, 1, 0, 0, -1.0, 0.75, 4.5],
}
UNSUPPORTED = {
    "Text": spaces.Text(5),
    "Graph": spaces.Graph(spaces.Box(0.0, 1.0, shape=(2,)), None),
    "Sequence": spaces.Sequence(spaces.Discrete(2)),
    # Bounds that numpy prints on several lines unless told otherwise.
    "DictWithText": spaces.Dict({"pos": spaces.Box(0.0, np.arange(1, 41) / 7), "name": spaces.Text(5)}),
}


class PartsEnv(gym.Env):
    """Episodes of EPISODE_STEPS steps in observation space ``kind`` (module docstring); Discrete(2) actions."""

    action_space = spaces.Discrete(2)

    def __init__(self, kind: str):
        self.observation_space = {**SUPPORTED, **UNSUPPORTED}[kind]
        self.observation_space.seed(0)
        self.observations = [FIRST.get(kind)] + [self.observation_space.sample() for _ in range(EPISODE_STEPS - 1)]
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observations[0], {}

    def step(self, action):
        reward = float(int(action) == self.t % 2)
        self.t += 1
        return self.observations[self.t % EPISODE_STEPS], reward, self.t == EPISODE_STEPS, False, {}


IDS = {kind: f"spaces/{kind}-v0" for kind in (*SUPPORTED, *UNSUPPORTED)}
for _kind, _id in IDS.items():
    gym.register(_id, entry_point=PartsEnv, kwargs={"kind": _kind})
