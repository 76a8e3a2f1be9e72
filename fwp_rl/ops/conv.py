"""The short causal depthwise convolution over time of the DeltaNet (2024) and Gated DeltaNet layers, with episode
resets, as tensor functions.

Each channel c has its own K weights w[c, 0..K-1]; w[c, K-1] weighs the current input (the layout of a depthwise
``nn.Conv1d`` weight [C, 1, K] without its middle dimension):

    y_t[c] = sum_i w[c, i] u_{t-K+1+i}[c]

The state is the buffer of the last K - 1 inputs [B, K-1, C], oldest first; a reset sets it to zero, so that after
an episode start the convolution sees no input from before it (as if the episode were padded with zeros on the left).
Layout: u [T, B, C], starts [T, B] bool: where set, the buffer is reset before step t is read.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_conv_step(u: Tensor, weight: Tensor, buffer: Tensor) -> tuple[Tensor, Tensor]:
    """One step: u [B, C], weight [C, K], buffer [B, K-1, C] -> (y [B, C], buffer)."""
    window = torch.cat([buffer, u.unsqueeze(1)], dim=1)  # [B, K, C]
    return torch.einsum("bkc,ck->bc", window, weight), window[:, 1:]


def causal_conv_recurrent(u: Tensor, weight: Tensor, buffer: Tensor, starts: Tensor | None = None
                          ) -> tuple[Tensor, Tensor]:
    """The step loop over a sequence: (y [T, B, C], buffer after the last step)."""
    ys = []
    for t in range(u.shape[0]):
        if starts is not None:
            buffer = buffer * (~starts[t]).to(buffer.dtype)[:, None, None]
        y, buffer = causal_conv_step(u[t], weight, buffer)
        ys.append(y)
    return torch.stack(ys), buffer


def causal_conv(u: Tensor, weight: Tensor, buffer: Tensor, starts: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The same as ``causal_conv_recurrent``, all steps at once, one term per lag.

    The buffer's K - 1 inputs go before u's T as steps -K+1 .. -1 of the row's episode that was running when the
    sequence began; step t sees the input of step s <= t only if the row starts no episode in s+1 .. t (and sees
    the buffer only if the row starts none in 0 .. t).
    """
    T, K = u.shape[0], weight.shape[1]
    inputs = torch.cat([buffer.transpose(0, 1), u])  # [K-1+T, B, C]: step s at index s + K - 1
    if starts is None:
        seen = [inputs[i:i + T] for i in range(K)]
    else:
        # the episode of each step, counted from the sequence's start (0: the one the buffer belongs to)
        episode = torch.cat([starts.new_zeros(K - 1, starts.shape[1], dtype=torch.long), starts.long().cumsum(0)])
        seen = [inputs[i:i + T] * (episode[i:i + T] == episode[K - 1:]).to(u.dtype).unsqueeze(-1) for i in range(K)]
    y = sum(w * x for w, x in zip(weight.unbind(1), seen))
    # the buffer after step T-1: what its window saw, but for the oldest input
    return y, torch.stack([x[-1] for x in seen[1:]], dim=1)
