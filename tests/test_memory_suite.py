"""The memory-task suite (fwp_rl.envs.memory_suite, fwp_rl.envs.memory): Gymnasium's checks at every difficulty, the
numpy vector envs stepping exactly as the single envs, hand-written policies with memory reaching the largest return,
memoryless ones getting what the docstrings state, and the option errors. Deterministic (seeded), seconds on 2
cores."""

from __future__ import annotations

import math
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from fwp_rl.config import ConfigError
from fwp_rl.envs import memory_suite  # importing fwp_rl.envs registers the ids
from fwp_rl.envs.memory import DIFFICULTIES, CartPoleNoVelEnv
from fwp_rl.envs.memory_suite import CountCards, PendulumNoVelEnv, Recall, RepeatPrevious, RepeatSequence
from fwp_rl.envs.vector import VectorEnvConfig, make_vector_env

SYMBOL_IDS = {"fwp_rl/RepeatPrevious-v0": RepeatPrevious, "fwp_rl/CountCards-v0": CountCards,
              "fwp_rl/RepeatSequence-v0": RepeatSequence, "fwp_rl/Recall-v0": Recall}
CONTROL_IDS = ("fwp_rl/CartPoleNoVel-v0", "fwp_rl/PendulumNoVel-v0")
IDS = (*SYMBOL_IDS, *CONTROL_IDS)
EVERY = [(env_id, difficulty) for env_id in IDS for difficulty in DIFFICULTIES]


def sync(env_id: str, n: int, **options) -> gym.vector.VectorEnv:
    """n single envs ``gym.make(env_id, **options)`` in Gymnasium's SyncVectorEnv, autoresetting on the same step."""
    return gym.make_vec(env_id, n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                        **options)


def first_returns(envs: gym.vector.VectorEnv, policy, seed: int, steps: int) -> np.ndarray:
    """The return of every copy's first episode under policy(obs [n, D], envs) -> actions, stepping until all have
    ended (or ``steps``)."""
    obs, _ = envs.reset(seed=seed)
    returns, running = np.zeros(envs.num_envs), np.ones(envs.num_envs, dtype=bool)
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = envs.step(policy(obs, envs))
        returns += np.where(running, reward, 0.0)
        running &= ~(terminated | truncated)
        if not running.any():
            break
    return returns


# ---------------------------------------------------------------------------------------------- Gymnasium's checks
@pytest.mark.parametrize("env_id, difficulty", EVERY)
def test_check_env(env_id, difficulty):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(gym.make(env_id, difficulty=difficulty, render_mode="rgb_array").unwrapped)
    messages = [str(w.message) for w in caught]
    if env_id == "fwp_rl/PendulumNoVel-v0":  # Pendulum-v1's torque in [-2, 2]; the policy clips to the bounds
        messages = [m for m in messages if "symmetric and normalized space" not in m]
    assert messages == []


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_and_ppo_use_the_numpy_vector_env(env_id):
    vector_env = {"fwp_rl/Recall-v0": memory_suite.RecallVectorEnv}.get(env_id)
    name = env_id.split("/")[1][:-3]
    vector_env = vector_env or getattr(memory_suite, f"{name}VectorEnv")
    assert isinstance(gym.make_vec(env_id, 3), vector_env)
    with make_vector_env(VectorEnvConfig(env_id, 3)) as envs:
        assert isinstance(envs._envs, vector_env)
    with make_vector_env(VectorEnvConfig(env_id, 3, {"vectorization_mode": "sync"})) as envs:
        assert isinstance(envs._envs, gym.vector.SyncVectorEnv)


def test_ids_whose_vector_env_autoresets_next_step_keep_sync_for_ppo():
    for env_id in ("CartPole-v1", "fwp_rl/DoublePoleNoVel-v0"):
        with make_vector_env(VectorEnvConfig(env_id, 2)) as envs:
            assert isinstance(envs._envs, gym.vector.SyncVectorEnv)


# ---------------------------------------------------------------------------------------------- vector = single
@pytest.mark.parametrize("env_id, difficulty", EVERY)
def test_vector_env_steps_as_the_single_envs(env_id, difficulty):
    """Same seeds, same actions: the same observations, rewards, terminations and truncations, through autoresets
    and time limits (7 steps for the symbol tasks, shorter than some of their episodes; CartPoleNoVel 500,
    PendulumNoVel 200), and a reset without a seed that goes on with the copies' generators."""
    n, steps = 4, 300
    options = {"difficulty": difficulty} | ({"max_episode_steps": 7} if env_id in SYMBOL_IDS else {})
    fast, slow = gym.make_vec(env_id, n, **options), sync(env_id, n, **options)
    slow.action_space.seed(5)
    ends = 0
    for seed in (11, None):
        first_fast, _ = fast.reset(seed=seed)
        first_slow, _ = slow.reset(seed=seed)
        np.testing.assert_array_equal(first_fast, first_slow)
        for t in range(steps):
            actions = slow.action_space.sample()
            got, expected = fast.step(actions), slow.step(actions)
            for a, b in zip(got[:4], expected[:4]):
                np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
            assert got[0].dtype == np.float32 and got[2].dtype == got[3].dtype == np.bool_ and got[4] == {}
            ends += (got[2] | got[3]).sum()
    assert ends >= 2 * n  # autoresets happened


def test_bad_actions_are_refused():
    with pytest.raises(ValueError, match=r"action=4 is not allowed: it must be an integer in \[0, 3\]"):
        env = gym.make("fwp_rl/RepeatPrevious-v0").unwrapped
        env.reset(seed=0)
        env.step(4)
    with pytest.raises(ValueError, match=r"must be 2 integers in \[0, 3\]"):
        gym.make_vec("fwp_rl/RepeatPrevious-v0", 2).step(np.array([0, 4]))
    with pytest.raises(ValueError, match=r"must be numbers of shape \(2, 1\) or \(2,\)"):
        gym.make_vec("fwp_rl/PendulumNoVel-v0", 2).step(np.zeros((2, 2)))


def test_vector_env_frames_are_the_single_env_s():
    for env_id in ("fwp_rl/CountCards-v0", "fwp_rl/Recall-v0"):
        single, vector = gym.make(env_id, render_mode="rgb_array"), gym.make_vec(env_id, 2, render_mode="rgb_array")
        single.reset(seed=3)
        vector.reset(seed=3)
        for _ in range(3):
            np.testing.assert_array_equal(vector.render()[0], single.render())
            single.step(0)
            vector.step(np.zeros(2, dtype=np.int64))
    for env_id in CONTROL_IDS:
        single, vector = gym.make(env_id, render_mode="rgb_array"), gym.make_vec(env_id, 2, render_mode="rgb_array")
        single.reset(seed=3)
        vector.reset(seed=3)
        frames = vector.render()
        assert len(frames) == 2
        np.testing.assert_array_equal(frames[0], single.render())


# ---------------------------------------------------------------------------------------------- symbol tasks
class Remembers:
    """A policy with a perfect memory of each copy's observations since its episode began, answering as the task
    asks; it reads nothing but the observations (and their count)."""

    def __init__(self, task, n: int):
        self.task, self.seen = task, [[] for _ in range(n)]

    def __call__(self, obs: np.ndarray, envs) -> np.ndarray:
        actions = np.zeros(len(obs), dtype=np.int64)
        for i, o in enumerate(obs):
            seen = self.seen[i]
            seen.append(o)
            t, task = len(seen) - 1, self.task
            if isinstance(task, RepeatPrevious) and t >= task.k:
                actions[i] = np.argmax(seen[t - task.k])
            elif isinstance(task, CountCards) and t == task.length:
                actions[i] = sum(s[:task.num_kinds] for s in seen)[np.argmax(o[task.num_kinds:])]
            elif isinstance(task, RepeatSequence) and t >= task.length:
                actions[i] = np.argmax(seen[t - task.length][:task.num_symbols])
            elif isinstance(task, Recall):
                actions[i] = np.argmax(seen[0][:task.k])
            if t == task.steps - 1:
                seen.clear()  # the next observation is the next episode's first
        return actions


def memoryless(task):
    """A policy of the observation alone: the best one of ``CountCards`` (the likeliest count), else the symbol seen
    now (RepeatPrevious; all zeros, 0, on the answer steps of RepeatSequence and Recall)."""
    if isinstance(task, CountCards):
        p = 1 / task.num_kinds
        likeliest = int(np.argmax([math.comb(task.length, c) * p ** c * (1 - p) ** (task.length - c)
                                   for c in range(task.length + 1)]))
        return lambda obs, envs: np.full(len(obs), likeliest)
    return lambda obs, envs: np.argmax(obs[:, :task.num_actions], 1)


@pytest.mark.parametrize("env_id, difficulty", [(i, d) for i in SYMBOL_IDS for d in DIFFICULTIES])
def test_symbol_task_returns_one_with_memory_and_the_stated_figure_without(env_id, difficulty):
    task = SYMBOL_IDS[env_id](difficulty)
    n = 32
    envs = gym.make_vec(env_id, n, difficulty=difficulty)
    with_memory = first_returns(envs, Remembers(task, n), seed=0, steps=task.steps)
    np.testing.assert_allclose(with_memory, 1.0, rtol=1e-12)
    # Without memory: the mean of many episodes within 4 standard errors of the stated expectation.
    n = 2000
    returns = first_returns(gym.make_vec(env_id, n, difficulty=difficulty), memoryless(task), seed=1, steps=task.steps)
    assert abs(returns.mean() - task.memoryless_return) < 4 * returns.std() / np.sqrt(n)


def test_memoryless_returns_are_those_the_docstrings_state():
    assert [RepeatPrevious(d).memoryless_return for d in DIFFICULTIES] == [0.25, 0.125, 0.0625]
    assert [RepeatSequence(d).memoryless_return for d in DIFFICULTIES] == [0.25, 0.125, 0.0625]
    assert [Recall(d).memoryless_return for d in DIFFICULTIES] == [0.25, 0.25, 0.125]
    np.testing.assert_allclose([CountCards(d).memoryless_return for d in DIFFICULTIES], [0.3125, 0.2581, 0.2088],
                               atol=5e-5)


@pytest.mark.parametrize("task, sizes", [
    (RepeatPrevious, {"easy": (4, 2, 16), "medium": (8, 4, 32), "hard": (16, 8, 64)}),
    (CountCards, {"easy": (2, 6), "medium": (4, 12), "hard": (8, 32)}),
    (RepeatSequence, {"easy": (4, 4), "medium": (8, 8), "hard": (16, 16)}),
    (Recall, {"easy": (4, 4), "medium": (4, 8), "hard": (8, 16)}),
])
def test_difficulty_sets_the_sizes_and_explicit_sizes_override_it(task, sizes):
    names = list(task.PRESETS["easy"])
    for difficulty, values in sizes.items():
        assert tuple(getattr(task(difficulty), name) for name in names) == values
    assert getattr(task("hard", **{names[-1]: 3}), names[-1]) == 3


def test_episodes_look_as_the_docstrings_say():
    env = gym.make("fwp_rl/RepeatSequence-v0", num_symbols=3, length=2)
    obs, _ = env.reset(seed=0)
    shown = [int(np.argmax(obs))]
    obs, *_ = env.step(0)
    shown.append(int(np.argmax(obs)))
    obs, reward, terminated, *_ = env.step(0)  # the first answer step: the flag alone
    np.testing.assert_array_equal(obs, [0, 0, 0, 1])
    assert reward == 0 and not terminated
    obs, reward, terminated, *_ = env.step(shown[0])
    assert reward == 0.5 and not terminated
    _, reward, terminated, *_ = env.step((shown[1] + 1) % 3)
    assert reward == 0 and terminated
    env = gym.make("fwp_rl/CountCards-v0", num_kinds=3, length=4)
    obs, _ = env.reset(seed=2)
    cards = []
    for _ in range(4):
        assert obs[3:].sum() == 0 and obs[:3].sum() == 1
        cards.append(int(np.argmax(obs)))
        obs, reward, terminated, *_ = env.step(0)
        assert reward == 0 and not terminated
    kind = int(np.argmax(obs[3:]))
    assert obs[:3].sum() == 0 and env.action_space.n == 5
    _, reward, terminated, *_ = env.step(cards.count(kind))
    assert reward == 1 and terminated


# ---------------------------------------------------------------------------------------------- control tasks
CART = CartPoleNoVelEnv()


def cartpole_kalman(envs) -> callable:
    """A policy with memory of CartPoleNoVel that sees only the observations (and remembers its own actions): a
    Kalman filter of CartPole linearized about upright estimates the state the (noisy, late) observation shows, rolls
    it forward through the forces applied since, and pushes as a linear controller of that state says."""
    e, n, delay = CART, envs.num_envs, envs.env.delay
    noise = max(envs.env.noise, 1e-4)
    mass = e.masscart + e.masspole
    den = e.length * (4 / 3 - e.masspole / mass)
    a = np.eye(4) + e.tau * np.array([[0, 1, 0, 0], [0, 0, -e.polemass_length * e.gravity / (mass * den), 0],
                                      [0, 0, 0, 1], [0, 0, e.gravity / den, 0]])
    b = e.tau * np.array([0, 1 / mass + e.polemass_length / (mass * mass * den), 0, -1 / (mass * den)])
    h = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0]])
    memory = {}

    def policy(obs, envs):
        if not memory:  # the first observation
            memory.update(s=obs @ h, p=np.tile(np.diag([noise, 0.05, noise, 0.05]) ** 2, (n, 1, 1)),
                          forces=np.zeros((n, delay)), force=np.zeros(n))
        else:  # the last force moved the state the new observation shows delay steps later
            forces = np.concatenate([memory["forces"], memory["force"][:, None]], 1)
            s, p = memory["s"] @ a.T + np.outer(forces[:, 0], b), a @ memory["p"] @ a.T + 1e-4 * np.eye(4)
            gain = p @ h.T @ np.linalg.inv(h @ p @ h.T + noise ** 2 * np.eye(2))
            memory.update(s=s + np.einsum("nij,nj->ni", gain, obs - s @ h.T), p=(np.eye(4) - gain @ h) @ p,
                          forces=forces[:, 1:])
        now = memory["s"]
        for j in range(delay):
            now = now @ a.T + np.outer(memory["forces"][:, j], b)
        actions = (now @ np.array([0.01, 0.1, 1.0, 0.5]) > 0).astype(np.int64)
        memory["force"] = np.where(actions == 1, e.force_mag, -e.force_mag)
        return actions

    return policy


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_cartpole_novel_with_memory_balances_every_episode_and_without_as_stated(difficulty):
    """The figures the docstring states, of 500 episodes (seeds 1000-1499): the Kalman filter balances all, the best
    linear memoryless policy we found balances 45 steps on average (0.089) on easy."""
    envs = gym.make_vec("fwp_rl/CartPoleNoVel-v0", 500, difficulty=difficulty, normalize=True)
    np.testing.assert_allclose(first_returns(envs, cartpole_kalman(envs), 1000, 500), 1.0)
    returns = first_returns(envs, lambda obs, _: (obs[:, 1] - 0.5 * obs[:, 0] > 0).astype(np.int64), 1000, 500)
    assert round(returns.mean(), 3) == {"easy": 0.089, "medium": 0.089, "hard": 0.041}[difficulty]


def swing_up(theta: np.ndarray, theta_dot: np.ndarray) -> np.ndarray:
    """A pendulum controller of the whole state: near upright (cos theta > 0.9) a PD controller, elsewhere torque
    that pumps energy towards the upright's -> torques float32 [n, 1]."""
    theta = (theta + np.pi) % (2 * np.pi) - np.pi
    energy = 0.5 * theta_dot ** 2 + 15 * np.cos(theta)  # theta'' = 15 sin(theta) + 3 torque
    pump = np.clip(2 * (15 - energy) * np.sign(theta_dot + 1e-9), -2, 2)
    hold = np.clip(-(10 * theta + 2 * theta_dot), -2, 2)
    return np.where(np.cos(theta) > 0.9, hold, pump)[:, None].astype(np.float32)


def pendulum_filter(envs) -> callable:
    """A policy with memory of PendulumNoVel that sees only the observations (and remembers its own torques): it
    predicts the angle and velocity through the dynamics, corrects them by the angle it sees (noisy, late), rolls them
    forward through the torques applied since, and acts as ``swing_up``."""
    delay, memory = envs.env.delay, {}

    def model(theta, theta_dot, torque):
        theta_dot = np.clip(theta_dot + (15 * np.sin(theta) + 3 * torque) * 0.05, -8, 8)
        return theta + 0.05 * theta_dot, theta_dot

    def policy(obs, envs):
        seen = np.arctan2(obs[:, 1], obs[:, 0])
        if not memory:
            memory.update(theta=seen, theta_dot=np.zeros(len(obs)), torques=[np.zeros(len(obs))] * delay)
        else:
            theta, theta_dot = model(memory["theta"], memory["theta_dot"], memory["torques"][0])
            error = (seen - theta + np.pi) % (2 * np.pi) - np.pi
            memory.update(theta=theta + 0.4 * error, theta_dot=theta_dot + 0.15 * error / 0.05,
                          torques=memory["torques"][1:])
        theta, theta_dot = memory["theta"], memory["theta_dot"]
        for torque in memory["torques"]:
            theta, theta_dot = model(theta, theta_dot, torque)
        torques = swing_up(theta, theta_dot)
        memory["torques"] = memory["torques"] + [torques[:, 0].astype(np.float64)]
        return torques

    return policy


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_pendulum_novel_returns_with_and_without_memory_are_as_stated(difficulty):
    """The figures the docstring states, of 500 episodes (seeds 1000-1499): the controller reading the state, the
    one that sees only the observations, and the best memoryless policies we found."""
    def run(make_policy):
        envs = gym.make_vec("fwp_rl/PendulumNoVel-v0", 500, difficulty=difficulty)
        return first_returns(envs, make_policy(envs), 1000, 200).mean()

    knows_the_state = run(lambda _: lambda obs, envs: swing_up(*envs._state.T))
    assert round(knows_the_state, 3) == -0.048
    assert abs(run(pendulum_filter) - knows_the_state) < 0.003
    push = run(lambda _: lambda obs, envs: np.clip(-10 * obs[:, 1:], -2, 2))  # push towards upright
    idle = run(lambda _: lambda obs, envs: np.zeros((len(obs), 1), dtype=np.float32))
    assert (round(push, 2), round(idle, 2)) == {"easy": (-0.32, -0.38), "medium": (-0.33, -0.38),
                                                "hard": (-0.44, -0.38)}[difficulty]


def test_control_tasks_see_positions_only_late_and_noisy_as_asked():
    full, novel = gym.make("Pendulum-v1"), gym.make("fwp_rl/PendulumNoVel-v0")
    a, _ = full.reset(seed=4)
    b, _ = novel.reset(seed=4)
    for torque in [0.5, -2.0, 1.0, 2.0]:
        np.testing.assert_array_equal(b, a[:2])
        a, reward_full, *_ = full.step(np.array([torque], dtype=np.float32))
        b, reward, *_ = novel.step(np.array([torque], dtype=np.float32))
        assert reward == pytest.approx(reward_full / (memory_suite.PENDULUM_MAX_COST * 200), rel=1e-12)
    for env_id in CONTROL_IDS:
        action = 1 if "Cart" in env_id else np.array([1.0], dtype=np.float32)
        clean, late, noisy = (gym.make(env_id, **options) for options in ({}, {"delay": 2}, {"noise": 0.01}))
        seen = [env.reset(seed=7)[0] for env in (clean, late, noisy)]
        truth = [seen[0]]
        for _ in range(5):
            seen = [env.step(action)[0] for env in (clean, late, noisy)]
            truth.append(seen[0])
            np.testing.assert_array_equal(seen[1], truth[max(len(truth) - 3, 0)])
            assert 0 < np.abs(seen[2] - seen[0]).max() < 0.05


# ---------------------------------------------------------------------------------------------- option errors
@pytest.mark.parametrize("env_id, options, message", [
    ("fwp_rl/RepeatPrevious-v0", {"difficulty": "extreme"},
     "difficulty='extreme' is not allowed; choose one of: 'easy', 'medium', 'hard'"),
    ("fwp_rl/RepeatPrevious-v0", {"k": 0}, "k=0 is not allowed: it must be an integer >= 1"),
    ("fwp_rl/RepeatPrevious-v0", {"length": 2.5}, "length=2.5 is not allowed: it must be an integer >= 1"),
    ("fwp_rl/RepeatPrevious-v0", {"num_symbols": 1}, "num_symbols=1 is not allowed: it must be an integer >= 2"),
    ("fwp_rl/CountCards-v0", {"num_kinds": 0}, "num_kinds=0 is not allowed: it must be an integer >= 2"),
    ("fwp_rl/CountCards-v0", {"length": 0}, "length=0 is not allowed: it must be an integer >= 1"),
    ("fwp_rl/RepeatSequence-v0", {"length": -1}, "length=-1 is not allowed: it must be an integer >= 1"),
    ("fwp_rl/Recall-v0", {"difficulty": "Hard"}, "difficulty='Hard' is not allowed; choose one of"),
    ("fwp_rl/CartPoleNoVel-v0", {"noise": -0.1}, "noise=-0.1 is not allowed: it must be a finite number >= 0"),
    ("fwp_rl/CartPoleNoVel-v0", {"delay": -1}, "delay=-1 is not allowed: it must be an integer >= 0"),
    ("fwp_rl/CartPoleNoVel-v0", {"normalize": "yes"}, "normalize='yes' is not allowed; choose one of: False, True"),
    ("fwp_rl/PendulumNoVel-v0", {"difficulty": None}, "difficulty=None is not allowed; choose one of"),
])
def test_bad_options_are_one_line_errors_naming_the_option_and_what_is_allowed(env_id, options, message):
    for make in (lambda: gym.make(env_id, **options), lambda: gym.make_vec(env_id, 2, **options)):
        with pytest.raises(ValueError) as raised:
            make()
        assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match=f"env.options=.* do not fit '{env_id}': {re.escape(message)}"):
        make_vector_env(VectorEnvConfig(env_id, 2, options))


def test_pendulum_novel_options_are_checked_as_cartpole_s():
    with pytest.raises(ValueError, match="noise=inf is not allowed"):
        PendulumNoVelEnv(noise=float("inf"))
