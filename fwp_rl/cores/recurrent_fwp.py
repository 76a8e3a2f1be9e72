"""Recurrent fast weight programmers (Irie, Schlag, Csordas, Schmidhuber, NeurIPS 2021).

- ``RDNCore`` (Recurrent Delta Net): the slow net also reads the previous output, so the keys depend on it;
- ``DeltaRNNCore``: the fast net is an RNN whose recurrent matrix is a second fast weight matrix;
- ``DeltaLSTMCore``: the fast net is an LSTM whose input and recurrent gate matrices are fast weights.

The equations are the tensor functions of ``fwp_rl.ops.recurrent_fwp``. Because each step reads the
previous output, these cores run a sequence step by step, each in one hand-written forward and backward
(``rdn_sequence``, ``delta_rnn_sequence``, ``delta_lstm_sequence``); the Delta RNN's and Delta LSTM's feed-forward
fast weights, which do not read the output, run chunkwise. They are
multi-head: every head has its own fast weight matrices and its own previous output y_{t-1} [d]; the
heads' outputs are concatenated and projected to ``hidden_size``.

Differences from the paper's published code:
- gradients flow through the fast weights and the fed-back outputs across every step of a training
  sequence; the published Atari agents run the fast-weight kernel one step at a time and get no
  gradient through the memory from one step to the next;
- the slow projections have biases, and beta_max (1 as published, up to 2 for negative eigenvalues)
  scales every learning rate sigmoid(.);
- the published layers wrap the fast net in LayerNorm, a residual connection and (for the language
  models) a 1/sqrt(d) output scale; here that is the job of ``ResidualStack`` and the output projection.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fwp_rl.cores.base import State
from fwp_rl.cores.fast_weights import FastWeightLayer, check_beta_max
from fwp_rl.ops import recurrent_fwp_triton as triton_forms
from fwp_rl.ops.delta import delta_rule_chunkwise, delta_rule_step
from fwp_rl.ops.recurrent_fwp import (delta_lstm_sequence, delta_lstm_step, delta_rnn_sequence, delta_rnn_step,
                                      rdn_sequence, rdn_step)


class RDNCore(FastWeightLayer):
    """Recurrent Delta Net: a DeltaNet whose slow net also reads tanh(y_{t-1}) of each head.

        [q; k; v; b]_t = P x_t + R^T tanh(y_{t-1})        (R [d, 3d + 1] per head, a slow weight)
        W_t = W_{t-1} + beta_max sigmoid(b_t) (v_t - W_{t-1} phi(k_t)) (x) phi(k_t),  y_t = W_t phi(q_t)

    State: (S [B, H, dk, d], the fast weights W^T; y_prev [B, H, d], each head's last output).
    phi is softmax by default, as in the published Atari agents.
    """

    uses_beta = True

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "softmax", dpfp_nu: int = 1, sum_norm: bool = False, beta_max: float = 1.0):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm)
        self.beta_max = check_beta_max(beta_max)
        d = self.head_dim
        self.rec_weight = nn.Parameter(torch.empty(num_heads, d, 3 * d + 1))
        nn.init.normal_(self.rec_weight, std=d ** -0.5)

    def initial_state(self, batch_size: int, device=None) -> State:
        H, d = self.num_heads, self.head_dim
        return (torch.zeros(batch_size, H, self.key_dim, d, device=device, dtype=self.dtype),
                torch.zeros(batch_size, H, d, device=device, dtype=self.dtype))

    def _inputs(self, x: Tensor) -> tuple[Tensor, ...]:
        """x [..., input_size] -> the slow net's parts from x: q, k, v [..., H, d] and b [..., H]."""
        qkv, b = self.proj(x).split(self._split_sizes, dim=-1)
        return (*(t.unflatten(-1, (self.num_heads, self.head_dim)) for t in qkv.chunk(3, dim=-1)), b)

    def triton_refusal(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this layer's sequences on ``device`` in ``dtype`` do not run on the Triton kernels (None: they do)."""
        return triton_forms.refusal(device, dtype, self.head_dim, self.feature_map, self.sum_norm)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        S, y_prev = state
        y, S = rdn_step(*self._inputs(x), self.rec_weight, y_prev, S, self._phi, self.beta_max)
        return self._output(y), (S, y)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """The sequence in one hand-written forward and backward (``rdn_sequence``; on CUDA its Triton kernels,
        ``fwp_rl.ops.recurrent_fwp_triton``, where they serve the layer): the input and output projections of all
        steps as one product each, the fast weights updated in place and recovered backwards."""
        self._check_sequence(x, episode_starts)
        S, y_prev = state
        if self.triton_refusal(x.device, x.dtype) is None:
            y, S, y_prev = triton_forms.rdn_sequence(*self._inputs(x), self.rec_weight, S, y_prev, episode_starts,
                                                     self.beta_max)
        else:
            y, S, y_prev = rdn_sequence(*self._inputs(x), self.rec_weight, S, y_prev, episode_starts, self._phi,
                                        self.beta_max, self._phi_backward)
        return self._output(y), (S, y_prev)


class _DeltaFastNet(FastWeightLayer):
    """A fast net that is an RNN: for each of ``num_gates`` pre-activations and each head, a feed-forward
    fast weight matrix W [dk, d] and a recurrent one R [d, d], both written by the delta rule.

    One fused projection of x_t gives, per gate and head, W's query, key, value and rate and R's key,
    value and rate. R's keys go through softmax, like the fed-back output softmax(y_{t-1}) that reads R.
    """

    num_gates: int

    def __init__(self, input_size: int, hidden_size: int, num_heads: int, head_dim: int | None, feature_map: str,
                 dpfp_nu: int, sum_norm: bool, beta_max: float):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm)
        self.beta_max = check_beta_max(beta_max)

    def triton_refusal(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why the recurrent part of this layer's sequences on ``device`` in ``dtype`` does not run on the Triton
        kernels (None: it does; it reads through softmax, whatever phi)."""
        return triton_forms.refusal(device, dtype, self.head_dim)

    def _projection_sizes(self) -> list[int]:
        """q, k, v of W and k, v of R (size d each), then the rates of W and of R, per gate and head."""
        G, H, d = self.num_gates, self.num_heads, self.head_dim
        return [G * H * d] * 5 + [G * H] * 2

    def _project(self, x: Tensor) -> list[Tensor]:
        """x [B, input_size] -> phi(q), phi(k) [B, G, H, dk]; v, softmax(kr), vr [B, G, H, d];
        beta, beta_r [B, G, H]."""
        G, H, d = self.num_gates, self.num_heads, self.head_dim
        q, k, v, kr, vr, b, br = self.proj(x).split(self._split_sizes, dim=-1)
        q, k, v, kr, vr = (t.unflatten(-1, (G, H, d)) for t in (q, k, v, kr, vr))
        q, k = self._phi(q), self._phi(k)
        beta, beta_r = (self.beta_max * torch.sigmoid(t.unflatten(-1, (G, H))) for t in (b, br))
        return [q, k, v, torch.softmax(kr, dim=-1), vr, beta, beta_r]


class DeltaRNNCore(_DeltaFastNet):
    """Delta RNN: y_t = W_t phi(q_t) + R_t softmax(y_{t-1}), W_t and R_t programmed by delta rules.

        W_t = W_{t-1} + beta_t (v_t - W_{t-1} phi(k_t)) (x) phi(k_t)
        R_t = R_{t-1} + beta_r,t (vr_t - R_{t-1} kr_t) (x) kr_t,   kr_t = softmax(.)

    with q, k, v, kr, vr and the rates projected from x_t (the fed-back output enters only through R_t).
    State: (W^T [B, H, dk, d], R^T [B, H, d, d], y_prev [B, H, d]).
    phi is softmax by default, as in the published Atari agents.
    """

    num_gates = 1

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "softmax", dpfp_nu: int = 1, sum_norm: bool = False, beta_max: float = 1.0):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm, beta_max)

    def initial_state(self, batch_size: int, device=None) -> State:
        H, d = self.num_heads, self.head_dim
        return (torch.zeros(batch_size, H, self.key_dim, d, device=device, dtype=self.dtype),
                torch.zeros(batch_size, H, d, d, device=device, dtype=self.dtype),
                torch.zeros(batch_size, H, d, device=device, dtype=self.dtype))

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        W, R, y_prev = state
        q, k, v, kr, vr, beta, beta_r = (t.squeeze(1) for t in self._project(x))
        z, W = delta_rule_step(q, k, v, beta, W)
        y, R = delta_rnn_step(z, kr, vr, beta_r, R, y_prev)
        return self._output(y), (W, R, y)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """The sequence: W's part chunkwise (its writes do not read the output), R's in one hand-written forward and
        backward (``delta_rnn_sequence``; on CUDA its Triton kernels where they serve the layer)."""
        self._check_sequence(x, episode_starts)
        W, R, y_prev = state
        q, k, v, kr, vr, beta, beta_r = (t.squeeze(2) for t in self._project(x))
        z, W = delta_rule_chunkwise(q, k, v, beta, W, episode_starts)
        recurrent = delta_rnn_sequence
        if self.triton_refusal(x.device, x.dtype) is None:
            recurrent = triton_forms.delta_rnn_sequence
        y, R, y_prev = recurrent(z, kr, vr, beta_r, R, y_prev, episode_starts)
        return self._output(y), (W, R, y_prev)


class DeltaLSTMCore(_DeltaFastNet):
    """Delta LSTM: an LSTM with coupled input and forget gates whose input and recurrent matrices are
    fast weights programmed by delta rules, one pair (W^g, R^g) per head for each of i, u, o:

        a^g_t = W^g_t phi(q^g_t) + R^g_t softmax(y_{t-1})
        i_t = sigmoid(a^i_t),  u_t = a^u_t,  o_t = sigmoid(a^o_t)
        c_t = i_t * u_t + (1 - i_t) * c_{t-1},   y_t = o_t * c_t

    W^g and R^g are written as in ``DeltaRNNCore``. State, gates stacked in dim 1 in the order i, u, o:
    (W^T [B, 3, H, dk, d], R^T [B, 3, H, d, d], y_prev [B, H, d], c [B, H, d]).
    phi is ELU+1 with sum normalization by default, as in the published Delta LSTM (language models).
    """

    num_gates = 3

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "elu", dpfp_nu: int = 1, sum_norm: bool = True, beta_max: float = 1.0):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm, beta_max)

    def initial_state(self, batch_size: int, device=None) -> State:
        G, H, d = self.num_gates, self.num_heads, self.head_dim
        return (torch.zeros(batch_size, G, H, self.key_dim, d, device=device, dtype=self.dtype),
                torch.zeros(batch_size, G, H, d, d, device=device, dtype=self.dtype),
                torch.zeros(batch_size, H, d, device=device, dtype=self.dtype),
                torch.zeros(batch_size, H, d, device=device, dtype=self.dtype))

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        W, R, y_prev, c_prev = state
        q, k, v, kr, vr, beta, beta_r = self._project(x)
        z, W = delta_rule_step(*(t.flatten(1, 2) for t in (q, k, v, beta, W)))
        gates = (self.num_gates, self.num_heads)
        y, c, R = delta_lstm_step(z.unflatten(1, gates), kr, vr, beta_r, R, y_prev, c_prev)
        return self._output(y), (W.unflatten(1, gates), R, y, c)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """The sequence: the W^g chunkwise (their writes do not read the output), the R^g and the cell in one
        hand-written forward and backward (``delta_lstm_sequence``; on CUDA its Triton kernels where they serve the
        layer)."""
        self._check_sequence(x, episode_starts)
        W, R, y_prev, c_prev = state
        q, k, v, kr, vr, beta, beta_r = self._project(x)
        z, W = delta_rule_chunkwise(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3), beta.flatten(2, 3),
                                    W.flatten(1, 2), episode_starts)
        recurrent = delta_lstm_sequence
        if self.triton_refusal(x.device, x.dtype) is None:
            recurrent = triton_forms.delta_lstm_sequence
        y, R, y_prev, c = recurrent(z.unflatten(2, q.shape[2:4]), kr, vr, beta_r, R, y_prev, c_prev, episode_starts)
        return self._output(y), (W.unflatten(1, q.shape[2:4]), R, y_prev, c)


__all__ = ["DeltaLSTMCore", "DeltaRNNCore", "RDNCore"]
