"""The memory tasks (fwp_rl.envs.memory): Gymnasium's checks, the observation layouts, and the returns a
policy with memory and one without reach. Deterministic (seeded), a few seconds on 2 cores."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from fwp_rl.envs.memory import RecallEnv  # importing fwp_rl.envs registers its ids

IDS = ("fwp_rl/CartPoleNoVel-v0", "fwp_rl/Recall-v0")


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    check_env(gym.make(env_id, render_mode="rgb_array").unwrapped)


# ---------------------------------------------------------------------------------------------- CartPoleNoVel
def balance(policy, seed: int) -> float:
    """Return of one episode of policy(obs, previous obs) -> action."""
    env = gym.make("fwp_rl/CartPoleNoVel-v0")
    obs, _ = env.reset(seed=seed)
    previous, total = obs, 0.0
    while True:
        action = policy(obs, previous)
        previous = obs
        obs, reward, terminated, truncated, _ = env.step(action)
        total += reward
        if terminated or truncated:
            return total


def test_cartpole_novel_is_cartpole_seeing_only_positions():
    full, novel = gym.make("CartPole-v1"), gym.make("fwp_rl/CartPoleNoVel-v0")
    assert novel.observation_space.shape == (2,)
    np.testing.assert_array_equal(novel.observation_space.high, full.observation_space.high[[0, 2]])
    a, _ = full.reset(seed=4)
    b, _ = novel.reset(seed=4)
    for action in [0, 1, 1, 0, 1, 0, 0, 1]:
        np.testing.assert_array_equal(b, a[[0, 2]])
        a, ra, ta, _, _ = full.step(action)
        b, rb, tb, _, _ = novel.step(action)
        assert (ra, ta) == (rb, tb)


def test_cartpole_novel_needs_memory():
    dt = 0.02  # CartPole's time step: position differences / dt are the velocities of the step before

    def remembers(obs, previous):
        x, theta = obs
        x_dot, theta_dot = (obs - previous) / dt
        return int(theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0)

    assert [balance(remembers, seed) for seed in range(5)] == [500.0] * 5
    for memoryless in (lambda obs, _: int(obs[1] > 0), lambda obs, _: int(obs[1] + 0.1 * obs[0] > 0)):
        assert max(balance(memoryless, seed) for seed in range(5)) < 100


# ---------------------------------------------------------------------------------------------- Recall
@pytest.mark.parametrize("k, delay", [(4, 8), (2, 0), (3, 2)])
def test_recall_shows_the_cue_then_blanks_then_the_flag(k, delay):
    env = RecallEnv(k=k, delay=delay)
    obs, _ = env.reset(seed=1)
    cue = int(np.argmax(obs))
    assert obs.shape == (k + 1,) and obs.sum() == 1 and cue < k
    for _ in range(delay):
        obs, reward, terminated, _, _ = env.step(0)
        assert not obs.any() and reward == 0 and not terminated
    obs, reward, terminated, _, _ = env.step(0)
    np.testing.assert_array_equal(obs, np.eye(k + 1)[k])
    assert reward == 0 and not terminated
    _, reward, terminated, truncated, _ = env.step(cue)
    assert (reward, terminated, truncated) == (1.0, True, False)


def recall_returns(policy, k: int, episodes: int) -> np.ndarray:
    """Returns of policy(obs, memory) -> (action, memory), memory None at every episode start."""
    env = gym.make("fwp_rl/Recall-v0", k=k, delay=3)
    returns = np.zeros(episodes)
    for e in range(episodes):
        obs, _ = env.reset(seed=e)
        memory, done = None, False
        while not done:
            action, memory = policy(obs, memory)
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[e] += reward
            done = terminated or truncated
    return returns


def test_recall_returns_one_with_memory_and_one_over_k_without():
    k, episodes = 4, 4000

    def remembers(obs, memory):
        cue = int(np.argmax(obs[:k])) if memory is None else memory
        return cue, cue

    assert (recall_returns(remembers, k, 50) == 1).all()
    # Without memory the query step's answer is the same for every cue: the return is P(cue = answer).
    for answer in range(k):
        mean = recall_returns(lambda obs, memory: (answer, None), k, episodes).mean()
        assert abs(mean - 1 / k) < 4 * np.sqrt((1 / k) * (1 - 1 / k) / episodes)


def test_recall_options_are_checked():
    with pytest.raises(ValueError, match="k=1 is not allowed"):
        gym.make("fwp_rl/Recall-v0", k=1)
    with pytest.raises(ValueError, match="delay=-1 is not allowed"):
        gym.make("fwp_rl/Recall-v0", delay=-1)
