"""What a generated clip shows, read by simple image analysis: the background's color, the
shape's color, its fill of its bounding box (shape), and the track of its centroid and area
(motion).

The background is static and smooth (plain, a linear gradient, or a faint texture), so a
plane in (x, y) per channel, fitted to the clip's pixels while the ones far from it are
left out, models it whether it is dark or light; the shape is the set of pixels far from
that plane, brighter or darker than the background (`data.py` keeps every shape at least
`MIN_CONTRAST` from its background). Colors are named by the nearest RGB of the vocabulary.
Used by `evaluation/demo_eval.py` on generated clips and by the tests on rendered ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import BACKGROUND_COLORS, COLORS, MIN_CONTRAST, SCALE, SHAPE_COLORS, TRAVEL

SHAPE_DISTANCE = 0.5 * MIN_CONTRAST  # a pixel this far (RGB) from the background is the shape's
FIT_KEEP = (0.3, 0.15, 0.1)  # the background fit's passes keep pixels this close to the last fit
FIT_STRIDE = 4  # the fit reads every 4th pixel of each row and column
STILL_TRAVEL = 0.08  # centroid moves less than this fraction of the frame: still
FAST_TRAVEL = 0.375  # between the slow (0.25) and fast (0.5) travel
SCALE_RATIO = 1.35  # area ratio last/first beyond which it grew (slow grow: 2.25x area)
BOUNCE_RISE = 0.12  # a rise above both ends of the track by this much: a bounce


@dataclass(frozen=True)
class ClipReading:
    color: str | None  # the shape's, among the shape colors
    shape: str | None
    motion: str | None
    speed: str | None
    shape_pixels: float  # mean fraction of the frame segmented as shape
    background: str | None = None  # among the background colors
    color_any: str | None = None  # the shape's color among every named color (for swaps)
    background_any: str | None = None  # the background's, likewise


def _plane_inputs(height: int, width: int) -> torch.Tensor:
    """(H, W, 3) rows [1, x, y] of every pixel, fractions of the frame."""
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / width
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([torch.ones_like(x), x, y], -1)


def background_model(frames: torch.Tensor) -> torch.Tensor:
    """(H, W, 3): the static background fitted as a plane per channel. frames (F, H, W, 3) in [0, 1].

    The first pass starts from the clip's median color (the shape covers well under half of
    any frame); each pass refits on the pixels within `FIT_KEEP` of the last estimate."""
    _, height, width, _ = frames.shape
    inputs = _plane_inputs(height, width)
    sample = frames[:, ::FIT_STRIDE, ::FIT_STRIDE].reshape(-1, 3)
    rows = inputs[::FIT_STRIDE, ::FIT_STRIDE].reshape(1, -1, 3).expand(frames.shape[0], -1, -1).reshape(-1, 3)
    estimate = sample.median(0).values.expand_as(sample)
    coefficients = torch.zeros(3, 3)
    coefficients[0] = sample.median(0).values
    for keep in FIT_KEEP:
        near = (sample - estimate).norm(dim=-1) < keep
        if int(near.sum()) < 3:
            break
        coefficients = torch.linalg.lstsq(rows[near], sample[near]).solution  # (3 inputs, 3 channels)
        estimate = rows @ coefficients
    return inputs @ coefficients


def shape_masks(frames: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """(F, H, W) bool: pixels far enough from the background to be the shape. frames (F, H, W, 3) in [0, 1]."""
    background = background_model(frames) if background is None else background
    return (frames - background).square().sum(-1) > SHAPE_DISTANCE**2


def nearest_color(rgb: torch.Tensor, palette: dict[str, tuple[float, float, float]] = COLORS) -> str:
    names = list(palette)
    colors = torch.tensor([palette[n] for n in names])
    return names[int(((colors - rgb) ** 2).sum(-1).argmin())]


def color_family(name: str) -> str:
    """'dark blue', 'light blue' and 'blue' are one family: a swap is read by family."""
    return name.split()[-1]


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
    a fast bounce decoded with motion blur can show more area at its end than at its start
    (the shipped VAE's own reconstructions of fast bounces did, 6 of 39)."""
    dx = float(cx[-1] - cx[0]) / height_over_width
    dy = float(cy[-1] - cy[0])
    rise = float(torch.minimum(cy[0], cy[-1]) - cy.min())
    if rise > BOUNCE_RISE and abs(dy) < rise:
        turns = int(((cy[2:] - cy[1:-1]).sign() != (cy[1:-1] - cy[:-2]).sign()).sum())
        return "bounce", "fast" if turns >= 3 else "slow"
    ratio = float(area[-3:].mean() / area[:3].mean().clamp(min=1))
    travel = max(abs(dx), abs(dy))
    if _scaling_dominates(ratio, travel):
        if ratio > SCALE_RATIO:
            return "grow", "fast" if ratio > 3.0 else "slow"
        if ratio < 1 / SCALE_RATIO:
            return "shrink", "fast" if ratio < 1 / 3.0 else "slow"
    if travel < STILL_TRAVEL:
        return "still", None
    speed = "fast" if travel > FAST_TRAVEL else "slow"
    if abs(dx) > abs(dy):
        return ("right" if dx > 0 else "left"), speed
    return ("down" if dy > 0 else "up"), speed


def _scaling_dominates(area_ratio: float, travel: float) -> bool:
    """Whether the clip changed size more than it moved, each as a share of the slow change
    the data draws (its area x2.25, a quarter of the frame): a shape that slid across the
    frame and came out a little larger slid (the drawn motions do one or the other)."""
    scaled = abs(math.log(max(area_ratio, 1e-6))) / math.log(SCALE["slow"] ** 2)
    return scaled >= travel / TRAVEL["slow"]


def _track(masks: torch.Tensor, area: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid x and y per frame, fractions of the height (as data.py draws)."""
    _, height, width = masks.shape
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / height
    cy = (masks.sum(2).float() * ys).sum(1) / area
    cx = (masks.sum(1).float() * xs).sum(1) / area
    return cx, cy


def read_clip(frames: torch.Tensor) -> ClipReading:
    """frames (F, H, W, 3) in [0, 1] -> the colors, shape and motion it shows."""
    frames = frames.float().cpu()
    plane = background_model(frames)
    masks = shape_masks(frames, plane)
    area = masks.flatten(1).sum(1).float()
    outside = frames[:, ::FIT_STRIDE, ::FIT_STRIDE][~masks[:, ::FIT_STRIDE, ::FIT_STRIDE]]
    back = outside.median(0).values if len(outside) else plane.reshape(-1, 3).median(0).values
    background = nearest_color(back, BACKGROUND_COLORS)
    pixels = float(area.mean() / masks[0].numel())
    if (area == 0).any():
        return ClipReading(None, None, None, None, pixels, background, None, nearest_color(back))
    rgb = frames[masks].median(0).values
    cx, cy = _track(masks, area)
    motion, speed = _motion(cx, cy, area, 1.0)
    fills = torch.tensor([_fill_ratio(m) for m in masks])
    return ClipReading(
        nearest_color(rgb, SHAPE_COLORS),
        _shape_from_fill(float(fills.median())),
        motion,
        speed,
        pixels,
        background,
        nearest_color(rgb),
        nearest_color(back),
    )


def read_windows(frames: torch.Tensor, length: int) -> list[ClipReading]:
    """Readings of a clip longer than the `length` frames the model was trained on: its first
    and its last `length` frames, each read on its own, so speed is read over the span it was
    trained at; a clip of `length` frames or fewer is read whole."""
    if frames.shape[0] <= length:
        return [read_clip(frames)]
    return [read_clip(frames[:length]), read_clip(frames[-length:])]
