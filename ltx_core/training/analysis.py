"""What a generated clip shows, read by simple image analysis: the bright shape's color,
its fill of its bounding box (shape), and the track of its centroid and area (motion).

It relies on the synthetic data's contract (`data.py`): shapes are bright and saturated,
backgrounds dark, so a brightness threshold segments the shape. Used by
`evaluation/demo_eval.py` on generated clips and by the tests on rendered ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import SHAPE_COLORS

BRIGHTNESS_THRESHOLD = 0.55  # backgrounds stay <= 0.4 in every channel, shapes reach >= 0.85
STILL_TRAVEL = 0.08  # centroid moves less than this fraction of the frame: still
FAST_TRAVEL = 0.375  # between the slow (0.25) and fast (0.5) travel
SCALE_RATIO = 1.35  # area ratio last/first beyond which it grew (slow grow: 2.25x area)
BOUNCE_RISE = 0.12  # a rise above both ends of the track by this much: a bounce


@dataclass(frozen=True)
class ClipReading:
    color: str | None
    shape: str | None
    motion: str | None
    speed: str | None
    shape_pixels: float  # mean fraction of the frame segmented as shape


def shape_masks(frames: torch.Tensor) -> torch.Tensor:
    """(F, H, W) bool: pixels bright enough to be the shape. frames (F, H, W, 3) in [0, 1]."""
    return frames.max(dim=-1).values > BRIGHTNESS_THRESHOLD


def _nearest_color(rgb: torch.Tensor) -> str:
    names = list(SHAPE_COLORS)
    palette = torch.tensor([SHAPE_COLORS[n] for n in names])
    return names[int(((palette - rgb) ** 2).sum(-1).argmin())]


def _fill_ratio(mask: torch.Tensor) -> float:
    """Area over bounding-box area: square 1, circle pi/4, triangle 1/2."""
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return float(mask.sum() / box)


def _shape_from_fill(fill: float) -> str:
    if fill > 0.9:
        return "square"
    return "circle" if fill > 0.64 else "triangle"


def _motion(cx: torch.Tensor, cy: torch.Tensor, area: torch.Tensor, height_over_width: float):
    """(motion, speed) from centroid track (fractions of the frame) and area per frame.

    The track's bounce signature (a rise above both ends that comes back) is read before
    the area: a growing or shrinking shape keeps its center, so it never shows one, while
    a fast bounce decoded with motion blur can show more bright area at its end than at
    its start (the shipped VAE's own reconstructions of fast bounces did, 6 of 39)."""
    dx = float(cx[-1] - cx[0]) / height_over_width
    dy = float(cy[-1] - cy[0])
    rise = float(torch.minimum(cy[0], cy[-1]) - cy.min())
    if rise > BOUNCE_RISE and abs(dy) < rise:
        turns = int(((cy[2:] - cy[1:-1]).sign() != (cy[1:-1] - cy[:-2]).sign()).sum())
        return "bounce", "fast" if turns >= 3 else "slow"
    ratio = float(area[-3:].mean() / area[:3].mean().clamp(min=1))
    if ratio > SCALE_RATIO:
        return "grow", "fast" if ratio > 3.0 else "slow"
    if ratio < 1 / SCALE_RATIO:
        return "shrink", "fast" if ratio < 1 / 3.0 else "slow"
    travel = max(abs(dx), abs(dy))
    if travel < STILL_TRAVEL:
        return "still", None
    speed = "fast" if travel > FAST_TRAVEL else "slow"
    if abs(dx) > abs(dy):
        return ("right" if dx > 0 else "left"), speed
    return ("down" if dy > 0 else "up"), speed


def read_clip(frames: torch.Tensor) -> ClipReading:
    """frames (F, H, W, 3) in [0, 1] -> the color, shape and motion it shows."""
    frames = frames.float().cpu()
    masks = shape_masks(frames)
    area = masks.flatten(1).sum(1).float()
    if (area == 0).any():
        return ClipReading(None, None, None, None, float(area.mean() / masks[0].numel()))
    num_frames, height, width = masks.shape
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / height  # fractions of the height, as data.py draws
    cy = (masks.sum(2).float() * ys).sum(1) / area
    cx = (masks.sum(1).float() * xs).sum(1) / area
    color = _nearest_color(frames[masks].mean(0))
    fills = torch.tensor([_fill_ratio(m) for m in masks])
    motion, speed = _motion(cx, cy, area, height / height)
    return ClipReading(
        color, _shape_from_fill(float(fills.median())), motion, speed, float(area.mean() / masks[0].numel())
    )
