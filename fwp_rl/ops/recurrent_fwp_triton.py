"""The step-loop fast weight programmers over a sequence on Triton kernels (``fwp_rl.ops.recurrent_fwp_kernels``): the
Recurrent Delta Net, the recurrent parts of the Delta RNN and the Delta LSTM, and the SRWM, used by their cores on
CUDA when Triton is installed (FWP_RL_TRITON=0 turns them off); elsewhere the PyTorch forms of
``fwp_rl.ops.recurrent_fwp`` and ``fwp_rl.ops.srwm`` run. Each function here takes and returns what its PyTorch form
does (less phi, which is softmax).

The kernels serve heads of a power of two from 4 to 128 wide, in float32 or float64; RDN's and the SRWM's with
softmax as phi without sum normalization (the published agents' layers; the Delta RNN's and Delta LSTM's recurrent
parts always read through softmax, and their feed-forward parts run chunkwise before). ``refusal`` says in words why
the kernels do not serve a case, and `fwp-rl bench cores` prints it in its title.

Tested on the CPU through Triton's interpreter (TRITON_INTERPRET=1 before Triton is first imported) against the
step loops, values and gradients, float64, with episode starts inside the sequences
(tests/test_recurrent_fwp_triton.py); their speed on a GPU is what `fwp-rl bench cores --device cuda` measures.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import torch
from torch import Tensor

AVAILABLE = importlib.util.find_spec("triton") is not None
SWITCH_VARIABLE = "FWP_RL_TRITON"  # set to 0, it keeps the kernels off
DTYPES = (torch.float32, torch.float64)
HEAD_DIMS = (4, 8, 16, 32, 64, 128)  # the kernels hold [d, d] blocks: a power of two, and at most 128 for registers


def refusal(device: torch.device, dtype: torch.dtype, head_dim: int, feature_map: str = "softmax",
            sum_norm: bool = False) -> str | None:
    """Why the kernels do not run for these inputs and this layer, in words (None: they do). ``feature_map`` and
    ``sum_norm``: RDN's phi (the Delta RNN's and Delta LSTM's recurrent parts take none)."""
    if not AVAILABLE:
        return "Triton is not installed"
    if device.type != "cuda":
        return "not on CUDA"
    if os.environ.get(SWITCH_VARIABLE) == "0":
        return f"{SWITCH_VARIABLE}=0"
    return unsupported(dtype, head_dim, feature_map, sum_norm)


def unsupported(dtype: torch.dtype, head_dim: int, feature_map: str = "softmax", sum_norm: bool = False) -> str | None:
    """Why the kernels cannot compute this layer on inputs of this dtype on any device (None: they can)."""
    if feature_map != "softmax" or sum_norm:
        return f"feature_map={feature_map!r}, sum_norm={sum_norm}: the kernels apply softmax alone"
    if head_dim not in HEAD_DIMS:
        return f"heads of {head_dim}: the kernels take {', '.join(map(str, HEAD_DIMS))}"
    if dtype not in DTYPES:
        return f"{dtype}: the kernels take float32 and float64"
    return None


def route(reason: str | None) -> str:
    """Which form a core takes, in words, from its ``refusal`` (None: the kernels)."""
    if reason is None:
        return f"the Triton kernels (Triton {importlib.metadata.version('triton')})"
    return f"the PyTorch form ({reason})"


def _check(x: Tensor) -> None:
    reason = unsupported(x.dtype, x.shape[-1])
    if reason is not None:
        raise ValueError(reason)


def _slots(starts: Tensor | None, T: int, B: int, device: torch.device) -> tuple[Tensor, Tensor, int]:
    """starts [T, B] as int8 (zeros for None), the slot where each start keeps the fast weights it clears (the starts'
    running count), and how many starts there are: the one host sync, which sizes the slots' buffer."""
    starts = torch.zeros(T, B, dtype=torch.int8, device=device) if starts is None else starts.to(torch.int8)
    starts = starts.contiguous()
    slots = (starts.flatten().cumsum(0, dtype=torch.int32) - 1).clamp_min(0).view(T, B)
    return starts, slots, max(int(starts.sum()), 1)


def _contiguous(*tensors: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.contiguous() for t in tensors)


def _grad(grad: Tensor | None, like: Tensor) -> Tensor:
    """An output's gradient for a kernel: zeros where autograd gives None."""
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def rdn_sequence(q: Tensor, k: Tensor, v: Tensor, b: Tensor, R: Tensor, S0: Tensor, y0: Tensor,
                 starts: Tensor | None, beta_max: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``fwp_rl.ops.recurrent_fwp.rdn_sequence`` with phi = softmax, on the kernels."""
    _check(q)
    y, S = _RDN.apply(q, k, v, b, R, S0, y0, starts, beta_max)
    return y, S, y[-1]


def delta_rnn_sequence(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R0: Tensor, y0: Tensor,
                       starts: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``fwp_rl.ops.recurrent_fwp.delta_rnn_sequence`` on the kernels."""
    _check(z)
    y, R = _DeltaRNN.apply(z, k, v, beta, R0, y0, starts)
    return y, R, y[-1]


def delta_lstm_sequence(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R0: Tensor, y0: Tensor, c0: Tensor,
                        starts: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``fwp_rl.ops.recurrent_fwp.delta_lstm_sequence`` on the kernels."""
    _check(z)
    y, R, c = _DeltaLSTM.apply(*(t.flatten(2, 3) for t in (z, k, v, beta)), R0.flatten(1, 2), y0, c0, starts)
    return y, R.unflatten(1, R0.shape[1:3]), y[-1], c


def srwm_sequence(x: Tensor, W0: Tensor, S0: Tensor, starts: Tensor | None) -> tuple[Tensor, Tensor]:
    """``fwp_rl.ops.srwm.srwm_sequence`` with phi = softmax, on the kernels (phi of the inputs, which do not depend
    on the state, before them)."""
    _check(x)
    return _SRWM.apply(torch.softmax(x, dim=-1), W0, S0, starts)


class _RDN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, b, R, S0, y0, starts, beta_max):
        from fwp_rl.ops.recurrent_fwp_kernels import rdn_forward_kernel

        T, B, H, d = q.shape
        q, k, v, b, R, S0, y0 = _contiguous(q, k, v, b, R, S0, y0)
        starts, slots, kept = _slots(starts, T, B, q.device)
        S_kept = S0.new_empty(kept, H, d, d)
        y, fq, fk, e, u = (torch.empty_like(q) for _ in range(5))
        sig, S_T = torch.empty_like(b), torch.empty_like(S0)
        beta = torch.full((1,), beta_max, dtype=q.dtype, device=q.device)
        rdn_forward_kernel[(B * H,)](q, k, v, b, R, S0, y0, starts, slots, y, fq, fk, e, u, sig, S_T, S_kept, beta,
                                    T, B, H, D=d)
        ctx.save_for_backward(R, S_T, fq, fk, e, u, sig, starts, slots, S_kept, beta)
        return y, S_T.clone()

    @staticmethod
    def backward(ctx, dy, dS_T):
        from fwp_rl.ops.recurrent_fwp_kernels import rdn_backward_kernel

        R, S_T, fq, fk, e, u, sig, starts, slots, S_kept, beta = ctx.saved_tensors
        T, B, H, d = fq.shape
        dpre = fq.new_empty(T, B, H, 3 * d + 1)
        dS0, dy0 = torch.empty_like(S_T), torch.empty_like(fq[0])
        rdn_backward_kernel[(B * H,)](_grad(dy, fq), _grad(dS_T, S_T), R, S_T, fq, fk, e, u, sig, starts, slots,
                                      S_kept, dpre, dS0, dy0, beta, T, B, H, D=d)
        dR = torch.einsum("tbhi,tbho->hio", u, dpre)
        dq, dk, dv = dpre[..., :3 * d].unflatten(-1, (3, d)).unbind(-2)
        return dq, dk, dv, dpre[..., -1], dR, dS0, dy0, None, None


class _DeltaRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, k, v, beta, R0, y0, starts):
        from fwp_rl.ops.recurrent_fwp_kernels import delta_rnn_forward_kernel

        T, B, H, d = z.shape
        z, k, v, beta, R0, y0 = _contiguous(z, k, v, beta, R0, y0)
        starts, slots, kept = _slots(starts, T, B, z.device)
        R_kept = R0.new_empty(kept, H, d, d)
        y, queries, errors, R_T = torch.empty_like(z), torch.empty_like(z), torch.empty_like(z), torch.empty_like(R0)
        delta_rnn_forward_kernel[(B * H,)](z, k, v, beta, R0, y0, starts, slots, y, queries, errors, R_T, R_kept,
                                          T, B, H, D=d)
        ctx.save_for_backward(R_T, k, beta, queries, errors, starts, slots, R_kept)
        return y, R_T.clone()

    @staticmethod
    def backward(ctx, dy, dR_T):
        from fwp_rl.ops.recurrent_fwp_kernels import delta_rnn_backward_kernel

        R_T, k, beta, queries, errors, starts, slots, R_kept = ctx.saved_tensors
        T, B, H, d = k.shape
        dz, dk, dv, dbeta = (torch.empty_like(t) for t in (k, k, k, beta))
        dR0, dy0 = torch.empty_like(R_T), torch.empty_like(k[0])
        delta_rnn_backward_kernel[(B * H,)](_grad(dy, k), _grad(dR_T, R_T), R_T, k, beta, queries, errors, starts,
                                           slots, R_kept, dz, dk, dv, dbeta, dR0, dy0, T, B, H, D=d)
        return dz, dk, dv, dbeta, dR0, dy0, None


class _DeltaLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, k, v, beta, R0, y0, c0, starts):
        from fwp_rl.ops.recurrent_fwp_kernels import delta_lstm_forward_kernel

        T, B, GH, d = z.shape
        H = y0.shape[1]
        z, k, v, beta, R0, y0, c0 = _contiguous(z, k, v, beta, R0, y0, c0)
        starts, slots, kept = _slots(starts, T, B, z.device)
        R_kept = R0.new_empty(kept, GH, d, d)
        y, cells, c_prevs, queries = (y0.new_empty(T, B, H, d) for _ in range(4))
        gates, errors, R_T = torch.empty_like(z), torch.empty_like(z), torch.empty_like(R0)
        delta_lstm_forward_kernel[(B * H,)](z, k, v, beta, R0, y0, c0, starts, slots, y, cells, gates, c_prevs,
                                           queries, errors, R_T, R_kept, T, B, H, D=d)
        ctx.save_for_backward(R_T, k, beta, gates, c_prevs, cells, queries, errors, starts, slots, R_kept)
        return y, R_T.clone(), cells[-1].clone()

    @staticmethod
    def backward(ctx, dy, dR_T, dc_T):
        from fwp_rl.ops.recurrent_fwp_kernels import delta_lstm_backward_kernel

        R_T, k, beta, gates, c_prevs, cells, queries, errors, starts, slots, R_kept = ctx.saved_tensors
        T, B, H, d = cells.shape
        dgates, dk, dv, dbeta = (torch.empty_like(t) for t in (gates, k, k, beta))
        dR0, dy0, dc0 = torch.empty_like(R_T), torch.empty_like(cells[0]), torch.empty_like(cells[0])
        delta_lstm_backward_kernel[(B * H,)](_grad(dy, cells), _grad(dR_T, R_T), _grad(dc_T, cells[0]), R_T, k, beta,
                                            gates, c_prevs, cells, queries, errors, starts, slots, R_kept, dgates, dk,
                                            dv, dbeta, dR0, dy0, dc0, T, B, H, D=d)
        return dgates, dk, dv, dbeta, dR0, dy0, dc0, None


class _SRWM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, px, W0, S0, starts):
        from fwp_rl.ops.recurrent_fwp_kernels import srwm_forward_kernel

        T, B, H, d = px.shape
        px, W0, S0 = _contiguous(px, W0, S0)
        starts, slots, kept = _slots(starts, T, B, px.device)
        S_kept = S0.new_zeros(kept, *S0.shape[1:])  # zeros: backward sums every slot into W0's gradient
        y, fk, fq, sig = torch.empty_like(px), torch.empty_like(px), torch.empty_like(px), px.new_empty(T, B, H)
        errors, S_T = px.new_empty(T, B, H, 3 * d + 1), torch.empty_like(S0)
        srwm_forward_kernel[(B * H,)](px, W0, S0, starts, slots, y, fk, fq, sig, errors, S_T, S_kept, T, B, H, D=d)
        ctx.save_for_backward(S_T, px, fk, fq, sig, errors, starts, slots, S_kept)
        return y, S_T.clone()

    @staticmethod
    def backward(ctx, dy, dS_T):
        from fwp_rl.ops.recurrent_fwp_kernels import srwm_backward_kernel

        S_T, px, fk, fq, sig, errors, starts, slots, S_kept = ctx.saved_tensors
        T, B, H, d = px.shape
        dpx, dS0 = torch.empty_like(px), torch.empty_like(S_T)
        S_kept = S_kept.clone()  # backward writes the restarts' gradients over it: a second backward needs it whole
        srwm_backward_kernel[(B * H,)](_grad(dy, px), _grad(dS_T, S_T), S_T, px, fk, fq, sig, errors, starts, slots,
                                      S_kept, dpx, dS0, T, B, H, D=d)
        return dpx, S_kept.sum(0), dS0, None
