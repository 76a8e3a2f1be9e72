"""One vector-environment interface for recurrent PPO, over Atari and any Gymnasium environment.

Env ids (``VectorEnvConfig.id``):

- "atari:<game>", e.g. "atari:pong", "atari:ms_pacman": ale-py's C++ vector env with the preprocessing
  of ``fwp_rl.envs.atari.AtariConfig`` (the v5 protocol by default; options ``{"preset": "cleanrl_lstm"}``
  for CleanRL's ppo_atari_lstm). Games are ale-py's snake_case ROM ids: ``ale_py.roms.get_all_rom_ids()``.
- anything else: a registered Gymnasium id (``gymnasium.pprint_registry()`` lists them; importing
  ``fwp_rl.envs`` adds the fwp_rl/... ids and ale-py's ALE/... ids, which run raw frames in Python: use
  "atari:<game>" to train on Atari), or "module:EnvId", an id that importing ``module`` registers (as
  ``gymnasium.make`` takes it), through ``gymnasium.make_vec``: the memory suite's numpy vector env where the id
  registers one (``same_step_vector_env``), else Gymnasium's SyncVectorEnv; options.vectorization_mode "sync" or "async"
  asks for SyncVectorEnv or AsyncVectorEnv of single envs. Observations of any space of
  ``OBSERVATION_SPACES`` reach the policy as one Box (``flat_observations``).

Every backend behaves the same (``Envs``):

- ``reset(seed)`` -> obs [N, *obs_shape]; env i is seeded with seed + i.
- ``step(actions)`` -> ``Step(obs, reward, done, episodes)``: obs [N, *obs_shape]; reward float32 [N],
  what the learner trains on (clipped when the Atari config says so); done bool [N], terminated or
  truncated (or, with Atari ``episodic_life``, a lost life); episodes: an ``Episode(raw_return, length)``
  for every whole episode that ended on this step (an Atari game runs until the real game over, through
  lost lives): raw, unclipped returns and lengths in agent steps, what gets logged.
- Same-step autoreset: where done[i], obs[i] is already the first observation of env i's next episode
  (Gymnasium's ``AutoresetMode.SAME_STEP``, which both ale-py's C++ vector env and Gymnasium's vector envs
  run natively). So a learner sets episode_start[t + 1] = done[t], and every action it sends is acted on.
  The last observation of an episode is not kept: a truncated episode cannot be bootstrapped from it.
- ``send(actions)`` and ``recv()`` split ``step`` in two, so the environments run while the learner
  works. In Atari's asynchronous mode (``batch_size`` < ``num_envs``) each ``recv`` returns the
  ``batch_size`` envs that finished first and ``env_ids`` [B] names them; the next ``send`` is for them.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode

from fwp_rl.config import ConfigError
from fwp_rl.envs.memory_suite import MemoryVectorEnv

ATARI_PREFIX = "atari:"
OBSERVATION_SPACES = "Box, Discrete, MultiDiscrete, MultiBinary, or a Dict or Tuple of them (nested too)"
_FLAT_SPACES = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
VECTORIZATION_MODES = ("sync", "async")
LIST_IDS = 'python -c "import fwp_rl.envs, gymnasium; gymnasium.pprint_registry()"'


class Episode(NamedTuple):
    """A whole episode that ended: its raw (unclipped) undiscounted return and its length in agent steps."""

    raw_return: float
    length: int


class Step(NamedTuple):
    """What ``Envs.step`` and ``Envs.recv`` return for the B envs of a batch (B = N when synchronous).

    obs [B, *obs_shape] (the next episode's first observation where done); reward float32 [B], as the
    learner sees it; done bool [B]; episodes: the whole episodes that ended on this step, in batch order.
    """

    obs: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    episodes: list[Episode]


class Envs:
    """N environments stepped together; see the module docstring for the semantics.

    Attributes: ``num_envs`` N; ``batch_size`` B, the envs each ``recv`` returns (N unless Atari runs
    asynchronously); ``env_ids`` int [B], the envs of the last ``reset`` or ``recv``, those the next
    ``send`` acts for (arange(N) when synchronous); ``single_observation_space`` (a Box: ``flat_observations``);
    ``single_action_space``; ``render_fps``, the agent steps per second of real time in the env's pictures
    (its metadata's "render_fps"; None when it names none).
    """

    render_fps: float | None = None
    num_envs: int
    batch_size: int
    env_ids: np.ndarray
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Space

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start every env afresh (env i seeded with seed + i) -> obs [B, *obs_shape] of ``env_ids``."""
        raise NotImplementedError

    def send(self, actions: np.ndarray) -> None:
        """Start stepping the envs ``env_ids`` with actions [B] (Discrete) or [B, *action_shape] (Box)."""
        raise NotImplementedError

    def recv(self) -> Step:
        """Wait for the next batch of results; sets ``env_ids`` to the envs they belong to."""
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> Step:
        """``send(actions)`` then ``recv()``."""
        self.send(actions)
        return self.recv()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Envs:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class EpisodeTally:
    """The raw return and the length (agent steps) of the episode every env is in."""

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def restart(self) -> None:
        self.returns[:] = 0
        self.lengths[:] = 0

    def add(self, env_ids: np.ndarray, raw_reward: np.ndarray, stepped, ended: np.ndarray) -> list[Episode]:
        """Count one step's raw rewards [B] of envs env_ids [B] (distinct); ``stepped`` (bool [B] or a bool)
        says which rows were agent steps; -> the episodes that ``ended`` [B] bool, which restart from zero."""
        self.returns[env_ids] += raw_reward
        self.lengths[env_ids] += stepped
        finished = env_ids[ended]
        episodes = [Episode(float(self.returns[i]), int(self.lengths[i])) for i in finished]
        self.returns[finished] = 0
        self.lengths[finished] = 0
        return episodes


class GymEnvs(Envs):
    """A registered Gymnasium id through ``gymnasium.make_vec`` with same-step autoreset.

    vectorization_mode: "sync" (one process) or "async" (one process per env), or None: the id's own vector env
    where ``same_step_vector_env`` finds one, else "sync". env_kwargs go to the env (``gymnasium.make``) or to the
    id's vector env. Rewards are passed on unclipped (float32); observations as ``flat_observations`` makes them of
    the env's.
    """

    def __init__(self, env_id: str, num_envs: int, vectorization_mode: str | None = None,
                 env_kwargs: dict[str, Any] | None = None):
        if vectorization_mode is None and same_step_vector_env(env_id):
            self._envs = flat_vector_observations(
                gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **(env_kwargs or {})), env_id)
        else:
            self._envs = gym.make_vec(env_id, num_envs, vectorization_mode=vectorization_mode or "sync",
                                      vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                                      wrappers=[functools.partial(flat_observations, env_id=env_id)],
                                      **(env_kwargs or {}))
        self.num_envs = self.batch_size = num_envs
        self.env_ids = np.arange(num_envs)
        self.single_observation_space = self._envs.single_observation_space
        self.single_action_space = self._envs.single_action_space
        self.render_fps = self._envs.metadata.get("render_fps")
        self._async = vectorization_mode == "async"
        self._actions: np.ndarray | None = None
        self._tally = EpisodeTally(num_envs)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self._envs.reset(seed=seed)
        self._tally.restart()
        return obs

    def send(self, actions: np.ndarray) -> None:
        if self._async:
            self._envs.step_async(actions)
        else:
            self._actions = actions

    def recv(self) -> Step:
        if self._async:
            obs, reward, terminated, truncated, _ = self._envs.step_wait()
        else:
            obs, reward, terminated, truncated, _ = self._envs.step(self._actions)
        done = terminated | truncated
        episodes = self._tally.add(self.env_ids, reward, True, done)
        return Step(obs, reward.astype(np.float32), done, episodes)

    def render(self) -> np.ndarray:
        """Env 0's current frame, RGB [H, W, 3] uint8 (the env must be made with render_mode="rgb_array")."""
        return np.asarray(self._envs.render()[0])

    def close(self) -> None:
        self._envs.close()


def _unsupported_part(space: gym.Space) -> gym.Space | None:
    """The first part of an observation space that is none of ``OBSERVATION_SPACES`` (the space itself if it is
    not a Dict or Tuple), or None."""
    if isinstance(space, _FLAT_SPACES):
        return None
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        parts = space.spaces.values() if isinstance(space, gym.spaces.Dict) else space.spaces
        return next((bad for bad in map(_unsupported_part, parts) if bad is not None), None)
    return space


def same_step_vector_env(env_id: str) -> bool:
    """Whether the Gymnasium id (or "module:EnvId", its module imported) registers as its ``vector_entry_point`` one
    of fwp-rl's numpy vector envs (``fwp_rl.envs.memory_suite.MemoryVectorEnv``): tested to step as the single envs
    do, autoresetting on the same step. Other vector envs are not used here: ale-py's preprocesses the frames its
    single env returns raw, and Gymnasium's CartPoleVectorEnv and the double pole's autoreset on the next step."""
    spec = gym.registry.get(env_id.rpartition(":")[2])
    entry_point = None if spec is None else spec.vector_entry_point
    if entry_point is None:
        return False
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    return isinstance(creator, type) and issubclass(creator, MemoryVectorEnv)


def flat_vector_observations(envs: gym.vector.VectorEnv, env_id: str) -> gym.vector.VectorEnv:
    """``flat_observations`` for a vector env, by Gymnasium's vector ``FlattenObservation``."""
    space = check_observation_space(envs.single_observation_space, env_id, envs)
    return envs if isinstance(space, gym.spaces.Box) else gym.wrappers.vector.FlattenObservation(envs)


def check_observation_space(space: gym.Space, env_id: str, env) -> gym.Space:
    """``space`` if a policy takes it (``OBSERVATION_SPACES``), else a ``ConfigError`` naming ``env.id=env_id`` and
    the space, ``env`` (a single or vector env) closed."""
    bad = _unsupported_part(space)
    if bad is not None:
        env.close()
        with np.printoptions(linewidth=sys.maxsize):  # Box bounds on one line
            inside = "" if bad is space else f" (its part {bad} is not)"
            raise ConfigError(f"env.id={env_id!r}: the observation space {space} is not supported{inside}; a policy "
                              f"takes {OBSERVATION_SPACES}")
    return space


def flat_observations(env: gym.Env, env_id: str) -> gym.Env:
    """``env`` with observations a policy reads: a Box as it is (frames keep their shape for the image torsos),
    any other space of ``OBSERVATION_SPACES`` flattened into one Box by Gymnasium's ``FlattenObservation``.
    Another space is a ``ConfigError`` naming ``env.id=env_id`` and the space (``env`` is closed).

    Every learner makes its envs through this (our PPO and its evaluations, neuroevolution's vector env and its
    probe, the SB3 baseline), so they all see the observations as the same Box, and rollout buffers, populations,
    torsos and checkpoints hold plain tensors whatever the env's space. Flattening is exact: Box parts keep their
    values, Discrete and MultiDiscrete parts become one-hot vectors, MultiBinary parts their 0/1 values, Dict parts
    in the Dict's key order and Tuple parts in order (``gymnasium.spaces.flatten``). Encoding each part with a
    network of its own would add nothing to the first layer of a torso: a Linear map of the concatenation is the
    sum of Linear maps of the parts. Text, Graph, Sequence and OneOf are refused: Graph and Sequence have no
    fixed size, and Text and OneOf flatten to indices that a torso would read as magnitudes.
    """
    space = check_observation_space(env.observation_space, env_id, env)
    return env if isinstance(space, gym.spaces.Box) else gym.wrappers.FlattenObservation(env)


def check_gym_id(env_id: str, key: str, alternative: str) -> None:
    """A ``ConfigError`` naming ``key`` unless ``env_id`` is a registered Gymnasium id or "module:EnvId" whose module
    imports and registers EnvId (``gymnasium.make`` imports it the same way); ``alternative`` says what else the key
    takes, for the message."""
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"{key}={env_id!r}: module {module!r} cannot be imported: {e}") from None
    if name in gym.registry:
        return
    close = difflib.get_close_matches(name, list(gym.registry), n=3)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    if module:
        raise ConfigError(f"{key}={env_id!r}: module {module!r} registers no Gymnasium id {name!r}{hint}")
    raise ConfigError(f"{key}={env_id!r} is neither {alternative}, a registered Gymnasium id nor 'module:EnvId'"
                      f"{hint} (list the ids with: {LIST_IDS})")


# ---------------------------------------------------------------------------------------------- config
@dataclass
class VectorEnvConfig:
    """The environments of a PPO run.

    id: "atari:<game>", a registered Gymnasium id or "module:EnvId" (module docstring). num_envs: environments stepped
    together. options: for Atari, ``AtariConfig`` fields other than game and num_envs, and "preset"
    ("v5" or "cleanrl_lstm"; fields given beside it override the preset's); for Gymnasium,
    "vectorization_mode" ("sync" or "async"; absent: the id's own vector env where it has one that autoresets on
    the same step, else "sync") and keyword arguments of the env.
    """

    id: str = "atari:breakout"
    num_envs: int = 8
    options: dict = field(default_factory=dict)

    def validate(self, prefix: str = "env") -> None:
        """Raise ``ConfigError`` for a bad id, num_envs or option, without building an environment."""
        key = f"{prefix}." if prefix else ""
        if isinstance(self.num_envs, bool) or not isinstance(self.num_envs, int) or self.num_envs < 1:
            raise ConfigError(f"{key}num_envs={self.num_envs!r} is not allowed: it must be an integer >= 1")
        if self.atari:
            self.atari_config(prefix)
            return
        check_gym_id(self.id, f"{key}id", "'atari:<game>'")
        mode = self.options.get("vectorization_mode", "sync")
        if mode not in VECTORIZATION_MODES:
            raise ConfigError(f"{key}options.vectorization_mode={mode!r} is not allowed; choose one of: "
                              f"{', '.join(map(repr, VECTORIZATION_MODES))} (both autoreset on the same step)")

    @property
    def atari(self) -> bool:
        return self.id.startswith(ATARI_PREFIX)

    def atari_config(self, prefix: str = "env"):
        """The validated ``AtariConfig`` of an "atari:<game>" id."""
        from fwp_rl.envs.atari import AtariConfig  # atari.py builds on this module

        return AtariConfig.from_options(self.id[len(ATARI_PREFIX):], self.num_envs, self.options, prefix)


def make_vector_env(config: VectorEnvConfig, seed: int | None = None) -> Envs:
    """The ``Envs`` of a config: ``AtariEnvs`` for "atari:<game>", ``GymEnvs`` otherwise.

    seed seeds ``single_action_space`` (its ``sample()``); the environments themselves are seeded by
    ``reset(seed=...)``. Raises ``ConfigError`` (one line, naming the key) for what the user got wrong.
    """
    config.validate()
    if config.atari:
        from fwp_rl.envs.atari import AtariEnvs  # atari.py builds on this module

        envs: Envs = AtariEnvs(config.atari_config())
    else:
        kwargs = dict(config.options)
        mode = kwargs.pop("vectorization_mode", None)
        try:
            envs = GymEnvs(config.id, config.num_envs, mode, kwargs)
        except ConfigError:  # flat_observations: a space no policy takes
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"env.options={config.options!r} do not fit {config.id!r}: {e}") from None
        if not isinstance(envs.single_action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            envs.close()
            raise ConfigError(f"env.id={config.id!r}: the action space {envs.single_action_space} is not supported: "
                              "it must be Discrete or Box")
    envs.single_action_space.seed(seed)
    return envs
