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

Several processes can train one run together (``ranks``, ``fwp_rl.distributed``): each steps its share of the envs
and learns from its own rollout, and every sum over a minibatch or a rollout is also summed over the processes, so
that each takes the step one process would take on all their rollouts. One process is ``Ranks()``, whose sums over
the processes are the values themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from fwp_rl.distributed import Ranks
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
                                 normalize_observations=p.normalize_observations, core_output=p.core_output,
                                 torso_autocast=p.torso_autocast)
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


def _own_sequences(sequences: Tensor, envs: int, ranks: Ranks) -> Tensor:
    """Of ``sequences``, indices into the sequences of all the ranks' rollouts as one process would hold them
    (``_split_sequences`` of their envs side by side, rank r's ``envs`` envs from env r * envs on), those of this
    rank's envs, as indices into its own rollout's sequences, in the same order."""
    stretch, env = sequences // (envs * ranks.world), sequences % (envs * ranks.world)
    own = env // envs == ranks.rank
    return stretch[own] * envs + env[own] - ranks.rank * envs


def _mean_and_variance(x: Tensor, count: int, ranks: Ranks) -> tuple[Tensor, Tensor]:
    """The mean and the (unbiased) variance of the ``count`` entries of ``x`` at all ranks together."""
    mean = ranks.sum(x.sum()) / count
    return mean, ranks.sum((x - mean).square().sum()) / (count - 1)


def ppo_update(policy: RecurrentPolicy, optimizer: torch.optim.Optimizer, rollout: Rollout, hp: PPOHyperparameters,
               generator: torch.Generator, ranks: Ranks = Ranks()) -> dict[str, float]:
    """``update_epochs`` passes of clipped PPO over the rollout's sequences; returns the losses' means (over the
    minibatches that stepped). A minibatch whose loss or gradient norm is not finite raises NonFiniteError, or with
    ``hp.nonfinite == "skip"`` makes no step and is counted in ``skipped_minibatches``.

    With several ranks each holds the rollout of its envs; the minibatches are those of one process holding all the
    rollouts (drawn by ``generator``, the same at every rank), each rank computes its sequences' part of every mean
    and of the loss, and the gradients are summed over the ranks before the step (module docstring)."""
    advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.starts, rollout.next_value,
                                      rollout.next_start, hp.gamma, hp.gae_lambda)
    T, envs = rollout.obs.shape[:2]
    length = hp.sequence_length or T
    seq = {k: _split_sequences(v, length) for k, v in dict(
        obs=rollout.obs, actions=rollout.actions, log_probs=rollout.log_probs, values=rollout.values,
        starts=rollout.starts, advantages=advantages, returns=returns).items()}
    states = tuple(s.reshape(-1, *s.shape[2:]) for s in rollout.sequence_states)  # [(T / L) * N, ...]
    num_sequences = seq["obs"].shape[1] * ranks.world
    per_batch = num_sequences // hp.num_minibatches
    entries = per_batch * length  # of a minibatch, at all ranks together
    # Figures stay tensors until the end: reading each on the host would synchronise a GPU every minibatch.
    stats: dict[str, list[Tensor]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
    skipped = 0
    for _ in range(hp.update_epochs):
        order = torch.randperm(num_sequences, generator=generator)
        for start in range(0, num_sequences, per_batch):
            idx = _own_sequences(order[start:start + per_batch], envs, ranks)
            held = len(idx)  # a rank may hold none of a minibatch's sequences: it adds zeros
            idx = idx.to(rollout.obs.device)
            mb = {k: v[:, idx] for k, v in seq.items()}
            adv = mb["advantages"]
            if hp.norm_adv:
                mean, variance = _mean_and_variance(adv, entries, ranks)
                adv = (adv - mean) / (variance.sqrt() + 1e-8)
            optimizer.zero_grad(set_to_none=True)
            # this rank's parts of the minibatch's loss and means: loss, policy loss, value loss, entropy, approx_kl,
            # clipfrac (its sequences' sums over the minibatch's size at all ranks)
            parts = adv.new_zeros(6)
            if held:
                state0 = tuple(s[idx] for s in states)
                log_probs, entropy, values = policy.evaluate(mb["obs"], mb["actions"], state0, mb["starts"])
                log_ratio = log_probs - mb["log_probs"]
                ratio = log_ratio.exp()
                surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(1 - hp.clip_coef, 1 + hp.clip_coef))
                if hp.clip_vloss:
                    clipped = mb["values"] + (values - mb["values"]).clamp(-hp.clip_coef, hp.clip_coef)
                    errors = torch.max((values - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2)
                else:
                    errors = (values - mb["returns"]) ** 2
                policy_loss = surrogate.sum() / entries
                value_loss = 0.5 * errors.sum() / entries
                entropy_mean = entropy.sum() / entries
                loss = policy_loss - hp.ent_coef * entropy_mean + hp.vf_coef * value_loss
                loss.backward()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).sum() / entries
                    clipfrac = ((ratio - 1).abs() > hp.clip_coef).to(ratio.dtype).sum() / entries
                    parts = torch.stack([loss, policy_loss, value_loss, entropy_mean, approx_kl, clipfrac])
            loss, policy_loss, value_loss, entropy_mean, approx_kl, clipfrac = ranks.sum(parts)
            stats["approx_kl"].append(approx_kl)
            stats["clipfrac"].append(clipfrac)
            ranks.sum_gradients(policy.parameters())
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
            stats["policy_loss"].append(policy_loss)
            stats["value_loss"].append(value_loss)
            stats["entropy"].append(entropy_mean)
        epoch_kl = torch.stack(stats["approx_kl"][-hp.num_minibatches:]).mean()
        if hp.target_kl is not None and float(epoch_kl) > hp.target_kl:
            break
    out = {k: float(torch.stack(v).mean()) if v else math.nan for k, v in stats.items()}
    out["skipped_minibatches"] = skipped
    count = returns.numel() * ranks.world
    variance = float(_mean_and_variance(returns, count, ranks)[1])
    unexplained = float(_mean_and_variance(returns - rollout.values, count, ranks)[1])
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

    With ``ranks`` (several processes, ``fwp_rl.distributed``) it is one rank's part of the run: env.num_envs / ranks
    envs, from env ``first_env`` of the run on, seeded as one process seeds them; rank 0's parameters; and torch's
    generator, which samples the actions, rank 0's as one process seeds it, every other rank's seeded apart
    (``_seed_actions``).
    """

    def __init__(self, config: PPOConfig, ranks: Ranks = Ranks()):
        self.config, self.ranks = config, ranks
        self.device = ranks.place(resolve_device(config.ppo.device))
        torch.manual_seed(config.seed)
        # This rank's share of the envs (all of them for one process); PPO takes env.options.batch_size only null or
        # num_envs, both synchronous, and so is the share without it.
        options = {k: v for k, v in config.env.options.items() if k != "batch_size"}
        envs = dataclasses.replace(config.env, num_envs=config.env.num_envs // ranks.world, options=options)
        self.first_env = ranks.rank * envs.num_envs
        self.env = make_vector_env(envs, seed=config.seed + self.first_env)
        try:
            self.policy = make_policy(config, self.env.single_observation_space, self.env.single_action_space,
                                      self.device)
        except ConfigError:
            self.env.close()  # async Gymnasium envs run in subprocesses
            raise
        ranks.broadcast_module(self.policy)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.ppo.learning_rate, eps=1e-5, fused=True)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.update_index = 0
        self.global_step = 0
        self._seed_actions()
        self._reset_env(config.seed)

    def _seed_actions(self) -> None:
        """At a rank other than 0, seed torch's generator, which samples the actions, by the run's seed, the rank and
        the update it starts at: apart from rank 0's (one process's) and from every other rank's."""
        if self.ranks.rank:
            key = np.random.SeedSequence([self.config.seed, self.ranks.rank, self.update_index])
            torch.manual_seed(int(key.generate_state(1)[0]))

    def _reset_env(self, seed: int) -> None:
        """Start the envs afresh, env i of the run seeded with ``seed`` + i."""
        n = self.env.num_envs
        self.obs = self._tensor(self.env.reset(seed=seed + self.first_env))
        self.state = self.policy.initial_state(n)
        self.episode_start = torch.ones(n, dtype=torch.bool, device=self.device)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.as_tensor(array, device=self.device)

    def collect(self) -> tuple[Rollout, list[tuple[float, int]], dict[str, float]]:
        """One rollout; also the (raw return, length) of every episode that ended, and the seconds spent
        in env stepping and in policy inference."""
        hp, policy = self.config.ppo, self.policy
        T = hp.num_steps
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
        self.global_step += self.config.steps_per_update
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
            figures = ppo_update(self.policy, self.optimizer, rollout, hp, self.generator, self.ranks)
            check_parameters(self.policy)
            # after the update: fwp_rl.normalization
            self.policy.update_observation_statistics(rollout.obs, self.ranks.sum)
        except NonFiniteError as e:
            raise NonFiniteError(f"update {self.update_index + 1} of {self.config.num_updates}: {e}. No checkpoint "
                                 "holds it. Lower ppo.learning_rate, or set ppo.nonfinite=skip to skip such "
                                 "minibatches") from None
        end = time.perf_counter()
        self.update_index += 1
        figures.update(timing, learn_seconds=end - learn_start, seconds=end - start,
                       steps_per_second=self.config.steps_per_update / (end - start),
                       learning_rate=self.optimizer.param_groups[0]["lr"])
        # the episodes that ended at every rank: their returns and lengths summed, and their number
        returns, lengths, count = self.ranks.sum(torch.tensor(
            [sum(r for r, _ in episodes), sum(n for _, n in episodes), len(episodes)], dtype=torch.float64))
        if count:
            figures.update(episodic_return=float(returns / count), episodic_length=float(lengths / count),
                           episodes=int(count))
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
        self._seed_actions()
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


def train(config: PPOConfig, resume: str | Path | None = None, console: Console | None = None,
          ranks: Ranks = Ranks()) -> Trained:
    """A whole run (or the rest of one, with ``resume`` = its run directory) in ``fwp_rl.harness.Run``: a metrics
    record per update, an evaluation every ``run.eval_every`` updates and at the end, a checkpoint every
    ``run.checkpoint_every`` updates, at a best evaluation and at the end (or after the update under way when Ctrl-C
    stops the run). With ``ranks``, this process's part of a run that several train together (module docstring)."""
    run = Run(config, resume, console, ranks)
    # Everything the user can get wrong fails here, before anything is written.
    with contextlib.closing(Trainer(config, ranks)) as trainer:
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
