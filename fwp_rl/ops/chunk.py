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
from torch.autograd.function import once_differentiable


@dataclass
class ChunkDecays:
    """Decays of one chunk layout, [B, H or 1, N, C(, C)] with N chunks of C steps."""

    within: Tensor  # D(t, i) for i <= t, 0 above the diagonal           [B, h, N, C, C]
    from_start: Tensor  # D(t, 0): how much of the incoming state step t sees  [B, h, N, C]
    to_end: Tensor  # D(C, i): how much of step i's write survives the chunk  [B, h, N, C]
    start_to_end: Tensor  # D(C, 0): how much of the incoming state survives   [B, h, N]


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


def chunkwise_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, S0: Tensor, starts: Tensor | None,
                   log_alpha: Tensor | None, chunk_size: int) -> tuple[Tensor, Tensor]:
    """The linear rule (``beta`` None) or the (gated) delta rule in chunks: (outputs [T, B, H, dv], final state).

    Inputs [T, B, H, d], beta and log_alpha [T, B, H] (log_alpha None: no decay), starts [T, B] (or None),
    S0 [B, H, dk, dv]. Within a chunk the state after step t is S_t = D(t, 0) S0 + sum_{i <= t} D(t, i)
    k_i x_i^T, where x_i is what step i writes: v_i for the linear rule. For the delta rule the writes
    solve a unit lower-triangular system (the WY representation of the product of Householder-like
    transitions),

        (I + diag(beta) tril(D * K K^T, -1)) X = diag(beta) (V - diag(D(., 0)) K S0),

    so X = U - W S0 with U = Inv V, W = Inv diag(D(., 0)) K, Inv = (I + ...)^-1 diag(beta).
    """
    T, B, H = k.shape[:3]
    C = min(chunk_size, T)
    Tp = -(-T // C) * C
    # Padded steps have k = 0, beta = 0 and no decay: they leave the state as it is.
    q, k, v = (pad_time(x, Tp) for x in (q, k, v))
    beta, log_alpha = (None if x is None else pad_time(x, Tp) for x in (beta, log_alpha))
    starts = None if starts is None else pad_time(starts, Tp, False)
    decays = chunk_decays(starts, log_alpha, (Tp, B, H), C, q.device, q.dtype)

    def flat(t: Tensor) -> Tensor:  # [B, H or 1, N, ...] -> [B * H, N, ...]
        return t.expand(B, H, *t.shape[2:]).reshape(B * H, *t.shape[2:])

    per_row = (decays.within, decays.from_start, decays.to_end, decays.start_to_end[..., None, None])
    out, S = _ChunkwiseRule.apply(q, k, v, beta, *map(flat, per_row), S0.reshape(B * H, *S0.shape[2:]))
    return out[:T], S.reshape(S0.shape)


def _chunk(x: Tensor, n: int, size: int) -> Tensor:
    """Chunk n of x [T, B, H, ...] as a contiguous [B * H, C, ...]: the layout of batched products."""
    x = x[n * size:(n + 1) * size]
    return x.permute(1, 2, 0, *range(3, x.dim())).reshape(-1, size, *x.shape[3:]).contiguous()


def _unchunk(dest: Tensor, n: int, x: Tensor) -> None:
    """Write x [B * H, C, ...] into chunk n of dest [T, B, H, ...]."""
    C, B, H = x.shape[1], *dest.shape[1:3]
    dest[n * C:(n + 1) * C] = x.view(B, H, C, *x.shape[2:]).permute(2, 0, 1, *range(3, x.dim() + 1))


class _ChunkwiseRule(torch.autograd.Function):
    """``chunkwise_rule``, one chunk after the other, forward and backward; decays [B * H, N, ...].

    The backward is written by hand. Autograd's, through batched products over all chunks and then a
    Python loop over them, copied every chunk's gradients back together, summed gradients with
    separate additions and differentiated the inverse through its chain of products. Here each
    chunk's work, forward and backward, runs on that chunk's slices while they are in cache (the C x C
    products of all chunks at once took 1.7x as long as chunk by chunk), each product adds into its
    sum (baddbmm), the inverse's gradient is -Inv^T dInv Inv^T, and the inputs and outputs keep their
    [T, B, H, d] layout, each chunk copied to and from the layout of batched products as it is used.
    On a 2-core CPU (T = 128, batch 64, 4 heads of 64) the delta rule's forward and backward take
    0.75x the time they took through autograd.
    """

    @staticmethod
    def forward(ctx, q, k, v, beta, within, from_start, to_end, keep, S0):
        BH, N, C = within.shape[:3]
        delta = beta is not None
        states = S0.new_empty(N + 1, *S0.shape)  # the state entering each chunk, and the final one
        states[0] = S0
        out, scores = v.new_empty(v.shape), v.new_empty(N, BH, C, C)
        xs, inverses, ws = (v.new_empty(N, BH, C, v.shape[-1]), v.new_empty(N, BH, C, C),
                            k.new_empty(N, BH, C, k.shape[-1])) if delta else (None, None, None)
        for n in range(N):
            S, q_n, k_n, v_n = states[n], _chunk(q, n, C), _chunk(k, n, C), _chunk(v, n, C)
            torch.mul(q_n @ k_n.transpose(-1, -2), within[:, n], out=scores[n])
            if delta:
                b = _chunk(beta, n, C)
                system = ((k_n @ k_n.transpose(-1, -2)) * within[:, n]).tril_(-1) * b.unsqueeze(-1)
                inverses[n] = unit_lower_inverse(system)
                inverse = inverses[n] * b.unsqueeze(-2)
                w = torch.bmm(inverse * from_start[:, n].unsqueeze(-2), k_n, out=ws[n])
                x = torch.baddbmm(inverse @ v_n, w, S, alpha=-1, out=xs[n])
            else:
                x = v_n
            _unchunk(out, n, torch.baddbmm(scores[n] @ x, q_n * from_start[:, n].unsqueeze(-1), S))
            k_end = (k_n * to_end[:, n].unsqueeze(-1)).transpose(-1, -2)
            torch.mul(S, keep[:, n], out=states[n + 1]).baddbmm_(k_end, x)
        ctx.save_for_backward(q, k, v, beta, within, from_start, to_end, keep, states, scores, xs, inverses, ws)
        return out, states[N].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_S):
        q, k, v, beta, within, from_start, to_end, keep, states, scores, xs, inverses, ws = ctx.saved_tensors
        N, C = scores.shape[0], scores.shape[-1]
        delta = beta is not None
        # batched products take a fast path only for contiguous (or transposed) matrices, which an
        # incoming gradient need not have (a sum's is expanded, all strides 0)
        d_S = d_S.contiguous()

        def per_chunk(t: Tensor, needed: bool) -> Tensor | None:  # gradient buffer [N, B * H, ...]
            return t.new_empty(N, *t.shape[:1], *t.shape[2:]) if needed else None

        d_q, d_k, d_v = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
        d_beta = torch.empty_like(beta, memory_format=torch.contiguous_format) if delta else None
        d_within, d_from_start, d_to_end, d_keep = (per_chunk(t, needed) for t, needed in
                                                    zip((within, from_start, to_end, keep), ctx.needs_input_grad[4:8]))
        for n in reversed(range(N)):
            S, d_o, q_n, k_n, v_n = states[n], _chunk(d_out, n, C), _chunk(q, n, C), _chunk(k, n, C), _chunk(v, n, C)
            within_n = within[:, n]
            from_start_n, to_end_n = from_start[:, n].unsqueeze(-1), to_end[:, n].unsqueeze(-1)
            x = xs[n] if delta else v_n
            # out = scores x + (from_start q) S,  S' = keep S + (to_end k)^T x
            d_x = torch.bmm(scores[n].transpose(-1, -2), d_o).baddbmm_(k_n * to_end_n, d_S)
            d_q_read = d_o @ S.transpose(-1, -2)  # the gradient of from_start q
            d_scores = d_o @ x.transpose(-1, -2)
            d_k_end = x @ d_S.transpose(-1, -2)  # the gradient of to_end k
            if d_from_start is not None:
                torch.sum(d_q_read * q_n, dim=-1, out=d_from_start[n])
            if d_to_end is not None:
                torch.sum(d_k_end * k_n, dim=-1, out=d_to_end[n])
            if d_keep is not None:
                torch.sum(d_S * S, dim=(-2, -1), keepdim=True, out=d_keep[n])
            d_S_in = (keep[:, n] * d_S).baddbmm_((q_n * from_start_n).transpose(-1, -2), d_o)
            # scores = (q k^T) * within
            d_qk = d_scores * within_n
            if d_within is not None:
                torch.mul(d_scores, q_n @ k_n.transpose(-1, -2), out=d_within[n])
            _unchunk(d_q, n, torch.bmm(d_qk, k_n).addcmul_(d_q_read, from_start_n))
            d_k_n = torch.bmm(d_qk.transpose(-1, -2), q_n).addcmul_(d_k_end, to_end_n)
            if delta:
                # x = inverse v - w S,  w = inverse diag(from_start) k,  inverse = unit_inverse diag(beta)
                unit_inverse, b, from_start_row = inverses[n], _chunk(beta, n, C), from_start[:, n].unsqueeze(-2)
                inverse = unit_inverse * b.unsqueeze(-2)
                d_w = -(d_x @ S.transpose(-1, -2))
                d_S_in.baddbmm_(ws[n].transpose(-1, -2), d_x, alpha=-1)
                _unchunk(d_v, n, inverse.transpose(-1, -2) @ d_x)
                d_k_n.baddbmm_((inverse * from_start_row).transpose(-1, -2), d_w)
                d_inverse_read = d_w @ k_n.transpose(-1, -2)  # the gradient of inverse diag(from_start)
                if d_from_start is not None:
                    d_from_start[n] += (d_inverse_read * inverse).sum(dim=-2)
                d_inverse = (d_x @ v_n.transpose(-1, -2)).addcmul_(d_inverse_read, from_start_row)
                d_b = (d_inverse * unit_inverse).sum(dim=-2)
                # unit_inverse = (I + system)^-1,  system = diag(beta) tril(k k^T * within, -1)
                unit_inverse_t = unit_inverse.transpose(-1, -2)
                d_system = -(unit_inverse_t @ (d_inverse * b.unsqueeze(-2)) @ unit_inverse_t).tril_(-1)
                kk = k_n @ k_n.transpose(-1, -2)
                d_b += (d_system * (kk * within_n).tril_(-1)).sum(dim=-1)
                _unchunk(d_beta, n, d_b)
                d_masked_kk = d_system * b.unsqueeze(-1)
                if d_within is not None:
                    d_within[n].addcmul_(d_masked_kk, kk)
                d_kk = d_masked_kk * within_n
                d_k_n.baddbmm_(d_kk + d_kk.transpose(-1, -2), k_n)
            else:
                _unchunk(d_v, n, d_x)
            _unchunk(d_k, n, d_k_n)
            d_S = d_S_in
        decay_grads = (d_within, d_from_start, d_to_end, d_keep)
        return d_q, d_k, d_v, d_beta, *(None if g is None else g.transpose(0, 1) for g in decay_grads), d_S


def unit_lower_inverse(strict: Tensor) -> Tensor:
    """(I + strict)^-1 for strictly lower-triangular ``strict`` [..., C, C].

    strict is nilpotent (strict^C = 0), so (I + strict)^-1 = sum_k (-strict)^k
    = (I + N)(I + N^2)(I + N^4)...(I + N^(2^j)) with N = -strict and 2^(j+1) >= C: about 2 log2 C
    batched C x C products. torch.linalg.solve_triangular computes the same, but on the CPU its time
    for many small batched systems is erratic (from 30 ms to several seconds for the same call,
    measured with C = 16 and 2,048 systems), while batched products are steady.
    """
    power = -strict
    inverse = torch.eye(strict.shape[-1], dtype=strict.dtype, device=strict.device) + power
    span = 2
    while span < strict.shape[-1]:
        power = power @ power
        inverse = inverse + power @ inverse
        span *= 2
    return inverse
