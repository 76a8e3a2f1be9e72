"""The recurrent fast weight programmers (Irie, Schlag, Csordas, Schmidhuber, NeurIPS 2021), one step each.

Layout as in ``fwp_rl.ops.delta``: a fast weight matrix W is stored transposed, S = W^T [B, H, dk, dv]
(keys index rows), so W phi(q) is ``einsum("bhk,bhkv->bhv", phi(q), S)``, and every write is the delta
rule W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) (x) k_t of ``delta_rule_step``.

- Recurrent Delta Net (RDN), a recurrent slow net: each head's slow net also reads tanh(y_{t-1}) of
  that head through its own recurrent matrix R [d, 3d + 1]:

      [q_t; k_t; v_t; b_t] = P x_t + R^T tanh(y_{t-1})     (P x_t: the caller's projection of x_t)
      beta_t = beta_max sigmoid(b_t)
      W_t = W_{t-1} + beta_t (v_t - W_{t-1} phi(k_t)) (x) phi(k_t)
      y_t = W_t phi(q_t)

- Delta RNN, a recurrent fast net: the fast net's output feeds back through a second fast weight
  matrix R_t, programmed from x_t by its own key kr_t (softmax), value vr_t and rate betar_t:

      z_t = W_t phi(q_t)                                    (W_t: the delta rule above)
      R_t = R_{t-1} + betar_t (vr_t - R_{t-1} kr_t) (x) kr_t
      y_t = z_t + R_t softmax(y_{t-1})

- Delta LSTM, a recurrent fast net with gates: one pair (W^g, R^g) as above for each of the input gate
  i, the cell update u and the output gate o; the input and forget gates are coupled:

      a^g_t = W^g_t phi(q^g_t) + R^g_t softmax(y_{t-1})     (g = i, u, o)
      i_t = sigmoid(a^i_t),  u_t = a^u_t,  o_t = sigmoid(a^o_t)
      c_t = i_t * u_t + (1 - i_t) * c_{t-1}
      y_t = o_t * c_t

These Delta RNN and Delta LSTM are the variants of the paper's main results (its appendix compares
other placements of the activation functions). The Delta RNN and Delta LSTM functions take the
feed-forward part W_t phi(q_t) already computed by ``delta_rule_step``, so that each function is one
equation block above.

The ``*_step`` functions are the reference (the cores' rollout steps and step loops); the ``*_sequence`` functions
run a whole training sequence with a hand-written backward (the parts they share: ``fwp_rl.ops.inplace``), tested
equal to the step loop in values and gradients.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from fwp_rl.ops.delta import delta_rule_step
from fwp_rl.ops.feature_maps import softmax_backward
from fwp_rl.ops.inplace import (backward_state, in_row_blocks, phi_vjp, reset_steps, restart_episodes, start_episodes,
                                unwrite, write_and_read)


def rdn_step(q: Tensor, k: Tensor, v: Tensor, b: Tensor, R: Tensor, y_prev: Tensor, S: Tensor,
             phi: Callable[[Tensor], Tensor], beta_max: float = 1.0) -> tuple[Tensor, Tensor]:
    """One Recurrent Delta Net step.

    q, k, v [B, H, d] and b [B, H]: the slow net's outputs from x_t, before any activation;
    R [H, d, 3d + 1]: each head's recurrent slow weights (columns q | k | v | b); y_prev [B, H, d];
    S [B, H, dk, d] (dk the size of phi's output) -> (y [B, H, d], S).
    """
    d = y_prev.shape[-1]
    rq, rk, rv, rb = torch.einsum("bhi,hio->bho", torch.tanh(y_prev), R).split([d, d, d, 1], dim=-1)
    beta = beta_max * torch.sigmoid(b + rb.squeeze(-1))
    return delta_rule_step(phi(q + rq), phi(k + rk), v + rv, beta, S)


def delta_rnn_step(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R: Tensor, y_prev: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """The recurrent part of one Delta RNN step.

    z [B, H, d] = W_t phi(q_t), k [B, H, d] (the recurrent key, already through softmax), v [B, H, d],
    beta [B, H], R [B, H, d, d], y_prev [B, H, d] -> (y [B, H, d], R).
    """
    r, R = delta_rule_step(torch.softmax(y_prev, dim=-1), k, v, beta, R)
    return z + r, R


def delta_lstm_step(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R: Tensor, y_prev: Tensor, c_prev: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """The recurrent part of one Delta LSTM step; the gates are stacked in dim 1 in the order i, u, o.

    z [B, 3, H, d] = W^g_t phi(q^g_t), k [B, 3, H, d] (recurrent keys, already through softmax),
    v [B, 3, H, d], beta [B, 3, H], R [B, 3, H, d, d], y_prev and c_prev [B, H, d]
    -> (y [B, H, d], c [B, H, d], R).
    """
    G, H = z.shape[1:3]
    query = torch.softmax(y_prev, dim=-1).unsqueeze(1).expand_as(z)
    r, R = delta_rule_step(*(t.flatten(1, 2) for t in (query, k, v, beta, R)))
    a_i, a_u, a_o = (z + r.unflatten(1, (G, H))).unbind(1)
    i, o = torch.sigmoid(a_i), torch.sigmoid(a_o)
    c = i * a_u + (1.0 - i) * c_prev
    return o * c, c, R.unflatten(1, (G, H))


def rdn_sequence(q: Tensor, k: Tensor, v: Tensor, b: Tensor, R: Tensor, S0: Tensor, y0: Tensor,
                 starts: Tensor | None, phi: Callable[[Tensor], Tensor], beta_max: float = 1.0,
                 phi_backward: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The Recurrent Delta Net over a sequence, with a hand-written backward (``_RDNSequence``): the step loop of
    ``rdn_step`` in values and gradients. q, k, v [T, B, H, d] and b [T, B, H]: the slow net's outputs from the
    inputs (before the recurrent part and any activation); R [H, d, 3d + 1]; S0 [B, H, dk, d]; y0 [B, H, d];
    starts [T, B] bool or None: where set, the row's S and y_prev are reset to zero before step t; phi_backward:
    phi's closed-form backward, if it has one (``feature_map_backward``) -> (y [T, B, H, d], S_T, y_T)."""
    def run(rows: slice) -> tuple[Tensor, ...]:
        st = None if starts is None else starts[:, rows]
        return _RDNSequence.apply(q[:, rows], k[:, rows], v[:, rows], b[:, rows], R, S0[rows], y0[rows], st,
                                  reset_steps(st), phi, beta_max, phi_backward)

    return in_row_blocks(run, S0.shape[0], S0[0].numel() * S0.element_size(), (1, 0, 0))


def delta_rnn_sequence(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R0: Tensor, y0: Tensor,
                       starts: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The recurrent part of the Delta RNN over a sequence, with a hand-written backward (``_DeltaRNNSequence``): the
    step loop of ``delta_rnn_step`` in values and gradients. z [T, B, H, d] = W_t phi(q_t) of every step (the
    feed-forward part: its fast weights do not read the output, so a chunkwise form computes it); k [T, B, H, d]
    (softmax already applied), v [T, B, H, d], beta [T, B, H]: R's writes; R0 [B, H, d, d]; y0 [B, H, d]; starts
    [T, B] bool or None: where set, the row's R and y_prev are reset to zero before step t -> (y [T, B, H, d], R_T,
    y_T)."""
    def run(rows: slice) -> tuple[Tensor, ...]:
        st = None if starts is None else starts[:, rows]
        return _DeltaRNNSequence.apply(z[:, rows], k[:, rows], v[:, rows], beta[:, rows], R0[rows], y0[rows], st,
                                       reset_steps(st))

    return in_row_blocks(run, R0.shape[0], R0[0].numel() * R0.element_size(), (1, 0, 0))


def delta_lstm_sequence(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R0: Tensor, y0: Tensor, c0: Tensor,
                        starts: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The recurrent part of the Delta LSTM over a sequence, with a hand-written backward (``_DeltaLSTMSequence``):
    the step loop of ``delta_lstm_step`` in values and gradients. Gates stacked in dim 2 in the order i, u, o:
    z [T, B, 3, H, d] = W^g_t phi(q^g_t) of every step (computed chunkwise: W's writes do not read the output);
    k [T, B, 3, H, d] (softmax already applied), v [T, B, 3, H, d], beta [T, B, 3, H]: the writes of R^g;
    R0 [B, 3, H, d, d]; y0, c0 [B, H, d]; starts [T, B] bool or None: where set, the row's R, y_prev and c_prev are
    reset to zero before step t -> (y [T, B, H, d], R_T, y_T, c_T)."""
    z, k, v, beta = (t.flatten(2, 3) for t in (z, k, v, beta))
    R = R0.flatten(1, 2)

    def run(rows: slice) -> tuple[Tensor, ...]:
        st = None if starts is None else starts[:, rows]
        return _DeltaLSTMSequence.apply(z[:, rows], k[:, rows], v[:, rows], beta[:, rows], R[rows], y0[rows], c0[rows],
                                        st, reset_steps(st))

    y, R, c = in_row_blocks(run, R.shape[0], R[0].numel() * R.element_size(), (1, 0, 0))
    return y, R.unflatten(1, R0.shape[1:3]), y[-1], c


class _RDNSequence(torch.autograd.Function):
    """``rdn_sequence``. Why by hand: autograd through the step loop keeps every step's fast weights (the step loop
    checkpointed recomputes them, one more forward) and runs a dozen small operations per step, each a pass over all
    heads' fast weights. Here forward keeps per step only vectors (the pre-activations, the feature-mapped key and
    query, the error e_t) and updates S in place; backward gets each S_{t-1} back from S_t by undoing the step's write
    (``write_and_read``, ``unwrite``) and restores the rows an episode start zeroed from copies kept at the start.

    Undoing a write in floating point gives S_{t-1} to rounding: in float32 the S_{t-1} that backward sees differ
    from forward's by about 1e-7 of their size per step undone (float64 in the tests: exact to 1e-12).
    """

    @staticmethod
    def forward(ctx, q, k, v, b, R, S0, y0, starts, resets, phi, beta_max, phi_backward):
        T, B, H, d = q.shape
        inputs = torch.cat([q, k, v, b.unsqueeze(-1)], -1)  # [T, B, H, 3d + 1]
        pre, u = torch.empty_like(inputs), q.new_empty(T, B, H, d)  # pre-activations; tanh(y_{t-1})
        feats, errors, y = None, torch.empty_like(q), torch.empty_like(q)
        S, y_prev, kept = S0.clone(), y0, {}
        for t in range(T):
            if t in resets:
                kept[t] = start_episodes(S, starts[t])
                y_prev = y_prev.index_fill(0, kept[t][0], 0)
            torch.tanh(y_prev, out=u[t])
            torch.add(inputs[t], torch.bmm(u[t].transpose(0, 1), R).transpose(0, 1), out=pre[t])
            f = phi(pre[t, ..., :2 * d].unflatten(-1, (2, d)))  # [phi(q); phi(k)]: [B, H, 2, dk]
            if feats is None:
                feats = f.new_empty(T, *f.shape)
            feats[t] = f
            fq, fk = f.unbind(-2)
            read = write_and_read(S, fq, fk, pre[t, ..., 2 * d:3 * d], beta_max * torch.sigmoid(pre[t, ..., -1]),
                                   errors[t])
            y[t] = read
            y_prev = y[t]
        ctx.save_for_backward(R, S, y, pre, u, feats, errors)
        ctx.kept, ctx.phi, ctx.beta_max, ctx.phi_backward = kept, phi, beta_max, phi_backward
        return y, S.clone(), y[-1].clone()

    @staticmethod
    def backward(ctx, dy, dS_T, dy_T):
        R, S, y, pre, u, feats, errors = ctx.saved_tensors
        d = y.shape[-1]
        St, dS = backward_state(S, dS_T)
        dy_next = torch.zeros_like(y[0]) if dy_T is None else dy_T  # the gradient of y_t from the steps after t
        dpre = torch.empty_like(pre)
        for t in reversed(range(y.shape[0])):
            (fq, fk), sig = feats[t].unbind(-2), torch.sigmoid(pre[t, ..., -1])
            g = dy_next if dy is None else dy[t] + dy_next
            dfq, dfk, dpre[t, ..., 2 * d:3 * d], dbeta = unwrite(St, dS, fq, fk, ctx.beta_max * sig, errors[t], g)
            dpre[t, ..., :2 * d] = phi_vjp(ctx.phi, ctx.phi_backward, pre[t, ..., :2 * d].unflatten(-1, (2, d)),
                                           feats[t], torch.stack([dfq, dfk], -2)).flatten(-2)
            dpre[t, ..., -1] = dbeta * ctx.beta_max * sig * (1 - sig)
            dy_next = torch.bmm(dpre[t].transpose(0, 1), R.transpose(1, 2)).transpose(0, 1) * (1 - u[t] * u[t])
            if t in ctx.kept:
                restart_episodes(St, dS, ctx.kept[t])
                dy_next = dy_next.index_fill(0, ctx.kept[t][0], 0)
        dR = torch.einsum("tbhi,tbho->hio", u, dpre)
        dq, dk, dv = dpre[..., :3 * d].unflatten(-1, (3, d)).unbind(-2)
        return dq, dk, dv, dpre[..., -1], dR, dS, dy_next, None, None, None, None, None


class _DeltaRNNSequence(torch.autograd.Function):
    """``delta_rnn_sequence``, by hand as ``_RDNSequence`` is (why: there): R updated in place and recovered
    backwards by undoing each write; per step only vectors kept (the query softmax(y_{t-1}) and the error)."""

    @staticmethod
    def forward(ctx, z, k, v, beta, R0, y0, starts, resets):
        S, y_prev, kept = R0.clone(), y0, {}
        queries, errors, y = torch.empty_like(z), torch.empty_like(z), torch.empty_like(z)
        for t in range(z.shape[0]):
            if t in resets:
                kept[t] = start_episodes(S, starts[t])
                y_prev = y_prev.index_fill(0, kept[t][0], 0)
            s = queries[t].copy_(torch.softmax(y_prev, dim=-1))
            torch.add(z[t], write_and_read(S, s, k[t], v[t], beta[t], errors[t]), out=y[t])
            y_prev = y[t]
        ctx.save_for_backward(S, k, beta, queries, errors)
        ctx.kept = kept
        return y, S.clone(), y[-1].clone()

    @staticmethod
    def backward(ctx, dy, dS_T, dy_T):
        S, k, beta, queries, errors = ctx.saved_tensors
        St, dS = backward_state(S, dS_T)
        dy_next = torch.zeros_like(queries[0]) if dy_T is None else dy_T
        dz, dk, dv, dbeta = (torch.empty_like(t) for t in (queries, k, errors, beta))
        for t in reversed(range(queries.shape[0])):
            s = queries[t]
            g = dz[t].copy_(dy_next if dy is None else dy[t] + dy_next)
            ds, dk[t], dv[t], dbeta[t] = unwrite(St, dS, s, k[t], beta[t], errors[t], g)
            dy_next = softmax_backward(s, ds)  # s = softmax(y_{t-1})
            if t in ctx.kept:
                restart_episodes(St, dS, ctx.kept[t])
                dy_next = dy_next.index_fill(0, ctx.kept[t][0], 0)
        return dz, dk, dv, dbeta, dS, dy_next, None, None


class _DeltaLSTMSequence(torch.autograd.Function):
    """``delta_lstm_sequence``, by hand as ``_RDNSequence`` is (why: there), on the gates' and heads' R matrices side
    by side (G H of them, [B, G H, d, d]); per step kept: the query softmax(y_{t-1}), the errors, the gates'
    pre-activations, c_{t-1} and c_t."""

    @staticmethod
    def forward(ctx, z, k, v, beta, R0, y0, c0, starts, resets):
        T, B, GH, d = z.shape
        H = y0.shape[1]
        S, y_prev, c_prev, kept = R0.clone(), y0, c0, {}
        queries, y, cells = (y0.new_empty(T, B, H, d) for _ in range(3))
        errors, gates, c_prevs = torch.empty_like(z), torch.empty_like(z), torch.empty_like(y)
        for t in range(T):
            if t in resets:
                kept[t] = start_episodes(S, starts[t])
                y_prev, c_prev = (u.index_fill(0, kept[t][0], 0) for u in (y_prev, c_prev))
            s = queries[t].copy_(torch.softmax(y_prev, dim=-1))
            read = write_and_read(S, s.repeat(1, GH // H, 1), k[t], v[t], beta[t], errors[t])
            a_i, a_u, a_o = torch.add(z[t], read, out=gates[t]).unflatten(1, (GH // H, H)).unbind(1)
            i = torch.sigmoid(a_i)
            c_prevs[t] = c_prev
            c_prev = torch.add(i * a_u, (1.0 - i) * c_prev, out=cells[t])
            torch.mul(torch.sigmoid(a_o), c_prev, out=y[t])
            y_prev = y[t]
        ctx.save_for_backward(S, k, beta, queries, errors, gates, c_prevs, cells)
        ctx.kept = kept
        return y, S.clone(), c_prev.clone()

    @staticmethod
    def backward(ctx, dy, dS_T, dc_T):
        S, k, beta, queries, errors, gates, c_prevs, cells = ctx.saved_tensors
        T, B, GH, d = gates.shape
        G, H = GH // queries.shape[2], queries.shape[2]
        St, dS = backward_state(S, dS_T)
        dy_next = torch.zeros_like(queries[0])
        dc_next = torch.zeros_like(queries[0]) if dc_T is None else dc_T
        dgates, dk, dv, dbeta = (torch.empty_like(t) for t in (gates, k, errors, beta))
        for t in reversed(range(T)):
            a_i, a_u, a_o = gates[t].unflatten(1, (G, H)).unbind(1)
            i, o, c_prev = torch.sigmoid(a_i), torch.sigmoid(a_o), c_prevs[t]
            g = dy_next if dy is None else dy[t] + dy_next  # y_t = o c_t
            dc = g * o + dc_next
            da = dgates[t].unflatten(1, (G, H))
            torch.mul(dc * (a_u - c_prev), i * (1.0 - i), out=da[:, 0])  # c_t = i u + (1 - i) c_{t-1}
            torch.mul(dc, i, out=da[:, 1])
            torch.mul(g * cells[t], o * (1.0 - o), out=da[:, 2])
            s = queries[t]
            dq, dk[t], dv[t], dbeta[t] = unwrite(St, dS, s.repeat(1, G, 1), k[t], beta[t], errors[t], dgates[t])
            ds = dq.unflatten(1, (G, H)).sum(1)
            dy_next = softmax_backward(s, ds)  # s = softmax(y_{t-1})
            dc_next = dc * (1.0 - i)
            if t in ctx.kept:
                restart_episodes(St, dS, ctx.kept[t])
                dy_next, dc_next = (u.index_fill(0, ctx.kept[t][0], 0) for u in (dy_next, dc_next))
        return dgates, dk, dv, dbeta, dS, dy_next, dc_next, None, None
