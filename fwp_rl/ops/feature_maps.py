"""Feature maps phi applied to keys and queries before they address a fast weight matrix.

All maps act on the last dimension. ``feature_dim(name, d, nu)`` gives the size of phi(k) for keys of
size d. Sum normalization divides phi(k) by its sum (the DeltaNet reference code calls it crucial for
stable training); it needs a non-negative map. ``silu_l2`` is the map of the DeltaNet layer of Yang et al. (2024)
and of Gated DeltaNet: SiLU, then L2 normalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FEATURE_MAPS = ("dpfp", "elu", "softmax", "l2", "silu_l2", "identity")
# Maps whose outputs are non-negative, so that dividing by their sum is a normalization.
NON_NEGATIVE = ("dpfp", "elu", "softmax")


def dpfp(k: Tensor, nu: int = 1) -> Tensor:
    """Deterministic parameter-free projection: concat_i r(k) * roll(r(k), i), r(k) = [relu(k), relu(-k)]."""
    r = torch.cat([F.relu(k), F.relu(-k)], dim=-1)
    return torch.cat([r * torch.roll(r, shifts=i, dims=-1) for i in range(1, nu + 1)], dim=-1)


def feature_dim(name: str, d: int, nu: int = 1) -> int:
    """Size of phi(k) for a key of size d."""
    check_feature_map(name, nu)
    return 2 * nu * d if name == "dpfp" else d


def check_feature_map(name: str, nu: int = 1, sum_norm: bool = False) -> None:
    if name not in FEATURE_MAPS:
        raise ValueError(f"feature_map={name!r} is not known; allowed: {', '.join(FEATURE_MAPS)}")
    if name == "dpfp" and (not isinstance(nu, int) or nu < 1):
        raise ValueError(f"dpfp_nu={nu!r} must be an integer >= 1")
    if sum_norm and name not in NON_NEGATIVE:
        raise ValueError(
            f"sum_norm=True needs a non-negative feature map ({', '.join(NON_NEGATIVE)}), got feature_map={name!r}"
        )


def feature_map(k: Tensor, name: str, nu: int = 1, sum_norm: bool = False, eps: float = 1e-5) -> Tensor:
    """phi(k) over the last dimension, optionally divided by its sum (+ eps)."""
    if name == "dpfp":
        phi = dpfp(k, nu)
    elif name == "elu":
        phi = F.elu(k) + 1.0
    elif name == "softmax":
        phi = torch.softmax(k, dim=-1)
    elif name == "l2":
        phi = F.normalize(k, p=2.0, dim=-1, eps=eps)
    elif name == "silu_l2":
        phi = F.normalize(F.silu(k), p=2.0, dim=-1, eps=eps)
    elif name == "identity":
        phi = k
    else:
        check_feature_map(name, nu)
        raise AssertionError("unreachable")
    if sum_norm:
        # times the reciprocal: a division by the broadcast sum costs several full-size passes more in
        # backward, a noticeable part of a fast weight core's forward+backward on the CPU
        phi = phi * (phi.sum(dim=-1, keepdim=True) + eps).reciprocal()
    return phi


def softmax_backward(s: Tensor, ds: Tensor) -> Tensor:
    """The gradient of x, where s = softmax(x) over the last dimension, from the gradient ds of s."""
    return s * (ds - (s * ds).sum(-1, keepdim=True))


def feature_map_backward(name: str, sum_norm: bool = False):
    """phi's backward from its output and the output's gradient, (phi(k), d phi(k)) -> dk, where it has a closed
    form (softmax without sum normalization); None where it has not (the hand-written sequence forms then take
    phi's backward from autograd, a call per step that costs them about 8%: rdn, 384 against 355 ms at T = 128)."""
    return softmax_backward if name == "softmax" and not sum_norm else None
