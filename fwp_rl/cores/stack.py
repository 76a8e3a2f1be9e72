"""Memory layers stacked as pre-LayerNorm residual blocks.

    h = Linear(x)
    for each block:  h = h + layer(LayerNorm(h));  h = h + FF(LayerNorm(h))   (FF when feedforward > 0)
    y = LayerNorm(h)

This is the layout of the reference fast-weight Atari agents (2 blocks of 4 heads x 32 with a
128 -> 512 -> 128 feed-forward: ``num_layers=2, feedforward=4, hidden_size=128, num_heads=4``).
"""

from __future__ import annotations

import inspect

from torch import Tensor, nn

from fwp_rl.checks import check_input
from fwp_rl.cores.base import MemoryCore, State


class ResidualStack(MemoryCore):
    def __init__(self, layer_cls: type[MemoryCore], input_size: int, num_layers: int = 2, feedforward: int = 4,
                 **layer_options):
        super().__init__()
        default_size = inspect.signature(layer_cls.__init__).parameters["hidden_size"].default
        hidden_size = layer_options.pop("hidden_size", default_size)
        self.input_size, self.output_size = input_size, hidden_size
        self.input_proj = nn.Linear(input_size, hidden_size)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers))
        self.layers = nn.ModuleList(
            layer_cls(input_size=hidden_size, hidden_size=hidden_size, **layer_options) for _ in range(num_layers)
        )
        self.ff_norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers if feedforward else 0))
        self.ffs = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_size, feedforward * hidden_size), nn.ReLU(),
                          nn.Linear(feedforward * hidden_size, hidden_size))
            for _ in range(num_layers if feedforward else 0)
        )
        self.final_norm = nn.LayerNorm(hidden_size)
        self._state_sizes = [len(layer.initial_state(1)) for layer in self.layers]

    def initial_state(self, batch_size: int, device=None) -> State:
        return tuple(s for layer in self.layers for s in layer.initial_state(batch_size, device))

    def _split(self, state: State) -> list[State]:
        parts, i = [], 0
        for n in self._state_sizes:
            parts.append(tuple(state[i:i + n]))
            i += n
        return parts

    def _blocks(self, x: Tensor, state: State, run_layer) -> tuple[Tensor, State]:
        h = self.input_proj(x)
        new_state: list[Tensor] = []
        for i, (layer, part) in enumerate(zip(self.layers, self._split(state))):
            y, part = run_layer(layer, self.norms[i](h), part)
            h = h + y
            new_state.extend(part)
            if self.ffs:
                h = h + self.ffs[i](self.ff_norms[i](h))
        return self.final_norm(h), tuple(new_state)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._blocks(x, state, lambda layer, h, s: layer._step(h, s))

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        check_input(x, "x", 3, self.input_size)
        # Each layer runs its own (possibly chunkwise-parallel) form over the whole sequence.
        return self._blocks(x, state, lambda layer, h, s: layer(h, s, episode_starts))
