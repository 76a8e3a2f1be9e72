"""A picture of one double pole state, for the Gymnasium envs' "rgb_array" rendering and the videos of
``fwp-rl evaluate``."""

from __future__ import annotations

import math

import numpy as np

from fwp_rl.envs.double_pole.config import POLE_HALF_LENGTHS, TRACK_LIMIT

_FRAME_HEIGHT, _FRAME_WIDTH = 300, 600
_PIXELS_PER_METRE = _FRAME_WIDTH / (2 * TRACK_LIMIT + 0.8)
_TRACK_ROW = 240  # pixel row of the track
_CART_SIZE = (24, 50)  # pixels: height, width
_COLORS = {
    "background": (255, 255, 255), "track": (90, 90, 90), "limit": (200, 60, 60), "cart": (40, 70, 140),
    "long pole": (200, 150, 60), "short pole": (60, 160, 90), "hinge": (20, 20, 20),
}


def _draw_segment(frame: np.ndarray, start: tuple[float, float], end: tuple[float, float], width: float,
                  color: tuple[int, int, int]) -> None:
    """Paint the pixels within width/2 of the segment start-end ((row, col) in pixels) in ``color``."""
    (r0, c0), (r1, c1) = start, end
    pad = width / 2 + 1
    rows = np.arange(max(int(min(r0, r1) - pad), 0), min(int(max(r0, r1) + pad) + 1, frame.shape[0]))
    cols = np.arange(max(int(min(c0, c1) - pad), 0), min(int(max(c0, c1) + pad) + 1, frame.shape[1]))
    r, c = np.meshgrid(rows, cols, indexing="ij")
    dr, dc = r1 - r0, c1 - c0
    along = np.clip(((r - r0) * dr + (c - c0) * dc) / max(dr * dr + dc * dc, 1e-12), 0.0, 1.0)
    inside = np.hypot(r - (r0 + along * dr), c - (c0 + along * dc)) <= width / 2
    frame[r[inside], c[inside]] = color


def render_frame(state) -> np.ndarray:
    """A picture of one state (6 numbers): cart, long pole, short pole, track and its limits.

    -> [300, 600, 3] uint8. Both poles stand on one hinge on top of the cart; 1 m is 107 pixels.
    """
    x, _, theta1, _, theta2, _ = (float(v) for v in state)
    frame = np.full((_FRAME_HEIGHT, _FRAME_WIDTH, 3), _COLORS["background"], dtype=np.uint8)

    def column(position: float) -> float:
        return _FRAME_WIDTH / 2 + position * _PIXELS_PER_METRE

    frame[_TRACK_ROW:_TRACK_ROW + 2, :] = _COLORS["track"]
    for limit in (-TRACK_LIMIT, TRACK_LIMIT):
        c = int(round(column(limit)))
        frame[_TRACK_ROW - 30:_TRACK_ROW + 2, max(c - 1, 0):c + 2] = _COLORS["limit"]
    height, width = _CART_SIZE
    centre = column(x)
    left, right = int(round(centre - width / 2)), int(round(centre + width / 2))
    frame[_TRACK_ROW - height:_TRACK_ROW, max(left, 0):max(right, 0)] = _COLORS["cart"]
    hinge = (_TRACK_ROW - height, centre)
    for theta, half_length, name, thickness in ((theta1, POLE_HALF_LENGTHS[0], "long pole", 7),
                                                (theta2, POLE_HALF_LENGTHS[1], "short pole", 5)):
        length = 2 * half_length * _PIXELS_PER_METRE
        tip = (hinge[0] - length * math.cos(theta), hinge[1] + length * math.sin(theta))
        _draw_segment(frame, hinge, tip, thickness, _COLORS[name])
    _draw_segment(frame, hinge, hinge, 6, _COLORS["hinge"])
    return frame

