"""Atari through ale-py's C++ vector env (``ale_py.vector_env.AtariVectorEnv``): threads, frame skip,
max-pool, resize, grayscale, frame stack, sticky actions and no-op starts all run in C++.

``AtariConfig`` holds every preprocessing choice; its defaults are the v5 protocol (Machado et al. 2018)
with the usual DQN preprocessing:

- sticky actions: the previous action repeats with probability 0.25 at every frame;
- whole games (all lives) of at most 108,000 frames (30 minutes), no-op starts, the minimal action set;
- frame skip 4 with the max over the last two frames, 84 x 84 grayscale, 4 stacked frames;
- FIRE at the start of a game where the game needs it (ale-py's ``use_fire_reset``);
- the learner's reward clipped to its sign, {-1, 0, +1}.

``PRESETS["cleanrl_lstm"]`` is the protocol of CleanRL's ppo_atari_lstm (BreakoutNoFrameskip-v4 and its
wrappers): no sticky actions, a lost life ends the training episode, one frame (no stack), the rest as
above. Two differences remain: frames are resized by ale-py, not by OpenCV, and after a lost life the
agent itself must press FIRE where CleanRL's FireResetEnv presses it.

``AtariEnvs`` runs a config behind the ``fwp_rl.envs.vector.Envs`` interface. The learner sees clipped
rewards; the episodes it reports for logging are whole games with their raw score, also with
``episodic_life``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode

from fwp_rl.config import ConfigError, from_dict
from fwp_rl.envs.vector import EpisodeTally, Envs, Step

PRESETS: dict[str, dict[str, Any]] = {
    "v5": {},
    "cleanrl_lstm": dict(frameskip=4, repeat_action_probability=0.0, max_num_frames_per_episode=108_000,
                         noop_max=30, stack_num=1, img_height=84, img_width=84, grayscale=True, maxpool=True,
                         episodic_life=True, reward_clipping=True, use_fire_reset=True, full_action_space=False),
}


@dataclass
class AtariConfig:
    """Every preprocessing choice of Atari games run by ``AtariEnvs``; the defaults are the v5 protocol.

    game: an ale-py ROM id, snake_case ("pong", "ms_pacman"; ``ale_py.roms.get_all_rom_ids()``).
    num_envs: games run together.
    frameskip: emulator frames per agent step, the action repeated.
    repeat_action_probability: sticky actions, the chance per frame that the previous action repeats.
    max_num_frames_per_episode: a game is truncated after this many frames (no-op starts included).
    noop_max: a new game starts with a random number of no-ops, up to this many (0: none).
    stack_num: frames stacked into one observation, the oldest first.
    img_height, img_width: frames are resized to this.
    grayscale: one channel per frame, else RGB.
    maxpool: each frame is the pixel-wise max of the last two frames of the skip (flicker removal).
    episodic_life: a lost life ends the training episode (done) while the game goes on (DeepMind's
        EpisodicLifeEnv). Not ale-py's ``episodic_life``, which restarts the whole game at a lost life.
    reward_clipping: the learner's reward is the sign of the raw reward.
    use_fire_reset: press FIRE at the start of a game where the game needs it to start.
    batch_size: None (or num_envs) steps all games together; smaller returns each ``recv`` the first
        batch_size games that finished their step (asynchronous mode, for throughput; ale-py does not
        serve the games equally often: with 4 games in batches of 2 the last one got a tenth of the steps).
    num_threads: C++ threads stepping the games; 0 lets ale-py choose.
    full_action_space: all 18 actions instead of the game's minimal set.
    """

    game: str = "pong"
    num_envs: int = 8
    frameskip: int = 4
    repeat_action_probability: float = 0.25
    max_num_frames_per_episode: int = 108_000
    noop_max: int = 30
    stack_num: int = 4
    img_height: int = 84
    img_width: int = 84
    grayscale: bool = True
    maxpool: bool = True
    episodic_life: bool = False
    reward_clipping: bool = True
    use_fire_reset: bool = True
    batch_size: int | None = None
    num_threads: int = 0
    full_action_space: bool = False

    def validate(self, prefix: str = "") -> None:
        """Raise ``ConfigError`` naming the key, the bad value and what is allowed."""
        key = f"{prefix}." if prefix else ""
        check_game(self.game, f"{key}game")
        for name, minimum in (("num_envs", 1), ("frameskip", 1), ("max_num_frames_per_episode", 1),
                              ("noop_max", 0), ("stack_num", 1), ("img_height", 1), ("img_width", 1),
                              ("num_threads", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{key}{name}={value!r} is not allowed: it must be an integer >= {minimum}")
        for name in ("grayscale", "maxpool", "episodic_life", "reward_clipping", "use_fire_reset",
                     "full_action_space"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{key}{name}={getattr(self, name)!r} is not allowed: it must be true or false")
        p = self.repeat_action_probability
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"{key}repeat_action_probability={p!r} is not allowed: it must be a number in [0, 1]")
        b = self.batch_size
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= self.num_envs):
            raise ConfigError(f"{key}batch_size={b!r} is not allowed: it must be null (synchronous) or an integer "
                              f"in [1, num_envs={self.num_envs}]")

    @classmethod
    def preset(cls, name: str, **fields: Any) -> AtariConfig:
        """The config of preset ``name`` (a key of ``PRESETS``) with ``fields`` replaced, validated."""
        return cls.from_options(fields.pop("game", cls.game), fields.pop("num_envs", cls.num_envs),
                                {"preset": name, **fields})

    @classmethod
    def from_options(cls, game: str, num_envs: int, options: dict[str, Any], prefix: str = "") -> AtariConfig:
        """The validated config of ``VectorEnvConfig`` options: "preset" (default "v5") and field values,
        which override the preset's. game and num_envs come from the env id and num_envs, not options."""
        key = f"{prefix}." if prefix else ""
        options = dict(options)
        preset = options.pop("preset", "v5")
        if preset not in PRESETS:
            raise ConfigError(f"{key}options.preset={preset!r} is not allowed; choose one of: "
                              f"{', '.join(map(repr, PRESETS))}")
        for name, source in (("game", "the id, atari:<game>"), ("num_envs", f"{key}num_envs")):
            if name in options:
                raise ConfigError(f"{key}options.{name} is not allowed: {name} comes from {source}")
        allowed = ["preset"] + [f.name for f in dataclasses.fields(cls) if f.name not in ("game", "num_envs")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(f"{key}options: unknown key {', '.join(map(repr, unknown))}; allowed keys: "
                              f"{', '.join(allowed)}")
        check_game(game, f"{key}id")
        return from_dict(cls, {**PRESETS[preset], **options, "game": game, "num_envs": num_envs}, f"{key}options")


def check_game(game: str, key: str) -> None:
    """Raise ``ConfigError`` unless game is an ale-py ROM id; suggest the closest ids."""
    games = roms.get_all_rom_ids()
    if game in games:
        return
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(game)).lower()
    close = difflib.get_close_matches(snake, games, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise ConfigError(f"{key}: {game!r} is not an Atari game of ale-py; {hint}the {len(games)} games are "
                      "ale_py.roms.get_all_rom_ids(), snake_case")


class AtariEnvs(Envs):
    """``config.num_envs`` Atari games in ale-py's C++ vector env, behind the ``Envs`` interface.

    Observations: uint8 [B, C, H, W], C = stack_num (grayscale) or 3 * stack_num (RGB, each frame's
    three channels adjacent). Actions: int [B] in Discrete(n), n the game's minimal action set (or 18).
    Reward: float32 [B], the sign of the raw reward with ``reward_clipping``. done: the game ended
    (over, or truncated at max_num_frames_per_episode), or with ``episodic_life`` a life was lost.
    Episodes are whole games: raw score, and length in agent steps.
    """

    def __init__(self, config: AtariConfig):
        config.validate()
        self.config = config
        self.num_envs = config.num_envs
        self.batch_size = config.batch_size or config.num_envs
        # ale-py runs whole games with raw rewards: clipping here keeps the raw score for the episode
        # statistics, and lost lives are read from info["lives"] (ale-py's own episodic_life would restart
        # the game at a lost life).
        self._env = AtariVectorEnv(
            config.game, config.num_envs, batch_size=self.batch_size, num_threads=config.num_threads,
            max_num_frames_per_episode=config.max_num_frames_per_episode,
            repeat_action_probability=config.repeat_action_probability,
            full_action_space=config.full_action_space, autoreset_mode=AutoresetMode.SAME_STEP,
            img_height=config.img_height, img_width=config.img_width, grayscale=config.grayscale,
            stack_num=config.stack_num, frameskip=config.frameskip, maxpool=config.maxpool,
            noop_max=config.noop_max, episodic_life=False, life_loss_info=False, reward_clipping=False,
            use_fire_reset=config.use_fire_reset,
        )
        channels = config.stack_num * (1 if config.grayscale else 3)
        self.single_observation_space = gym.spaces.Box(0, 255, (channels, config.img_height, config.img_width),
                                                       np.uint8)
        self.single_action_space = self._env.single_action_space
        self.render_fps = 60 / config.frameskip  # the Atari 2600 draws 60 frames a second
        self.env_ids = np.arange(self.batch_size)
        self._tally = EpisodeTally(config.num_envs)
        self._lives = np.zeros(config.num_envs, dtype=np.int64)
        # _sent[i]: env i was sent an action since its last result; a result without one is a reset.
        self._sent = np.zeros(config.num_envs, dtype=bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self._env.reset(seed=None if seed is None else int(seed))
        self.env_ids = info["env_id"]
        self._tally.restart()
        self._sent[:] = False
        self._lives[self.env_ids] = info["lives"]
        return self._channels_first(obs)

    def send(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if actions.shape != (self.batch_size,) or actions.dtype.kind not in "iu":
            raise ValueError(f"actions must be integers of shape ({self.batch_size},), got {actions.dtype} "
                             f"{actions.shape}")
        self._env.send(actions.astype(np.int64, copy=False))
        self._sent[self.env_ids] = True

    def recv(self) -> Step:
        obs, raw_reward, terminated, truncated, info = self._env.recv()
        ids = info["env_id"]
        stepped = self._sent[ids]
        self._sent[ids] = False
        game_over = terminated | truncated
        lives = info["lives"]
        done = game_over | (self.config.episodic_life & stepped & (lives < self._lives[ids]))
        self._lives[ids] = lives
        episodes = self._tally.add(ids, raw_reward, stepped, game_over)
        reward = np.sign(raw_reward) if self.config.reward_clipping else raw_reward
        self.env_ids = ids
        return Step(self._channels_first(obs), reward.astype(np.float32), done, episodes)

    def close(self) -> None:
        self._env.close()

    def _channels_first(self, obs: np.ndarray) -> np.ndarray:
        """[B, S, H, W] (grayscale) stays; RGB [B, S, H, W, 3] -> [B, 3 S, H, W]."""
        if self.config.grayscale:
            return obs
        b, s, h, w, c = obs.shape
        return np.ascontiguousarray(obs.transpose(0, 1, 4, 2, 3)).reshape(b, s * c, h, w)
