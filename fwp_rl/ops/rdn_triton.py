"""The Recurrent Delta Net over a sequence on Triton kernels (``fwp_rl.ops.rdn_kernels``), used by ``RDNCore`` on
CUDA when Triton is installed (FWP_RL_TRITON=0 turns them off); elsewhere the PyTorch form ``rdn_sequence`` runs.

The kernels serve the published Atari agents' layer: softmax as phi without sum normalization, heads of a power of
two from 4 to 128 wide, float32 or float64. ``refusal`` says in words why they do not serve other cases, and
`fwp-rl bench cores` prints it in its title.

Tested on the CPU through Triton's interpreter (TRITON_INTERPRET=1, set before this module's kernels are imported)
against the step loop of ``rdn_step``, values and gradients, float64, with episode starts inside the sequences
(tests/test_rdn_triton.py); their speed on a GPU is what `fwp-rl bench cores --device cuda` measures.
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


def refusal(device: torch.device, dtype: torch.dtype, feature_map: str, sum_norm: bool, head_dim: int) -> str | None:
    """Why the kernels do not run RDN for these inputs and layer, in words (None: they do)."""
    if not AVAILABLE:
        return "Triton is not installed"
    if device.type != "cuda":
        return "not on CUDA"
    if os.environ.get(SWITCH_VARIABLE) == "0":
        return f"{SWITCH_VARIABLE}=0"
    return unsupported(dtype, feature_map, sum_norm, head_dim)


def unsupported(dtype: torch.dtype, feature_map: str, sum_norm: bool, head_dim: int) -> str | None:
    """Why the kernels cannot compute this layer on inputs of this dtype on any device (None: they can)."""
    if feature_map != "softmax" or sum_norm:
        return f"feature_map={feature_map!r}, sum_norm={sum_norm}: the kernels apply softmax alone"
    if head_dim not in HEAD_DIMS:
        return f"heads of {head_dim}: the kernels take {', '.join(map(str, HEAD_DIMS))}"
    if dtype not in DTYPES:
        return f"{dtype}: the kernels take float32 and float64"
    return None


def route(device: torch.device, feature_map: str, sum_norm: bool, head_dim: int) -> str:
    """Which form rdn takes on ``device`` for float32 inputs, in words."""
    reason = refusal(device, torch.float32, feature_map, sum_norm, head_dim)
    if reason is None:
        return f"the Triton kernels (Triton {importlib.metadata.version('triton')})"
    return f"the PyTorch form ({reason})"


def rdn_sequence(q: Tensor, k: Tensor, v: Tensor, b: Tensor, R: Tensor, S0: Tensor, y0: Tensor,
                 starts: Tensor | None, beta_max: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``fwp_rl.ops.recurrent_fwp.rdn_sequence`` with phi = softmax, on the kernels: same arguments and results."""
    reason = unsupported(q.dtype, "softmax", False, q.shape[-1])
    if reason is not None:
        raise ValueError(reason)
    if starts is None:
        starts = torch.zeros(q.shape[:2], dtype=torch.bool, device=q.device)
    return _RDNTriton.apply(q, k, v, b, R, S0, y0, starts, beta_max)


class _RDNTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, b, R, S0, y0, starts, beta_max):
        T, B, H, d = q.shape
        from fwp_rl.ops.rdn_kernels import rdn_forward_kernel

        q, k, v, b, R, S0, y0 = (t.contiguous() for t in (q, k, v, b, R, S0, y0))
        starts_ = starts.to(torch.int8).contiguous()
        # the fast weights each start clears are kept at slot (the starts' running count): the one host sync sizes
        # the buffer
        slots = (starts_.flatten().cumsum(0, dtype=torch.int32) - 1).clamp_min(0).view(T, B)
        S_kept = S0.new_empty(max(int(starts_.sum()), 1), H, d, d)
        y, fq, fk, e, u = (torch.empty_like(q) for _ in range(5))
        sig, S_T = torch.empty_like(b), torch.empty_like(S0)
        beta = torch.full((1,), beta_max, dtype=q.dtype, device=q.device)
        rdn_forward_kernel[(B * H,)](q, k, v, b, R, S0, y0, starts_, slots, y, fq, fk, e, u, sig, S_T, S_kept, beta,
                                    T, B, H, D=d)
        ctx.save_for_backward(R, S_T, fq, fk, e, u, sig, starts_, slots, S_kept, beta)
        return y, S_T.clone(), y[-1].clone()

    @staticmethod
    def backward(ctx, dy, dS_T, dy_T):
        from fwp_rl.ops.rdn_kernels import rdn_backward_kernel

        R, S_T, fq, fk, e, u, sig, starts, slots, S_kept, beta = ctx.saved_tensors
        T, B, H, d = fq.shape
        dy = torch.zeros_like(fq) if dy is None else dy.contiguous()
        dS_T = torch.zeros_like(S_T) if dS_T is None else dS_T.contiguous()
        dy_T = torch.zeros_like(fq[0]) if dy_T is None else dy_T.contiguous()
        dpre = fq.new_empty(T, B, H, 3 * d + 1)
        dS0, dy0 = torch.empty_like(S_T), torch.empty_like(dy_T)
        rdn_backward_kernel[(B * H,)](dy, dS_T, dy_T, R, S_T, fq, fk, e, u, sig, starts, slots, S_kept, dpre, dS0, dy0,
                                      beta, T, B, H, D=d)
        dR = torch.einsum("tbhi,tbho->hio", u, dpre)
        dq, dk, dv = dpre[..., :3 * d].unflatten(-1, (3, d)).unbind(-2)
        return dq, dk, dv, dpre[..., -1], dR, dS0, dy0, None, None
