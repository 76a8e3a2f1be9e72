"""The self-referential weight matrix (SRWM; Irie, Schlag, Csordas, Schmidhuber, ICML 2022), one step.

One matrix per head produces its output, its own query, key and learning rate, and rewrites itself:

    [y_t; k_t; q_t; b_t] = W_{t-1} phi(x_t)
    v_t = W_{t-1} phi(q_t),   v_bar_t = W_{t-1} phi(k_t)
    W_t = W_{t-1} + sigmoid(b_t) (v_t - v_bar_t) (x) phi(k_t)

Layout as in ``fwp_rl.ops.delta``: W is stored transposed, S = W^T [B, H, dk, dy + 2d + 1], where
x_t, q_t, k_t have size d, phi maps them to size dk, and the columns of S are y | k | q | b.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from fwp_rl.ops.delta import add_outer


def srwm_step(x: Tensor, S: Tensor, phi: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """One step: x [B, H, d], S [B, H, dk, dy + 2d + 1] -> (y [B, H, dy], S).

    y_t is read from W_{t-1}, before the matrix rewrites itself.
    """
    d = x.shape[-1]
    dy = S.shape[-1] - 2 * d - 1
    out = torch.einsum("bhk,bhko->bho", phi(x), S)
    y, k, q, b = out.split([dy, d, d, 1], dim=-1)
    k, q = phi(k), phi(q)
    v = torch.einsum("bhk,bhko->bho", q, S)
    v_bar = torch.einsum("bhk,bhko->bho", k, S)
    S = add_outer(S, torch.sigmoid(b) * k, v - v_bar)
    return y, S
