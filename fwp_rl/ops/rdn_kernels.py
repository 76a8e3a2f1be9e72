"""Triton kernels of the Recurrent Delta Net over a sequence, forward and backward (``fwp_rl.ops.rdn_triton`` calls
them; the reference they are tested against is the step loop of ``fwp_rl.ops.recurrent_fwp.rdn_step``).

Written by hand because no library has this recurrence: fla's kernels (``fwp_rl.ops.fla_backend``) run delta rules
whose keys come from the inputs alone, and RDN's keys also read the previous output. One program per (row, head) keeps
the head's fast weights S [d, d], their gradient and its recurrent slow weights R [d, 3d + 1] in registers for the
whole sequence. Forward stores per step only vectors (the feature-mapped query and key, the error, tanh(y_{t-1}) and
the rate's sigmoid) and, where a row starts an episode, the fast weights the start cleared; backward runs the steps in
reverse and gets S_{t-1} back from S_t by undoing the step's write, S_{t-1} = S_t - beta phi(k) e^T, as the PyTorch
form ``_RDNSequence`` does. The recurrent slow weights' gradient is one product of all steps outside the kernel.

Layouts: q, k, v, y, and the saved vectors [T, B, H, d]; b, sig [T, B, H]; R [H, d, 3d + 1]; S [B, H, d, d] with
keys indexing rows (S = W^T); starts and slots [T, B] (slots: where the fast weights a start cleared are kept);
beta_max [1].
phi is softmax; tanh is 2 sigmoid(2x) - 1 (Triton's language has sigmoid on every backend).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softmax(x):
    e = tl.exp(x - tl.max(x, 0))
    return e / tl.sum(e, 0)


@triton.jit
def rdn_forward_kernel(q, k, v, b, R, S0, y0, starts, slots, y, fq_out, fk_out, e_out, u_out, sig_out, S_out, S_kept,
                       beta_max_in, T, B, H, D: tl.constexpr):
    pid = tl.program_id(0)  # row * H + head
    row, head = pid // H, pid % H
    beta_max = tl.load(beta_max_in)  # a tensor of the inputs' dtype: a float argument would be float32
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
        start = started != 0
        slot = tl.load(slots + t * B + row)
        tl.store(S_kept + (slot * H + head) * D * D + mat, S, mask=mat * 0 + started != 0)
        S = tl.where(start, 0.0, S)
        y_prev = tl.where(start, 0.0, y_prev)
        u = 2.0 * tl.sigmoid(2.0 * y_prev) - 1.0
        vec = (t * B * H + pid) * D + i
        fq = _softmax(tl.load(q + vec) + tl.sum(u[:, None] * Rq, 0))
        fk = _softmax(tl.load(k + vec) + tl.sum(u[:, None] * Rk, 0))
        pv = tl.load(v + vec) + tl.sum(u[:, None] * Rv, 0)
        sig = tl.sigmoid(tl.load(b + t * B * H + pid) + tl.sum(u * rb, 0))
        beta = beta_max * sig
        e = pv - tl.sum(fk[:, None] * S, 0)  # v - S^T phi(k)
        read = tl.sum(fq[:, None] * S, 0) + beta * tl.sum(fk * fq, 0) * e  # S_t^T phi(q), from S_{t-1}
        S += (beta * fk)[:, None] * e[None, :]
        tl.store(y + vec, read)
        tl.store(fq_out + vec, fq)
        tl.store(fk_out + vec, fk)
        tl.store(e_out + vec, e)
        tl.store(u_out + vec, u)
        tl.store(sig_out + t * B * H + pid, sig)
        y_prev = read
    tl.store(S_out + pid * D * D + mat, S)


@triton.jit
def rdn_backward_kernel(dy, dS_T, dy_T, R, S_T, fq_in, fk_in, e_in, u_in, sig_in, starts, slots, S_kept, dpre, dS0,
                        dy0, beta_max_in, T, B, H, D: tl.constexpr):
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
    dy_next = tl.load(dy_T + pid * D + i)  # the gradient of y_t from the steps after t
    for step in range(T):
        t = T - 1 - step
        vec = (t * B * H + pid) * D + i
        g = tl.load(dy + vec) + dy_next
        fq, fk, e, u = tl.load(fq_in + vec), tl.load(fk_in + vec), tl.load(e_in + vec), tl.load(u_in + vec)
        sig = tl.load(sig_in + t * B * H + pid)
        beta = beta_max * sig
        a = beta * fk
        dS += fq[:, None] * g[None, :]  # the read, S_t^T phi(q)
        da = tl.sum(dS * e[None, :], 1)  # the write, S_t = S_{t-1} + a e^T
        de = tl.sum(a[:, None] * dS, 0)
        S -= a[:, None] * e[None, :]  # S_{t-1}
        dfq = tl.sum(S * g[None, :], 1) + tl.sum(e * g, 0) * a
        dfk = beta * da - tl.sum(S * de[None, :], 1)  # e = v - S_{t-1}^T phi(k)
        dS -= fk[:, None] * de[None, :]
        dpq = fq * (dfq - tl.sum(fq * dfq, 0))  # softmax's backward
        dpk = fk * (dfk - tl.sum(fk * dfk, 0))
        dpb = tl.sum(da * fk, 0) * beta_max * sig * (1.0 - sig)
        out = dpre + (t * B * H + pid) * W + i
        tl.store(out, dpq)
        tl.store(out + D, dpk)
        tl.store(out + 2 * D, de)
        tl.store(dpre + (t * B * H + pid) * W + 3 * D, dpb)
        dy_next = (tl.sum(Rq * dpq[None, :], 1) + tl.sum(Rk * dpk[None, :], 1) + tl.sum(Rv * de[None, :], 1)
                   + rb * dpb) * (1.0 - u * u)
        started = tl.load(starts + t * B + row)  # the row's S and y_prev were cleared before step t
        start = started != 0
        slot = tl.load(slots + t * B + row)
        S = tl.where(start, tl.load(S_kept + (slot * H + head) * D * D + mat, mask=mat * 0 + started != 0, other=0.0),
                     S)
        dS = tl.where(start, 0.0, dS)
        dy_next = tl.where(start, 0.0, dy_next)
    tl.store(dS0 + pid * D * D + mat, dS)
    tl.store(dy0 + pid * D + i, dy_next)
