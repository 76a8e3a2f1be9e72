"""The flash-linear-attention (fla) Triton kernels for the delta rules, on CUDA, when installed and asked for
with FWP_RL_FLA=1.

Opt-in, not the default: on an NVIDIA H200 with fla-core 0.6.0, Triton 3.6.0 and torch 2.11.0, both kernel tests
then in tests/test_fla_backend.py (delta and gated_delta, keys 48 wide, against the float64 step loop, values and
gradients) failed, and a CUDA test that ran after them in the same process met an illegal memory access (CUDA
reports a kernel's bad access at a later call, so most likely one of theirs; the log kept no more than that). fla
itself refuses the gated rule's backward on Hopper with Triton 3.4 to 3.7.0 (its issue #640: wrong results). CUDA
runs the PyTorch chunkwise form by default: the same tensor operations on every device, tested against the step
loop. Run the kernel tests on your GPU before trusting the kernels there.

Targets the public API of fla 0.3 to 0.6 (``fla.ops.delta_rule.chunk_delta_rule`` and
``fla.ops.gated_delta_rule.chunk_gated_delta_rule``): inputs [B, T, H, K] (not head-first), the
gate ``g`` as a natural-log decay, ``scale`` (default 1/sqrt(K); we pass 1.0), per-sequence
``initial_state`` [N, H, K, V] with ``output_final_state``, varlen mode through ``cu_seqlens`` with
B = 1, and ``use_qk_l2norm_in_kernel`` (we pass False: our q and k are already feature-mapped).
fla's state [K, V] is our S (keys index rows), so its o_t = S_t^T q_t * scale is ours at scale 1.

Episode resets become sequence boundaries: the B rows are laid end to end as one sequence of B*T
steps, cut at every row start and at every episode start; each piece runs from its own initial state
(S0 of its row, or zero after a reset), so the resets are exact.

Precision, by the dtype of q:

- bfloat16 / float16: q, k, v, beta go to the kernels as they are.
- float32: q, k, v, beta are rounded to bfloat16 for the kernels (fla's chunk_delta_rule refuses
  float32), and the output comes back as float32: about three significant digits.
- float64: not used (``usable`` is False), the PyTorch path runs.

Log decays and initial states always go in as float32; the kernels accumulate the state in float32
and return the final states in float32, which are cast back to S0's dtype.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import NamedTuple

import torch
from torch import Tensor

AVAILABLE = importlib.util.find_spec("fla") is not None
ENABLE_VARIABLE = "FWP_RL_FLA"
KERNEL_DTYPE = {torch.bfloat16: torch.bfloat16, torch.float16: torch.float16, torch.float32: torch.bfloat16}
MAX_KEY_DIM = 256  # fla's state kernels hold at most four 64-wide blocks of keys


def unsupported(q: Tensor) -> str | None:
    """Why the kernels cannot take q [T, B, H, dk] (None if they can)."""
    if q.dtype not in KERNEL_DTYPE:
        return f"q.dtype={q.dtype} is not allowed: use float32, bfloat16 or float16"
    if q.shape[-1] > MAX_KEY_DIM:
        return f"the key dimension {q.shape[-1]} (q.shape[-1]) is not allowed: at most {MAX_KEY_DIM}"
    return None


def route() -> str:
    """Which form the chunkwise delta rules take on CUDA (for float32, bfloat16 and float16 inputs with keys of at
    most ``MAX_KEY_DIM``), in words: the fla kernels and their version, or the PyTorch form and why."""
    if not AVAILABLE:
        return "the PyTorch chunkwise form (fla is not installed)"
    if os.environ.get(ENABLE_VARIABLE) != "1":
        return f"the PyTorch chunkwise form ({ENABLE_VARIABLE}=1 would use the fla kernels)"
    for distribution in ("fla-core", "flash-linear-attention"):
        try:
            version = importlib.metadata.version(distribution)
            break
        except importlib.metadata.PackageNotFoundError:
            version = "of unknown version"
    return f"the fla kernels ({distribution} {version}; float32 inputs rounded to bfloat16)"


def usable(q: Tensor) -> bool:
    """Whether the fla kernels run this call: fla installed, FWP_RL_FLA=1, q on CUDA, and a dtype and key
    dimension the kernels take."""
    return (AVAILABLE and q.is_cuda and os.environ.get(ENABLE_VARIABLE) == "1"
            and unsupported(q) is None)


class Segments(NamedTuple):
    """The B rows of T steps, laid end to end (row b holds steps b*T .. b*T + T - 1), cut into N pieces."""

    cu_seqlens: Tensor  # [N + 1] int64: where the pieces begin, then B*T
    row: Tensor  # [N] int64: the row of each piece
    from_S0: Tensor  # [N] bool: the piece starts at t = 0 without a reset, so from S0[row]; else from zero
    last: Tensor  # [B] int64: the last piece of each row, whose final state is the row's


def segments(starts: Tensor | None, T: int, B: int, device: torch.device | str | None = None) -> Segments:
    """The pieces for episode starts ``starts`` [T, B] bool (None: no resets) on ``device``.

    Tensor ops on the device; the one host sync here is ``nonzero``, which sizes cu_seqlens (fla then
    reads the piece lengths on the host again to lay out its chunks).
    """
    cut = torch.zeros(B, T, dtype=torch.bool, device=device)
    cut[:, 0] = True
    reset = torch.zeros_like(cut) if starts is None else starts.t().to(cut.device)
    cut |= reset
    begin = cut.flatten().nonzero().squeeze(1)  # host sync
    total = torch.full((1,), B * T, dtype=begin.dtype, device=begin.device)
    return Segments(
        cu_seqlens=torch.cat([begin, total]),
        row=begin // T,
        from_S0=(begin % T == 0) & ~reset.flatten()[begin],
        last=cut.sum(1).cumsum(0) - 1,
    )


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S0: Tensor, starts: Tensor | None = None,
               log_alpha: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``delta_rule_recurrent`` on the fla kernels: (o [T, B, H, dv], S_T [B, H, dk, dv]).

    Gated when ``log_alpha`` [T, B, H] is given. Differentiable in q, k, v, beta, log_alpha and S0.
    """
    reason = unsupported(q)
    if reason is not None:
        raise ValueError(reason)
    from fla.ops.delta_rule import chunk_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    T, B, H, _ = q.shape
    kernel_dtype = KERNEL_DTYPE[q.dtype]
    seg = segments(starts, T, B, q.device)

    def flat(x: Tensor) -> Tensor:
        """[T, B, ...] -> [1, B*T, ...], row after row."""
        return x.transpose(0, 1).reshape(1, B * T, *x.shape[2:])

    q_, k_, v_, beta_ = (flat(x).to(kernel_dtype) for x in (q, k, v, beta))
    h0 = torch.where(seg.from_S0.view(-1, 1, 1, 1), S0[seg.row], 0).float()
    options = dict(scale=1.0, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=False,
                   cu_seqlens=seg.cu_seqlens)
    if log_alpha is None:
        o, S = chunk_delta_rule(q_, k_, v_, beta_, **options)
    else:
        o, S = chunk_gated_delta_rule(q_, k_, v_, flat(log_alpha).float(), beta_, **options)
    o = o.reshape(B, T, H, -1).transpose(0, 1).to(q.dtype)
    return o, S[seg.last].to(S0.dtype)
