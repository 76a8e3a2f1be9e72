"""The memory view: a video frame with the game on the left and, on the right, the agent's memory as it
changes (a heatmap per head of the fast weight matrix, the direct FWP's fast net, or the LSTM cell as a
grid) above its outputs: the action probabilities, or a controller's output over the episode so far.

Which state tensor is shown: the first one with a matrix per head (the fast weights W [heads, d_k, d_v] of
the fast-weight cores, the first layer's in a stack); else the first matrix (the weights W [hidden,
inputs + 1] that the direct FWP's slow net writes into its fast net); for cores with neither (LSTM, GRU,
Elman), the last state tensor (the LSTM cell c, the GRU/Elman h) laid out as a near-square grid. The
colour scale is fixed over the episode (symmetric around 0, with a colour bar), so a brightening head
means a growing weight.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torch import Tensor  # noqa: E402

MAX_HEADS = 8
MAX_LABELLED_CELLS = 12  # images this small (a tiny controller's memory) also show each value as a number
AXIS_NAMES = {"fast weights per head": ("value", "key"), "fast net weights": ("input (last: bias)", "unit")}


def memory_images(state: tuple[Tensor, ...]) -> tuple[str, np.ndarray]:
    """The state of one row (each tensor without the batch dimension) -> (what it is, images [n, h, w])."""
    for dims, kind in ((3, "fast weights per head"), (2, "fast net weights")):
        matrices = [s for s in state if s.dim() >= dims]
        if matrices:
            w = matrices[0].detach().float().cpu()
            return kind, w.reshape(-1, *w.shape[-2:])[:MAX_HEADS].numpy()
    if not state:
        return "no memory", np.zeros((0, 1, 1))
    v = state[-1].detach().float().cpu().reshape(-1).numpy()
    cols = math.ceil(math.sqrt(v.size))
    grid = np.full(cols * math.ceil(v.size / cols), np.nan)
    grid[:v.size] = v
    return "recurrent state", grid.reshape(1, -1, cols)


def render_memory_video(frames: list[np.ndarray], memories: list[np.ndarray], outputs: list[np.ndarray],
                        memory_kind: str, output_names: list[str], output_label: str = "p(action)",
                        trace: bool = False, dpi: int = 80) -> list[np.ndarray]:
    """frames [T] of RGB [H, W, 3] uint8, memories [T] of [n, h, w], outputs [T] of [A] values in [0, 1]
    -> RGB frames of the memory view (all the same size).

    The outputs are bars (one per name) at each step, or with ``trace`` (one output) a line of the values
    so far over the whole episode's steps, the present one marked.
    """
    n = memories[0].shape[0] if memories else 0
    scale = max((float(np.nanmax(np.abs(m))) for m in memories if m.size), default=1.0) or 1.0
    cols = max(1, min(4, n))
    rows = max(1, math.ceil(n / cols))
    height, width = frames[0].shape[:2]
    # The game as large as the figure's height allows (about its own pixels for the double pole's 600 x 300),
    # within bounds that keep very wide or tall pictures from crowding out the memory.
    game_width = min(max(3.4 * width / height, 2.5), 7.5)
    # Wide matrices (a fast net's weights [units, inputs + 1]) get wider panels, so their cells stay legible.
    head_width = 1.6 * float(np.clip(memories[0].shape[2] / memories[0].shape[1], 1, 2.5)) if n else 1.6
    fig = plt.figure(figsize=(game_width + head_width * cols + 0.6, 4.2), dpi=dpi)
    grid = fig.add_gridspec(rows + 1, 2 + cols, width_ratios=[game_width] + [head_width] * cols + [0.15],
                            height_ratios=[1] * rows + [0.8])
    ax_game = fig.add_subplot(grid[:, 0])
    game = ax_game.imshow(frames[0])
    ax_game.set_axis_off()
    heads, labels = [], []
    x_name, y_name = AXIS_NAMES.get(memory_kind, ("", ""))
    for i in range(n):
        ax = fig.add_subplot(grid[i // cols, 1 + i % cols])
        heads.append(ax.imshow(memories[0][i], cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest"))
        ax.set_title(f"head {i}" if n > 1 else memory_kind, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        if i + cols >= n:  # the bottom row names the columns, the first column the rows
            ax.set_xlabel(x_name, fontsize=7)
        if i % cols == 0:
            ax.set_ylabel(y_name, fontsize=7)
        cells = np.ndindex(memories[0][i].shape) if memories[0][i].size <= MAX_LABELLED_CELLS else ()
        labels.append([(r, c, ax.text(c, r, "", ha="center", va="center", fontsize=7)) for r, c in cells])
    if heads:
        colorbar = fig.colorbar(heads[0], cax=fig.add_subplot(grid[:rows, -1]))
        colorbar.ax.tick_params(labelsize=7)
    ax_out = fig.add_subplot(grid[rows, 1:])
    ax_out.set_ylim(0, 1)
    ax_out.set_ylabel(output_label, fontsize=8)
    ax_out.tick_params(labelsize=7)
    if trace:
        ax_out.set_xlim(-0.5, len(outputs) - 0.5)  # half a step of margin keeps the last point's marker whole
        ax_out.axhline(0.5, color="0.7", linewidth=0.8, linestyle="--")
        ax_out.set_xlabel("step", fontsize=8)
        ax_out.xaxis.set_major_locator(MaxNLocator(integer=True))
        (line,) = ax_out.plot([], [], color="tab:blue", linewidth=1)
        (now,) = ax_out.plot([], [], "o", color="tab:blue", markersize=4)
        values = np.array([float(o[0]) for o in outputs])
    else:
        bars = ax_out.bar(range(len(output_names)), outputs[0], color="tab:blue")
        ax_out.set_xticks(range(len(output_names)), output_names, fontsize=7,
                          rotation=45 if len(output_names) > 6 else 0)
    title = fig.suptitle("", fontsize=9)
    fig.tight_layout()
    out = []
    for t, (frame, memory, value) in enumerate(zip(frames, memories, outputs)):
        title.set_text(f"step {t}: {memory_kind} after reading this frame")
        game.set_data(frame)
        for image, cells, m in zip(heads, labels, memory):
            image.set_data(m)
            for r, c, text in cells:
                v = m[r, c]
                text.set_text("" if np.isnan(v) else f"{v:.2f}")
                text.set_color("white" if abs(v) > 0.6 * scale else "black")
        if trace:
            line.set_data(np.arange(t + 1), values[:t + 1])
            now.set_data([t], [values[t]])
        else:
            for bar, v in zip(bars, value):
                bar.set_height(v)
        fig.canvas.draw()
        out.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return out


__all__ = ["memory_images", "render_memory_video"]
