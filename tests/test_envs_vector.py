"""The vector-env interface PPO steps (fwp_rl.envs.vector, fwp_rl.envs.atari): same-step autoreset and
episode statistics on both backends against envs whose episodes are known, Atari observations, reward
clipping against the raw score, whole-game scores under episodic_life, the asynchronous Atari mode
against the synchronous one, and the config errors. Deterministic (seeded), a few seconds on 2 cores."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from ale_py.vector_env import AtariVectorEnv

from fwp_rl.config import ConfigError, from_dict
from fwp_rl.envs.atari import PRESETS, AtariConfig, AtariEnvs  # importing fwp_rl.envs registers its ids
from fwp_rl.envs.vector import Episode, VectorEnvConfig, make_vector_env

MAX_STEPS = 3  # the Countdown id's time limit


class Countdown(gym.Env):
    """Episodes of a known length: 2 + seed % 3 steps, set by the seeded reset (truncated at MAX_STEPS).

    Observation [steps into the episode, episodes started so far]; the reward of the t-th step is t.
    """

    observation_space = gym.spaces.Box(0.0, 1000.0, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.length, self.t, self.episodes = 2, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.length = 2 + seed % 3
        self.t = 0
        self.episodes += 1
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.t == self.length, False, {}

    def _obs(self):
        return np.array([self.t, self.episodes], dtype=np.float32)


class TextObservation(Countdown):
    observation_space = gym.spaces.Text(5)


gym.register("tests/Countdown-v0", entry_point=Countdown, max_episode_steps=MAX_STEPS)
gym.register("tests/TextObservation-v0", entry_point=TextObservation)


def atari(game: str, num_envs: int = 2, **options) -> AtariEnvs:
    return make_vector_env(VectorEnvConfig(f"atari:{game}", num_envs, options))


def play(envs, actions: np.ndarray):
    """Step through actions [T, N]; -> obs [T, N, ...], reward [T, N], done [T, N], episodes per step."""
    steps = [envs.step(a) for a in actions]
    return (np.stack([s.obs for s in steps]), np.stack([s.reward for s in steps]),
            np.stack([s.done for s in steps]), [s.episodes for s in steps])


def episodes_of(i: int, episodes: list[list[Episode]], ended: np.ndarray) -> list[Episode]:
    """Env i's episodes, from the episodes of each step and ended [T, N], where they ended (batch order)."""
    return [e for step, rows in zip(episodes, ended) for e, j in zip(step, np.flatnonzero(rows)) if j == i]


def spans(ended: np.ndarray) -> list[tuple[int, int]]:
    """(first step, last step) of every episode that ended, from ended [T] bool."""
    ends = np.flatnonzero(ended)
    return list(zip([0, *(ends[:-1] + 1)], ends))


# ---------------------------------------------------------------------------------------------- Gymnasium
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gymnasium_backend_resets_on_the_same_step_and_reports_episodes(mode):
    seed, N, T = 10, 3, 12
    lengths = [min(2 + (seed + i) % 3, MAX_STEPS) for i in range(N)]  # 3, 3 (truncated), 2
    with make_vector_env(VectorEnvConfig("tests/Countdown-v0", N, {"vectorization_mode": mode})) as envs:
        first = envs.reset(seed=seed)
        obs, reward, done, episodes = play(envs, np.zeros((T, N), dtype=np.int64))
    np.testing.assert_array_equal(first, [[0, 1]] * N)
    assert reward.dtype == np.float32 and done.dtype == np.bool_
    for i, length in enumerate(lengths):
        t = np.arange(1, T + 1)
        within = t % length  # steps into the current episode after step t; 0 where it ended
        np.testing.assert_array_equal(done[:, i], within == 0)
        np.testing.assert_array_equal(reward[:, i], np.where(within == 0, length, within))
        # Where done, the observation already is the next episode's first one.
        np.testing.assert_array_equal(obs[:, i], np.stack([within, t // length + 1], 1))
    expected = [[Episode(L * (L + 1) / 2, L) for L in lengths if t % L == 0] for t in range(1, T + 1)]
    assert episodes == expected


def test_gymnasium_image_observations_pass_through():
    with make_vector_env(VectorEnvConfig("ALE/Pong-v5", 1)) as envs:
        obs = envs.reset(seed=0)
        step = envs.step(np.zeros(1, dtype=np.int64))
    assert obs.shape == step.obs.shape == (1, 210, 160, 3) and obs.dtype == np.uint8


def test_action_space_is_seeded_by_the_factory():
    samples = []
    for _ in range(2):
        with make_vector_env(VectorEnvConfig("fwp_rl/Recall-v0", 2), seed=3) as envs:
            samples.append([envs.single_action_space.sample() for _ in range(8)])
    assert samples[0] == samples[1]


# ---------------------------------------------------------------------------------------------- Atari
@pytest.mark.parametrize("options, shape, actions", [
    ({}, (4, 84, 84), 6),
    ({"preset": "cleanrl_lstm"}, (1, 84, 84), 6),
    ({"stack_num": 2, "img_height": 64, "img_width": 48, "full_action_space": True}, (2, 64, 48), 18),
])
def test_atari_observation_and_action_spaces(options, shape, actions):
    with atari("pong", **options) as envs:
        obs = envs.reset(seed=0)
        step = envs.step(np.ones(2, dtype=np.int64))
    assert envs.single_observation_space == gym.spaces.Box(0, 255, shape, np.uint8)
    assert envs.single_action_space == gym.spaces.Discrete(actions)
    assert obs.shape == step.obs.shape == (2, *shape) and obs.dtype == step.obs.dtype == np.uint8
    assert step.reward.dtype == np.float32 and step.done.dtype == np.bool_


def test_atari_rgb_frames_are_channels_first_each_frame_s_channels_adjacent():
    raw = AtariVectorEnv("breakout", 2, stack_num=2, grayscale=False, repeat_action_probability=0.25)
    frames = raw.reset(seed=5)[0]  # [2, 2, 84, 84, 3]
    raw.close()
    with atari("breakout", stack_num=2, grayscale=False) as envs:
        obs = envs.reset(seed=5)
    assert envs.single_observation_space.shape == (6, 84, 84)
    for s in range(2):
        np.testing.assert_array_equal(obs[:, 3 * s:3 * s + 3], frames[:, s].transpose(0, 3, 1, 2))


def test_atari_resets_on_the_same_step():
    """Games truncated after 80 frames: the done step returns a fresh stack (older frames zero)."""
    T = 60
    with atari("breakout", max_num_frames_per_episode=80) as envs:
        envs.reset(seed=1)
        obs, _, done, episodes = play(envs, np.ones((T, 2), dtype=np.int64))
    assert done.sum(0).min() >= 2
    fresh = ~obs[:, :, :3].any(axis=(2, 3, 4))  # [T, N]: the first three stacked frames are empty
    np.testing.assert_array_equal(fresh, done)
    for i in range(2):
        assert [e.length for e in episodes_of(i, episodes, done)] == [t + 1 - s for s, t in spans(done[:, i])]


def test_atari_learner_sees_clipped_rewards_and_episodes_report_the_raw_score():
    """Space Invaders scores 5 to 30 points a hit: the same games (same seed and actions) played with and
    without clipping."""
    actions = np.random.default_rng(0).integers(0, 6, (320, 2))
    games = {}
    for clip in (True, False):
        with atari("space_invaders", max_num_frames_per_episode=1200, reward_clipping=clip) as envs:
            envs.reset(seed=2)
            games[clip] = play(envs, actions)
    obs, clipped, done, episodes = games[True]
    raw_obs, raw, raw_done, raw_episodes = games[False]
    np.testing.assert_array_equal(obs, raw_obs)
    np.testing.assert_array_equal(done, raw_done)
    assert raw.max() > 1
    np.testing.assert_array_equal(clipped, np.sign(raw))
    assert episodes == raw_episodes and sum(map(len, episodes)) >= 2
    for i in range(2):
        scores = [Episode(float(raw[s:t + 1, i].sum()), int(t + 1 - s)) for s, t in spans(done[:, i])]
        assert episodes_of(i, episodes, done) == scores


def test_episodic_life_ends_training_episodes_at_lost_lives_and_reports_whole_games():
    """Breakout (5 lives) under the cleanrl_lstm preset, against the same games without episodic_life."""
    actions = np.random.default_rng(1).integers(0, 4, (500, 2))
    runs = {}
    for episodic in (True, False):
        with atari("breakout", preset="cleanrl_lstm", episodic_life=episodic) as envs:
            envs.reset(seed=3)
            runs[episodic] = play(envs, actions)
    obs, reward, life_done, episodes = runs[True]
    np.testing.assert_array_equal(obs, runs[False][0])
    np.testing.assert_array_equal(reward, runs[False][1])
    game_over = runs[False][2]
    assert episodes == runs[False][3] and sum(map(len, episodes)) >= 2
    assert (life_done >= game_over).all()
    for i in range(2):
        ends = np.flatnonzero(game_over[:, i])
        dones_per_game = np.diff(np.concatenate([[0], np.cumsum(life_done[:, i])[ends]]))
        np.testing.assert_array_equal(dones_per_game, 5)
    lengths = [e.length for step in episodes for e in step]
    assert min(lengths) > 5  # whole games, not single lives


def test_atari_async_mode_returns_every_env_and_matches_the_synchronous_games():
    """4 games, results 2 at a time: each game gets its own fixed action sequence, so its observations,
    rewards, dones and episodes must equal those of the same game stepped synchronously."""
    N, K = 4, 40
    table = np.random.default_rng(2).integers(0, 4, (N, K))
    options = dict(max_num_frames_per_episode=120, repeat_action_probability=0.25)
    with atari("breakout", N, **options) as envs:
        reset_obs = envs.reset(seed=7)
        obs, reward, done, episodes = play(envs, table.T)
    sync = [[(reset_obs[i], 0.0, False)] + [(obs[k, i], reward[k, i], done[k, i]) for k in range(K)]
            for i in range(N)]
    sync_episodes = [episodes_of(i, episodes, done) for i in range(N)]

    seen = [[] for _ in range(N)]
    seen_episodes = [[] for _ in range(N)]
    with atari("breakout", N, batch_size=2, **options) as envs:
        assert envs.batch_size == 2
        first = envs.reset(seed=7)
        for i, o in zip(envs.env_ids, first):
            seen[i].append((o, 0.0, False))
        sent = np.zeros(N, dtype=int)
        while min(map(len, seen)) < K + 1:
            ids = envs.env_ids.copy()
            envs.send(table[ids, np.minimum(sent[ids], K - 1)])
            sent[ids] += 1
            step = envs.recv()
            assert step.obs.shape == (2, 4, 84, 84) and len(set(envs.env_ids)) == 2
            for row, i in enumerate(envs.env_ids):
                seen[i].append((step.obs[row], step.reward[row], step.done[row]))
            for e, i in zip(step.episodes, envs.env_ids[step.done]):
                seen_episodes[i].append(e)
    for i in range(N):
        for (o, r, d), (so, sr, sd) in zip(seen[i][:K + 1], sync[i]):
            np.testing.assert_array_equal(o, so)
            assert (r, d) == (sr, sd)
        assert seen_episodes[i][:len(sync_episodes[i])] == sync_episodes[i] and sync_episodes[i]


def test_atari_refuses_actions_of_the_wrong_shape():
    with atari("pong") as envs:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match=r"actions must be integers of shape \(2,\)"):
            envs.step(np.zeros(3, dtype=np.int64))


def test_presets():
    config = AtariConfig.preset("cleanrl_lstm", game="breakout", stack_num=4)
    assert (config.repeat_action_probability, config.episodic_life, config.stack_num) == (0.0, True, 4)
    assert AtariConfig.preset("v5") == AtariConfig()
    assert VectorEnvConfig("atari:breakout", 8, {"preset": "cleanrl_lstm"}).atari_config() == \
        AtariConfig(game="breakout", **PRESETS["cleanrl_lstm"])


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("env, message", [
    ({"id": "atari:Pong"}, r"env\.id: 'Pong' is not an Atari game of ale-py; did you mean 'pong'"),
    ({"id": "atari:MsPacman"}, r"did you mean 'ms_pacman'.*ale_py\.roms\.get_all_rom_ids\(\)"),
    ({"id": "atari:pong", "options": {"frameskip": 0}}, r"env\.options\.frameskip=0 is not allowed: .*>= 1"),
    ({"id": "atari:pong", "options": {"frameskip": "4"}}, r"env\.options\.frameskip='4' is not allowed: expected int"),
    ({"id": "atari:pong", "options": {"repeat_action_probability": 1.5}},
     r"repeat_action_probability=1\.5 is not allowed: it must be a number in \[0, 1\]"),
    ({"id": "atari:pong", "num_envs": 4, "options": {"batch_size": 5}},
     r"env\.options\.batch_size=5 is not allowed: .*\[1, num_envs=4\]"),
    ({"id": "atari:pong", "options": {"framskip": 4}}, r"unknown key 'framskip'; allowed keys: preset, frameskip"),
    ({"id": "atari:pong", "options": {"game": "breakout"}}, r"env\.options\.game is not allowed: .*atari:<game>"),
    ({"id": "atari:pong", "options": {"preset": "dqn"}},
     r"env\.options\.preset='dqn' is not allowed; .*'cleanrl_lstm'"),
    ({"id": "atari:pong", "num_envs": 0}, r"env\.num_envs=0 is not allowed: it must be an integer >= 1"),
    ({"id": "CartPole-v9"}, r"env\.id='CartPole-v9' is neither 'atari:<game>', a registered Gymnasium id nor "
                            r"'module:EnvId'; did you mean 'CartPole-v1'.*pprint_registry"),
    ({"id": "CartPole-v1", "options": {"vectorization_mode": "vector_entry_point"}},
     r"env\.options\.vectorization_mode='vector_entry_point' is not allowed; choose one of: 'sync', 'async'"),
])
def test_config_errors_name_the_key_the_value_and_what_is_allowed(env, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(VectorEnvConfig, env, "env")


@pytest.mark.parametrize("env, message", [
    (VectorEnvConfig("tests/TextObservation-v0", 2),
     r"'tests/TextObservation-v0': the observation space Text\(.*\) is not supported; a policy takes Box, Discrete"),
    (VectorEnvConfig("fwp_rl/Recall-v0", 2, {"k": 1}), r"do not fit 'fwp_rl/Recall-v0': k=1 is not allowed"),
    (VectorEnvConfig("CartPole-v1", 2, {"speed": 3}), r"env\.options=\{'speed': 3\} do not fit 'CartPole-v1'"),
])
def test_environments_that_cannot_be_built_give_a_config_error(env, message):
    with pytest.raises(ConfigError, match=message):
        make_vector_env(env)
