"""The parts of the hand-written sequence forms of the step-loop cores (``fwp_rl.ops.recurrent_fwp``,
``fwp_rl.ops.srwm``): fast weights written in place and recovered backwards by undoing each write, episode starts
through row indices, and the batched matrix-vector products in the orientation this CPU runs fastest.

Layout as in ``fwp_rl.ops.delta``: S = W^T [..., dk, dv]. Backward keeps S transposed (St) because its reads are
S u, fastest as u^T S^T (``vec_mat``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# The fast weights of one block of rows at most: a sequence form runs its rows in blocks this size, so that a block's
# fast weights and their gradient stay in the cache from one step's passes to the next. Measured on a 2-core AMD EPYC
# (1 MiB of L2 per core, 32 MiB of shared L3), T = 128, forward+backward, side by side: srwm's 64 rows of 193 KiB in
# blocks of 32 took 0.70 times the time of one block, delta_lstm's (192 KiB a row) 0.89 times; blocks of 16 rows of rdn
# (64 KiB a row) took 1.4 times its one block of 64 (docs/benchmarks/cores.md).
ROW_BLOCK_BYTES = 6 * 2**20


def in_row_blocks(run: Callable[[slice], tuple[Tensor, ...]], batch: int, bytes_per_row: int,
                  dims: tuple[int, ...]) -> tuple[Tensor, ...]:
    """``run(rows)`` on blocks of rows whose fast weights take at most ``ROW_BLOCK_BYTES``, its outputs joined along
    ``dims`` (each output's batch dimension); one call when all rows fit."""
    size = max(1, ROW_BLOCK_BYTES // bytes_per_row)
    if size >= batch:
        return run(slice(None))
    outs = [run(slice(b, b + size)) for b in range(0, batch, size)]
    return tuple(torch.cat(parts, dim) for parts, dim in zip(zip(*outs), dims))


def reset_steps(starts: Tensor | None) -> set[int]:
    """The steps where some row starts an episode, read on the host once."""
    return set() if starts is None else set(starts.any(1).nonzero().flatten().tolist())


def start_episodes(S: Tensor, rows: Tensor, initial: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Set the fast weights S [B, ...] of the rows that start an episode (``rows`` [B] bool) to zero, or to
    ``initial`` [...], in place -> what backward needs to undo it: the rows' indices and their fast weights before."""
    index = rows.nonzero().flatten()  # indices, not a mask: a mask sweeps every row
    kept = (index, S.index_select(0, index))
    if initial is None:
        S.index_fill_(0, index, 0)
    else:
        S.index_copy_(0, index, initial.expand(len(index), *initial.shape))
    return kept


def restart_episodes(St: Tensor, dS: Tensor, kept: tuple[Tensor, Tensor]) -> Tensor:
    """Backward of ``start_episodes``: the fast weights before the start back into St (S transposed, in place), and
    no gradient into them from the steps after -> the gradient the rows' S had at the start (that of ``initial``)."""
    index, S_rows = kept
    St.index_copy_(0, index, S_rows.transpose(-1, -2))
    d_initial = dS.index_select(0, index)
    dS.index_fill_(0, index, 0)
    return d_initial


def write_and_read(S: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, error: Tensor) -> Tensor:
    """One delta-rule step in place: S_t = S_{t-1} + beta k e^T with e = v - S_{t-1}^T k, written into ``error``
    -> S_t^T q, read as S_{t-1}^T q + (beta k . q) e (so both reads are of S_{t-1}, before the write).
    S [B, H, dk, dv]; q, k [B, H, dk]; v, error [B, H, dv]; beta [B, H]."""
    a = beta.unsqueeze(-1) * k
    old, read = vecs_mat(torch.stack([k, q], -2), S).unbind(-2)  # both reads in one pass over S
    e = torch.sub(v, old, out=error)
    read = torch.addcmul(read, (a * q).sum(-1, keepdim=True), e)
    add_outer_(S, a, e)
    return read


def unwrite(St: Tensor, dS: Tensor, q: Tensor, k: Tensor, beta: Tensor, e: Tensor, g: Tensor
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward of ``write_and_read`` given g, the gradient of its read, and dS, that of S_t from the steps after:
    St (S_t transposed) becomes S_{t-1} transposed by undoing the write and dS the gradient of S_{t-1}, both in place
    -> the gradients of q, k, v and beta. St is kept transposed because backward's reads are S u, fastest as
    u^T S^T (``vec_mat``)."""
    a = beta.unsqueeze(-1) * k
    add_outer_(dS, q, g)  # the read: S_t^T q
    da, de = mat_vec(dS, e), vec_mat(a, dS)  # the write: S_t = S_{t-1} + a e^T
    add_outer_(St, e, a, alpha=-1.0)  # S_{t-1}
    Sg, Sde = vecs_mat(torch.stack([g, de], -2), St).unbind(-2)  # S_{t-1} g and S_{t-1} de in one pass
    dq = Sg + (e * g).sum(-1, keepdim=True) * a  # S_t^T q = S_{t-1}^T q + (a . q) e
    dk = beta.unsqueeze(-1) * da - Sde  # e = v - S_{t-1}^T k
    add_outer_(dS, k, de, alpha=-1.0)
    return dq, dk, de, (da * k).sum(-1)


def phi_vjp(phi: Callable[[Tensor], Tensor], phi_backward: Callable[[Tensor, Tensor], Tensor] | None, z: Tensor,
            phi_z: Tensor, d_phi: Tensor) -> Tensor:
    """The gradient of z from that of phi(z): phi_backward(phi(z), d_phi) where phi has a closed-form backward,
    else autograd through phi once more."""
    if phi_backward is not None:
        return phi_backward(phi_z, d_phi)
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(phi(z), z, d_phi)[0]


def backward_state(S: Tensor, dS_T: Tensor | None) -> tuple[Tensor, Tensor]:
    """Where a hand-written backward starts: S_T transposed (a copy, undone step by step) and the gradient of S_T
    (zeros where none was given)."""
    return S.transpose(-1, -2).contiguous(), torch.zeros_like(S) if dS_T is None else dS_T.clone()


def vec_mat(u: Tensor, S: Tensor) -> Tensor:
    """u^T S for every leading index: u [..., m], S [..., m, n] -> [..., n]. As a batch of [1, m] x [m, n]
    products: for [256, 64, 64] float32 fast weights on a 2-core CPU 13 times faster than S^T u as [n, m] x [m, 1]
    (52 against 678 microseconds)."""
    return vecs_mat(u.unsqueeze(-2), S).squeeze(-2)


def vecs_mat(U: Tensor, S: Tensor) -> Tensor:
    """u_i^T S for each of the r rows u_i of U and every leading index: U [..., r, m], S [..., m, n] -> [..., r, n].
    Reads S once for all r: two reads of [768, 64, 64] float32 fast weights took 0.67 times the time of two
    ``vec_mat`` on a 2-core CPU (one thread, medians of 7 alternating runs)."""
    r, (m, n) = U.shape[-2], S.shape[-2:]
    return torch.bmm(U.reshape(-1, r, m), S.reshape(-1, m, n)).view(*U.shape[:-1], n)


def mat_vec(S: Tensor, u: Tensor) -> Tensor:
    """S u for every leading index: S [..., m, n], u [..., n] -> [..., m]. As u^T S^T, a batch of [1, n] x [n, m]
    products (5 times faster than [m, n] x [n, 1] on the same CPU)."""
    m, n = S.shape[-2:]
    return torch.bmm(u.reshape(-1, 1, n), S.reshape(-1, m, n).transpose(1, 2)).view(*u.shape[:-1], m)


def add_outer_(S: Tensor, a: Tensor, b: Tensor, alpha: float = 1.0) -> None:
    """S += alpha a b^T in place for every leading index: S [..., m, n], a [..., m], b [..., n] (one pass over S,
    twice as fast as an in-place baddbmm there)."""
    S.addcmul_(a.unsqueeze(-1), b.unsqueeze(-2), value=alpha)
