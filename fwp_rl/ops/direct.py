"""The 1991 direct fast weight programmer (FKI-147-91, Sec. 1) as a tensor function.

A slow net emits one number per fast weight, Delta_t [B, H, D + 1] (the last column is the fast net's
bias), and the fast net maps the input x_t [B, D] to H outputs with the weights it has just been given:

    W_t = Delta_t              (mode "set")
    W_t = W_{t-1} + Delta_t    (mode "additive")
    y_t = f(W_t [x_t; 1])

Only elementwise ops and sums, so the function also runs under torch.func.vmap over a population.
"""

from __future__ import annotations

import torch
from torch import Tensor

MODES = ("set", "additive")
# f of the fast net; "sigmoid" gives outputs in [0, 1], the range of the double pole force unit.
ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda z: z}


def direct_fwp_step(x: Tensor, delta: Tensor, W: Tensor, mode: str = "set", activation: str = "tanh"
                    ) -> tuple[Tensor, Tensor]:
    """One step: x [B, D], delta and W [B, H, D + 1] -> (y [B, H], W_t [B, H, D + 1])."""
    if mode == "additive":
        W = W + delta
    elif mode == "set":
        W = delta
    else:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of: {', '.join(map(repr, MODES))}")
    z = (W[..., :-1] * x.unsqueeze(-2)).sum(-1) + W[..., -1]
    return ACTIVATIONS[activation](z), W
