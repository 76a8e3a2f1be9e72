"""Fast-weight layers whose keys do not depend on their own past: linear, delta, gated delta.

Each layer owns its projections (one fused Linear for queries, keys, values, learning rates and gates,
and an output projection); the update rules are the tensor functions of ``fwp_rl.ops``. Training
sequences run chunkwise-parallel, rollout steps run the one-step rule; both give the same numbers.

The delta and gated delta layers take the options of the DeltaNet layer of Yang et al. (2024) and of Gated DeltaNet
(Yang et al. 2025): a short causal convolution over time on q, k and v (``conv_size``), the SiLU + L2 feature map
(``feature_map="silu_l2"``), a normalized and gated readout (``output_norm``) and the initial bias of beta's logit
(``beta_bias``); all off by default.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fwp_rl.checks import check_flag, check_input, check_size, check_starts
from fwp_rl.cores.base import MemoryCore, State, head_size
from fwp_rl.ops import fla_backend
from fwp_rl.ops.conv import causal_conv, causal_conv_step
from fwp_rl.ops.delta import delta_rule_chunkwise, delta_rule_error_step, with_errors
from fwp_rl.ops.feature_maps import check_feature_map, feature_dim, feature_map, feature_map_backward
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

    @property
    def _phi_backward(self):
        """phi's closed-form backward, or None (``feature_map_backward``)."""
        return feature_map_backward(self.feature_map, self.sum_norm)

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


def check_conv_size(conv_size) -> int:
    """conv_size as an int: 0 (no convolution) or the number of steps the short convolution spans, at least 2."""
    if isinstance(conv_size, bool) or not isinstance(conv_size, int) or conv_size < 0 or conv_size == 1:
        raise ValueError(f"conv_size={conv_size!r} is not allowed: it must be 0 (off) or an integer >= 2")
    return conv_size


def check_beta_bias(beta_bias) -> float | None:
    """beta_bias as a float: None (the projection's own initialization) or a finite initial logit of beta."""
    if beta_bias is None:
        return None
    if isinstance(beta_bias, bool) or not isinstance(beta_bias, (int, float)) or not math.isfinite(beta_bias):
        raise ValueError(f"beta_bias={beta_bias!r} is not allowed: it must be a finite number (the initial logit of "
                         "beta) or null (the projection's own initialization)")
    return float(beta_bias)


NORM_EPS = 1e-5  # of the readout's RMS normalization (output_norm), as in the published layers


class Projected(NamedTuple):
    """What the input projection of a step or a sequence gives a fast-weight layer."""

    q: Tensor  # phi(q) [..., H, dk']
    k: Tensor  # phi(k) [..., H, dk']
    v: Tensor  # [..., H, d]
    beta: Tensor | None  # the rate logits [..., H]; None in a layer without rates
    gate: Tensor | None  # the decay gate logits [..., H]; None in a layer without a gate
    output_gate: Tensor | None  # [..., H, d]; None without output_norm
    conv_state: State  # the short convolution's state after the input: (buffer,), or () without one


class FastWeightLayer(MultiHeadCore):
    """Shared machinery: multi-head projections, feature maps, state of one fast weight matrix per head."""

    uses_beta = False
    uses_gate = False

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, head_dim: int | None, feature_map: str,
                 dpfp_nu: int, sum_norm: bool, readouts: int = 1, beta_from_input: bool = True, conv_size: int = 0,
                 output_norm: bool = False):
        """readouts: how many vectors of head_dim each head hands the output projection (the delta rule's error
        readout is a second one). beta_from_input: False gives each head one learned constant rate (the logits
        ``beta_logit`` [H]) in place of a rate projected from each step's input. conv_size, output_norm: the short
        convolution of q, k and v and the normalized, gated readout (``DeltaCore``)."""
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm)
        self.beta_from_input = check_flag("beta_from_input", beta_from_input)
        self.conv_size = check_conv_size(conv_size)
        self.output_norm = check_flag("output_norm", output_norm)
        H, d = num_heads, self.head_dim
        self._split_sizes = self._projection_sizes()
        self.proj = nn.Linear(input_size, sum(self._split_sizes))
        self.out_proj = nn.Linear(readouts * H * d, hidden_size)
        if self._constant_beta:
            self.beta_logit = nn.Parameter(torch.zeros(H))
        if conv_size:
            # one filter per channel of q, k and v, initialized as a depthwise nn.Conv1d's
            self.conv_weight = nn.Parameter(torch.empty(3 * H * d, conv_size))
            nn.init.uniform_(self.conv_weight, -conv_size ** -0.5, conv_size ** -0.5)
        if output_norm:
            self.norm_weight = nn.Parameter(torch.ones(d))  # the RMS norm's scale, shared by the heads

    @property
    def _constant_beta(self) -> bool:
        """Whether the layer's rates are the learned constants ``beta_logit`` rather than projected from the input."""
        return self.uses_beta and not self.beta_from_input

    def _projection_sizes(self) -> list[int]:
        """Sizes of the parts of the fused input projection: q, k and v together, the output gate (with
        output_norm), then one rate (unless constant) and one gate per head."""
        H, d = self.num_heads, self.head_dim
        return [3 * H * d] + [H * d] * self.output_norm + [H] * (self.uses_beta - self._constant_beta + self.uses_gate)

    def _conv_state(self, batch_size: int, device=None) -> State:
        """The short convolution's initial state: the last conv_size - 1 projections of q, k and v, zeros
        [batch_size, conv_size - 1, 3 H d] (oldest first); () without the convolution."""
        if not self.conv_size:
            return ()
        shape = (batch_size, self.conv_size - 1, 3 * self.num_heads * self.head_dim)
        return (torch.zeros(shape, device=device, dtype=self.dtype),)

    def _project(self, x: Tensor, conv_state: State = (), starts: Tensor | None = None) -> Projected:
        """x [B, input_size] (a step, from a state already reset where episodes start) or [T, B, input_size] (a
        sequence with episode starts ``starts`` [T, B]) -> ``Projected``, the convolution continuing from
        ``conv_state``. With the convolution, v then goes through SiLU as in the published layers (q and k go
        through the feature map)."""
        H, d = self.num_heads, self.head_dim
        qkv, *rest = self.proj(x).split(self._split_sizes, dim=-1)
        if self.conv_size:
            convolve = causal_conv_step if x.dim() == 2 else partial(causal_conv, starts=starts)
            qkv, buffer = convolve(qkv, self.conv_weight, conv_state[0])
            conv_state = (buffer,)
        q, k, v = (p.unflatten(-1, (H, d)) for p in qkv.chunk(3, dim=-1))
        if self.conv_size:
            v = F.silu(v)
        output_gate = rest.pop(0).unflatten(-1, (H, d)) if self.output_norm else None
        beta = None
        if self.uses_beta:
            beta = self.beta_logit.expand(*x.shape[:-1], H) if self._constant_beta else rest.pop(0)
        gate = rest.pop(0) if self.uses_gate else None
        return Projected(self._phi(q), self._phi(k), v, beta, gate, output_gate, conv_state)

    def _normalize(self, o: Tensor, output_gate: Tensor | None) -> Tensor:
        """Each head's readout o [..., H, d] RMS-normalized and gated, rmsnorm(o) * silu(output_gate), with
        output_norm; o as it is without."""
        if not self.output_norm:
            return o
        return F.rms_norm(o, (self.head_dim,), self.norm_weight, NORM_EPS) * F.silu(output_gate)

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
        p = self._project(x)
        o, S = linear_attention_step(p.q, p.k, p.v, state[0], self.normalize)
        return self._output(o), (S,)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        self._check_sequence(x, episode_starts)
        p = self._project(x)
        o, S = linear_attention_chunkwise(p.q, p.k, p.v, state[0], episode_starts, self.normalize,
                                          chunk_size=self.chunk_size)
        return self._output(o), (S,)


class DeltaCore(FastWeightLayer):
    """DeltaNet (2021): W_t = W_{t-1} + beta_t (v_t - W_{t-1} phi(k_t)) (x) phi(k_t), beta_t = beta_max sigmoid(.).

    ``beta_max=2`` allows negative eigenvalues of the transition (Grazzi et al. 2025).

    ``error_gain`` > 0 reads out, beside each head's W_t phi(q_t), its prediction error e_t = v_t - W_{t-1} phi(k_t)
    (the correction the rule writes) times ``error_gain``. Where W_{t-1} phi(k_t) tracks v, e_t is v's change over
    the last step: a rate, which a readout of W_t alone can only form as a difference of two heads' readings.

    ``beta_from_input=False`` gives each head one learned constant rate beta = beta_max sigmoid(b) instead.

    The options of the DeltaNet layer of Yang et al. (2024), all off by default:

    - ``conv_size`` > 0: q, k and v, as projected, each pass a short causal depthwise convolution over the last
      ``conv_size`` steps (``fwp_rl.ops.conv``; its buffer of past projections is the state's second tensor, reset to
      zeros at episode starts), then v a SiLU; q and k go on through the feature map (``silu_l2`` for the layer);
    - ``output_norm``: each head's readout is RMS-normalized (with a learned scale per channel of a head) and gated,
      rmsnorm(o) * silu(g), g a further part of the input projection;
    - ``beta_bias``: the initial bias of beta's logit (of ``beta_logit`` with ``beta_from_input=False``), so that
      learning starts from the rate beta_max sigmoid(beta_bias); None keeps the projection's own initialization.
    """

    uses_beta = True

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "elu", dpfp_nu: int = 1, sum_norm: bool = True, beta_max: float = 1.0,
                 chunk_size: int = 16, error_gain: float = 0.0, beta_from_input: bool = True, conv_size: int = 0,
                 output_norm: bool = False, beta_bias: float | None = None):
        error_gain = check_error_gain(error_gain)
        beta_bias = check_beta_bias(beta_bias)
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm,
                         readouts=1 + (error_gain > 0), beta_from_input=beta_from_input, conv_size=conv_size,
                         output_norm=output_norm)
        self.error_gain = error_gain
        # chunks of 16 steps: the fastest of 8, 16 and 32 for delta and gated_delta in `fwp-rl bench cores`
        # on a 2-core CPU (T = 128, width 256, 4 heads)
        self.chunk_size = check_size("chunk_size", chunk_size)
        self.beta_max = check_beta_max(beta_max)
        self.beta_bias = beta_bias
        if beta_bias is not None:
            with torch.no_grad():
                (self.beta_logit if self._constant_beta else self._beta_logit_bias()).fill_(beta_bias)

    def _beta_logit_bias(self) -> Tensor:
        """The part of the fused projection's bias that is beta's logits [H] (a view): the last part, or the one
        before the decay gate's."""
        start = sum(self._split_sizes[:len(self._split_sizes) - 1 - self.uses_gate])
        return self.proj.bias[start:start + self.num_heads]

    def initial_state(self, batch_size: int, device=None) -> State:
        shape = (batch_size, self.num_heads, self.key_dim, self.head_dim)
        return (torch.zeros(shape, device=device, dtype=self.dtype), *self._conv_state(batch_size, device))

    def _rates(self, beta: Tensor, gate: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.beta_max * torch.sigmoid(beta), None

    def _readout(self, o: Tensor, error: Tensor | None, output_gate: Tensor | None) -> Tensor:
        o = self._normalize(o, output_gate)
        return self._output(torch.cat([o, self.error_gain * error], dim=-1) if self.error_gain else o)

    def _rule_step(self, x: Tensor, state: State) -> tuple[Tensor, Tensor, Projected, State]:
        """A step of the rule: (o, e, the projections, the new state)."""
        p = self._project(x, state[1:])
        beta, log_alpha = self._rates(p.beta, p.gate)
        o, error, S = delta_rule_error_step(p.q, p.k, p.v, beta, state[0], log_alpha)
        return o, error, p, (S, *p.conv_state)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        o, error, p, state = self._rule_step(x, state)
        return self._readout(o, error, p.output_gate), state

    def prediction_errors(self, x: Tensor, state: State) -> Tensor:
        """The prediction errors e_t = v_t - W_{t-1} phi(k_t) [B, H, d] of a step on x [B, input_size] from
        ``state``: what the error readout hands the output projection, before ``error_gain``."""
        return self._rule_step(x, state)[1]

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        self._check_sequence(x, episode_starts)
        p = self._project(x, state[1:], episode_starts)
        q, k, v = p.q, p.k, p.v
        beta, log_alpha = self._rates(p.beta, p.gate)
        error = None
        if self.error_gain:
            # not on the fla kernels: in float32 they compute in bfloat16, whose three digits would be lost in v - W k
            o, error, S = with_errors(delta_rule_chunkwise, q, k, v, beta, state[0], episode_starts, log_alpha,
                                      chunk_size=self.chunk_size)
        elif fla_backend.usable(q, v, log_alpha is not None):
            o, S = fla_backend.delta_rule(q, k, v, beta, state[0], episode_starts, log_alpha)
        else:
            o, S = delta_rule_chunkwise(q, k, v, beta, state[0], episode_starts, log_alpha, self.chunk_size)
        return self._readout(o, error, p.output_gate), (S, *p.conv_state)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta_max={self.beta_max}, error_gain={self.error_gain}, "
                f"beta_from_input={self.beta_from_input}, conv_size={self.conv_size}, output_norm={self.output_norm}, "
                f"beta_bias={self.beta_bias}")


class GatedDeltaCore(DeltaCore):
    """Gated DeltaNet (2025): W_t = alpha_t W_{t-1} (I - beta_t k k^T) + beta_t v k^T, alpha_t = sigmoid(.) in (0, 1).

    Keys and queries are L2-normalized by default, as in the paper (which puts them through SiLU first:
    ``feature_map="silu_l2"``, with its short convolution ``conv_size=4`` and its gated ``output_norm``).
    """

    uses_gate = True

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "l2", dpfp_nu: int = 1, sum_norm: bool = False, beta_max: float = 1.0,
                 chunk_size: int = 16, error_gain: float = 0.0, beta_from_input: bool = True, conv_size: int = 0,
                 output_norm: bool = False, beta_bias: float | None = None):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm, beta_max,
                         chunk_size, error_gain, beta_from_input, conv_size, output_norm, beta_bias)
        with torch.no_grad():  # start with slow forgetting: alpha = sigmoid(3) ~ 0.95
            self.proj.bias[-num_heads:].fill_(3.0)

    def _rates(self, beta: Tensor, gate: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.beta_max * torch.sigmoid(beta), F.logsigmoid(gate)


__all__ = ["DeltaCore", "FastWeightLayer", "GatedDeltaCore", "LinearCore", "MultiHeadCore", "Projected",
           "check_beta_bias", "check_beta_max", "check_conv_size", "check_error_gain"]
