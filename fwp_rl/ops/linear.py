"""The 1991 outer-product fast weight programmer (the unnormalized linear Transformer).

    S_t = S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t       (S = W^T, [B, H, dk, dv])

optionally normalized: z_t = z_{t-1} + k_t, o_t = S_t^T q_t / (z_t . q_t + eps). The normalizer is
carried as one more value column of S (a column of ones written at every step), so the state is
[B, H, dk, dv + 1] when normalizing. q and k are already feature-mapped; layout as in ``delta``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fwp_rl.ops.chunk import chunkwise_rule


def _with_ones(v: Tensor) -> Tensor:
    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def _normalized(o: Tensor, eps: float) -> Tensor:
    return o[..., :-1] / (o[..., -1:] + eps)


def linear_attention_step(q: Tensor, k: Tensor, v: Tensor, S: Tensor, normalize: bool = False, eps: float = 1e-5
                          ) -> tuple[Tensor, Tensor]:
    """One step: q, k [B, H, dk], v [B, H, dv], S [B, H, dk, dv (+1)] -> (o [B, H, dv], S)."""
    if normalize:
        v = _with_ones(v)
    S = S + k.unsqueeze(-1) * v.unsqueeze(-2)
    o = torch.einsum("bhk,bhkv->bhv", q, S)
    return (_normalized(o, eps) if normalize else o), S


def linear_attention_recurrent(q: Tensor, k: Tensor, v: Tensor, S0: Tensor, starts: Tensor | None = None,
                               normalize: bool = False, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """The step loop over a sequence: (o [T, B, H, dv], S_T)."""
    S, outs = S0, []
    for t in range(q.shape[0]):
        if starts is not None:
            S = S * (~starts[t]).to(S.dtype)[:, None, None, None]
        o, S = linear_attention_step(q[t], k[t], v[t], S, normalize, eps)
        outs.append(o)
    return torch.stack(outs), S


def linear_attention_chunkwise(q: Tensor, k: Tensor, v: Tensor, S0: Tensor, starts: Tensor | None = None,
                               normalize: bool = False, eps: float = 1e-5, chunk_size: int = 64
                               ) -> tuple[Tensor, Tensor]:
    """The same as ``linear_attention_recurrent``, in parallel within chunks of ``chunk_size`` steps."""
    if normalize:
        v = _with_ones(v)
    out, S = chunkwise_rule(q, k, v, None, S0, starts, None, chunk_size)
    return (_normalized(out, eps) if normalize else out), S
