"""LSTM, GRU and Elman sequences with episode starts inside them, for the CPU: a forward step loop and a hand-written
backward over the whole sequence.

The library layers (oneDNN on a CPU) take one initial state per row and cannot reset a row in the middle of a
sequence; PyTorch's CPU code for packed sequences runs step by step under autograd; and cutting the sequence at every
time step where some row starts an episode makes one library call per cut, which at 10% resets is one call every step
or two. These functions run the cell once per step on the whole batch, the rows that start an episode reset first,
and compute the gradients in one backward step loop of their own: per step one matrix product and a few elementwise
operations on [B, H], while the products with the input weights and the weight gradients are single matrix
products over all T x B steps. Their cost does not grow with the number of resets.

Layout (PyTorch's): x [T, B, I], states [B, H], weights w_ih [G H, I], w_hh [G H, H], biases [G H], gates in
PyTorch's order (LSTM i, f, g, o; GRU r, z, n); starts [T, B] bool: where set, the row's state is reset to zero
before step t is read. Each returns (y [T, B, H], final states) and equals the step loop of the core's cell
(``fwp_rl.cores.rnn``, ``forward_loop``: the reference), values and gradients, tested in float64. No double
backward.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from fwp_rl.ops.inplace import reset_steps


def _keep(starts: Tensor, dtype: torch.dtype) -> tuple[Tensor, set[int]]:
    """(keep [T, B, 1]: 0 where an episode starts, else 1; the steps where some row starts)."""
    return (~starts).to(dtype).unsqueeze(-1), reset_steps(starts)


def _input_products(x: Tensor, w_ih: Tensor, b: Tensor) -> Tensor:
    """W_ih x_t + b for every step at once, [T, B, G H]: one matrix product over all T x B."""
    return torch.addmm(b, x.flatten(0, 1), w_ih.t()).view(*x.shape[:2], -1)


def _previous_outputs(x: Tensor, y: Tensor, h0: Tensor, starts: Tensor) -> Tensor:
    """[x_t, h_{t-1}] [T, B, I + H], h_{t-1} as step t reads it (zero where an episode starts): the right-hand side
    of the weight gradients, one matrix product for both weights."""
    size = x.shape[-1]
    xh = x.new_empty(*x.shape[:2], size + y.shape[-1])
    xh[..., :size] = x
    xh[0, :, size:] = h0
    xh[1:, :, size:] = y[:-1]
    xh[..., size:][starts] = 0
    return xh


def _weight_grads(d_gates: Tensor, xh: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """(d w_ih, d w_hh) from the gate pre-activation gradients [T, B, G H] and [x_t, h_{t-1}] [T, B, I + H]."""
    return (d_gates.flatten(0, 1).t() @ xh.flatten(0, 1)).split([size, xh.shape[-1] - size], dim=1)


class _LSTM(torch.autograd.Function):
    """Gates in the order i, f, o, g here (``lstm_sequence`` permutes PyTorch's), so that one sigmoid covers three."""

    @staticmethod
    def forward(ctx, x, h0, c0, starts, w_ih, w_hh, b):
        T, B, _ = x.shape
        H = h0.shape[-1]
        keep, resets = _keep(starts, x.dtype)
        gates = _input_products(x, w_ih, b)  # pre-activations, then activations
        cs, tanh_cs, y = (x.new_empty(T, B, H) for _ in range(3))
        w_hh_t = w_hh.t()
        h, c = h0, c0
        for t in range(T):
            if t in resets:
                h, c = h * keep[t], c * keep[t]
            a = gates[t].addmm_(h, w_hh_t)
            a[:, :3 * H].sigmoid_()
            a[:, 3 * H:].tanh_()
            c = torch.addcmul(a[:, H:2 * H] * c, a[:, :H], a[:, 3 * H:], out=cs[t])
            h = torch.mul(a[:, 2 * H:3 * H], torch.tanh(c, out=tanh_cs[t]), out=y[t])
        ctx.save_for_backward(x, h0, c0, starts, w_ih, w_hh, gates, cs, tanh_cs, y)
        return y, h.clone(), c.clone()  # not views of y and of a saved buffer

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh, dc):
        x, h0, c0, starts, w_ih, w_hh, gates, cs, tanh_cs, y = ctx.saved_tensors
        T, B, H = cs.shape
        keep, resets = _keep(starts, x.dtype)
        d_gates = torch.empty_like(gates)
        dh = torch.zeros_like(h0) if dh is None else dh
        dc = torch.zeros_like(c0) if dc is None else dc
        for t in range(T - 1, -1, -1):
            if dy is not None:
                dh = dh + dy[t]
            a, d = gates[t], d_gates[t]
            i, f, o, g = a.split(H, dim=1)
            c_prev = cs[t - 1] if t else c0
            if t in resets:
                c_prev = c_prev * keep[t]
            tanh_c = tanh_cs[t]
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            torch.mul(dc, g, out=d[:, :H])
            torch.mul(dc, c_prev, out=d[:, H:2 * H])
            torch.mul(dh, tanh_c, out=d[:, 2 * H:3 * H])
            sig = a[:, :3 * H]
            d[:, :3 * H].mul_(sig - sig * sig)
            torch.mul(dc * i, 1 - g * g, out=d[:, 3 * H:])
            dc = dc * f
            dh = d @ w_hh
            if t in resets:
                dh, dc = dh * keep[t], dc * keep[t]
        d_w_ih, d_w_hh = _weight_grads(d_gates, _previous_outputs(x, y, h0, starts), x.shape[-1])
        return (d_gates.flatten(0, 1) @ w_ih).view_as(x), dh, dc, None, d_w_ih, d_w_hh, d_gates.sum(dim=(0, 1))


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, starts, w_ih, w_hh, b_ih, b_hh):
        T, B, _ = x.shape
        H = h0.shape[-1]
        keep, resets = _keep(starts, x.dtype)
        gx = _input_products(x, w_ih, b_ih)
        rzn = x.new_empty(T, B, 3 * H)  # the activations r, z, n
        hns = x.new_empty(T, B, H)  # W_hn h + b_hn, which r scales
        y = x.new_empty(T, B, H)
        w_hh_t = w_hh.t()
        h = h0
        for t in range(T):
            if t in resets:
                h = h * keep[t]
            gh = torch.addmm(b_hh, h, w_hh_t)
            a = rzn[t]
            torch.add(gx[t, :, :2 * H], gh[:, :2 * H], out=a[:, :2 * H]).sigmoid_()
            hns[t] = gh[:, 2 * H:]
            n = torch.addcmul(gx[t, :, 2 * H:], a[:, :H], hns[t], out=a[:, 2 * H:]).tanh_()
            h = torch.addcmul(n, a[:, H:2 * H], h - n, out=y[t])
        ctx.save_for_backward(x, h0, starts, w_ih, w_hh, rzn, hns, y)
        return y, h.clone()  # not a view of y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh):
        x, h0, starts, w_ih, w_hh, rzn, hns, y = ctx.saved_tensors
        T, B, H = y.shape
        keep, resets = _keep(starts, x.dtype)
        d_gh = torch.empty_like(rzn)  # d (W_hh h + b_hh); d (W_ih x + b_ih) differs in its n part only
        d_xn = x.new_empty(T, B, H)
        dh = torch.zeros_like(h0) if dh is None else dh
        for t in range(T - 1, -1, -1):
            if dy is not None:
                dh = dh + dy[t]
            r, z, n = rzn[t].split(H, dim=1)
            h_prev = y[t - 1] if t else h0
            if t in resets:
                h_prev = h_prev * keep[t]
            d = d_gh[t]
            dn = torch.mul(dh * (1 - z), 1 - n * n, out=d_xn[t])
            torch.mul(dn, hns[t], out=d[:, :H])
            torch.mul(dh, h_prev - n, out=d[:, H:2 * H])
            rz = rzn[t, :, :2 * H]
            d[:, :2 * H].mul_(rz - rz * rz)
            torch.mul(dn, r, out=d[:, 2 * H:])
            dh = torch.addmm(dh * z, d, w_hh)
            if t in resets:
                dh = dh * keep[t]
        d_gx = torch.cat([d_gh[..., :2 * H], d_xn], dim=-1)
        d_w_ih = d_gx.flatten(0, 1).t() @ x.flatten(0, 1)
        h_prev = _previous_outputs(x, y, h0, starts)[..., x.shape[-1]:]
        d_w_hh = d_gh.flatten(0, 1).t() @ h_prev.flatten(0, 1)
        return ((d_gx.flatten(0, 1) @ w_ih).view_as(x), dh, None, d_w_ih, d_w_hh, d_gx.sum(dim=(0, 1)),
                d_gh.sum(dim=(0, 1)))


class _Elman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, starts, w_ih, w_hh, b):
        keep, resets = _keep(starts, x.dtype)
        y = _input_products(x, w_ih, b)  # pre-activations, then h
        w_hh_t = w_hh.t()
        h = h0
        for t in range(x.shape[0]):
            if t in resets:
                h = h * keep[t]
            h = y[t].addmm_(h, w_hh_t).tanh_()
        ctx.save_for_backward(x, h0, starts, w_ih, w_hh, y)
        return y, h.clone()  # not a view of y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh):
        x, h0, starts, w_ih, w_hh, y = ctx.saved_tensors
        keep, resets = _keep(starts, x.dtype)
        d_pre = torch.empty_like(y)
        dh = torch.zeros_like(h0) if dh is None else dh
        for t in range(y.shape[0] - 1, -1, -1):
            if dy is not None:
                dh = dh + dy[t]
            d = torch.mul(dh, 1 - y[t] * y[t], out=d_pre[t])
            dh = d @ w_hh
            if t in resets:
                dh = dh * keep[t]
        d_w_ih, d_w_hh = _weight_grads(d_pre, _previous_outputs(x, y, h0, starts), x.shape[-1])
        return (d_pre.flatten(0, 1) @ w_ih).view_as(x), dh, None, d_w_ih, d_w_hh, d_pre.sum(dim=(0, 1))


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, starts: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                  b_hh: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """LSTM over x [T, B, I] from (h0, c0) [B, H] with episode starts [T, B] -> (y [T, B, H], (h, c))."""
    H = h0.shape[-1]
    order = torch.cat([torch.arange(2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]).to(x.device)
    y, h, c = _LSTM.apply(x, h0, c0, starts, w_ih[order], w_hh[order], (b_ih + b_hh)[order])
    return y, (h, c)


def gru_sequence(x: Tensor, h0: Tensor, starts: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
                 ) -> tuple[Tensor, tuple[Tensor]]:
    """GRU (PyTorch's form) over x [T, B, I] from h0 [B, H] with episode starts [T, B] -> (y [T, B, H], (h,))."""
    y, h = _GRU.apply(x, h0, starts, w_ih, w_hh, b_ih, b_hh)
    return y, (h,)


def elman_sequence(x: Tensor, h0: Tensor, starts: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                   b_hh: Tensor | None = None) -> tuple[Tensor, tuple[Tensor]]:
    """Elman (tanh) RNN over x [T, B, I] from h0 [B, H] with episode starts [T, B] -> (y [T, B, H], (h,)); without
    b_hh, one bias."""
    y, h = _Elman.apply(x, h0, starts, w_ih, w_hh, b_ih if b_hh is None else b_ih + b_hh)
    return y, (h,)


__all__ = ["elman_sequence", "gru_sequence", "lstm_sequence"]
