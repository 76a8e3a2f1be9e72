"""The checks of user input shared by the memory cores, the torsos, the policy and the environments: each raises
an error that names the value, what it was given and what is allowed. Here, not in the model layer, so that the
environments need none of it."""

from __future__ import annotations

import torch
from torch import Tensor


def check_input(x: Tensor, name: str, ndim: int, features: int) -> None:
    """Raise a ValueError naming ``name`` unless x is a floating tensor [..., features] of ``ndim`` dims."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor (float32 or float64), got dtype {x.dtype}")
    layout = "[B, features]" if ndim == 2 else "[T, B, features]"
    if x.dim() != ndim or x.shape[-1] != features:
        raise ValueError(f"{name} must have shape {layout} with features={features}, got shape {tuple(x.shape)}")


def check_starts(starts: Tensor, name: str, shape: torch.Size) -> None:
    """Raise unless ``starts`` is a bool tensor of exactly ``shape``."""
    if not isinstance(starts, Tensor) or starts.dtype != torch.bool:
        got = starts.dtype if isinstance(starts, Tensor) else type(starts).__name__
        raise TypeError(f"{name} must be a torch.bool tensor, got {got}")
    if starts.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} to match x, got {tuple(starts.shape)}")


def check_size(name: str, value, minimum: int = 1) -> int:
    """Raise a ValueError naming ``name`` unless value is an integer >= minimum; return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed: it must be an integer >= {minimum}")
    return value


def check_flag(name: str, value) -> bool:
    """Raise a ValueError naming ``name`` unless value is a bool (true or false in a config); return it."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: it must be true or false")
    return value


def check_choice(name: str, value, allowed) -> None:
    """Raise a ValueError naming ``name`` unless value is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}")


def check_number(name: str, value, minimum: float = 0.0) -> float:
    """Raise a ValueError naming ``name`` unless value is a real number >= minimum; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum or value == float("inf"):
        raise ValueError(f"{name}={value!r} is not allowed: it must be a finite number >= {minimum:g}")
    return float(value)
