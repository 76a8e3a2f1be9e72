"""The 1991 direct fast weight programmer with a recurrent slow net, sized for neuroevolved controllers.

At every step a small Elman (tanh) slow net reads x_t and emits every weight of a one-layer fast net
(Gomez & Schmidhuber 2005 evolved controllers of this kind):

    h_t     = tanh(A [x_t; h_{t-1}] + a)                           (slow net, slow_size units)
    Delta_t = U h_t + u, reshaped to [hidden_size, input_size + 1]
    W_t     = Delta_t  (mode "set")   or   W_{t-1} + Delta_t  (mode "additive")
    y_t     = f(W_t [x_t; 1])                                      (fast net, hidden_size outputs)

Parameters: slow_size * (input_size + slow_size + 1) + hidden_size * (input_size + 1) * (slow_size + 1),
69 for 3 inputs, one output and the default slow_size=5, small enough for CMA-ES. The rule itself is
``fwp_rl.ops.direct.direct_fwp_step``. A sequence runs the slow net as an Elman sequence (episode starts inside:
``fwp_rl.ops.rnn``) and then the fast net at every step at once (``direct_fwp_sequence``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fwp_rl.checks import check_choice, check_input, check_size, check_starts
from fwp_rl.cores.base import MemoryCore, State, zeros_state
from fwp_rl.ops.direct import ACTIVATIONS, MODES, direct_fwp_sequence, direct_fwp_step
from fwp_rl.ops.rnn import elman_sequence


class DirectCore(MemoryCore):
    """Direct FWP: x [B, input_size] -> y [B, hidden_size].

    State (h [B, slow_size], W [B, hidden_size, input_size + 1]).

    ``mode``: "set" (the slow net writes the fast weights anew every step) or "additive" (it writes
    increments, so W_t also remembers). ``activation``: f of the fast net, "tanh", "sigmoid" or "identity".
    """

    def __init__(self, input_size: int, hidden_size: int = 1, slow_size: int = 5, mode: str = "set",
                 activation: str = "tanh"):
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.output_size = check_size("hidden_size", hidden_size)
        self.slow_size = check_size("slow_size", slow_size)
        check_choice("mode", mode, MODES)
        check_choice("activation", activation, tuple(ACTIVATIONS))
        self.mode, self.activation = mode, activation
        self.slow = nn.Linear(input_size + slow_size, slow_size)
        self.program = nn.Linear(slow_size, hidden_size * (input_size + 1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, slow_size={self.slow_size}, mode={self.mode!r}, activation={self.activation!r}"

    def initial_state(self, batch_size: int, device=None) -> State:
        return zeros_state(batch_size, [(self.slow_size,), (self.output_size, self.input_size + 1)], device, self.dtype)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h, W = state
        h = torch.tanh(self.slow(torch.cat([x, h], dim=-1)))
        delta = self.program(h).unflatten(-1, (self.output_size, self.input_size + 1))
        y, W = direct_fwp_step(x, delta, W, self.mode, self.activation)
        return y, (h, W)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """The slow net as an Elman sequence (``elman_sequence``, episode starts inside), then the fast net at every
        step at once (``direct_fwp_sequence``)."""
        check_input(x, "x", 3, self.input_size)
        if episode_starts is None:
            episode_starts = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        check_starts(episode_starts, "episode_starts", x.shape[:2])
        h0, W0 = state
        weight = self.slow.weight
        h, (h_T,) = elman_sequence(x, h0, episode_starts, weight[:, :self.input_size], weight[:, self.input_size:],
                                   self.slow.bias)
        y, W = direct_fwp_sequence(x, h, self.program.weight, self.program.bias, W0, episode_starts, self.mode,
                                   self.activation)
        return y, (h_T, W)


__all__ = ["DirectCore"]
