"""The flash-linear-attention (fla) Triton kernels, used for the delta rules on CUDA when installed."""

from __future__ import annotations

import importlib.util

from torch import Tensor

AVAILABLE = importlib.util.find_spec("fla") is not None


def usable(q: Tensor) -> bool:
    """Whether the fla kernels can run this call: fla installed and the tensors on CUDA."""
    return AVAILABLE and q.is_cuda


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, S0: Tensor, starts: Tensor | None = None,
               log_alpha: Tensor | None = None) -> tuple[Tensor, Tensor]:
    raise NotImplementedError
