"""The 1991 direct fast weight programmer (FKI-147-91, Sec. 1) as a tensor function.

A slow net emits one number per fast weight, Delta_t [B, H, D + 1] (the last column is the fast net's
bias), and the fast net maps the input x_t [B, D] to H outputs with the weights it has just been given:

    W_t = Delta_t              (mode "set")
    W_t = W_{t-1} + Delta_t    (mode "additive")
    y_t = f(W_t [x_t; 1])

Only elementwise ops and sums, so the step function (the reference) also runs under torch.func.vmap over a
population; ``direct_fwp_sequence`` computes a whole sequence's fast net at once.
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


def direct_fwp_sequence(x: Tensor, h: Tensor, U: Tensor, u: Tensor, W0: Tensor, starts: Tensor | None,
                        mode: str = "set", activation: str = "tanh") -> tuple[Tensor, Tensor]:
    """The fast net over a sequence, every step at once: ``direct_fwp_step`` at each step with Delta_t = U h_t + u,
    without making any Delta_t or W_t but the last. x [T, B, D]; h [T, B, K]: the slow net's outputs; U [H (D + 1),
    K], u [H (D + 1)]: the programming layer; W0 [B, H, D + 1]; starts [T, B] bool or None: where set, the row's W is
    reset to zero before step t -> (y [T, B, H], W_T).

    W_t x~_t (x~ = [x; 1]) is bilinear: (U h + u) x~ = sum_k h_k (U_k x~) + u x~, with U_k x~ one product over all
    steps. In mode "additive", W_t = W_start + sum of the Delta_s of the episode so far: with C the cumulative sum of h
    over time and p_t the row's last start at or before t, sum_s h_s = C_t - C_{p_t - 1} and there are t - p_t + 1
    of them (p_t = 0 and W_start = W0 for a row that has not started an episode in the sequence; else W_start = 0).
    """
    T, B, D = x.shape
    H = W0.shape[1]
    x1 = torch.cat([x, x.new_ones(T, B, 1)], dim=-1)  # x~
    Uv = U.view(H, D + 1, -1)
    read = (x1.flatten(0, 1) @ Uv.transpose(0, 1).flatten(1)).view(T, B, H, -1)  # U_k x~_t: [T, B, H, K]
    bias = x1 @ u.view(H, D + 1).T  # u x~_t: [T, B, H]
    if mode == "set":
        z, W = (read * h.unsqueeze(-2)).sum(-1) + bias, (U @ h[-1].T).T.view(B, H, D + 1) + u.view(H, D + 1)
    elif mode == "additive":
        t = torch.arange(T, device=x.device).view(T, 1)
        last = (torch.where(starts, t, -1) if starts is not None else torch.full((T, B), -1, device=x.device)
                ).cummax(0).values  # p_t, -1 before the row's first start
        since = last.clamp(min=0)
        C = torch.cat([h.new_zeros(1, B, h.shape[-1]), h.cumsum(0)])  # C_{t-1} at t
        sums = C[1:] - C.gather(0, since.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        counts = (t - since + 1).to(x.dtype).unsqueeze(-1)
        carried = (last < 0).to(x.dtype).unsqueeze(-1)  # rows still in the episode W0 belongs to
        z = (read * sums.unsqueeze(-2)).sum(-1) + counts * bias + carried * (W0.unsqueeze(0) * x1.unsqueeze(-2)).sum(-1)
        W = carried[-1].unsqueeze(-1) * W0 + (U @ sums[-1].T).T.view(B, H, D + 1) + counts[-1].unsqueeze(-1) * u.view(
            H, D + 1)
    else:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of: {', '.join(map(repr, MODES))}")
    return ACTIVATIONS[activation](z), W
