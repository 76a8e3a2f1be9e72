"""An env that breaks once, on purpose, for tests/test_distributed.py: importing this module registers
"failing/Recall-v0" (so "failing_envs:failing/Recall-v0" names it for gymnasium.make).

It is fwp_rl/Recall-v0 (``RecallEnv``) whose copy seeded with ``seed`` (the seed of its first reset), at its
``step``-th step since then, raises a RuntimeError (``how="raise"``) or kills its process with SIGKILL
(``how="kill"``), but only while the file ``once`` does not exist, which it then makes: a resumed run does not break
again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import gymnasium as gym

from fwp_rl.envs.memory import RecallEnv


class FailingRecallEnv(RecallEnv):
    def __init__(self, seed: int, step: int, how: str, once: str, **recall):
        super().__init__(**recall)
        self.failing_seed, self.failing_step, self.how, self.once = seed, step, how, Path(once)
        self.first_seed, self.steps = None, 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.first_seed, self.steps = seed, 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.first_seed == self.failing_seed and self.steps == self.failing_step and not self.once.exists():
            self.once.touch()
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"env seeded {self.first_seed} broke at its step {self.steps}")
        return super().step(action)


gym.register(id="failing/Recall-v0", entry_point=FailingRecallEnv)
