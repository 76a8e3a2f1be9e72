"""Triton kernels of the recurrent fast weight programmers over a sequence, forward and backward: the Recurrent Delta
Net, and the recurrent parts of the Delta RNN and the Delta LSTM (``fwp_rl.ops.recurrent_fwp_triton`` calls them; the
reference they are tested against is the step loop of ``rdn_step``, ``delta_rnn_step`` and ``delta_lstm_step`` in
``fwp_rl.ops.recurrent_fwp``).

Written by hand because no library has these recurrences: fla's kernels (``fwp_rl.ops.fla_backend``) run delta rules
whose keys and queries come from the inputs alone, and here they also read the previous output. One program per (row,
head) keeps the head's fast weights [d, d] and their gradients (and RDN's recurrent slow weights) in registers for the
whole sequence. Forward stores per step only vectors (the queries and keys, the error of each write, the gates) and,
where a row starts an episode, the fast weights the start cleared; backward runs the steps in reverse and gets each
S_{t-1} back from S_t by undoing the step's write, S_{t-1} = S_t - beta k e^T, as the PyTorch forms
(``_RDNSequence`` and its siblings) do. The gradient of RDN's recurrent slow weights is one product over all steps
outside the kernel.

Layouts: per-step vectors [T, B, H, d] (the Delta LSTM's per gate: [T, B, 3H, d], gate-major, i, u, o); rates [T, B,
H]; fast weights [B, H, d, d] with keys indexing rows (S = W^T); starts and slots [T, B] (slots: where the fast
weights an episode start cleared are kept, [N, H, d, d]); beta_max a tensor [1] of the inputs' dtype (a float
argument would be float32). tanh is 2 sigmoid(2x) - 1: Triton's language has sigmoid on every backend.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softmax(x):
    e = tl.exp(x - tl.max(x, 0))
    return e / tl.sum(e, 0)


@triton.jit
def _softmax_backward(s, ds):
    return s * (ds - tl.sum(s * ds, 0))


@triton.jit
def _write_and_read(S, q, k, v, beta):
    """One delta-rule step: S_t = S_{t-1} + beta k e^T with e = v - S_{t-1}^T k -> (S_t, e, S_t^T q)."""
    e = v - tl.sum(k[:, None] * S, 0)
    read = tl.sum(q[:, None] * S, 0) + beta * tl.sum(k * q, 0) * e  # S_t^T q, from S_{t-1}
    return S + (beta * k)[:, None] * e[None, :], e, read


@triton.jit
def _unwrite(S, dS, q, k, e, beta, g):
    """Backward of ``_write_and_read`` given g, the gradient of its read, and dS, that of S_t
    -> (S_{t-1}, the gradient of S_{t-1}, dq, dk, de (that of v), dbeta)."""
    a = beta * k
    dS += q[:, None] * g[None, :]  # the read
    da = tl.sum(dS * e[None, :], 1)  # the write, S_t = S_{t-1} + a e^T
    de = tl.sum(a[:, None] * dS, 0)
    S -= a[:, None] * e[None, :]  # S_{t-1}
    dq = tl.sum(S * g[None, :], 1) + tl.sum(e * g, 0) * a
    dk = beta * da - tl.sum(S * de[None, :], 1)  # e = v - S_{t-1}^T k
    dS -= k[:, None] * de[None, :]
    return S, dS, dq, dk, de, tl.sum(da * k, 0)


@triton.jit
def _start(S_kept, S, kept_at, mat, started):
    """Before a step: keep S at kept_at where the row starts an episode, then clear it there."""
    tl.store(S_kept + kept_at + mat, S, mask=mat * 0 + started != 0)
    return tl.where(started != 0, 0.0, S)


@triton.jit
def _restart(S_kept, S, kept_at, mat, started):
    """Backward of ``_start``: S before the start, where the row started an episode."""
    return tl.where(started != 0, tl.load(S_kept + kept_at + mat, mask=mat * 0 + started != 0, other=0.0), S)


@triton.jit
def rdn_forward_kernel(q, k, v, b, R, S0, y0, starts, slots, y, fq_out, fk_out, e_out, u_out, sig_out, S_out, S_kept,
                       beta_max_in, T, B, H, D: tl.constexpr):
    """RDN: [q; k; v; b]_t += R^T tanh(y_{t-1}); S written with phi = softmax; y_t = S_t^T phi(q_t)."""
    pid = tl.program_id(0)  # row * H + head
    row, head = pid // H, pid % H
    beta_max = tl.load(beta_max_in)
    i = tl.arange(0, D)
    mat = i[:, None] * D + i[None, :]
    W = 3 * D + 1
    r = R + head * D * W + i[:, None] * W + i[None, :]  # R's rows: tanh(y_{t-1}); columns q | k | v | b
    Rq, Rk, Rv = tl.load(r), tl.load(r + D), tl.load(r + 2 * D)
    rb = tl.load(R + head * D * W + i * W + 3 * D)
    S = tl.load(S0 + pid * D * D + mat)
    y_prev = tl.load(y0 + pid * D + i)
    for t in range(T):
        started = tl.load(starts + t * B + row)
        S = _start(S_kept, S, (tl.load(slots + t * B + row) * H + head) * D * D, mat, started)
        y_prev = tl.where(started != 0, 0.0, y_prev)
        u = 2.0 * tl.sigmoid(2.0 * y_prev) - 1.0
        vec = (t * B * H + pid) * D + i
        fq = _softmax(tl.load(q + vec) + tl.sum(u[:, None] * Rq, 0))
        fk = _softmax(tl.load(k + vec) + tl.sum(u[:, None] * Rk, 0))
        pv = tl.load(v + vec) + tl.sum(u[:, None] * Rv, 0)
        sig = tl.sigmoid(tl.load(b + t * B * H + pid) + tl.sum(u * rb, 0))
        S, e, read = _write_and_read(S, fq, fk, pv, beta_max * sig)
        tl.store(y + vec, read)
        tl.store(fq_out + vec, fq)
        tl.store(fk_out + vec, fk)
        tl.store(e_out + vec, e)
        tl.store(u_out + vec, u)
        tl.store(sig_out + t * B * H + pid, sig)
        y_prev = read
    tl.store(S_out + pid * D * D + mat, S)


@triton.jit
def rdn_backward_kernel(dy, dS_T, R, S_T, fq_in, fk_in, e_in, u_in, sig_in, starts, slots, S_kept, dpre, dS0,
                        dy0, beta_max_in, T, B, H, D: tl.constexpr):
    """The gradients of RDN's pre-activations dpre [T, B, H, 3d + 1] (q | k | v | b), of S0 and of y0."""
    pid = tl.program_id(0)
    row, head = pid // H, pid % H
    beta_max = tl.load(beta_max_in)
    i = tl.arange(0, D)
    mat = i[:, None] * D + i[None, :]
    W = 3 * D + 1
    r = R + head * D * W + i[:, None] * W + i[None, :]
    Rq, Rk, Rv = tl.load(r), tl.load(r + D), tl.load(r + 2 * D)
    rb = tl.load(R + head * D * W + i * W + 3 * D)
    S = tl.load(S_T + pid * D * D + mat)
    dS = tl.load(dS_T + pid * D * D + mat)
    dy_next = tl.zeros([D], dtype=S.dtype)  # the gradient of y_t from the steps after t
    for step in range(T):
        t = T - 1 - step
        vec = (t * B * H + pid) * D + i
        fq, fk, u = tl.load(fq_in + vec), tl.load(fk_in + vec), tl.load(u_in + vec)
        sig = tl.load(sig_in + t * B * H + pid)
        S, dS, dfq, dfk, dpv, dbeta = _unwrite(S, dS, fq, fk, tl.load(e_in + vec), beta_max * sig,
                                               tl.load(dy + vec) + dy_next)
        dpq, dpk = _softmax_backward(fq, dfq), _softmax_backward(fk, dfk)
        dpb = dbeta * beta_max * sig * (1.0 - sig)
        out = dpre + (t * B * H + pid) * W + i
        tl.store(out, dpq)
        tl.store(out + D, dpk)
        tl.store(out + 2 * D, dpv)
        tl.store(dpre + (t * B * H + pid) * W + 3 * D, dpb)
        dy_next = (tl.sum(Rq * dpq[None, :], 1) + tl.sum(Rk * dpk[None, :], 1) + tl.sum(Rv * dpv[None, :], 1)
                   + rb * dpb) * (1.0 - u * u)
        started = tl.load(starts + t * B + row)  # the row's S and y_prev were cleared before step t
        S = _restart(S_kept, S, (tl.load(slots + t * B + row) * H + head) * D * D, mat, started)
        dS = tl.where(started != 0, 0.0, dS)
        dy_next = tl.where(started != 0, 0.0, dy_next)
    tl.store(dS0 + pid * D * D + mat, dS)
    tl.store(dy0 + pid * D + i, dy_next)


@triton.jit
def delta_rnn_forward_kernel(z, k, v, beta, R0, y0, starts, slots, y, s_out, e_out, R_out, R_kept, T, B, H,
                             D: tl.constexpr):
    """The Delta RNN's recurrent part: y_t = z_t + R_t^T softmax(y_{t-1}), R written with key k_t (already through
    softmax), value v_t and rate beta_t (already scaled)."""
    pid = tl.program_id(0)
    row = pid // H
    i = tl.arange(0, D)
    mat = i[:, None] * D + i[None, :]
    S = tl.load(R0 + pid * D * D + mat)
    y_prev = tl.load(y0 + pid * D + i)
    for t in range(T):
        started = tl.load(starts + t * B + row)
        S = _start(R_kept, S, (tl.load(slots + t * B + row) * H + pid % H) * D * D, mat, started)
        y_prev = tl.where(started != 0, 0.0, y_prev)
        vec = (t * B * H + pid) * D + i
        s = _softmax(y_prev)
        S, e, read = _write_and_read(S, s, tl.load(k + vec), tl.load(v + vec), tl.load(beta + t * B * H + pid))
        y_prev = tl.load(z + vec) + read
        tl.store(y + vec, y_prev)
        tl.store(s_out + vec, s)
        tl.store(e_out + vec, e)
    tl.store(R_out + pid * D * D + mat, S)


@triton.jit
def delta_rnn_backward_kernel(dy, dR_T, R_T, k, beta, s_in, e_in, starts, slots, R_kept, dz, dk, dv, dbeta, dR0,
                              dy0, T, B, H, D: tl.constexpr):
    pid = tl.program_id(0)
    row = pid // H
    i = tl.arange(0, D)
    mat = i[:, None] * D + i[None, :]
    S = tl.load(R_T + pid * D * D + mat)
    dS = tl.load(dR_T + pid * D * D + mat)
    dy_next = tl.zeros([D], dtype=S.dtype)
    for step in range(T):
        t = T - 1 - step
        vec = (t * B * H + pid) * D + i
        g = tl.load(dy + vec) + dy_next
        s = tl.load(s_in + vec)
        S, dS, ds, dk_t, dv_t, dbeta_t = _unwrite(S, dS, s, tl.load(k + vec), tl.load(e_in + vec),
                                                  tl.load(beta + t * B * H + pid), g)
        tl.store(dz + vec, g)
        tl.store(dk + vec, dk_t)
        tl.store(dv + vec, dv_t)
        tl.store(dbeta + t * B * H + pid, dbeta_t)
        started = tl.load(starts + t * B + row)
        S = _restart(R_kept, S, (tl.load(slots + t * B + row) * H + pid % H) * D * D, mat, started)
        dS = tl.where(started != 0, 0.0, dS)
        dy_next = tl.where(started != 0, 0.0, _softmax_backward(s, ds))
    tl.store(dR0 + pid * D * D + mat, dS)
    tl.store(dy0 + pid * D + i, dy_next)


@triton.jit
def delta_lstm_forward_kernel(z, k, v, beta, R0, y0, c0, starts, slots, y, c_out, a_out, cp_out, s_out, e_out, R_out,
                              R_kept, T, B, H, D: tl.constexpr):
    """The Delta LSTM's recurrent part and cell: a^g_t = z^g_t + R^g_t^T softmax(y_{t-1}) for g = i, u, o (each R^g
    written as the Delta RNN's R), c_t = i u + (1 - i) c_{t-1} with i = sigmoid(a^i), y_t = sigmoid(a^o) c_t."""
    pid = tl.program_id(0)
    row, head = pid // H, pid % H
    i = tl.arange(0, D)
    mat = i[:, None] * D + i[None, :]
    gate = (row * 3 * H + head) * D * D  # R^i of this row and head; R^u and R^o follow H D D further on each
    Si = tl.load(R0 + gate + mat)
    Su = tl.load(R0 + gate + H * D * D + mat)
    So = tl.load(R0 + gate + 2 * H * D * D + mat)
    y_prev = tl.load(y0 + pid * D + i)
    c_prev = tl.load(c0 + pid * D + i)
    for t in range(T):
        started = tl.load(starts + t * B + row)
        kept_at = (tl.load(slots + t * B + row) * 3 * H + head) * D * D
        Si = _start(R_kept, Si, kept_at, mat, started)
        Su = _start(R_kept, Su, kept_at + H * D * D, mat, started)
        So = _start(R_kept, So, kept_at + 2 * H * D * D, mat, started)
        y_prev = tl.where(started != 0, 0.0, y_prev)
        c_prev = tl.where(started != 0, 0.0, c_prev)
        s = _softmax(y_prev)
        gi = ((t * B + row) * 3 * H + head) * D + i  # gate i's vectors at step t; u and o follow H D further on each
        rate = (t * B + row) * 3 * H + head
        Si, ei, ri = _write_and_read(Si, s, tl.load(k + gi), tl.load(v + gi), tl.load(beta + rate))
        Su, eu, ru = _write_and_read(Su, s, tl.load(k + gi + H * D), tl.load(v + gi + H * D),
                                     tl.load(beta + rate + H))
        So, eo, ro = _write_and_read(So, s, tl.load(k + gi + 2 * H * D), tl.load(v + gi + 2 * H * D),
                                     tl.load(beta + rate + 2 * H))
        a_i = tl.load(z + gi) + ri
        a_u = tl.load(z + gi + H * D) + ru
        a_o = tl.load(z + gi + 2 * H * D) + ro
        ig = tl.sigmoid(a_i)
        vec = (t * B * H + pid) * D + i
        tl.store(cp_out + vec, c_prev)
        c_prev = ig * a_u + (1.0 - ig) * c_prev
        y_prev = tl.sigmoid(a_o) * c_prev
        tl.store(y + vec, y_prev)
        tl.store(c_out + vec, c_prev)
        tl.store(s_out + vec, s)
        tl.store(a_out + gi, a_i)
        tl.store(a_out + gi + H * D, a_u)
        tl.store(a_out + gi + 2 * H * D, a_o)
        tl.store(e_out + gi, ei)
        tl.store(e_out + gi + H * D, eu)
        tl.store(e_out + gi + 2 * H * D, eo)
    tl.store(R_out + gate + mat, Si)
    tl.store(R_out + gate + H * D * D + mat, Su)
    tl.store(R_out + gate + 2 * H * D * D + mat, So)


@triton.jit
def delta_lstm_backward_kernel(dy, dR_T, dc_T, R_T, k, beta, a_in, cp_in, c_in, s_in, e_in, starts, slots, R_kept, da,
                               dk, dv, dbeta, dR0, dy0, dc0, T, B, H, D: tl.constexpr):
    pid = tl.program_id(0)
    row, head = pid // H, pid % H
    i = tl.arange(0, D)
    mat = i[:, None] * D + i[None, :]
    gate = (row * 3 * H + head) * D * D
    Si = tl.load(R_T + gate + mat)
    Su = tl.load(R_T + gate + H * D * D + mat)
    So = tl.load(R_T + gate + 2 * H * D * D + mat)
    dSi = tl.load(dR_T + gate + mat)
    dSu = tl.load(dR_T + gate + H * D * D + mat)
    dSo = tl.load(dR_T + gate + 2 * H * D * D + mat)
    dy_next = tl.zeros([D], dtype=Si.dtype)
    dc_next = tl.load(dc_T + pid * D + i)
    for step in range(T):
        t = T - 1 - step
        vec = (t * B * H + pid) * D + i
        gi = ((t * B + row) * 3 * H + head) * D + i
        rate = (t * B + row) * 3 * H + head
        a_i, a_u, a_o = tl.load(a_in + gi), tl.load(a_in + gi + H * D), tl.load(a_in + gi + 2 * H * D)
        ig, og, c_prev = tl.sigmoid(a_i), tl.sigmoid(a_o), tl.load(cp_in + vec)
        g = tl.load(dy + vec) + dy_next  # y_t = o c_t
        dc = g * og + dc_next
        da_i = dc * (a_u - c_prev) * ig * (1.0 - ig)  # c_t = i u + (1 - i) c_{t-1}
        da_u = dc * ig
        da_o = g * tl.load(c_in + vec) * og * (1.0 - og)
        s = tl.load(s_in + vec)
        Si, dSi, dsi, dki, dvi, dbi = _unwrite(Si, dSi, s, tl.load(k + gi), tl.load(e_in + gi), tl.load(beta + rate),
                                               da_i)
        Su, dSu, dsu, dku, dvu, dbu = _unwrite(Su, dSu, s, tl.load(k + gi + H * D), tl.load(e_in + gi + H * D),
                                               tl.load(beta + rate + H), da_u)
        So, dSo, dso, dko, dvo, dbo = _unwrite(So, dSo, s, tl.load(k + gi + 2 * H * D),
                                               tl.load(e_in + gi + 2 * H * D), tl.load(beta + rate + 2 * H), da_o)
        tl.store(da + gi, da_i)
        tl.store(da + gi + H * D, da_u)
        tl.store(da + gi + 2 * H * D, da_o)
        tl.store(dk + gi, dki)
        tl.store(dk + gi + H * D, dku)
        tl.store(dk + gi + 2 * H * D, dko)
        tl.store(dv + gi, dvi)
        tl.store(dv + gi + H * D, dvu)
        tl.store(dv + gi + 2 * H * D, dvo)
        tl.store(dbeta + rate, dbi)
        tl.store(dbeta + rate + H, dbu)
        tl.store(dbeta + rate + 2 * H, dbo)
        started = tl.load(starts + t * B + row)
        kept_at = (tl.load(slots + t * B + row) * 3 * H + head) * D * D
        Si = _restart(R_kept, Si, kept_at, mat, started)
        Su = _restart(R_kept, Su, kept_at + H * D * D, mat, started)
        So = _restart(R_kept, So, kept_at + 2 * H * D * D, mat, started)
        dSi = tl.where(started != 0, 0.0, dSi)
        dSu = tl.where(started != 0, 0.0, dSu)
        dSo = tl.where(started != 0, 0.0, dSo)
        dy_next = tl.where(started != 0, 0.0, _softmax_backward(s, dsi + dsu + dso))
        dc_next = tl.where(started != 0, 0.0, dc * (1.0 - ig))
    tl.store(dR0 + gate + mat, dSi)
    tl.store(dR0 + gate + H * D * D + mat, dSu)
    tl.store(dR0 + gate + 2 * H * D * D + mat, dSo)
    tl.store(dy0 + pid * D + i, dy_next)
    tl.store(dc0 + pid * D + i, dc_next)


@triton.jit
def _load_blocks(M, at, i, D: tl.constexpr, on):
    """The [d, 3d + 1] matrix at M + at (row-major) as its blocks of columns y | k | q and its column b, where ``on``
    is not 0 (zeros where it is)."""
    W = 3 * D + 1
    m = M + at + i[:, None] * W + i[None, :]
    mask, column = (i[:, None] * 0 + i[None, :] * 0 + on) != 0, (i * 0 + on) != 0
    return (tl.load(m, mask=mask, other=0.0), tl.load(m + D, mask=mask, other=0.0),
            tl.load(m + 2 * D, mask=mask, other=0.0), tl.load(M + at + i * W + 3 * D, mask=column, other=0.0))


@triton.jit
def _store_blocks(M, at, i, Sy, Sk, Sq, sb, D: tl.constexpr, on):
    """``_load_blocks``' inverse: the blocks stored where ``on`` is not 0."""
    W = 3 * D + 1
    m = M + at + i[:, None] * W + i[None, :]
    mask, column = (i[:, None] * 0 + i[None, :] * 0 + on) != 0, (i * 0 + on) != 0
    tl.store(m, Sy, mask=mask)
    tl.store(m + D, Sk, mask=mask)
    tl.store(m + 2 * D, Sq, mask=mask)
    tl.store(M + at + i * W + 3 * D, sb, mask=column)


@triton.jit
def srwm_forward_kernel(px, W0, S0, starts, slots, y, fk_out, fq_out, sig_out, e_out, S_out, S_kept, T, B, H,
                        D: tl.constexpr):
    """The SRWM: [y; k; q; b]_t = S_{t-1}^T phi(x_t), phi = softmax (px: phi(x) of every step); S_t = S_{t-1} +
    sigmoid(b_t) phi(k_t) e_t^T with e_t = S_{t-1}^T (phi(q_t) - phi(k_t)); an episode start resets S to W0."""
    pid = tl.program_id(0)
    row, head = pid // H, pid % H
    i = tl.arange(0, D)
    W = 3 * D + 1
    Sy, Sk, Sq, sb = _load_blocks(S0, pid * D * W, i, D, 1)
    for t in range(T):
        started = tl.load(starts + t * B + row)
        kept_at = (tl.load(slots + t * B + row) * H + head) * D * W
        _store_blocks(S_kept, kept_at, i, Sy, Sk, Sq, sb, D, started)
        Wy, Wk, Wq, wb = _load_blocks(W0, head * D * W, i, D, started)
        start = started != 0
        Sy, Sk, Sq, sb = tl.where(start, Wy, Sy), tl.where(start, Wk, Sk), tl.where(start, Wq, Sq), tl.where(start,
                                                                                                           wb, sb)
        vec = (t * B * H + pid) * D + i
        p = tl.load(px + vec)
        fk = _softmax(tl.sum(p[:, None] * Sk, 0))
        fq = _softmax(tl.sum(p[:, None] * Sq, 0))
        sig = tl.sigmoid(tl.sum(p * sb, 0))
        u = fq - fk
        ey, ek, eq = tl.sum(u[:, None] * Sy, 0), tl.sum(u[:, None] * Sk, 0), tl.sum(u[:, None] * Sq, 0)
        eb = tl.sum(u * sb, 0)
        tl.store(y + vec, tl.sum(p[:, None] * Sy, 0))
        a = sig * fk
        Sy += a[:, None] * ey[None, :]
        Sk += a[:, None] * ek[None, :]
        Sq += a[:, None] * eq[None, :]
        sb += a * eb
        tl.store(fk_out + vec, fk)
        tl.store(fq_out + vec, fq)
        tl.store(sig_out + t * B * H + pid, sig)
        e = e_out + (t * B * H + pid) * W + i
        tl.store(e, ey)
        tl.store(e + D, ek)
        tl.store(e + 2 * D, eq)
        tl.store(e_out + (t * B * H + pid) * W + 3 * D, eb)
    _store_blocks(S_out, pid * D * W, i, Sy, Sk, Sq, sb, D, 1)


@triton.jit
def srwm_backward_kernel(dy, dS_T, S_T, px, fk_in, fq_in, sig_in, e_in, starts, slots, S_kept, dpx, dS0, T, B, H,
                         D: tl.constexpr):
    """The gradients of phi(x) of every step and of S0; at each episode start the gradient of the W0 it reset S to
    goes into S_kept's slot (after S before the start is read back from it), summed into W0's outside."""
    pid = tl.program_id(0)
    row, head = pid // H, pid % H
    i = tl.arange(0, D)
    W = 3 * D + 1
    Sy, Sk, Sq, sb = _load_blocks(S_T, pid * D * W, i, D, 1)
    dSy, dSk, dSq, dsb = _load_blocks(dS_T, pid * D * W, i, D, 1)
    for step in range(T):
        t = T - 1 - step
        vec = (t * B * H + pid) * D + i
        p, fk, fq = tl.load(px + vec), tl.load(fk_in + vec), tl.load(fq_in + vec)
        sig = tl.load(sig_in + t * B * H + pid)
        e = e_in + (t * B * H + pid) * W + i
        ey, ek, eq, eb = tl.load(e), tl.load(e + D), tl.load(e + 2 * D), tl.load(e_in + (t * B * H + pid) * W + 3 * D)
        a = sig * fk
        # the write, S_t = S_{t-1} + a e^T
        da = tl.sum(dSy * ey[None, :], 1) + tl.sum(dSk * ek[None, :], 1) + tl.sum(dSq * eq[None, :], 1) + dsb * eb
        dey, dek, deq = tl.sum(a[:, None] * dSy, 0), tl.sum(a[:, None] * dSk, 0), tl.sum(a[:, None] * dSq, 0)
        deb = tl.sum(a * dsb, 0)
        Sy -= a[:, None] * ey[None, :]  # S_{t-1}
        Sk -= a[:, None] * ek[None, :]
        Sq -= a[:, None] * eq[None, :]
        sb -= a * eb
        # e = S_{t-1}^T (phi(q) - phi(k))
        w = (tl.sum(Sy * dey[None, :], 1) + tl.sum(Sk * dek[None, :], 1) + tl.sum(Sq * deq[None, :], 1)
             + sb * deb)
        d_y = tl.load(dy + vec)
        dko = _softmax_backward(fk, sig * da - w)
        dqo = _softmax_backward(fq, w)
        dbo = tl.sum(da * fk, 0) * sig * (1.0 - sig)
        # [y; k; q; b] = S_{t-1}^T phi(x)
        tl.store(dpx + vec, tl.sum(Sy * d_y[None, :], 1) + tl.sum(Sk * dko[None, :], 1)
                 + tl.sum(Sq * dqo[None, :], 1) + sb * dbo)
        u = fq - fk
        dSy += u[:, None] * dey[None, :] + p[:, None] * d_y[None, :]
        dSk += u[:, None] * dek[None, :] + p[:, None] * dko[None, :]
        dSq += u[:, None] * deq[None, :] + p[:, None] * dqo[None, :]
        dsb += u * deb + p * dbo
        started = tl.load(starts + t * B + row)
        kept_at = (tl.load(slots + t * B + row) * H + head) * D * W
        Ky, Kk, Kq, kb = _load_blocks(S_kept, kept_at, i, D, started)
        _store_blocks(S_kept, kept_at, i, dSy, dSk, dSq, dsb, D, started)  # the gradient of the W0 S was reset to
        start = started != 0
        Sy, Sk, Sq, sb = tl.where(start, Ky, Sy), tl.where(start, Kk, Sk), tl.where(start, Kq, Sq), tl.where(start,
                                                                                                           kb, sb)
        dSy, dSk, dSq, dsb = (tl.where(start, 0.0, dSy), tl.where(start, 0.0, dSk), tl.where(start, 0.0, dSq),
                              tl.where(start, 0.0, dsb))
    _store_blocks(dS0, pid * D * W, i, dSy, dSk, dSq, dsb, D, 1)
