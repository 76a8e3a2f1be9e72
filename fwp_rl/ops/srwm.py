"""The self-referential weight matrix (SRWM; Irie, Schlag, Csordas, Schmidhuber, ICML 2022): one step (the
reference), and a whole sequence with a hand-written backward (``srwm_sequence``).

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
from fwp_rl.ops.inplace import (add_outer_, backward_state, in_row_blocks, mat_vec, phi_vjp, reset_steps,
                                restart_episodes, start_episodes, vec_mat)


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


def srwm_sequence(x: Tensor, W0: Tensor, S0: Tensor, starts: Tensor | None, phi: Callable[[Tensor], Tensor],
                  phi_backward: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The SRWM over a sequence, with a hand-written backward (``_SRWMSequence``): the step loop of ``srwm_step`` in
    values and gradients. x [T, B, H, d]; W0 [H, dk, dy + 2d + 1]: the learned initial matrix, to which an episode
    start resets the row's matrices; S0 [B, H, dk, dy + 2d + 1]; starts [T, B] bool or None; phi_backward: phi's
    closed-form backward, if it has one (``feature_map_backward``) -> (y [T, B, H, dy], S_T)."""
    def run(rows: slice) -> tuple[Tensor, ...]:
        st = None if starts is None else starts[:, rows]
        return _SRWMSequence.apply(x[:, rows], W0, S0[rows], st, reset_steps(st), phi, phi_backward)

    return in_row_blocks(run, S0.shape[0], S0[0].numel() * S0.element_size(), (1, 0))


class _SRWMSequence(torch.autograd.Function):
    """``srwm_sequence``, by hand as the recurrent FWPs' forms are (``fwp_rl.ops.recurrent_fwp``: why there): S
    rewritten in place and recovered backwards by undoing each write; per step only vectors kept (the matrix's
    output [y; k; q; b], phi(k) and phi(q), and the correction v - v_bar, read in one pass as S^T (phi(q) - phi(k)))."""

    @staticmethod
    def forward(ctx, x, W0, S0, starts, resets, phi, phi_backward):
        T, B, H, d = x.shape
        px = phi(x)  # the inputs do not depend on the state: phi of all steps at once
        S, kept = S0.clone(), {}
        outs, errors, feats = S.new_empty(T, *S.shape[:2], S.shape[-1]), S.new_empty(T, *S.shape[:2], S.shape[-1]), None
        for t in range(T):
            if t in resets:
                kept[t] = start_episodes(S, starts[t], W0)
            out = outs[t]
            out.copy_(vec_mat(px[t], S))  # [y; k; q; b] = W_{t-1} phi(x_t)
            f = phi(out[..., d:3 * d].unflatten(-1, (2, d)))  # [phi(k); phi(q)]
            if feats is None:
                feats = f.new_empty(T, *f.shape)
            feats[t] = f
            fk, fq = f.unbind(-2)
            e = errors[t].copy_(vec_mat(fq - fk, S))  # v - v_bar = W_{t-1} (phi(q) - phi(k))
            add_outer_(S, torch.sigmoid(out[..., -1:]) * fk, e)
        ctx.save_for_backward(x, W0, S, px, outs, feats, errors)
        ctx.kept, ctx.phi, ctx.phi_backward = kept, phi, phi_backward
        return outs[..., :S.shape[-1] - 2 * d - 1].clone(), S.clone()

    @staticmethod
    def backward(ctx, dy, dS_T):
        x, W0, S, px, outs, feats, errors = ctx.saved_tensors
        d = x.shape[-1]
        St, dS = backward_state(S, dS_T)
        dW0, dpx, d_out = torch.zeros_like(W0), torch.empty_like(px), torch.zeros_like(outs[0])
        for t in reversed(range(x.shape[0])):
            out, (fk, fq), e = outs[t], feats[t].unbind(-2), errors[t]
            sig = torch.sigmoid(out[..., -1:])
            a = sig * fk
            da, de = mat_vec(dS, e), vec_mat(a, dS)  # the write: S_t = S_{t-1} + a e^T
            add_outer_(St, e, a, alpha=-1.0)  # S_{t-1}
            w = vec_mat(de, St)  # e = S_{t-1}^T (phi(q) - phi(k))
            if dy is not None:
                d_out[..., :dy.shape[-1]] = dy[t]
            d_out[..., d:3 * d] = phi_vjp(ctx.phi, ctx.phi_backward, out[..., d:3 * d].unflatten(-1, (2, d)),
                                          feats[t], torch.stack([sig * da - w, w], -2)).flatten(-2)
            d_out[..., -1:] = (da * fk).sum(-1, keepdim=True) * sig * (1 - sig)
            dpx[t] = vec_mat(d_out, St)  # out = S_{t-1}^T phi(x_t)
            add_outer_(dS, fq - fk, de)
            add_outer_(dS, px[t], d_out)
            if t in ctx.kept:
                dW0 += restart_episodes(St, dS, ctx.kept[t]).sum(0)
        return phi_vjp(ctx.phi, ctx.phi_backward, x, px, dpx), dW0, dS, None, None, None, None
