"""Observation normalization by running statistics, inside the policy (``policy.normalize_observations``).

What Stable-Baselines3's ``VecNormalize`` and Gymnasium's ``NormalizeObservation`` do to observations, kept in the
policy instead of an env wrapper, so that its statistics are buffers of the policy's state dict: checkpoints,
best.pt, resume, the evaluations during training and ``fwp-rl evaluate`` all use the statistics the policy was
trained with, with no wrapper state to save beside it.

An observation becomes clip((obs - mean) / sqrt(var + 1e-8), -10, 10) per entry (SB3's epsilon and clip range).
The statistics start at mean 0, variance 1 and a count of 1e-4 (SB3's ``RunningMeanStd``), so before any update
the map is the identity up to the clip. ``update`` merges a batch of observations into them (Chan et al.'s parallel
formula, in float64). The PPO learner calls it with each rollout's observations after that rollout's learning
phase, so the statistics a rollout acted with are the ones its update trains with (the log-probabilities match),
and they change only between updates. Trained by several processes (``fwp_rl.distributed``), each merges the
statistics of all their rollouts' observations, summed over the processes, so all keep the same statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

EPSILON = 1e-8
CLIP = 10.0
INITIAL_COUNT = 1e-4


class ObservationNormalizer(nn.Module):
    """Running mean and variance of observations of ``shape``; ``forward`` normalizes, ``update`` learns."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(INITIAL_COUNT, dtype=torch.float64))

    def _apply(self, fn, recurse=True):
        # The statistics stay float64 whatever dtype the policy is cast to: counts reach millions of steps.
        mean, var, count = self.mean, self.var, self.count
        super()._apply(fn, recurse)
        self.mean, self.var, self.count = (fn(t).to(torch.float64) for t in (mean, var, count))
        return self

    def forward(self, obs: Tensor) -> Tensor:
        """obs [..., *shape] (floating) -> normalized [..., *shape], in obs's dtype."""
        scaled = (obs - self.mean.to(obs.dtype)) / torch.sqrt(self.var + EPSILON).to(obs.dtype)
        return scaled.clamp(-CLIP, CLIP)

    @torch.no_grad()
    def update(self, obs: Tensor, sum_over_ranks: Callable[[Tensor], Tensor] | None = None) -> None:
        """Merge obs [..., *shape] into the statistics (every leading entry one observation). ``sum_over_ranks``
        (``fwp_rl.distributed.Ranks.sum``) makes the batch the observations of every process, each giving its own."""
        summed = sum_over_ranks or (lambda t: t)
        batch = obs.reshape(-1, *self.shape).to(self.mean.device, torch.float64)
        n = summed(batch.new_tensor(batch.shape[0]))
        batch_mean = summed(batch.sum(0)) / n
        batch_var = summed((batch - batch_mean).square().sum(0)) / n
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


__all__ = ["ObservationNormalizer"]
