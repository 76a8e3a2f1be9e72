"""The memory view: a video frame with the game on the left and, on the right, the agent's memory as it
changes (a heatmap per head of the fast weight matrix, or the LSTM cell as a grid) above its action
probabilities.

Which state tensor is shown: the first one with a matrix per head (the fast weights W [heads, d_k, d_v] of
the fast-weight cores, the first layer's in a stack); for cores without one (LSTM, GRU, Elman, direct),
the last state tensor (the LSTM cell c, the GRU/Elman h) laid out as a near-square grid. The colour
scale is fixed over the episode (symmetric around 0), so a brightening head means a growing weight.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

MAX_HEADS = 8


def memory_images(state: tuple[Tensor, ...]) -> tuple[str, np.ndarray]:
    """The state of one row (each tensor without the batch dimension) -> (what it is, images [n, h, w])."""
    matrices = [s for s in state if s.dim() >= 3]
    if matrices:
        w = matrices[0].detach().float().cpu()
        return "fast weights per head", w.reshape(-1, *w.shape[-2:])[:MAX_HEADS].numpy()
    if not state:
        return "no memory", np.zeros((0, 1, 1))
    v = state[-1].detach().float().cpu().reshape(-1).numpy()
    cols = math.ceil(math.sqrt(v.size))
    grid = np.full(cols * math.ceil(v.size / cols), np.nan)
    grid[:v.size] = v
    return "recurrent state", grid.reshape(1, -1, cols)


def render_memory_video(frames: list[np.ndarray], memories: list[np.ndarray], probs: list[np.ndarray],
                        memory_kind: str, action_names: list[str], dpi: int = 80) -> list[np.ndarray]:
    """frames [T] of RGB [H, W, 3] uint8, memories [T] of [n, h, w], probs [T] of [A] -> RGB frames of the
    memory view (all the same size)."""
    n = memories[0].shape[0] if memories else 0
    scale = max((float(np.nanmax(np.abs(m))) for m in memories if m.size), default=1.0) or 1.0
    cols = max(1, min(4, n))
    rows = max(1, math.ceil(n / cols))
    fig = plt.figure(figsize=(4 + 1.6 * cols, 4.2), dpi=dpi)
    grid = fig.add_gridspec(rows + 1, 1 + cols, width_ratios=[2.5] + [1] * cols, height_ratios=[1] * rows + [0.8])
    ax_game = fig.add_subplot(grid[:, 0])
    game = ax_game.imshow(frames[0])
    ax_game.set_axis_off()
    heads = []
    for i in range(n):
        ax = fig.add_subplot(grid[i // cols, 1 + i % cols])
        heads.append(ax.imshow(memories[0][i], cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest"))
        ax.set_title(f"head {i}" if n > 1 else memory_kind, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    ax_probs = fig.add_subplot(grid[rows, 1:])
    bars = ax_probs.bar(range(len(action_names)), probs[0], color="tab:blue")
    ax_probs.set_ylim(0, 1)
    ax_probs.set_xticks(range(len(action_names)), action_names, fontsize=7, rotation=45 if len(action_names) > 6 else 0)
    ax_probs.set_ylabel("p(action)", fontsize=8)
    title = fig.suptitle("", fontsize=9)
    fig.tight_layout()
    out = []
    for t, (frame, memory, p) in enumerate(zip(frames, memories, probs)):
        title.set_text(f"step {t}: {memory_kind} after reading this frame (colour scale +-{scale:.3g})")
        game.set_data(frame)
        for image, m in zip(heads, memory):
            image.set_data(m)
        for bar, value in zip(bars, p):
            bar.set_height(value)
        fig.canvas.draw()
        out.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return out


__all__ = ["memory_images", "render_memory_video"]
