"""The flash-linear-attention (fla) Triton kernels for the delta rules, on CUDA, used when fla is installed
(FWP_RL_FLA=0 turns them off).

Tested on an NVIDIA H200 (fla-core 0.6.0, Triton 3.6.0, torch 2.11.0) against the float64 step loop, values and
gradients, with episode starts inside the sequences (tests/test_fla_backend.py, and a diagnostic run for the last
shape): the delta rule agreed to bfloat16's precision with heads of 64 keys and 64 values, 48 and 64, 64 and 128,
and 64 and 32 (relative errors 2e-3 to 5e-3 where printed). Two cases on Hopper (compute capability 9) take the
PyTorch chunkwise form instead (``hazard``):

- the gated rule, with Triton 3.4 to 3.7.0: fla refuses its backward there (its issue #640: wrong results);
- heads of 32 or fewer keys or values, with Triton 3.6 or later: fla's backward kernels then met an illegal memory
  access in fla's own autotuning, with keys 32 wide (our adapter) and with values 32 wide (fla called directly,
  without our adapter), in one of two runs for the values. Triton's issues report such faults on Hopper for
  kernels of several products over 32-wide blocks (#10486, #11366), in 3.6 and 3.7.1 and not in 3.5.1.

Targets the public API of fla 0.3 to 0.6 (``fla.ops.delta_rule.chunk_delta_rule`` and
``fla.ops.gated_delta_rule.chunk_gated_delta_rule``): inputs [B, T, H, K] (not head-first), the
gate ``g`` as a natural-log decay, ``scale`` (default 1/sqrt(K); we pass 1.0), per-sequence
``initial_state`` [N, H, K, V] with ``output_final_state``, varlen mode through ``cu_seqlens`` with
B = 1, and ``use_qk_l2norm_in_kernel`` (we pass False: our q and k are already feature-mapped).
fla's state [K, V] is our S (keys index rows), so its o_t = S_t^T q_t * scale is ours at scale 1.

The delta cores' layer options need nothing of the kernels: the short convolution, the feature maps and the rates
make q, k, v and beta before the rule, the normalized, gated readout reads its output after it; so ``usable`` decides
by the heads' dtype and sizes alone, whatever the options.

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

import functools
import importlib.metadata
import importlib.util
import os
import re
from typing import NamedTuple

import torch
from torch import Tensor

AVAILABLE = importlib.util.find_spec("fla") is not None
SWITCH_VARIABLE = "FWP_RL_FLA"  # set to 0, it keeps the kernels off
KERNEL_DTYPE = {torch.bfloat16: torch.bfloat16, torch.float16: torch.float16, torch.float32: torch.bfloat16}
MAX_KEY_DIM = 256  # fla's state kernels hold at most four 64-wide blocks of keys


def unsupported(dtype: torch.dtype, key_dim: int) -> str | None:
    """Why the kernels cannot take q of this dtype and key dimension (None if they can)."""
    if dtype not in KERNEL_DTYPE:
        return f"q.dtype={dtype} is not allowed: use float32, bfloat16 or float16"
    if key_dim > MAX_KEY_DIM:
        return f"the key dimension {key_dim} (q.shape[-1]) is not allowed: at most {MAX_KEY_DIM}"
    return None


@functools.cache
def triton_version() -> tuple[int, ...]:
    """Triton's version as numbers, (3, 7, 1) for "3.7.1+git..."; (0,) without Triton."""
    try:
        text = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def hazard(device: torch.device, key_dim: int, value_dim: int, gated: bool) -> str | None:
    """A known fault of the kernels on this CUDA device and Triton for these heads (the module's docstring), or
    None. Hopper is an NVIDIA GPU of compute capability 9 (ROCm reports AMD GPUs as CUDA devices too)."""
    if torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] != 9:
        return None
    triton = triton_version()
    if gated and (3, 4) <= triton < (3, 7, 1):
        return "fla refuses the gated rule's backward on Hopper with Triton 3.4 to 3.7.0"
    if min(key_dim, value_dim) <= 32 and triton >= (3, 6):
        return (f"heads of {key_dim} keys and {value_dim} values: 32 or fewer met an illegal memory access on Hopper "
                "with Triton 3.6")
    return None


def refusal(device: torch.device, dtype: torch.dtype, key_dim: int, value_dim: int, gated: bool) -> str | None:
    """Why the fla kernels do not run the (gated) delta rule for these inputs, in words (None: they do)."""
    if not AVAILABLE:
        return "fla is not installed"
    if device.type != "cuda":
        return "not on CUDA"
    if os.environ.get(SWITCH_VARIABLE) == "0":
        return f"{SWITCH_VARIABLE}=0"
    return unsupported(dtype, key_dim) or hazard(device, key_dim, value_dim, gated)


def usable(q: Tensor, v: Tensor, gated: bool) -> bool:
    """Whether the fla kernels run the delta rule on q [T, B, H, dk] and v [T, B, H, dv] (``refusal``)."""
    return refusal(q.device, q.dtype, q.shape[-1], v.shape[-1], gated) is None


def route(device: torch.device, key_dim: int, value_dim: int, gated: bool) -> str:
    """Which form the chunkwise delta rule takes on CUDA ``device`` for float32 heads of these sizes, in words: the
    fla kernels and their version, or the PyTorch form and why."""
    reason = refusal(device, torch.float32, key_dim, value_dim, gated)
    if reason is not None:
        return f"the PyTorch chunkwise form ({reason})"
    for distribution in ("fla-core", "flash-linear-attention"):
        try:
            version = importlib.metadata.version(distribution)
            break
        except importlib.metadata.PackageNotFoundError:
            version = "of unknown version"
    return f"the fla kernels ({distribution} {version}; float32 inputs rounded to bfloat16)"


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
    reason = unsupported(q.dtype, q.shape[-1])
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
