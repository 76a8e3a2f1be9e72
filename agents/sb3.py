"""Stable-Baselines3's recurrent PPO (sb3-contrib's ``RecurrentPPO``) on our tasks: the outside LSTM baseline.

A config with ``learner: sb3_recurrent_ppo`` has the same ``env``, ``ppo`` and ``run`` sections as a PPO
config; only ``policy`` (``MlpLstmPolicy`` or ``CnnLstmPolicy``) and ``policy_kwargs`` (e.g.
``lstm_hidden_size``) differ. Its run directory is ours (config.yaml, metrics.jsonl with our keys,
checkpoints/latest.pt) and its W&B run sits in the same group (the env id), tagged "lstm" and "sb3".

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

- a Gymnasium id: ``make_vec_env(id, num_envs, env_kwargs=options)``; env i is seeded with seed + i as
  ours. vectorization_mode must be "sync".
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
"""

from __future__ import annotations

import io
import signal
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
from ale_py.registration import rom_id_to_name
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from fwp_rl.agents.ppo import PPOHyperparameters, resolve_device
from fwp_rl.config import ConfigError, RunConfig, dump_yaml, to_dict
from fwp_rl.envs.vector import VectorEnvConfig
from fwp_rl.runs import CheckpointError, MetricsLog, load_checkpoint, save_checkpoint, start_wandb, unique_run_dir

gym.register_envs(ale_py)

LEARNER = "sb3_recurrent_ppo"


# ---------------------------------------------------------------------------------------------- config
@dataclass
class SB3Config:
    """A run of sb3-contrib's RecurrentPPO: ``fwp-rl train`` on a file with ``learner: sb3_recurrent_ppo``.

    policy: SB3's policy name; policy_kwargs: its keyword arguments (lstm_hidden_size, n_lstm_layers,
    shared_lstm, enable_critic_lstm, net_arch, ...). env, ppo, run: as in a PPO config (module docstring).
    """

    learner: typing.Literal["sb3_recurrent_ppo"] = LEARNER
    name: str = LEARNER
    seed: int = 0
    env: VectorEnvConfig = field(default_factory=VectorEnvConfig)
    policy: typing.Literal["MlpLstmPolicy", "CnnLstmPolicy"] = "CnnLstmPolicy"
    policy_kwargs: dict = field(default_factory=dict)
    ppo: PPOHyperparameters = field(default_factory=PPOHyperparameters)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, prefix: str) -> None:
        if self.ppo.sequence_length is not None:
            raise ConfigError(f"ppo.sequence_length={self.ppo.sequence_length} is not allowed for {LEARNER}: "
                              "RecurrentPPO cuts its own sequences (at episode starts and minibatch edges); "
                              "it must be null")
        if self.steps_per_update % self.ppo.num_minibatches:
            raise ConfigError(f"ppo.num_minibatches={self.ppo.num_minibatches} is not allowed: it must divide the "
                              f"{self.steps_per_update} steps of a rollout (env.num_envs x ppo.num_steps)")
        if self.env.atari:
            _check_atari(self.env)
        elif self.env.options.get("vectorization_mode", "sync") != "sync":
            raise ConfigError(f"env.options.vectorization_mode={self.env.options['vectorization_mode']!r} is not "
                              f"allowed for {LEARNER}: its envs run in SB3's DummyVecEnv; choose 'sync'")

    @property
    def steps_per_update(self) -> int:
        return self.env.num_envs * self.ppo.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.ppo.total_steps // self.steps_per_update)


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
def make_env(config: SB3Config) -> VecEnv:
    """The SB3 vector env of a config (module docstring); env i is seeded with config.seed + i."""
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
        return make_vec_env(env.id, n_envs=env.num_envs, seed=config.seed, env_kwargs=options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env.options={env.options!r} do not fit {env.id!r}: {e}") from None


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
        return RecurrentPPO(env=env, **model_arguments(config))
    except (AssertionError, TypeError, ValueError) as e:  # SB3 checks spaces with assert
        first_line = str(e).splitlines()[0]
        raise ConfigError(f"policy={config.policy!r} with policy_kwargs={config.policy_kwargs!r} does not fit "
                          f"env.id={config.env.id!r}: {first_line}") from None


def load_model(checkpoint: str | Path, device: str = "cpu") -> RecurrentPPO:
    """The RecurrentPPO of a checkpoint file or run directory written by ``train`` (without an env)."""
    payload = load_checkpoint(checkpoint)
    if payload.get("learner") != LEARNER:
        raise CheckpointError(f"{str(checkpoint)!r} holds a {payload.get('learner')!r} run, not a {LEARNER} run")
    return RecurrentPPO.load(io.BytesIO(payload["sb3_zip"]), device=device)


# ---------------------------------------------------------------------------------------------- runs
class UpdateCallback(BaseCallback):
    """Cuts RecurrentPPO's loop into our updates (a rollout and its learning phase).

    SB3 calls on_rollout_end before it learns, so an update is reported at the start of the next rollout
    (or at the end of training): ``on_update(figures)`` with the learning phase's losses, the timings and
    the episodes that ended in the rollout. Once ``stop["requested"]``, the next rollout ends at its first
    step: its one env step is not counted in any report or checkpoint.
    """

    def __init__(self, on_update: Callable[[dict], None], stop: dict):
        super().__init__()
        self.on_update, self.stop = on_update, stop
        self._rollout_start = self._learn_start = None
        self._stopping = False
        self._episodes: list[tuple[float, int]] = []
        self._lengths = np.zeros(0, dtype=np.int64)  # agent steps of each env's episode so far

    def _on_training_start(self) -> None:
        self._lengths = np.zeros(self.training_env.num_envs, dtype=np.int64)

    def _on_rollout_start(self) -> None:
        if self._learn_start is not None:
            self._report()
        self._stopping = self.stop["requested"]
        self._rollout_start = time.perf_counter()

    def _on_step(self) -> bool:
        self._lengths += 1
        for i, info in enumerate(self.locals["infos"]):
            episode = info.get("episode")
            if episode is not None:
                self._episodes.append((float(episode["r"]), int(self._lengths[i])))
                self._lengths[i] = 0
        return not self._stopping

    def _on_rollout_end(self) -> None:
        self._learn_start = time.perf_counter()

    def _on_training_end(self) -> None:
        if self._learn_start is not None:
            self._report()

    def _report(self) -> None:
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
        self.on_update(figures)


def checkpoint_payload(config: SB3Config, model: RecurrentPPO, update: int, wandb_id: str | None) -> dict:
    zipped = io.BytesIO()
    model.save(zipped)
    return {"learner": LEARNER, "config": to_dict(config), "wandb_id": wandb_id, "update": update,
            "global_step": model.num_timesteps, "sb3_zip": zipped.getvalue()}


def train(config: SB3Config, console: Console | None = None) -> Path:
    """A whole run: runs/<name>/ with config.yaml, metrics.jsonl (one line per update), checkpoints/latest.pt
    (every ``run.checkpoint_every`` updates, at the end, and when Ctrl-C stops the run after the update
    under way), W&B; a live progress line."""
    console = console or Console()
    # Everything the user can get wrong fails here, before anything is written.
    env = make_env(config)
    try:
        model = make_model(config, env)
    except ConfigError:
        env.close()
        raise
    run_dir = unique_run_dir(config.run.root, config.name)
    dump_yaml(config, run_dir / "config.yaml")
    wandb_run = start_wandb(config.run.wandb, config.run.project, run_dir, run_dir.name, config.env.id,
                            ["lstm", "sb3"], to_dict(config))
    wandb_id = None if wandb_run is None else wandb_run.id
    metrics = MetricsLog(run_dir / "metrics.jsonl", wandb_run)
    latest = run_dir / "checkpoints" / "latest.pt"
    stop = {"requested": False}
    done = {"update": 0}
    recent: list[float] = []

    def request_stop(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        console.print("[yellow]stopping after this update (Ctrl-C again to stop at once)[/yellow]")

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f} steps"),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn()]
    total = config.num_updates * config.steps_per_update
    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(config.name, total=total, completed=0, status="")

            def on_update(figures: dict) -> None:
                done["update"] += 1
                update = done["update"]
                metrics.log(model.num_timesteps, update=update, **figures)
                if "episodic_return" in figures:
                    recent[:] = (recent + [figures["episodic_return"]])[-10:]
                status = f"{figures['steps_per_second']:,.0f} steps/s"
                if recent:
                    status += f"  return {np.mean(recent):.4g}"
                progress.update(task, completed=model.num_timesteps, status=status)
                if (update % config.run.checkpoint_every == 0 or update == config.num_updates
                        or stop["requested"]):
                    save_checkpoint(latest, checkpoint_payload(config, model, update, wandb_id))

            model.learn(total, callback=UpdateCallback(on_update, stop), log_interval=None)
    finally:
        signal.signal(signal.SIGINT, previous)
        metrics.close()
        env.close()
    console.print(f"run directory: {run_dir}")
    console.print(f"{done['update'] * config.steps_per_update:,} steps in {done['update']} updates"
                  + (f"; mean return of the last episodes {np.mean(recent):.4g}" if recent else ""))
    return run_dir


__all__ = ["AnnealedLearningRate", "SB3Config", "UpdateCallback", "atari_env_id", "load_model", "make_env",
           "make_model", "model_arguments", "train"]
