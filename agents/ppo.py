"""Recurrent PPO: the fast-weight (or LSTM) policy trained on whole env sequences.

One update, top to bottom:

1. Rollout: ``num_steps`` steps of ``num_envs`` environments, one batched policy call per step (on the
   GPU when there is one). The memory state at the start of every training sequence is kept.
2. Advantages: GAE over the rollout; a finished episode cuts the bootstrap. A truncated episode is
   treated as finished (no bootstrap from its final observation), as in CleanRL.
3. Learning: ``update_epochs`` passes over minibatches of whole sequences (``sequence_length`` steps of
   one env each, default the whole rollout), each started from the state the rollout had there. Episode
   starts inside a sequence reset the memory exactly where they happened and gradients flow through the
   fast weights over the whole sequence (chunkwise cores use their parallel form).

``train`` runs this loop in a ``fwp_rl.harness.Run``: progress display, runs/<name>/ with config, metrics and
checkpoints, Weights & Biases, Ctrl-C that saves, ``--resume``, and with ``run.eval_every`` evaluations of the policy
in an env of their own (``Trainer.play``) and the best one's checkpoint kept as checkpoints/best.pt.
"""

from __future__ import annotations

import contextlib
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import Tensor, nn

from fwp_rl.config import ConfigError, PolicyConfig, RunConfig, check_run_name, check_seed, parse_device
from fwp_rl.cores import State
from fwp_rl.envs.vector import Episode, VectorEnvConfig, make_vector_env
from fwp_rl.evaluate import policy_episodes
from fwp_rl.harness import Run, Trained
from fwp_rl.policy import RecurrentPolicy
from fwp_rl.runs import CheckpointError, NonFiniteError, first_nonfinite


# ---------------------------------------------------------------------------------------------- config
@dataclass
class PPOHyperparameters:
    """The common recurrent-PPO Atari settings by default (CleanRL's ppo_atari_lstm).

    total_steps: agent steps summed over envs. num_steps: rollout length per env. sequence_length: the
    training sequences' length (None: the whole rollout); it must divide num_steps. num_minibatches: the
    sequences of one epoch are split into this many minibatches. device: "auto" takes CUDA when present.
    nonfinite: what a minibatch whose loss or gradient norm is nan or inf does: "stop" the run with an error
    naming the update (the last checkpoint is kept), or "skip" its optimizer step (counted in the metrics as
    skipped_minibatches). A parameter that is not finite after an update always stops the run.
    """

    total_steps: int = 10_000_000
    num_steps: int = 128
    sequence_length: int | None = None
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 4
    num_minibatches: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.1
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    device: str = "auto"
    nonfinite: typing.Literal["stop", "skip"] = "stop"

    def validate(self, prefix: str) -> None:
        for key in ("total_steps", "num_steps", "update_epochs", "num_minibatches"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}={getattr(self, key)} is not allowed: it must be >= 1")
        for key in ("learning_rate", "clip_coef", "max_grad_norm"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{prefix}.{key}={getattr(self, key)} is not allowed: it must be > 0")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ConfigError(f"{prefix}.target_kl={self.target_kl} is not allowed: it must be > 0 (or null for no "
                              "early stop)")
        for key in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{prefix}.{key}={getattr(self, key)} is not allowed: it must be in [0, 1]")
        length = self.sequence_length
        if length is not None and (length < 1 or self.num_steps % length):
            raise ConfigError(f"{prefix}.sequence_length={length} is not allowed: it must divide "
                              f"num_steps={self.num_steps} (or be null for whole rollouts)")
        parse_device(f"{prefix}.device={self.device!r}", self.device, auto=True, here=False)  # checked where it runs


class RolloutCounts:
    """The env steps of one update and the number of updates of a config with ``env`` and ``ppo`` (ours and
    the SB3 baseline's)."""

    @property
    def steps_per_update(self) -> int:
        return self.env.num_envs * self.ppo.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.ppo.total_steps // self.steps_per_update)


@dataclass
class PPOConfig(RolloutCounts):
    """A PPO run: ``fwp-rl train`` on a file with ``learner: ppo``."""

    learner: typing.Literal["ppo"] = "ppo"
    name: str = "ppo"
    seed: int = 0
    env: VectorEnvConfig = field(default_factory=VectorEnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOHyperparameters = field(default_factory=PPOHyperparameters)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, prefix: str) -> None:
        check_seed(self.seed)
        check_run_name(self.name)
        batch_size = self.env.options.get("batch_size") if self.env.atari else None
        if batch_size is not None and batch_size != self.env.num_envs:
            raise ConfigError(f"env.options.batch_size={batch_size} is not allowed for PPO: its rollouts step all "
                              f"env.num_envs={self.env.num_envs} games together (null, or equal to num_envs)")
        sequences = self.env.num_envs * (self.ppo.num_steps // (self.ppo.sequence_length or self.ppo.num_steps))
        if sequences % self.ppo.num_minibatches:
            raise ConfigError(f"ppo.num_minibatches={self.ppo.num_minibatches} is not allowed: it must divide the "
                              f"{sequences} training sequences of a rollout (env.num_envs x num_steps / "
                              "sequence_length)")


def resolve_device(name: str) -> torch.device:
    return parse_device(f"ppo.device={name!r}", name, auto=True)


def make_policy(config: PPOConfig, observation_space, action_space, device: torch.device) -> RecurrentPolicy:
    p = config.policy
    try:
        policy = RecurrentPolicy(observation_space, action_space, torso=p.torso, torso_options=p.torso_options,
                                 core=p.core, core_options=p.core_options, action_squash=p.action_squash,
                                 normalize_observations=p.normalize_observations, core_output=p.core_output)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"policy: {e}") from None
    return policy.to(device=device, dtype=getattr(torch, p.dtype))


# ---------------------------------------------------------------------------------------------- the algorithm
@dataclass
class Rollout:
    """One rollout, time-major: obs [T, N, *obs], actions [T, N, *act], log_probs, values, rewards [T, N],
    starts [T, N] bool (episode_start of each step), sequence_states (the state at every sequence start,
    each tensor [T / L, N, ...]), and the bootstrap: next_value [N], next_start [N]."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    rewards: Tensor
    starts: Tensor
    sequence_states: State
    next_value: Tensor
    next_start: Tensor


def compute_gae(rewards: Tensor, values: Tensor, starts: Tensor, next_value: Tensor, next_start: Tensor,
                gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation. rewards, values, starts [T, N]; next_value, next_start [N]
    -> (advantages, returns) [T, N]. starts[t + 1] (or next_start) means step t ended its episode."""
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        ended = next_start if t == T - 1 else starts[t + 1]
        following = next_value if t == T - 1 else values[t + 1]
        alive = 1.0 - ended.to(rewards.dtype)
        delta = rewards[t] + gamma * following * alive - values[t]
        last = delta + gamma * lam * alive * last
        advantages[t] = last
    return advantages, advantages + values


def _split_sequences(x: Tensor, length: int) -> Tensor:
    """[T, N, ...] -> [L, (T / L) * N, ...]: sequence j * N + n is env n's j-th stretch of L steps."""
    T, N = x.shape[:2]
    return x.reshape(T // length, length, N, *x.shape[2:]).transpose(0, 1).reshape(length, T // length * N,
                                                                                   *x.shape[2:])


def ppo_update(policy: RecurrentPolicy, optimizer: torch.optim.Optimizer, rollout: Rollout, hp: PPOHyperparameters,
               generator: torch.Generator) -> dict[str, float]:
    """``update_epochs`` passes of clipped PPO over the rollout's sequences; returns the losses' means (over the
    minibatches that stepped). A minibatch whose loss or gradient norm is not finite raises NonFiniteError, or with
    ``hp.nonfinite == "skip"`` makes no step and is counted in ``skipped_minibatches``."""
    advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.starts, rollout.next_value,
                                      rollout.next_start, hp.gamma, hp.gae_lambda)
    T = rollout.obs.shape[0]
    length = hp.sequence_length or T
    seq = {k: _split_sequences(v, length) for k, v in dict(
        obs=rollout.obs, actions=rollout.actions, log_probs=rollout.log_probs, values=rollout.values,
        starts=rollout.starts, advantages=advantages, returns=returns).items()}
    states = tuple(s.reshape(-1, *s.shape[2:]) for s in rollout.sequence_states)  # [(T / L) * N, ...]
    num_sequences = seq["obs"].shape[1]
    per_batch = num_sequences // hp.num_minibatches
    # Figures stay tensors until the end: reading each on the host would synchronise a GPU every minibatch.
    stats: dict[str, list[Tensor]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
    skipped = 0
    for _ in range(hp.update_epochs):
        order = torch.randperm(num_sequences, generator=generator).to(rollout.obs.device)
        for start in range(0, num_sequences, per_batch):
            idx = order[start:start + per_batch]
            mb = {k: v[:, idx] for k, v in seq.items()}
            log_probs, entropy, values = policy.evaluate(mb["obs"], mb["actions"], tuple(s[idx] for s in states),
                                                         mb["starts"])
            log_ratio = log_probs - mb["log_probs"]
            ratio = log_ratio.exp()
            with torch.no_grad():
                stats["approx_kl"].append(((ratio - 1) - log_ratio).mean())
                stats["clipfrac"].append(((ratio - 1).abs() > hp.clip_coef).to(ratio.dtype).mean())
            adv = mb["advantages"]
            if hp.norm_adv:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - hp.clip_coef, 1 + hp.clip_coef)).mean()
            if hp.clip_vloss:
                clipped = mb["values"] + (values - mb["values"]).clamp(-hp.clip_coef, hp.clip_coef)
                value_loss = 0.5 * torch.max((values - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2).mean()
            else:
                value_loss = 0.5 * ((values - mb["returns"]) ** 2).mean()
            entropy_mean = entropy.mean()
            loss = policy_loss - hp.ent_coef * entropy_mean + hp.vf_coef * value_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(policy.parameters(), hp.max_grad_norm)
            # The one host synchronisation of a minibatch: a step with a nan in it would spoil every parameter.
            if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
                if hp.nonfinite == "stop":
                    raise NonFiniteError(f"the loss or its gradient is not finite (policy_loss "
                                         f"{policy_loss.item():.4g}, value_loss {value_loss.item():.4g}, entropy "
                                         f"{entropy_mean.item():.4g}, gradient norm {grad_norm.item():.4g})")
                skipped += 1
                continue
            try:
                optimizer.step()
            except RuntimeError as e:  # Adam's step size itself overflows the parameters' dtype
                if "overflow" not in str(e):
                    raise
                raise NonFiniteError(f"the optimizer's step overflows: {e}") from None
            stats["policy_loss"].append(policy_loss.detach())
            stats["value_loss"].append(value_loss.detach())
            stats["entropy"].append(entropy_mean.detach())
        epoch_kl = torch.stack(stats["approx_kl"][-hp.num_minibatches:]).mean()
        if hp.target_kl is not None and float(epoch_kl) > hp.target_kl:
            break
    out = {k: float(torch.stack(v).mean()) if v else math.nan for k, v in stats.items()}
    out["skipped_minibatches"] = skipped
    variance = float(returns.var())
    unexplained = float((returns - rollout.values).var())
    out["explained_variance"] = float("nan") if variance == 0 else 1 - unexplained / variance
    return out


def check_parameters(module: nn.Module) -> None:
    """NonFiniteError naming the first parameter of ``module`` with a nan or an infinity in it."""
    name = first_nonfinite(module.named_parameters())
    if name is not None:
        raise NonFiniteError(f"parameter {name} is not finite")


class Trainer:
    """The PPO loop of one run: env, policy, optimizer, and what carries over from one rollout to the next.

    ``update()`` does one rollout and one learning phase and returns its figures; ``play`` plays episodes of the
    policy for an evaluation; ``state_dict`` and ``load_state_dict`` are what a checkpoint holds (the env is rebuilt on
    resume: its episodes restart).
    """

    def __init__(self, config: PPOConfig):
        self.config = config
        self.device = resolve_device(config.ppo.device)
        torch.manual_seed(config.seed)
        self.env = make_vector_env(config.env, seed=config.seed)
        try:
            self.policy = make_policy(config, self.env.single_observation_space, self.env.single_action_space,
                                      self.device)
        except ConfigError:
            self.env.close()  # async Gymnasium envs run in subprocesses
            raise
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.ppo.learning_rate, eps=1e-5)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.update_index = 0
        self.global_step = 0
        self._reset_env(config.seed)

    def _reset_env(self, seed: int) -> None:
        n = self.env.num_envs
        self.obs = self._tensor(self.env.reset(seed=seed))
        self.state = self.policy.initial_state(n)
        self.episode_start = torch.ones(n, dtype=torch.bool, device=self.device)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.as_tensor(array, device=self.device)

    def collect(self) -> tuple[Rollout, list[tuple[float, int]], dict[str, float]]:
        """One rollout; also the (raw return, length) of every episode that ended, and the seconds spent
        in env stepping and in policy inference."""
        hp, policy = self.config.ppo, self.policy
        T, N = hp.num_steps, self.env.num_envs
        length = hp.sequence_length or T
        obs, actions, log_probs, values, rewards, starts = [], [], [], [], [], []
        sequence_states: list[State] = []
        episodes: list[tuple[float, int]] = []
        env_seconds = infer_seconds = 0.0
        with torch.no_grad():
            for t in range(T):
                tick = time.perf_counter()
                if t % length == 0:
                    sequence_states.append(tuple(s.clone() for s in self.state))
                action, self.state, value, log_prob = policy.act(self.obs, self.state, self.episode_start)
                env_action = policy.env_actions(action).cpu().numpy()
                tock = time.perf_counter()
                obs.append(self.obs), actions.append(action), log_probs.append(log_prob), values.append(value)
                starts.append(self.episode_start)
                next_obs, reward, done, finished = self.env.step(env_action)
                episodes.extend(finished)
                rewards.append(self._tensor(reward).to(values[0].dtype))
                self.obs = self._tensor(next_obs)
                self.episode_start = self._tensor(done)
                done_at = time.perf_counter()
                infer_seconds += tock - tick
                env_seconds += done_at - tock
            tick = time.perf_counter()
            _, next_value, _ = policy(self.obs, self.state, self.episode_start)
            infer_seconds += time.perf_counter() - tick
        self.global_step += T * N
        rollout = Rollout(torch.stack(obs), torch.stack(actions), torch.stack(log_probs), torch.stack(values),
                          torch.stack(rewards), torch.stack(starts),
                          tuple(torch.stack(parts) for parts in zip(*sequence_states)), next_value,
                          self.episode_start)
        return rollout, episodes, {"env_seconds": env_seconds, "inference_seconds": infer_seconds}

    def update(self) -> dict[str, float]:
        """One rollout and one learning phase; the figures for the metrics file."""
        hp = self.config.ppo
        if hp.anneal_lr:
            frac = 1.0 - self.update_index / self.config.num_updates
            for group in self.optimizer.param_groups:
                group["lr"] = frac * hp.learning_rate
        start = time.perf_counter()
        rollout, episodes, timing = self.collect()
        learn_start = time.perf_counter()
        try:
            figures = ppo_update(self.policy, self.optimizer, rollout, hp, self.generator)
            check_parameters(self.policy)
            self.policy.update_observation_statistics(rollout.obs)  # after the update: fwp_rl.normalization
        except NonFiniteError as e:
            raise NonFiniteError(f"update {self.update_index + 1} of {self.config.num_updates}: {e}. No checkpoint "
                                 "holds it. Lower ppo.learning_rate, or set ppo.nonfinite=skip to skip such "
                                 "minibatches") from None
        end = time.perf_counter()
        self.update_index += 1
        figures.update(timing, learn_seconds=end - learn_start, seconds=end - start,
                       steps_per_second=self.config.steps_per_update / (end - start),
                       learning_rate=self.optimizer.param_groups[0]["lr"])
        if episodes:
            returns, lengths = zip(*episodes)
            figures.update(episodic_return=float(np.mean(returns)), episodic_length=float(np.mean(lengths)),
                           episodes=len(episodes))
        return figures

    def play(self, seed: int, episodes: int, deterministic: bool, record: bool = False) -> tuple[list[Episode], dict]:
        """``episodes`` whole episodes of the policy as trained, in one env of the run's env id made for them and
        seeded with ``seed`` (``fwp_rl.evaluate.policy_episodes``: as ``fwp-rl evaluate`` replays a checkpoint), and
        with ``record`` the first one's recording."""
        env = self.config.env
        return policy_episodes(self.policy, env.id, env.options, episodes, deterministic, seed, record)

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "update": self.update_index, "global_step": self.global_step,
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, payload: dict) -> None:
        try:
            self.policy.load_state_dict(payload["policy"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first_line = str(e).splitlines()[0]
            raise CheckpointError(f"the checkpoint does not fit this config's policy: {first_line}") from None
        self.update_index, self.global_step = int(payload["update"]), int(payload["global_step"])
        self.generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        # The env cannot be saved: it restarts from a seed that differs from the first start's.
        self._reset_env(self.config.seed + self.update_index)

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------- runs
class UpdateDisplay:
    """What a PPO run (ours or SB3's) shows of its updates: steps per second and the mean return of the last 10
    updates that ended episodes on the progress line, and a closing line."""

    def __init__(self):
        self.returns: list[float] = []

    def status(self, figures: dict) -> str:
        """The progress line's status after an update with these figures."""
        if "episodic_return" in figures:
            self.returns = (self.returns + [figures["episodic_return"]])[-10:]
        return f"{figures['steps_per_second']:,.0f} steps/s" + (
            f"  return {np.mean(self.returns):.4g}" if self.returns else "")

    def closing(self, steps: int, updates: int) -> str:
        return f"{steps:,} steps in {updates} updates" + (
            f"; mean return of the last episodes {np.mean(self.returns):.4g}" if self.returns else "")


def train(config: PPOConfig, resume: str | Path | None = None, console: Console | None = None) -> Trained:
    """A whole run (or the rest of one, with ``resume`` = its run directory) in ``fwp_rl.harness.Run``: a metrics
    record per update, an evaluation every ``run.eval_every`` updates and at the end, a checkpoint every
    ``run.checkpoint_every`` updates, at a best evaluation and at the end (or after the update under way when Ctrl-C
    stops the run)."""
    run = Run(config, resume, console)
    # Everything the user can get wrong fails here, before anything is written.
    with contextlib.closing(Trainer(config)) as trainer:
        if run.saved is not None:
            trainer.load_state_dict(run.saved)
        display = UpdateDisplay()
        with run.start(total=config.num_updates * config.steps_per_update, iteration="update"):
            while trainer.update_index < config.num_updates and not run.stop_requested:
                figures = trainer.update()
                figures |= run.evaluate(trainer.play, final=trainer.update_index == config.num_updates)
                run.log(trainer.global_step, update=trainer.update_index, **figures)
                run.show(display.status(figures))
                run.checkpoint(trainer.state_dict)
            # Only here, after a whole update: an exception inside one leaves the last checkpoint as it was.
            run.checkpoint(trainer.state_dict, final=True)
    run.summary([display.closing(trainer.global_step, trainer.update_index)])
    return run.result


__all__ = ["PPOConfig", "PPOHyperparameters", "Rollout", "Trainer", "compute_gae", "ppo_update", "train"]
