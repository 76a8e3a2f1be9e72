"""Stable-Baselines3's recurrent PPO (sb3-contrib's ``RecurrentPPO``) on our tasks: the outside LSTM baseline.

A config with ``learner: sb3_recurrent_ppo`` has the same ``env``, ``ppo`` and ``run`` sections as a PPO
config; only ``policy`` (``MlpLstmPolicy`` or ``CnnLstmPolicy``) and ``policy_kwargs`` (e.g.
``lstm_hidden_size``) differ. It trains in our run harness (``fwp_rl.harness``): its run directory is ours
(config.yaml, metrics.jsonl with our keys, checkpoints/latest.pt) and its W&B run sits in the same group (the env
id), tagged "lstm" and "sb3".

The ``ppo`` keys as ``RecurrentPPO`` arguments:

- num_steps -> n_steps; update_epochs -> n_epochs; gamma, gae_lambda, ent_coef, max_grad_norm, target_kl
  as they are; norm_adv -> normalize_advantage; clip_coef -> clip_range; device "auto" -> CUDA if present.
- num_minibatches -> batch_size = num_envs * num_steps / num_minibatches, in steps: RecurrentPPO cuts a
  rotated rollout into minibatches of that many steps and splits them into sequences at episode starts
  and at the minibatch edges, each started from the LSTM state the rollout had there. sequence_length
  has no counterpart (it must be null).
- learning_rate, anneal_lr -> learning_rate, annealed as ours (update k of U learns at lr (1 - k / U)).
- vf_coef -> vf_coef / 2: SB3's value loss is (V - R)^2, ours 0.5 (V - R)^2, so the objective is the same.
  The logged value_loss is 0.5 (V - R)^2 too.
- clip_vloss -> clip_range_vf = clip_coef (else None). SB3 clips the value prediction and takes that
  loss alone; ours takes the max of the clipped and the unclipped loss (CleanRL).
- target_kl: SB3 stops in the middle of an epoch at a minibatch with KL > 1.5 target_kl; ours after
  an epoch whose mean KL > target_kl.
- Adam with eps 1e-5 and orthogonal initialisation in both. SB3 bootstraps a truncated episode from its
  last observation; ours treats truncation as the end.
- The policy: SB3's default is one LSTM for the actor and another for the critic, each followed by an
  MLP (net_arch, 64-64 for MlpLstmPolicy); ours is one core with linear heads. Its MlpLstmPolicy has no
  torso before the LSTM; CnnLstmPolicy has the Nature CNN (512 features), as our nature_cnn torso.

Environments, stepped in one process by SB3's DummyVecEnv and each wrapped in SB3's Monitor, whose
info["episode"] gives the logged episodes:

- a Gymnasium id (or "module:EnvId"): ``make_vec_env(id, num_envs, env_kwargs=options)``; env i is seeded with
  seed + i as ours. vectorization_mode must be "sync". Observations reach the policy as ours do, one Box
  (``fwp_rl.envs.vector.flat_observations``, Dict, Tuple, Discrete, MultiDiscrete and MultiBinary flattened), so
  ``MlpLstmPolicy`` takes them all.
- "atari:<game>": ``make_atari_env("ALE/<Game>-v5")`` with the ``AtariConfig`` (preset and options) as:

  ===========================  ==========================================================================
  AtariConfig                  SB3
  ===========================  ==========================================================================
  repeat_action_probability    gym.make kwarg of the v5 id: ALE's own sticky actions, per frame as ours
  max_num_frames_per_episode   gym.make kwarg (frameskip=1 there: AtariWrapper skips the frames)
  full_action_space            gym.make kwarg
  frameskip                    AtariWrapper frame_skip (MaxAndSkipEnv: the max of the last two frames)
  noop_max                     AtariWrapper noop_max (SB3 takes 1 to noop_max no-ops, never 0)
  episodic_life                AtariWrapper terminal_on_life_loss
  reward_clipping              AtariWrapper clip_reward
  img_height = img_width       AtariWrapper screen_size (square only)
  stack_num                    VecFrameStack(stack_num) when > 1, oldest frame first as ours
  grayscale, maxpool,          fixed in AtariWrapper: true, true (with frameskip > 1), true; other
  use_fire_reset               values are config errors
  batch_size                   null or num_envs only (no asynchronous stepping)
  num_threads                  unused: DummyVecEnv steps the games one after another in one thread
  ===========================  ==========================================================================

  Differences that remain: frames are converted to gray and resized by OpenCV (INTER_AREA) where
  ale-py does both in C++; with terminal_on_life_loss SB3 starts each life with a NOOP frame skip and,
  where the game has FIRE, presses FIRE (FireResetEnv, as CleanRL), none of which are agent steps,
  where ours leaves pressing FIRE to the agent. Monitor sits below AtariWrapper, so info["episode"]
  is the whole game with its raw score; a game that ends inside those reset steps is not logged.
  episodic_length is counted here in agent steps (Monitor counts frames).

Resuming (``fwp-rl train --resume RUN_DIR``) builds the model from the run's config (with any ``--set``)
and puts the checkpoint into it, as our PPO does:

- restored exactly: the policy's weights and Adam's state (their state dicts), the step counter, so the annealed
  learning rate goes on where it stopped (its schedule is made from the config: ``--set
  ppo.total_steps=...`` re-spreads the rest as ours), the update count, and the global torch, NumPy and
  Python generators SB3 draws from (actions from torch, minibatch order from NumPy), as they were at the
  start of the update after the checkpoint;
- not restored, as in our PPO: the envs, which restart their episodes (seeded with seed + the update
  count, not the first start's seed) and with them the LSTM states; the metrics logged after the
  checkpoint are dropped and logged again;
- not restored, beyond ours: SB3's own counters of its logger (n_updates, its episode buffer), which
  none of our metrics read, and on a GPU the CUDA generator (ours neither), so a resumed GPU run samples
  other actions than an uninterrupted one would.

``normalize_observations: true`` wraps the envs in SB3's ``VecNormalize`` (observations only, clip 10), our
``policy.normalize_observations`` done the SB3 way; its statistics are saved in the checkpoint
(``observation_statistics``) and replays use them frozen.

``fwp-rl evaluate`` replays a checkpoint in one env made as the training envs (``EvaluationEnvs``),
acting by SB3's own ``predict`` with the actor LSTM's state and episode starts (``EvaluationAgent``);
its memory view draws the actor LSTM's cell. Evaluations during training (``run.eval_every``) play the model as
trained the same way (``evaluation_episodes``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import random
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import torch
from ale_py.registration import rom_id_to_name
from rich.console import Console
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize

from fwp_rl.agents.ppo import PPOHyperparameters, RolloutCounts, UpdateDisplay, resolve_device
from fwp_rl.config import ConfigError, RunConfig, check_run_name, check_seed, from_dict
from fwp_rl.envs.vector import Envs, Episode, Step, VectorEnvConfig, flat_observations
from fwp_rl.evaluate import run_episodes
from fwp_rl.harness import Run, Trained
from fwp_rl.agents.ppo import check_parameters
from fwp_rl.runs import CheckpointError, NonFiniteError, load_checkpoint

gym.register_envs(ale_py)

LEARNER = "sb3_recurrent_ppo"


# ---------------------------------------------------------------------------------------------- config
@dataclass
class SB3Config(RolloutCounts):
    """A run of sb3-contrib's RecurrentPPO: ``fwp-rl train`` on a file with ``learner: sb3_recurrent_ppo``.

    policy: SB3's policy name; policy_kwargs: its keyword arguments (lstm_hidden_size, n_lstm_layers,
    shared_lstm, enable_critic_lstm, net_arch, ...). env, ppo, run: as in a PPO config (module docstring).
    normalize_observations: SB3's ``VecNormalize`` of the observations (module docstring).
    """

    learner: typing.Literal["sb3_recurrent_ppo"] = LEARNER
    name: str = LEARNER
    seed: int = 0
    env: VectorEnvConfig = field(default_factory=VectorEnvConfig)
    policy: typing.Literal["MlpLstmPolicy", "CnnLstmPolicy"] = "CnnLstmPolicy"
    policy_kwargs: dict = field(default_factory=dict)
    normalize_observations: bool = False
    ppo: PPOHyperparameters = field(default_factory=PPOHyperparameters)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, prefix: str) -> None:
        check_seed(self.seed)
        check_run_name(self.name)
        if self.ppo.sequence_length is not None:
            raise ConfigError(f"ppo.sequence_length={self.ppo.sequence_length} is not allowed for {LEARNER}: "
                              "RecurrentPPO cuts its own sequences (at episode starts and minibatch edges); "
                              "it must be null")
        if self.steps_per_update % self.ppo.num_minibatches:
            raise ConfigError(f"ppo.num_minibatches={self.ppo.num_minibatches} is not allowed: it must divide the "
                              f"{self.steps_per_update} steps of a rollout (env.num_envs x ppo.num_steps)")
        if self.ppo.nonfinite != "stop":
            raise ConfigError(f"ppo.nonfinite={self.ppo.nonfinite!r} is not allowed for {LEARNER}: SB3 steps its "
                              "optimizer itself, so a run stops at a loss or parameter that is not finite; it must be "
                              "'stop'")
        if self.env.atari:
            _check_atari(self.env)
            if self.normalize_observations:
                raise ConfigError(f"normalize_observations=true is not allowed for {self.env.id!r}: it normalizes "
                                  "vector observations, not Atari frames")
        elif self.env.options.get("vectorization_mode", "sync") != "sync":
            raise ConfigError(f"env.options.vectorization_mode={self.env.options['vectorization_mode']!r} is not "
                              f"allowed for {LEARNER}: its envs run in SB3's DummyVecEnv; choose 'sync'")


def atari_env_id(game: str) -> str:
    """ale-py's v5 id of a snake_case game: "ms_pacman" -> "ALE/MsPacman-v5"."""
    return f"ALE/{rom_id_to_name(game)}-v5"


def _check_atari(env: VectorEnvConfig) -> None:
    """Raise ``ConfigError`` for the AtariConfig values that SB3's AtariWrapper cannot run."""
    atari = env.atari_config()
    always = {"grayscale": "WarpFrame always converts to gray",
              "use_fire_reset": "FireResetEnv is always used where the game has FIRE"}
    if atari.frameskip > 1:
        always["maxpool"] = "MaxAndSkipEnv always takes the max of the last two frames"
    for key, why in always.items():
        if not getattr(atari, key):
            raise ConfigError(f"env.options.{key}=false is not allowed for {LEARNER}: SB3's AtariWrapper needs true "
                              f"({why})")
    if atari.batch_size not in (None, env.num_envs):
        raise ConfigError(f"env.options.batch_size={atari.batch_size} is not allowed for {LEARNER}: SB3 steps all "
                          f"env.num_envs={env.num_envs} games together (null, or equal to num_envs)")
    if atari.img_height != atari.img_width:
        raise ConfigError(f"env.options.img_height={atari.img_height} and img_width={atari.img_width} are not "
                          f"allowed for {LEARNER}: SB3's AtariWrapper makes square frames; give equal sizes")
    if atari_env_id(atari.game) not in gym.registry:
        raise ConfigError(f"env.id={env.id!r} is not allowed for {LEARNER}: ale-py registers no single-player "
                          f"{atari_env_id(atari.game)}")


# ---------------------------------------------------------------------------------------------- env and model
def make_env(config: SB3Config, training: bool = True) -> VecEnv:
    """The SB3 vector env of a config (module docstring); env i is seeded with config.seed + i. With
    ``normalize_observations``, a ``VecNormalize`` whose statistics learn while ``training``."""
    vec_env = _make_vec_env(config)
    if config.normalize_observations:
        return VecNormalize(vec_env, training=training, norm_obs=True, norm_reward=False, clip_obs=10.0)
    return vec_env


def _make_vec_env(config: SB3Config) -> VecEnv:
    env = config.env
    if env.atari:
        atari = env.atari_config()
        vec_env = make_atari_env(
            atari_env_id(atari.game), n_envs=env.num_envs, seed=config.seed,
            env_kwargs=dict(frameskip=1, repeat_action_probability=atari.repeat_action_probability,
                            max_num_frames_per_episode=atari.max_num_frames_per_episode,
                            full_action_space=atari.full_action_space),
            wrapper_kwargs=dict(noop_max=atari.noop_max, frame_skip=atari.frameskip, screen_size=atari.img_height,
                                terminal_on_life_loss=atari.episodic_life, clip_reward=atari.reward_clipping))
        return VecFrameStack(vec_env, atari.stack_num) if atari.stack_num > 1 else vec_env
    options = {k: v for k, v in env.options.items() if k != "vectorization_mode"}
    try:
        return make_vec_env(env.id, n_envs=env.num_envs, seed=config.seed, env_kwargs=options,
                            wrapper_class=flat_observations, wrapper_kwargs={"env_id": env.id})
    except ConfigError:  # flat_observations: a space no policy takes
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env.options={env.options!r} do not fit {env.id!r}: {e}") from None


def one_env(config: SB3Config, seed: int) -> VecEnv:
    """The vector env of ``config`` with one env, seeded with ``seed``: where a model is replayed (its observation
    statistics, with ``normalize_observations``, frozen: ``load_state`` or ``EvaluationEnvs`` sets them)."""
    return make_env(dataclasses.replace(config, seed=seed, env=dataclasses.replace(config.env, num_envs=1)),
                    training=False)


@dataclass(frozen=True)
class AnnealedLearningRate:
    """Our linear annealing as an SB3 schedule: update k of U (from 0) learns at learning_rate (1 - k / U).

    SB3 calls it with progress_remaining = 1 - (k + 1) / U: the rollout of update k is already counted.
    """

    learning_rate: float
    num_updates: int

    def __call__(self, progress_remaining: float) -> float:
        return self.learning_rate * min(1.0, progress_remaining + 1 / self.num_updates)


def model_arguments(config: SB3Config) -> dict:
    """RecurrentPPO's keyword arguments (other than the env) for a config."""
    hp = config.ppo
    return dict(
        policy=config.policy, policy_kwargs=dict(config.policy_kwargs), n_steps=hp.num_steps,
        batch_size=config.steps_per_update // hp.num_minibatches, n_epochs=hp.update_epochs,
        learning_rate=AnnealedLearningRate(hp.learning_rate, config.num_updates) if hp.anneal_lr else hp.learning_rate,
        gamma=hp.gamma, gae_lambda=hp.gae_lambda, clip_range=hp.clip_coef,
        clip_range_vf=hp.clip_coef if hp.clip_vloss else None, normalize_advantage=hp.norm_adv,
        ent_coef=hp.ent_coef, vf_coef=hp.vf_coef / 2, max_grad_norm=hp.max_grad_norm, target_kl=hp.target_kl,
        seed=config.seed, device=resolve_device(hp.device), verbose=0)


def make_model(config: SB3Config, env: VecEnv) -> RecurrentPPO:
    """RecurrentPPO on ``env``; a policy or policy_kwargs that does not fit is a ``ConfigError``."""
    try:
        model = RecurrentPPO(env=env, **model_arguments(config))
    except (AssertionError, TypeError, ValueError) as e:  # SB3 checks spaces with assert
        first_line = str(e).splitlines()[0]
        raise ConfigError(f"policy={config.policy!r} with policy_kwargs={config.policy_kwargs!r} does not fit "
                          f"env.id={config.env.id!r}: {first_line}") from None
    # Without a logger of its own, learn() makes SB3's default one, which creates an empty SB3-<time> folder in
    # the system's temporary directory every run. Ours keeps the values (UpdateCallback reads them) and writes
    # nothing: the metrics go to metrics.jsonl and W&B.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def load_model(checkpoint: str | Path, device: str = "cpu") -> RecurrentPPO:
    """The RecurrentPPO of a checkpoint file or run directory written by ``train``, on one env of its config."""
    payload = load_checkpoint(checkpoint, learner=LEARNER)
    config = from_dict(SB3Config, payload["config"])
    return model_from_payload(payload, config, one_env(config, config.seed), device)


def model_from_payload(payload: dict, config: SB3Config, env: VecEnv, device: str = "cpu") -> RecurrentPPO:
    """The RecurrentPPO of a checkpoint's contents (``load_checkpoint``; ``config``, its config) on ``env``: made from
    the config, with the checkpoint's weights. Not SB3's ``load``: SB3's saved models keep objects (the policy class,
    the schedules) that loading them rebuilds by running code from the file."""
    model = make_model(dataclasses.replace(config, ppo=dataclasses.replace(config.ppo, device=device)), env)
    load_state(model, payload)
    return model


def load_state(model: RecurrentPPO, payload: dict) -> None:
    """Put a checkpoint's policy weights, Adam state and step counter into ``model``; a CheckpointError when they do
    not fit."""
    try:
        model.policy.load_state_dict(payload["policy"])
        model.policy.optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first_line = str(e).splitlines()[0]
        raise CheckpointError(f"the checkpoint does not fit this config's policy: {type(e).__name__}: "
                              f"{first_line}") from None
    model.num_timesteps = int(payload["global_step"])
    statistics = payload.get("observation_statistics")
    if statistics is not None:
        set_observation_statistics(model.get_vec_normalize_env(), statistics)


def observation_statistics(venv: VecNormalize) -> dict:
    """A ``VecNormalize``'s observation statistics as tensors (what a checkpoint holds)."""
    rms = venv.obs_rms
    return {"mean": torch.from_numpy(rms.mean.copy()), "var": torch.from_numpy(rms.var.copy()),
            "count": torch.tensor(float(rms.count), dtype=torch.float64)}


def set_observation_statistics(venv: VecNormalize, statistics: dict) -> None:
    rms = venv.obs_rms
    rms.mean, rms.var = statistics["mean"].numpy().copy(), statistics["var"].numpy().copy()
    rms.count = float(statistics["count"])


def restore(model: RecurrentPPO, payload: dict, config: SB3Config) -> None:
    """Put a checkpoint's policy, Adam state and step counter into a model made from ``config`` (module
    docstring); the env restarts from seed config.seed + the update count. The generators are restored
    apart, just before training goes on (``set_generator_states``)."""
    load_state(model, payload)
    # RecurrentPPO seeded its env with config.seed; a restart from the same seed would replay the first episodes.
    model.env.seed(config.seed + int(payload["update"]))


def generator_states() -> dict:
    """The global generators RecurrentPPO draws from: torch (actions), NumPy (minibatch order), Python; as tensors
    and plain data (a checkpoint holds nothing else: NumPy's key array becomes a list)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch_rng": torch.get_rng_state(), "numpy_rng": (name, keys.tolist(), position, has_gauss, gauss),
            "python_rng": random.getstate()}


def set_generator_states(payload: dict) -> None:
    if "torch_rng" not in payload:  # written before runs could resume: the generators stay as the model seeded them
        return
    torch.set_rng_state(payload["torch_rng"])
    name, keys, position, has_gauss, gauss = payload["numpy_rng"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    random.setstate(payload["python_rng"])


# ---------------------------------------------------------------------------------------------- evaluation
def monitor_episodes(infos: list[dict], lengths: np.ndarray) -> list[Episode]:
    """The episodes that SB3's Monitor ended in one VecEnv step (info["episode"], with the raw return), each
    with its length in agent steps from ``lengths`` [N] (counted by the caller up to this step; set back to
    0 here for the envs whose episode ended)."""
    episodes = []
    for i, info in enumerate(infos):
        if "episode" in info:
            episodes.append(Episode(float(info["episode"]["r"]), int(lengths[i])))
            lengths[i] = 0
    return episodes


class EvaluationEnvs(Envs):
    """One env of ``config`` as SB3 trained in it (``make_env``: Monitor, and for "atari:<game>" AtariWrapper
    and VecFrameStack), seeded with ``seed``, behind ``fwp_rl.envs.vector.Envs`` for ``fwp-rl evaluate``:
    whole episodes from Monitor (raw returns; an Atari game through its lost lives), lengths in agent
    steps. ``render()`` is the env's own picture (SB3 makes its envs with render_mode "rgb_array"; for
    Atari the colour screen). ``venv`` is the SB3 vector env itself.
    """

    def __init__(self, config: SB3Config, seed: int, statistics: dict | None = None):
        self.venv = one_env(config, seed)
        if statistics is not None:  # the observation statistics of the model as trained (normalize_observations)
            set_observation_statistics(self.venv, statistics)
        self.num_envs = self.batch_size = 1
        self.env_ids = np.arange(1)
        self.single_observation_space = self.venv.observation_space
        self.single_action_space = self.venv.action_space
        self.render_fps = self.venv.metadata.get("render_fps")
        self._lengths = np.zeros(1, dtype=np.int64)
        self._actions: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.venv.seed(seed)
        self._lengths[:] = 0
        return self.venv.reset()

    def send(self, actions: np.ndarray) -> None:
        self._actions = actions

    def recv(self) -> Step:
        obs, reward, done, infos = self.venv.step(self._actions)
        self._lengths += 1
        return Step(obs, reward.astype(np.float32), done, monitor_episodes(infos, self._lengths))

    def render(self) -> np.ndarray:
        return np.asarray(self.venv.get_images()[0])

    def close(self) -> None:
        self.venv.close()


class EvaluationAgent:
    """A RecurrentPPO in ``fwp_rl.evaluate.run_episodes``: it acts by SB3's own ``predict``, which carries the
    actor LSTM's (hidden, cell) state and resets it at episode starts. Its memory is handed on in the layout
    of our stacked LSTM's state (h_1, c_1, h_2, c_2, ...), so the memory view draws the last layer's cell."""

    def __init__(self, model: RecurrentPPO, deterministic: bool):
        self.model, self.deterministic = model, deterministic
        space = model.action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        self.action_names = ([str(i) for i in range(space.n)] if self.discrete
                             else [f"a{i}" for i in range(int(np.prod(space.shape)))])
        zeros = np.zeros(model.policy.lstm_hidden_state_shape, dtype=np.float32)  # what predict starts from
        self.state = (zeros, zeros)

    def act(self, obs: np.ndarray, episode_start: np.ndarray, record: bool):
        previous = self.state
        actions, self.state = self.model.predict(obs, state=previous, episode_start=episode_start,
                                                 deterministic=self.deterministic)
        if not record:
            return actions, None, None
        hidden, cell = (torch.from_numpy(s[:, 0]) for s in self.state)  # [layers, hidden_size]
        memory = tuple(s[layer] for layer in range(len(hidden)) for s in (hidden, cell))
        return actions, memory, self._outputs(obs, previous, episode_start)

    def _outputs(self, obs: np.ndarray, state: tuple, episode_start: np.ndarray) -> np.ndarray:
        """The action probabilities (Box: the means) of the distribution ``predict`` acted by."""
        policy = self.model.policy
        obs_t, _ = policy.obs_to_tensor(obs)
        states = tuple(torch.as_tensor(s, dtype=torch.float32, device=policy.device) for s in state)
        starts = torch.as_tensor(episode_start, dtype=torch.float32, device=policy.device)
        with torch.no_grad():
            distribution, _ = policy.get_distribution(obs_t, states, starts)
        values = distribution.distribution.probs if self.discrete else distribution.distribution.mean
        return values[0].reshape(-1).cpu().numpy()


def evaluation_episodes(model: RecurrentPPO, config: SB3Config, seed: int, episodes: int, deterministic: bool,
                        record: bool = False) -> tuple[list[Episode], dict]:
    """``episodes`` whole episodes of ``model`` as trained, in one env made as the training envs and seeded with
    ``seed`` (``EvaluationEnvs``, acting by ``EvaluationAgent``: as ``fwp-rl evaluate`` replays a checkpoint), and
    with ``record`` the first one's recording."""
    normalizer = model.get_vec_normalize_env()
    envs = EvaluationEnvs(config, seed, None if normalizer is None else observation_statistics(normalizer))
    return run_episodes(EvaluationAgent(model, deterministic), envs, lambda obs: envs.render(), episodes, seed, record)


# ---------------------------------------------------------------------------------------------- runs
class UpdateCallback(BaseCallback):
    """Cuts RecurrentPPO's loop into our updates (a rollout and its learning phase).

    SB3 calls on_rollout_end before it learns, so an update is reported at the start of the next rollout
    (or at the end of training): ``on_update(figures, last)`` with the learning phase's losses, the timings and
    the episodes that ended in the rollout, and whether no update follows. ``should_stop()`` is asked as each
    rollout after the first starts: once it says yes, that rollout ends at its first step, and its one env step is
    not counted in any report or checkpoint.
    """

    def __init__(self, on_update: Callable[[dict, bool], None], should_stop: Callable[[], bool]):
        super().__init__()
        self.on_update, self.should_stop = on_update, should_stop
        self._rollout_start = self._learn_start = None
        self._stopping = False
        self._episodes: list[Episode] = []
        self._lengths = np.zeros(0, dtype=np.int64)  # agent steps of each env's episode so far

    def _on_training_start(self) -> None:
        self._lengths = np.zeros(self.training_env.num_envs, dtype=np.int64)

    def _on_rollout_start(self) -> None:
        self._stopping = self.should_stop()
        if self._learn_start is not None:
            self._report(last=self._stopping)
        self._rollout_start = time.perf_counter()

    def _on_step(self) -> bool:
        self._lengths += 1
        self._episodes.extend(monitor_episodes(self.locals["infos"], self._lengths))
        return not self._stopping

    def _on_rollout_end(self) -> None:
        self._learn_start = time.perf_counter()

    def _on_training_end(self) -> None:
        if self._learn_start is not None:
            self._report(last=True)

    def _report(self, last: bool) -> None:
        end = time.perf_counter()
        logged = self.model.logger.name_to_value
        seconds = end - self._rollout_start
        figures = dict(
            policy_loss=float(logged["train/policy_gradient_loss"]),
            value_loss=0.5 * float(logged["train/value_loss"]),
            entropy=-float(logged["train/entropy_loss"]), approx_kl=float(logged["train/approx_kl"]),
            clipfrac=float(logged["train/clip_fraction"]),
            explained_variance=float(logged["train/explained_variance"]),
            learning_rate=self.model.policy.optimizer.param_groups[0]["lr"],
            learn_seconds=end - self._learn_start, seconds=seconds,
            steps_per_second=self.model.n_steps * self.training_env.num_envs / seconds)
        if self._episodes:
            returns, lengths = zip(*self._episodes)
            figures.update(episodic_return=float(np.mean(returns)), episodic_length=float(np.mean(lengths)),
                           episodes=len(self._episodes))
        self._episodes = []
        self._learn_start = None
        self.on_update(figures, last)


def checkpoint_payload(model: RecurrentPPO, update: int) -> dict:
    normalizer = model.get_vec_normalize_env()
    statistics = {} if normalizer is None else {"observation_statistics": observation_statistics(normalizer)}
    return {"update": update, "global_step": model.num_timesteps, "policy": model.policy.state_dict(),
            "optimizer": model.policy.optimizer.state_dict(), **statistics, **generator_states()}


def check_update(figures: dict, model: RecurrentPPO, update: int) -> None:
    """NonFiniteError naming ``update`` when its losses or the policy's parameters are not finite: SB3 steps its
    optimizer whatever its loss, and the next rollout would fail on a nan in the policy."""
    spoiled = [key for key in ("policy_loss", "value_loss", "entropy", "approx_kl") if not math.isfinite(figures[key])]
    try:
        if spoiled:
            raise NonFiniteError(f"{', '.join(spoiled)} not finite")
        check_parameters(model.policy)
    except NonFiniteError as e:
        raise NonFiniteError(f"update {update}: {e}. No checkpoint holds it. Lower ppo.learning_rate") from None


def train(config: SB3Config, resume: str | Path | None = None, console: Console | None = None) -> Trained:
    """A whole run (or the rest of one, with ``resume`` = its run directory; module docstring) in
    ``fwp_rl.harness.Run``: a metrics record per update, an evaluation every ``run.eval_every`` updates and at the
    end, a checkpoint every ``run.checkpoint_every`` updates, at a best evaluation and at the end (or after the update
    under way when Ctrl-C stops the run)."""
    run = Run(config, resume, console)
    # Everything the user can get wrong fails here, before anything is written.
    with contextlib.closing(make_env(config)) as env:
        model = make_model(config, env)
        if run.saved is not None:
            restore(model, run.saved, config)
        display = UpdateDisplay()
        total = config.num_updates * config.steps_per_update
        with run.start(total=total, iteration="update"):

            def on_update(figures: dict, last: bool) -> None:
                check_update(figures, model, run.iterations + 1)
                # ``last`` is also the update after which Ctrl-C stops the run, which is not its end
                figures |= run.evaluate(functools.partial(evaluation_episodes, model, config),
                                        final=last and not run.stop_requested)
                run.log(model.num_timesteps, update=run.iterations + 1, **figures)
                run.show(display.status(figures))
                run.checkpoint(lambda: checkpoint_payload(model, run.iterations), final=last)

            if run.saved is not None:
                # Only now: starting W&B may draw from the generators, and the first rollout must not see that.
                set_generator_states(run.saved)
            # SB3 adds num_timesteps to what is left when it keeps counting: the schedule runs to ``total``.
            model.learn(total - model.num_timesteps, callback=UpdateCallback(on_update, lambda: run.stop_requested),
                        log_interval=None, reset_num_timesteps=run.saved is None)
    run.summary([display.closing(run.iterations * config.steps_per_update, run.iterations)])
    return run.result


__all__ = ["AnnealedLearningRate", "EvaluationAgent", "EvaluationEnvs", "SB3Config", "UpdateCallback", "atari_env_id",
           "evaluation_episodes", "generator_states", "load_model", "make_env", "make_model", "model_arguments",
           "model_from_payload", "monitor_episodes", "one_env", "restore", "set_generator_states", "train"]
