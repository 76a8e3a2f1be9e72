"""What the chunkwise-parallel forms of the linear, delta and gated delta rules share.

All three rules have the transition S_t = a_t A_t S_{t-1} + (write at t), where a_t is a scalar decay
(alpha_t for the gated rule, 1 otherwise) that is 0 where an episode starts: the state is reset before
x_t is read. The product of the decays between two steps,

    D(t, i) = a_{i+1} ... a_t        (D(t, t) = 1; D(t, 0) is the decay from the incoming state),

is 0 whenever an episode starts in (i, t]. Within a chunk we number the segments between episode
starts (segment 0 is the one the incoming state lives in) and set D to 0 across segments, so the
resets are exact: no large negative log-decay stands in for a zero, and nothing overflows.

This is written by hand because no library computes these masks for episode resets: the
flash-linear-attention kernels split sequences with cu_seqlens instead and are CUDA-only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ChunkDecays:
    """Decays of one chunk layout, [B, H or 1, N, C(, C)] with N chunks of C steps."""

    within: Tensor  # D(t, i) for i <= t, 0 above the diagonal           [B, h, N, C, C]
    from_start: Tensor  # D(t, 0): how much of the incoming state step t sees  [B, h, N, C]
    to_end: Tensor  # D(C, i): how much of step i's write survives the chunk  [B, h, N, C]
    start_to_end: Tensor  # D(C, 0): how much of the incoming state survives   [B, h, N]


def to_chunks(x: Tensor, chunk_size: int) -> Tensor:
    """[T, B, H, d] -> [B, H, N, C, d] (T must be a multiple of chunk_size), contiguous.

    Copied once here: a permuted view would be copied again by every batched product that reads it,
    forward and backward.
    """
    T, B, H, d = x.shape
    return x.permute(1, 2, 0, 3).reshape(B, H, T // chunk_size, chunk_size, d).contiguous()


def from_chunks(x: Tensor) -> Tensor:
    """[B, H, N, C, d] -> [T, B, H, d]."""
    B, H, N, C, d = x.shape
    return x.reshape(B, H, N * C, d).permute(2, 0, 1, 3)


def pad_time(x: Tensor, length: int, value: float | bool = 0) -> Tensor:
    """Pad the leading time dimension of x up to ``length`` with ``value``."""
    if x.shape[0] == length:
        return x
    pad = x.new_full((length - x.shape[0], *x.shape[1:]), value)
    return torch.cat([x, pad], dim=0)


def chunk_decays(starts: Tensor | None, log_alpha: Tensor | None, shape: tuple[int, ...], chunk_size: int,
                 device, dtype) -> ChunkDecays:
    """The decays of every chunk.

    starts [T, B] bool (or None: no resets), log_alpha [T, B, H] (or None: no decay); ``shape`` is
    (T, B, H), T a multiple of chunk_size.
    """
    T, B, H = shape
    N, C = T // chunk_size, chunk_size
    if starts is None:
        seg = torch.zeros(B, 1, N, C, dtype=torch.long, device=device)
    else:
        seg = torch.cumsum(starts.t().reshape(B, 1, N, C).long(), dim=-1)
    same = seg.unsqueeze(-1) == seg.unsqueeze(-2)  # [B, 1, N, C, C]: (t, i) in one segment
    causal = torch.ones(C, C, dtype=torch.bool, device=device).tril()
    within_mask = same & causal
    from_start_mask = seg == 0
    to_end_mask = seg == seg[..., -1:]
    start_to_end_mask = seg[..., -1] == 0
    if log_alpha is None:
        return ChunkDecays(within_mask.to(dtype), from_start_mask.to(dtype), to_end_mask.to(dtype),
                           start_to_end_mask.to(dtype))
    G = torch.cumsum(log_alpha.permute(1, 2, 0).reshape(B, H, N, C), dim=-1)  # [B, H, N, C]
    G_end = G[..., -1:]

    def masked_exp(mask: Tensor, exponent: Tensor) -> Tensor:
        # exp only where the mask holds: outside it the exponent can be large and positive, and
        # exp(inf) * 0 would poison the gradient with NaNs.
        mask = mask.expand_as(exponent)
        return torch.where(mask, torch.exp(torch.where(mask, exponent, torch.zeros_like(exponent))), 0.0)

    return ChunkDecays(
        within=masked_exp(within_mask, G.unsqueeze(-1) - G.unsqueeze(-2)),
        from_start=masked_exp(from_start_mask, G),
        to_end=masked_exp(to_end_mask, G_end - G),
        start_to_end=masked_exp(start_to_end_mask, G_end.squeeze(-1)),
    )


def scan_chunks(q: Tensor, k: Tensor, u: Tensor, w: Tensor | None, decays: ChunkDecays, S0: Tensor
                ) -> tuple[Tensor, Tensor]:
    """Carry the state across chunks and produce the outputs.

    Within a chunk the state after step t is S_t = D(t, 0) S0 + sum_{i <= t} D(t, i) k_i x_i^T with
    x = u - w S0 (w is None for the linear rule, whose writes do not read the state). Inputs are
    [B, H, N, C, d]; S0 [B, H, dk, dv]. Returns the outputs [B, H, N, C, dv] and the final state.

    Each chunk reads its incoming state inside the loop, for its writes (w S) and for its outputs
    (D(t, 0) q S): stacking every chunk's incoming state for one batched product afterwards made an
    [N, dk, dv] copy of the states, larger than q, k and v together at small chunks, whose gradient
    was the slowest product of the backward.
    """
    k_end = (k * decays.to_end.unsqueeze(-1)).transpose(-1, -2)  # [B, H, N, dk, C]
    keep = decays.start_to_end[..., None, None]  # [B, h, N, 1, 1]
    scores = (q @ k.transpose(-1, -2)) * decays.within  # [B, H, N, C, C]
    q = q * decays.from_start.unsqueeze(-1)  # what the outputs read from the incoming state
    # unbind once: indexing chunk n inside the loop would make backward allocate a zero gradient of
    # the whole tensor for every chunk.
    chunks = zip(k_end.unbind(2), u.unbind(2), (u if w is None else w).unbind(2), q.unbind(2), keep.unbind(2),
                 scores.unbind(2))
    S = S0
    outs = []
    for k_n, u_n, w_n, q_n, keep_n, scores_n in chunks:
        x = u_n if w is None else u_n - w_n @ S
        outs.append(q_n @ S + scores_n @ x)
        S = keep_n * S + k_n @ x
    return torch.stack(outs, dim=2), S


def unit_lower_inverse(strict: Tensor) -> Tensor:
    """(I + strict)^-1 for strictly lower-triangular ``strict`` [..., C, C].

    strict is nilpotent (strict^C = 0), so (I + strict)^-1 = sum_k (-strict)^k
    = (I + N)(I + N^2)(I + N^4)...(I + N^(2^j)) with N = -strict and 2^(j+1) >= C: about 2 log2 C
    batched C x C products. torch.linalg.solve_triangular computes the same, but on the CPU its time
    for many small batched systems is erratic (from 30 ms to several seconds for the same call,
    measured with C = 16 and 2,048 systems), while batched products are steady and differentiate
    cheaply.
    """
    power = -strict
    inverse = torch.eye(strict.shape[-1], dtype=strict.dtype, device=strict.device) + power
    span = 2
    while span < strict.shape[-1]:
        power = power @ power
        inverse = inverse + power @ inverse
        span *= 2
    return inverse
