"""The self-referential weight matrix (SRWM; Irie, Schlag, Csordas, Schmidhuber, ICML 2022).

Per head, one matrix W_t [3d + 1, dk] maps phi(x_t) to the head's output y_t and to its own key, query
and learning rate, with which it rewrites itself (``fwp_rl.ops.srwm``):

    [y_t; k_t; q_t; b_t] = W_{t-1} phi(x_t)
    W_t = W_{t-1} + sigmoid(b_t) (W_{t-1} phi(q_t) - W_{t-1} phi(k_t)) (x) phi(k_t)

The initial matrix W_0 is a learned parameter and the memory restarts from it at every episode start.
x_t is the core's input projected to the heads; the heads' outputs y_t are concatenated and projected
to ``hidden_size``. The output reads W_{t-1}, so the step loop of ``MemoryCore.forward`` runs a sequence.

Differences from the paper's published code:
- the state is W_t itself, and gradients flow through it across every step of a training sequence back
  to W_0; the published agents carry W_t - W_0 detached at every step;
- one learning rate per head, as in the equation above; the published code has four, one for each
  block of rows (y, k, q, b);
- an input projection (with bias) to the heads; the published layer splits its input into heads and
  wraps the SRWM in LayerNorm and a residual connection, which here is the job of ``ResidualStack``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fwp_rl.checks import check_input, check_starts
from fwp_rl.cores.base import State
from fwp_rl.cores.fast_weights import MultiHeadCore
from fwp_rl.ops import recurrent_fwp_triton as triton_forms
from fwp_rl.ops.srwm import srwm_sequence, srwm_step


class SRWMCore(MultiHeadCore):
    """Self-referential weight matrix per head. State: (S [B, H, dk, 3d + 1],) with S = W_t^T, columns
    y | k | q | b; dk is the size of phi's output (d unless phi is DPFP). phi is softmax by default."""

    def __init__(self, input_size: int, hidden_size: int = 128, num_heads: int = 4, head_dim: int | None = None,
                 feature_map: str = "softmax", dpfp_nu: int = 1, sum_norm: bool = False):
        super().__init__(input_size, hidden_size, num_heads, head_dim, feature_map, dpfp_nu, sum_norm)
        H, d = num_heads, self.head_dim
        self.in_proj = nn.Linear(input_size, H * d)
        self.initial_weights = nn.Parameter(torch.empty(H, self.key_dim, 3 * d + 1))
        nn.init.normal_(self.initial_weights, std=self.key_dim ** -0.5)
        with torch.no_grad():  # learning rates start near sigmoid(-1) ~ 0.27, as in the published agents
            self.initial_weights[..., -1] -= 1.0
        self.out_proj = nn.Linear(H * d, hidden_size)

    def initial_state(self, batch_size: int, device=None) -> State:
        """(W_0^T broadcast to [batch_size, H, dk, 3d + 1],): a view of the parameter; write no state in place."""
        W0 = self.initial_weights if device is None else self.initial_weights.to(device)
        return (W0.expand(batch_size, *W0.shape),)

    def triton_refusal(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this layer's sequences on ``device`` in ``dtype`` do not run on the Triton kernels (None: they do)."""
        return triton_forms.refusal(device, dtype, self.head_dim, self.feature_map, self.sum_norm)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.in_proj(x).unflatten(-1, (self.num_heads, self.head_dim))
        y, S = srwm_step(h, state[0], self._phi)
        return self.out_proj(y.flatten(-2)), (S,)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """The sequence in one hand-written forward and backward (``srwm_sequence``; on CUDA its Triton kernels,
        ``fwp_rl.ops.recurrent_fwp_triton``, where they serve the layer)."""
        check_input(x, "x", 3, self.input_size)
        if episode_starts is not None:
            check_starts(episode_starts, "episode_starts", x.shape[:2])
        h = self.in_proj(x).unflatten(-1, (self.num_heads, self.head_dim))
        if self.triton_refusal(x.device, x.dtype) is None:
            y, S = triton_forms.srwm_sequence(h, self.initial_weights, state[0], episode_starts)
        else:
            y, S = srwm_sequence(h, self.initial_weights, state[0], episode_starts, self._phi, self._phi_backward)
        return self.out_proj(y.flatten(-2)), (S,)


__all__ = ["SRWMCore"]
