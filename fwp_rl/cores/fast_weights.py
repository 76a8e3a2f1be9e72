"""Fast-weight layers whose keys do not depend on their own past: linear, delta, gated delta.

Each layer owns its projections (one fused Linear for queries, keys, values, learning rates and gates,
and an output projection); the update rules are the tensor functions of ``fwp_rl.ops``. Training
sequences run chunkwise-parallel, rollout steps run the one-step rule; both give the same numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fwp_rl.checks import check_input, check_size, check_starts
from fwp_rl.cores.base import MemoryCore, State, head_size
from fwp_rl.ops import fla_backend
from fwp_rl.ops.delta import delta_rule_chunkwise, delta_rule_error_step, with_errors
from fwp_rl.ops.feature_maps import check_feature_map, feature_dim, feature_map
from fwp_rl.ops.linear import linear_attention_chunkwise, linear_attention_step


class MultiHeadCore(MemoryCore):
    """What every core with fast weight matrices per head has: the sizes of its heads and the feature map phi
    of their keys and queries (``key_dim`` is the size of phi's output)."""

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, head_dim: int | None, feature_map: str,
                 dpfp_nu: int, sum_norm: bool):
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.output_size = check_size("hidden_size", hidden_size)
        self.num_heads = check_size("num_heads", num_heads)
        self.head_dim = head_size(hidden_size, num_heads, head_dim)
        check_feature_map(feature_map, dpfp_nu, sum_norm)
        self.feature_map, self.dpfp_nu, self.sum_norm = feature_map, dpfp_nu, sum_norm
        self.key_dim = feature_dim(feature_map, self.head_dim, dpfp_nu)

    def _phi(self, t: Tensor) -> Tensor:
        return feature_map(t, self.feature_map, self.dpfp_nu, self.sum_norm)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"feature_map={self.feature_map!r}, sum_norm={self.sum_norm}")


def check_beta_max(beta_max) -> float:
    """beta_max as a float: the largest learning rate, in (0, 2] (above 1 the transition has negative eigenvalues)."""
    if isinstance(beta_max, bool) or not isinstance(beta_max, (int, float)) or not 0 < beta_max <= 2:
        raise ValueError(f"beta_max={beta_max!r} is not allowed: it must be in (0, 2]")
    return float(beta_max)


def check_error_gain(error_gain) -> float:
    """error_gain as a float: 0 (no error readout) or a finite positive gain."""
    if (isinstance(error_gain, bool) or not isinstance(error_gain, (int, float)) or not math.isfinite(error_gain)
            or error_gain < 0):
        raise ValueError(f"error_gain={error_gain!r} is not allowed: it must be 0 (off) or a finite positive number")
    return float(error_gain)


class FastWeightLayer(MultiHeadCore):
    """Shared machinery: multi-head projections, feature maps, state of one fast weight matrix per head."""

    uses_beta = False
    uses_gate = False

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, head_dim: int | None, feature_map: str,
                 dpfp_nu: int, sum_norm: bool, readouts: int = 1, beta_from_input: bool = True):
        """readouts: how many vectors of head_dim each head hands the output projection (the delta rule's error
        readout is a second one). beta_from_input: False gives each head one learned constant rate (the logits
        ``beta_logit`` [H]) in place of a rate projected from each step's input."""
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm)
        self.beta_from_input = beta_from_input
        self._split_sizes = self._projection_sizes()
        self.proj = nn.Linear(input_size, sum(self._split_sizes))
        self.out_proj = nn.Linear(readouts * num_heads * self.head_dim, hidden_size)
        if self._constant_beta:
            self.beta_logit = nn.Parameter(torch.zeros(num_heads))

    @property
    def _constant_beta(self) -> bool:
        """Whether the layer's rates are the learned constants ``beta_logit`` rather than projected from the input."""
        return self.uses_beta and not self.beta_from_input

    def _projection_sizes(self) -> list[int]:
        """Sizes of the parts of the fused input projection: q, k, v, then one rate (unless constant) and one gate
        per head."""
        H, d = self.num_heads, self.head_dim
        return [H * d, H * d, H * d] + [H] * (self.uses_beta - self._constant_beta + self.uses_gate)

    def _project(self, x: Tensor) -> list[Tensor]:
        """x [..., input_size] -> phi(q), phi(k) [..., H, dk'], v [..., H, d], then beta / gate logits [..., H]."""
        parts = self.proj(x).split(self._split_sizes, dim=-1)
        q, k, v = (p.unflatten(-1, (self.num_heads, self.head_dim)) for p in parts[:3])
        rates = list(parts[3:])
        if self._constant_beta:
            rates.insert(0, self.beta_logit.expand(*x.shape[:-1], self.num_heads))
        return [self._phi(q), self._phi(k), v, *rates]

    def _output(self, o: Tensor) -> Tensor:
        return self.out_proj(o.flatten(-2))

    def _check_sequence(self, x: Tensor, episode_starts: Tensor | None) -> None:
        check_input(x, "x", 3, self.input_size)
        if episode_starts is not None:
            check_starts(episode_starts, "episode_starts", x.shape[:2])


class LinearCore(FastWeightLayer):
    """1991 outer-product FWP (linear Transformer): W_t = W_{t-1} + v_t (x) phi(k_t), y_t = W_t phi(q_t)."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "elu", dpfp_nu: int = 1, sum_norm: bool = True, normalize: bool = False,
                 chunk_size: int = 64):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm)
        self.chunk_size = check_size("chunk_size", chunk_size)
        if normalize and feature_map not in ("dpfp", "elu", "softmax"):
            raise ValueError(f"normalize=True needs a non-negative feature map, got feature_map={feature_map!r}")
        self.normalize = normalize

    def initial_state(self, batch_size: int, device=None) -> State:
        shape = (batch_size, self.num_heads, self.key_dim, self.head_dim + self.normalize)
        return (torch.zeros(shape, device=device, dtype=self.dtype),)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        q, k, v = self._project(x)
        o, S = linear_attention_step(q, k, v, state[0], self.normalize)
        return self._output(o), (S,)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        self._check_sequence(x, episode_starts)
        q, k, v = self._project(x)
        o, S = linear_attention_chunkwise(q, k, v, state[0], episode_starts, self.normalize,
                                          chunk_size=self.chunk_size)
        return self._output(o), (S,)


class DeltaCore(FastWeightLayer):
    """DeltaNet (2021): W_t = W_{t-1} + beta_t (v_t - W_{t-1} phi(k_t)) (x) phi(k_t), beta_t = beta_max sigmoid(.).

    ``beta_max=2`` allows negative eigenvalues of the transition (Grazzi et al. 2025).

    ``error_gain`` > 0 reads out, beside each head's W_t phi(q_t), its prediction error e_t = v_t - W_{t-1} phi(k_t)
    (the correction the rule writes) times ``error_gain``. Where W_{t-1} phi(k_t) tracks v, e_t is v's change over
    the last step: a rate, which a readout of W_t alone can only form as a difference of two heads' readings.

    ``beta_from_input=False`` gives each head one learned constant rate beta = beta_max sigmoid(b) instead.
    """

    uses_beta = True

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "elu", dpfp_nu: int = 1, sum_norm: bool = True, beta_max: float = 1.0,
                 chunk_size: int = 16, error_gain: float = 0.0, beta_from_input: bool = True):
        error_gain = check_error_gain(error_gain)
        if not isinstance(beta_from_input, bool):
            raise ValueError(f"beta_from_input={beta_from_input!r} is not allowed: it must be true or false")
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm,
                         readouts=1 + (error_gain > 0), beta_from_input=beta_from_input)
        self.error_gain = error_gain
        # chunks of 16 steps: the fastest of 8, 16 and 32 for delta and gated_delta in `fwp-rl bench cores`
        # on a 2-core CPU (T = 128, width 256, 4 heads)
        self.chunk_size = check_size("chunk_size", chunk_size)
        self.beta_max = check_beta_max(beta_max)

    def initial_state(self, batch_size: int, device=None) -> State:
        shape = (batch_size, self.num_heads, self.key_dim, self.head_dim)
        return (torch.zeros(shape, device=device, dtype=self.dtype),)

    def _rates(self, beta: Tensor, gate: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.beta_max * torch.sigmoid(beta), None

    def _readout(self, o: Tensor, error: Tensor) -> Tensor:
        return self._output(torch.cat([o, self.error_gain * error], dim=-1) if self.error_gain else o)

    def _rule_step(self, x: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v, *rest = self._project(x)
        beta, log_alpha = self._rates(rest[0], rest[1] if self.uses_gate else None)
        return delta_rule_error_step(q, k, v, beta, state[0], log_alpha)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        o, error, S = self._rule_step(x, state)
        return self._readout(o, error), (S,)

    def prediction_errors(self, x: Tensor, state: State) -> Tensor:
        """The prediction errors e_t = v_t - W_{t-1} phi(k_t) [B, H, d] of a step on x [B, input_size] from
        ``state``: what the error readout hands the output projection, before ``error_gain``."""
        return self._rule_step(x, state)[1]

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        self._check_sequence(x, episode_starts)
        q, k, v, *rest = self._project(x)
        beta, log_alpha = self._rates(rest[0], rest[1] if self.uses_gate else None)
        if self.error_gain:
            # not on the fla kernels: in float32 they compute in bfloat16, whose three digits would be lost in v - W k
            o, error, S = with_errors(delta_rule_chunkwise, q, k, v, beta, state[0], episode_starts, log_alpha,
                                      chunk_size=self.chunk_size)
            return self._readout(o, error), (S,)
        if fla_backend.usable(q, v, log_alpha is not None):
            o, S = fla_backend.delta_rule(q, k, v, beta, state[0], episode_starts, log_alpha)
        else:
            o, S = delta_rule_chunkwise(q, k, v, beta, state[0], episode_starts, log_alpha, self.chunk_size)
        return self._output(o), (S,)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta_max={self.beta_max}, error_gain={self.error_gain}, "
                f"beta_from_input={self.beta_from_input}")


class GatedDeltaCore(DeltaCore):
    """Gated DeltaNet (2025): W_t = alpha_t W_{t-1} (I - beta_t k k^T) + beta_t v k^T, alpha_t = sigmoid(.) in (0, 1).

    Keys and queries are L2-normalized by default, as in the paper.
    """

    uses_gate = True

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "l2", dpfp_nu: int = 1, sum_norm: bool = False, beta_max: float = 1.0,
                 chunk_size: int = 16, error_gain: float = 0.0, beta_from_input: bool = True):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm, beta_max,
                         chunk_size, error_gain, beta_from_input)
        with torch.no_grad():  # start with slow forgetting: alpha = sigmoid(3) ~ 0.95
            self.proj.bias[-num_heads:].fill_(3.0)

    def _rates(self, beta: Tensor, gate: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.beta_max * torch.sigmoid(beta), F.logsigmoid(gate)


__all__ = ["DeltaCore", "FastWeightLayer", "GatedDeltaCore", "LinearCore", "MultiHeadCore", "check_beta_max",
           "check_error_gain"]
