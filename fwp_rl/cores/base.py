"""The one interface every memory core implements.

A core maps an input sequence to an output sequence while carrying a state (its memory) from step to
step. Every core, whether it is an LSTM or a fast weight programmer, is used the same way:

- ``initial_state(batch_size, device)`` -> state, a tuple of tensors, batch first;
- ``step(x [B, D], state, episode_start [B] bool)`` -> (y [B, H], state): one step, used in rollouts;
  rows whose ``episode_start`` is set have their state reset to the initial state before ``x`` is read;
- ``forward(x [T, B, D], state, episode_starts [T, B] bool)`` -> (y [T, B, H], state): a whole
  training sequence with resets inside it. Cores whose rule allows it override this with a
  chunkwise-parallel form that equals ``forward_loop`` (the plain step loop: the reference) to float
  tolerance; the others run the step loop checkpointed (``forward_checkpointed``).

Subclasses implement ``initial_state`` and ``_step`` (one step on an already reset state); the reset
logic and the validation of shapes live here once.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from fwp_rl.checks import check_input, check_size, check_starts
from fwp_rl.ops.inplace import reset_steps

State = Tuple[Tensor, ...]

# Steps per checkpointed piece of a step loop (``MemoryCore.forward_checkpointed``); chosen in docs/benchmarks/cores.md.
CHECKPOINT_STEPS = 8


class MemoryCore(nn.Module):
    """Base class of all memory cores. ``input_size`` -> ``output_size`` features per step."""

    input_size: int
    output_size: int

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the core's parameters, which its states share."""
        return next(self.parameters()).dtype

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One step from a state that has already been reset where episodes start."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public interface
    def step(self, x: Tensor, state: State, episode_start: Tensor | None = None) -> tuple[Tensor, State]:
        """One step. x [B, input_size], episode_start [B] bool -> (y [B, output_size], state)."""
        check_input(x, "x", 2, self.input_size)
        if episode_start is not None:
            check_starts(episode_start, "episode_start", x.shape[:1])
            state = self.reset(state, episode_start)
        return self._step(x, state)

    def forward(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """A sequence. x [T, B, input_size], episode_starts [T, B] bool -> (y [T, B, output_size], state)."""
        return self.forward_checkpointed(x, state, episode_starts)

    def forward_checkpointed(self, x: Tensor, state: State, episode_starts: Tensor | None = None,
                             steps: int = CHECKPOINT_STEPS) -> tuple[Tensor, State]:
        """The step loop with activation checkpointing, ``steps`` steps a piece: forward keeps only the state where
        each piece starts; backward runs the pieces' forwards again one at a time, last first, each followed by its
        own backward, so a step loop that keeps every step's fast weights for backward needs the memory of ``steps``
        steps, not of T, for one more forward in time. Without gradients it is the plain loop. Values equal
        ``forward_loop``'s bit for bit, gradients to float rounding (the pieces' gradients are summed)."""
        check_input(x, "x", 3, self.input_size)
        if episode_starts is not None:
            check_starts(episode_starts, "episode_starts", x.shape[:2])
        if not torch.is_grad_enabled() or x.shape[0] <= steps:
            return self.forward_loop(x, state, episode_starts)
        params = [p for p in self.parameters() if p.requires_grad]
        y, *state = _CheckpointedLoop.apply(self, steps, episode_starts, len(state), x, *state, *params)
        return y, tuple(state)

    def forward_loop(self, x: Tensor, state: State, episode_starts: Tensor | None = None) -> tuple[Tensor, State]:
        """The plain step loop: the reference every parallel form is tested against."""
        check_input(x, "x", 3, self.input_size)
        if episode_starts is not None:
            check_starts(episode_starts, "episode_starts", x.shape[:2])
        ys = []
        # a reset touches the whole state (for the fast-weight cores, every row's matrices, forward and backward),
        # and most steps start nothing
        resets = reset_steps(episode_starts)
        for t in range(x.shape[0]):
            if t in resets:
                state = self.reset(state, episode_starts[t])
            y, state = self._step(x[t], state)
            ys.append(y)
        return torch.stack(ys), state

    def reset(self, state: State, episode_start: Tensor) -> State:
        """The state with the rows of ``episode_start`` [B] set back to the initial state."""
        init = self.initial_state(episode_start.shape[0], episode_start.device)
        return tuple(
            torch.where(episode_start.view(-1, *([1] * (s.dim() - 1))), i.to(s.dtype), s) for s, i in zip(state, init)
        )

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, output_size={self.output_size}"


class _CheckpointedLoop(torch.autograd.Function):
    """``MemoryCore.forward_checkpointed``: (core, steps, starts, number of state tensors, x, *state, *parameters) ->
    (y, *final state). Written out rather than torch.utils.checkpoint per piece: with that, autograd's engine may run
    the recomputation of many pieces before their backward (it orders nodes by creation, and every piece's outputs
    get their gradient at once), and the memory is that of the whole sequence again (measured on delta_rnn); here the
    pieces' backward runs strictly one after the other."""

    @staticmethod
    def forward(ctx, core, steps, starts, num_states, x, *state_and_params):
        state = state_and_params[:num_states]
        pieces, boundaries, ys = range(0, x.shape[0], steps), [], []
        with torch.no_grad():
            for a in pieces:
                boundaries.append(state)
                y, state = core.forward_loop(x[a:a + steps], state, None if starts is None else starts[a:a + steps])
                ys.append(y)
        ctx.core, ctx.steps, ctx.starts = core, steps, starts
        ctx.pieces, ctx.boundaries = list(pieces), boundaries
        ctx.params = state_and_params[num_states:]
        ctx.save_for_backward(x)
        return (torch.cat(ys), *state)

    @staticmethod
    def backward(ctx, dy, *d_state):
        (x,) = ctx.saved_tensors
        core, steps, starts = ctx.core, ctx.steps, ctx.starts
        dx = torch.zeros_like(x)
        d_params = [torch.zeros_like(p) for p in ctx.params]
        d_state = list(d_state)
        for a, state in zip(reversed(ctx.pieces), reversed(ctx.boundaries)):
            with torch.enable_grad():
                xs = x[a:a + steps].detach().requires_grad_(True)
                state = tuple(s.detach().requires_grad_(s.is_floating_point()) for s in state)
                y, out = core.forward_loop(xs, state, None if starts is None else starts[a:a + steps])
                outputs, grads = [y], [dy[a:a + steps]]
                for o, g in zip(out, d_state):
                    if g is not None and o.requires_grad:
                        outputs.append(o)
                        grads.append(g)
                inputs = [xs, *(s for s in state if s.requires_grad), *ctx.params]
                found = torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
            dx[a:a + steps] = found[0]
            found_state = iter(found[1:1 + sum(s.requires_grad for s in state)])
            d_state = [next(found_state) if s.requires_grad else None for s in state]
            for d, g in zip(d_params, found[len(found) - len(ctx.params):]):
                if g is not None:
                    d += g
        return (None, None, None, None, dx, *d_state, *d_params)


def head_size(hidden_size: int, num_heads: int, head_dim: int | None) -> int:
    """The size of one head: ``head_dim``, or hidden_size / num_heads when it is None (which must divide)."""
    if head_dim is None:
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; "
                             "choose sizes that divide or set head_dim")
        head_dim = hidden_size // num_heads
    return check_size("head_dim", head_dim)


def zeros_state(batch_size: int, shapes: list[tuple[int, ...]], device, dtype) -> State:
    """A state of zero tensors [batch_size, *shape] for each shape."""
    return tuple(torch.zeros(batch_size, *s, device=device, dtype=dtype) for s in shapes)
