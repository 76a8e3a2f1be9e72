"""The baselines every fast-weight result is compared to: LSTM, GRU and the Elman (tanh) RNN, and the
memoryless core that shows what a task asks of memory.

Each core owns one PyTorch recurrent layer (cuDNN on a GPU, oneDNN/MKL on a CPU). A training sequence with
episode starts inside it is run in one of two forms, both equal to the step loop (``forward_loop`` over
``_step``, the cell's equations: the reference):

- on a GPU, packed: each row's episode segments are separate sequences of one packed batch, the row's
  carried state the initial state of its first segment and the reset state that of the others; the whole
  [T, B] input is one library call (cuDNN runs packed sequences natively);
- on a CPU, ``fwp_rl.ops.rnn``: the cell stepped over the whole batch with the resets, and a hand-written
  backward over the whole sequence, on the layer's own parameters. The CPU's library layer (oneDNN) cannot reset
  a row inside a sequence, and its packed path is no fused kernel: ATen runs it step by step under autograd.

Without episode starts after the first step, either form is one library call.

A single step (rollouts) is the cell's equations in plain tensor ops on the same parameters: unlike the
library layer (aten::lstm, gru and rnn_tanh have no batching rule) it runs under torch.func.vmap, which
is how a population of parameter vectors is evaluated in one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from fwp_rl.checks import check_input, check_size, check_starts
from fwp_rl.cores.base import MemoryCore, State, zeros_state
from fwp_rl.ops.rnn import elman_sequence, gru_sequence, lstm_sequence


class TorchRNNCore(MemoryCore):
    """One ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` layer behind the core interface; states [B, hidden_size]."""

    num_states = 1

    def __init__(self, input_size: int, hidden_size: int, rnn: type[nn.RNNBase], **rnn_options):
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.output_size = self.hidden_size = check_size("hidden_size", hidden_size)
        self.rnn = rnn(input_size, hidden_size, batch_first=False, **rnn_options)

    def initial_state(self, batch_size: int, device=None) -> State:
        return zeros_state(batch_size, [(self.hidden_size,)] * self.num_states, device, self.dtype)

    def _run(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One library call: x [T, B, input_size] (or packed sequences), state batch first -> (y [T, B,
        hidden_size] (or packed), state)."""
        hx = tuple(s.unsqueeze(0) for s in state)
        y, hn = self.rnn(x, hx if self.num_states > 1 else hx[0])
        return y, tuple(h.squeeze(0) for h in (hn if self.num_states > 1 else (hn,)))

    def _gates(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """The input and recurrent pre-activations of all gates: W_ih x + b_ih, W_hh h + b_hh [B, G * H]."""
        r = self.rnn
        return F.linear(x, r.weight_ih_l0, r.bias_ih_l0), F.linear(h, r.weight_hh_l0, r.bias_hh_l0)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """x [T, B, input_size], episode_starts [T, B] bool -> (y [T, B, hidden_size], state); equals the step
        loop (``forward_loop``)."""
        check_input(x, "x", 3, self.input_size)
        if episode_starts is None:
            return self._run(x, state)
        check_starts(episode_starts, "episode_starts", x.shape[:2])
        if not episode_starts[1:].any():
            return self._run(x, self.reset(state, episode_starts[0]))
        return (self._run_packed if x.is_cuda else self._run_fused)(x, state, episode_starts)

    def _run_fused(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        """The sequence op of ``fwp_rl.ops.rnn`` on the layer's parameters: no library call."""
        r = self.rnn
        return self._sequence(x, *state, episode_starts, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)

    def _run_packed(self, x: Tensor, state: State, episode_starts: Tensor) -> tuple[Tensor, State]:
        """One library call: each row's episode segments are separate sequences of one packed batch."""
        T, B = episode_starts.shape
        begins = episode_starts.T.clone()  # [B, T]: where a segment begins; row-major, the segments in order
        begins[:, 0] = True
        first = begins.flatten().nonzero().flatten()  # segment s begins at time first[s] % T of row first[s] // T
        lengths = torch.diff(first, append=first.new_tensor([B * T]))
        # Row by row, a row's segments follow each other: x [B * T] split at the segments' beginnings.
        segments = x.transpose(0, 1).reshape(B * T, -1).split(lengths.tolist())
        state0 = self.reset(tuple(s[first // T] for s in state), episode_starts.T.flatten()[first])
        y, state = self._run(pack_sequence(segments, enforce_sorted=False), state0)
        padded = pad_packed_sequence(y)[0].transpose(0, 1)  # [segments, longest, hidden_size]
        # The padded places dropped, the outputs follow each other segment by segment, as x did: [B * T].
        filled = torch.arange(padded.shape[1], device=x.device) < lengths.unsqueeze(1)
        y = padded[filled].view(B, T, -1).transpose(0, 1)
        last = begins.sum(dim=1).cumsum(dim=0) - 1  # each row's last segment
        return y, tuple(s[last] for s in state)


class LSTMCore(TorchRNNCore):
    """LSTM (Hochreiter & Schmidhuber 1997; forget gate, Gers et al. 2000). State (h [B, H], c [B, H])."""

    num_states = 2

    _sequence = staticmethod(lstm_sequence)

    def __init__(self, input_size: int, hidden_size: int = 128):
        super().__init__(input_size, hidden_size, nn.LSTM)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        gx, gh = self._gates(x, h)
        i, f, g, o = (gx + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class GRUCore(TorchRNNCore):
    """GRU (Cho et al. 2014), in PyTorch's form (the reset gate scales W_hn h + b_hn). State (h [B, H],)."""

    _sequence = staticmethod(gru_sequence)

    def __init__(self, input_size: int, hidden_size: int = 128):
        super().__init__(input_size, hidden_size, nn.GRU)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h = state[0]
        (xr, xz, xn), (hr, hz, hn) = (g.chunk(3, dim=-1) for g in self._gates(x, h))
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + torch.sigmoid(xr + hr) * hn)
        h = (1 - z) * n + z * h
        return h, (h,)


class ElmanCore(TorchRNNCore):
    """Elman RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh). State (h [B, H],)."""

    _sequence = staticmethod(elman_sequence)

    def __init__(self, input_size: int, hidden_size: int = 128):
        super().__init__(input_size, hidden_size, nn.RNN, nonlinearity="tanh")

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        gx, gh = self._gates(x, state[0])
        h = torch.tanh(gx + gh)
        return h, (h,)


class MemorylessCore(MemoryCore):
    """No memory: y_t = tanh(W x_t + b), state (). A policy on it is the usual feed-forward (MLP) policy,
    the baseline that a task needing memory separates from the recurrent cores."""

    def __init__(self, input_size: int, hidden_size: int = 128):
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.output_size = self.hidden_size = check_size("hidden_size", hidden_size)
        self.linear = nn.Linear(input_size, hidden_size)

    def initial_state(self, batch_size: int, device=None) -> State:
        return ()

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return torch.tanh(self.linear(x)), ()

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        check_input(x, "x", 3, self.input_size)
        if episode_starts is not None:
            check_starts(episode_starts, "episode_starts", x.shape[:2])
        return torch.tanh(self.linear(x)), ()


__all__ = ["ElmanCore", "GRUCore", "LSTMCore", "MemorylessCore", "TorchRNNCore"]
