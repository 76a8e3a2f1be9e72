"""The delta rule (DeltaNet, 2021) and its gated form (Gated DeltaNet, 2025) as tensor functions.

State S = W^T, [B, H, dk, dv] (keys index rows). With a_t = alpha_t (1 without a gate):

    S_t = a_t S_{t-1} + beta_t k_t (v_t - (a_t S_{t-1})^T k_t)^T        (write the correction)
    o_t = S_t^T q_t

q and k are already feature-mapped. Layout: q, k [T, B, H, dk], v [T, B, H, dv], beta and log_alpha
[T, B, H], starts [T, B] bool: where set, the state is reset to zero before step t is read.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fwp_rl.ops.chunk import chunkwise_rule


def delta_rule_step(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S: Tensor, log_alpha: Tensor | None = None
                    ) -> tuple[Tensor, Tensor]:
    """One step: q, k [B, H, dk], v [B, H, dv], beta [B, H], S [B, H, dk, dv] -> (o [B, H, dv], S)."""
    if log_alpha is not None:
        S = S * torch.exp(log_alpha)[..., None, None]
    v_old = torch.einsum("bhk,bhkv->bhv", k, S)
    S = S + (beta.unsqueeze(-1) * k).unsqueeze(-1) * (v - v_old).unsqueeze(-2)
    return torch.einsum("bhk,bhkv->bhv", q, S), S


def delta_rule_recurrent(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S0: Tensor, starts: Tensor | None = None,
                         log_alpha: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The step loop over a sequence: (o [T, B, H, dv], S_T)."""
    S, outs = S0, []
    for t in range(q.shape[0]):
        if starts is not None:
            S = S * (~starts[t]).to(S.dtype)[:, None, None, None]
        o, S = delta_rule_step(q[t], k[t], v[t], beta[t], S, None if log_alpha is None else log_alpha[t])
        outs.append(o)
    return torch.stack(outs), S


def delta_rule_chunkwise(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S0: Tensor, starts: Tensor | None = None,
                         log_alpha: Tensor | None = None, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """The same as ``delta_rule_recurrent``, computed in parallel within chunks of ``chunk_size`` steps
    (``chunkwise_rule``)."""
    return chunkwise_rule(q, k, v, beta, S0, starts, log_alpha, chunk_size)
