"""The memory view: a video frame with the game on the left and, on the right, panels that follow the episode:
the agent's memory after reading the frame, any traces a caller adds (the double pole's controller inputs and
prediction errors), and the agent's outputs (action probabilities, Box means, a double pole controller's output o),
each output a line over time.

What the memory panel shows (``memory_images`` picks the state tensor):

- fast weight matrices: the first state tensor with a matrix per head (the fast weights W [heads, d_k, d_v] of the
  fast-weight cores, the first layer's in a stack), else the first matrix (the weights W [hidden, inputs + 1] that
  the direct FWP's slow net writes into its fast net). A heatmap per head (at most ``MAX_HEADS``), rows and columns
  labelled, beside a colour bar; tiny ones also show each value as a number. Heads of a single weight (1 x 1) are
  lines over time instead, one per head.
- recurrent states (LSTM, GRU, Elman): the last state tensor (the LSTM cell c, the GRU/Elman h) as a units x time
  heatmap.

Panels over time show the last ``WINDOW`` steps (the whole of a shorter episode) and scroll on as a longer episode
goes on, so every frame has the same size. The memory's colour scale (symmetric around 0; the range of the memory
lines) is fixed over the episode: its largest |value| (``memory_scale``), or a scale given for the videos of one
comparison, so that a colour means the same value in each (values beyond it saturate).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torch import Tensor  # noqa: E402

WINDOW = 100  # steps the panels over time show at once
MAX_HEADS = 8
MAX_LABELLED_CELLS = 12  # heatmaps this small (a tiny controller's memory) also show each value as a number
AXIS_NAMES = {"fast weights per head": ("value", "key"), "fast net weights": ("input (last: bias)", "unit")}
RECURRENT = "recurrent state"
FONT = 8


def memory_images(state: tuple[Tensor, ...]) -> tuple[str, np.ndarray]:
    """The state of one row (each tensor without the batch dimension) -> (what it is, images [n, h, w]); a recurrent
    state is one column [1, units, 1]."""
    for dims, kind in ((3, "fast weights per head"), (2, "fast net weights")):
        matrices = [s for s in state if s.dim() >= dims]
        if matrices:
            w = matrices[0].detach().float().cpu()
            return kind, w.reshape(-1, *w.shape[-2:])[:MAX_HEADS].numpy()
    if not state:
        return "no memory", np.zeros((0, 1, 1))
    return RECURRENT, state[-1].detach().float().cpu().reshape(1, -1, 1).numpy()


def memory_scale(memories: Sequence[np.ndarray]) -> float:
    """The largest |value| of the memory images of an episode (1 when there is none, or all are 0)."""
    return max((float(np.nanmax(np.abs(m))) for m in memories if m.size), default=1.0) or 1.0


def _limits(values: np.ndarray, include: tuple[float, ...] = ()) -> tuple[float, float]:
    low, high = min(float(np.nanmin(values)), *include), max(float(np.nanmax(values)), *include)
    pad = 0.05 * (high - low) or 1.0
    return low - pad, high + pad


def _indices(n: int) -> np.ndarray:
    """At most 5 of the indices 0 .. n - 1, evenly spread, the first and last among them: the ticks of a matrix."""
    return np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))


def _small_axes(ax, title: str = "", ylabel: str = "", loc: str = "center") -> None:
    ax.set_title(title, fontsize=FONT, loc=loc)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)


def _lines(ax, series: dict[str, np.ndarray]) -> list:
    # the present step's value marked, so that a line of one step shows too
    lines = [ax.plot([], [], linewidth=1.2, marker="o", markersize=3, markevery=[-1], label=name)[0]
             for name in series]
    # above the panel's right end, off the lines
    ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize=FONT - 1, ncol=min(len(series), 6), frameon=False,
              handlelength=1.2, borderaxespad=0.1, borderpad=0.1, columnspacing=0.8)
    return lines


def render_memory_video(frames: list[np.ndarray], memories: list[np.ndarray], outputs: list[np.ndarray],
                        memory_kind: str, output_names: list[str], output_label: str = "p(action)",
                        scale: float | None = None, captions: list[str] | None = None,
                        traces: Sequence[tuple[str, dict[str, np.ndarray]]] = (), dpi: int = 100
                        ) -> Iterator[np.ndarray]:
    """frames [T] of RGB [H, W, 3] uint8, memories [T] of [n, h, w] (``memory_images``), outputs [T] of [A] ->
    the T RGB frames of the memory view, all of one size, made one by one as they are taken.

    scale: of the memory's colours (None: ``memory_scale`` of the episode); captions [T]: what the title says
    after "step t"; traces: more panels of lines over time, each (y label, {line name: values [T]}).
    """
    steps = len(frames)
    window = min(steps, WINDOW)
    scale = memory_scale(memories) if scale is None else scale
    n, rows_h, cols_w = memories[0].shape
    over_time = memory_kind == RECURRENT
    as_lines = n > 0 and not over_time and rows_h == cols_w == 1
    heatmaps = n > 0 and not (over_time or as_lines)
    cols = max(1, min(4, n)) if heatmaps else 1
    rows = math.ceil(n / cols) if heatmaps else 1
    outputs_t = np.array(outputs, dtype=np.float64).reshape(steps, -1)  # [T, A]

    heights = ([2.6 if heatmaps or over_time else 1.3] if n else []) + [1.3] * (len(traces) + 1)
    height = 0.5 + sum(heights)
    game_height, game_width_px = frames[0].shape[:2]
    game_width = float(np.clip(3.4 * game_width_px / game_height, 2.5, 6.5))
    # Wide matrices (a fast net's weights [units, inputs + 1]) get wider heads, so their cells stay legible.
    head_width = 1.7 * float(np.clip(cols_w / rows_h, 1, 2.5))
    panel_width = max(4.6, head_width * cols) if heatmaps else 4.6
    fig = plt.figure(figsize=(game_width + panel_width + 1.2, height), dpi=dpi)
    grid = fig.add_gridspec(len(heights), 3, width_ratios=[game_width, panel_width, 0.45], height_ratios=heights)
    ax_game = fig.add_subplot(grid[:, 0])
    game = ax_game.imshow(frames[0])
    ax_game.set_axis_off()

    time_axes, line_sets, heads, labels = [], [], [], []
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    if heatmaps:
        x_name, y_name = AXIS_NAMES.get(memory_kind, ("", ""))
        sub = grid[0, 1].subgridspec(rows, cols)
        for i in range(n):
            ax = fig.add_subplot(sub[i // cols, i % cols])
            heads.append(ax.imshow(memories[0][i], cmap=cmap, vmin=-scale, vmax=scale, interpolation="nearest",
                                   aspect="auto"))
            _small_axes(ax, f"head {i}" if n > 1 else memory_kind)
            ax.set_xticks(_indices(cols_w)), ax.set_yticks(_indices(rows_h))
            if i + cols >= n:  # the bottom row names the columns, the first column the rows
                ax.set_xlabel(x_name, fontsize=FONT)
            if i % cols == 0:
                ax.set_ylabel(y_name, fontsize=FONT)
            cells = np.ndindex(memories[0][i].shape) if memories[0][i].size <= MAX_LABELLED_CELLS else ()
            labels.append([(r, c, ax.text(c, r, "", ha="center", va="center", fontsize=FONT - 1)) for r, c in cells])
    elif over_time:
        units = rows_h
        history = np.concatenate([m[0] for m in memories], axis=1)  # [units, T]
        ax = fig.add_subplot(grid[0, 1])
        board = ax.imshow(np.full((units, window), np.nan), cmap=cmap, vmin=-scale, vmax=scale,
                          interpolation="nearest", aspect="auto")
        _small_axes(ax, f"{memory_kind} ({units} units)", "unit", "left")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        heads.append(board)
        time_axes.append(ax)
    elif as_lines:
        ax = fig.add_subplot(grid[0, 1])
        series = {f"head {i}" if n > 1 else "w": np.array([m[i, 0, 0] for m in memories]) for i in range(n)}
        _small_axes(ax, f"{memory_kind} (one weight each)", "w", "left")
        ax.set_ylim(-1.05 * scale, 1.05 * scale)
        ax.axhline(0, color="0.8", linewidth=0.8)
        line_sets.append((_lines(ax, series), list(series.values())))
        time_axes.append(ax)
    row = 1 if n else 0
    for ylabel, series in (*traces, (output_label, {name: outputs_t[:, a] for a, name in enumerate(output_names)})):
        ax = fig.add_subplot(grid[row, 1])
        _small_axes(ax, ylabel=ylabel)
        values = np.stack(list(series.values()))
        ax.set_ylim(*_limits(values, (0.0, 1.0) if ylabel == output_label else (0.0,)))
        ax.axhline(0, color="0.8", linewidth=0.8)
        line_sets.append((_lines(ax, series), list(series.values())))
        time_axes.append(ax)
        row += 1
    for ax in time_axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.tick_params(labelbottom=ax is time_axes[-1])
    time_axes[-1].set_xlabel("step", fontsize=FONT)
    title = fig.suptitle("", fontsize=FONT + 1)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    if heads:  # the colour bar just right of the memory's panels, in the room the third column keeps free
        boxes = [image.axes.get_position() for image in heads]
        top, bottom, right = max(b.y1 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes)
        colorbar = fig.colorbar(heads[0], cax=fig.add_axes((right + 0.01, bottom, 0.012, top - bottom)))
        colorbar.ax.tick_params(labelsize=FONT - 1)
        colorbar.set_label(memory_kind if heatmaps else "", fontsize=FONT)
    try:
        for t, (frame, memory) in enumerate(zip(frames, memories)):
            title.set_text(f"step {t}" + (f":  {captions[t]}" if captions else ""))
            game.set_data(frame)
            start = max(0, t - window + 1)
            for ax in time_axes:
                ax.set_xlim(start - 0.5, start + window - 0.5)
            if over_time:
                shown = np.full((history.shape[0], window), np.nan)
                shown[:, :t + 1 - start] = history[:, start:t + 1]
                board.set_data(shown)
                board.set_extent((start - 0.5, start + window - 0.5, history.shape[0] - 0.5, -0.5))
            else:
                for image, cells, m in zip(heads, labels, memory):
                    image.set_data(m)
                    for r, c, text in cells:
                        v = m[r, c]
                        text.set_text("" if np.isnan(v) else f"{v:.2f}")
                        text.set_color("white" if abs(v) > 0.6 * scale else "black")
            for lines, values in line_sets:
                for line, v in zip(lines, values):
                    line.set_data(np.arange(start, t + 1), v[start:t + 1])
            fig.canvas.draw()
            yield np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


__all__ = ["memory_images", "memory_scale", "render_memory_video"]
