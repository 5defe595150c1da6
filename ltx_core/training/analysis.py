"""What a generated clip shows, read by simple image analysis: the background's color, the
shape's color (its core's), its outline against each shape as the data draws it, and the
track of its centroid and area (motion), all of the largest region of each frame.

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
import torch.nn.functional as F

from .data import (
    BACKGROUND_COLORS,
    COLORS,
    MIN_CONTRAST,
    SCALE,
    SHAPE_COLORS,
    SHAPES,
    TRAVEL,
    pixel_centers,
    signed_distance,
)

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


def largest_components(masks: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """(F, H, W) bool: each frame's largest region of its mask. A generated clip can hold
    stray specks at the frame's edges, or the shape drawn twice, and either would stretch
    the shape's outline and pull its track; the body is the largest region. Regions are
    found on a grid of `cell`-pixel cells (8-connected), so parts less than a cell apart are
    one region (a shape split by a faint band stays whole), and sized in mask pixels."""
    frames, height, width = masks.shape
    coarse = F.max_pool2d(masks[:, None].float(), cell, stride=cell, ceil_mode=True) > 0
    rows, cols = coarse.shape[-2:]
    index = torch.arange(1, rows * cols + 1, dtype=torch.float32).view(1, 1, rows, cols)
    labels = torch.where(coarse, index, torch.zeros(()))
    while True:  # every cell takes its region's largest index, spread one cell at a time
        spread = torch.where(coarse, F.max_pool2d(labels, 3, stride=1, padding=1), labels)
        if torch.equal(spread, labels):
            break
        labels = spread
    fine = labels.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[:, 0, :height, :width].long()
    fine = torch.where(masks, fine, torch.zeros((), dtype=torch.long)).flatten(1)
    sizes = torch.zeros(frames, rows * cols + 1).scatter_add_(1, fine, torch.ones_like(fine, dtype=torch.float32))
    sizes[:, 0] = 0
    return (fine == sizes.argmax(1, keepdim=True)).view(frames, height, width) & masks


def shape_fits(mask: torch.Tensor) -> torch.Tensor:
    """(len(SHAPES),) overlap (intersection over union) of a region (H, W) with each shape
    as `data` draws it, of the region's area and centered on its centroid (a triangle's
    centroid lies a third of its half-height below its box's center). Reads rounded corners
    and soft edges as the nearer shape, where thresholds on the box's fill did not."""
    height, width = mask.shape
    xs, ys = pixel_centers(height, width)
    area = mask.sum() / height**2
    cx, cy = float((xs * mask).sum() / mask.sum()), float((ys * mask).sum() / mask.sum())
    half = {"circle": math.sqrt(area / math.pi), "square": math.sqrt(area / 4), "triangle": math.sqrt(area / 2)}
    fits = []
    for shape in SHAPES:
        s = float(half[shape])
        center_y = cy - s / 3 if shape == "triangle" else cy
        template = signed_distance(shape, xs, ys, cx, center_y, s) < 0
        fits.append(float((template & mask).sum() / (template | mask).sum()))
    return torch.tensor(fits)


def shape_color(frames: torch.Tensor, masks: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(3,) the shape's color: the median of its pixels farther from the background than the
    region's median distance. Its edges blend with the background (a dark shape on light
    gray reads gray whole, an orange one on light blue yellow); its core does not."""
    distance = (frames - background).norm(dim=-1)[masks]
    pixels = frames[masks]
    return pixels[distance >= distance.median()].median(0).values


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
    xs, ys = pixel_centers(*masks.shape[1:])
    cy = (masks.sum(2).float() * ys[:, 0]).sum(1) / area
    cx = (masks.sum(1).float() * xs[0]).sum(1) / area
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
    body = largest_components(masks)
    rgb = shape_color(frames, body, plane)
    cx, cy = _track(body, body.flatten(1).sum(1).float())
    motion, speed = _motion(cx, cy, area, 1.0)
    fits = torch.stack([shape_fits(m) for m in body]).mean(0)
    return ClipReading(
        nearest_color(rgb, SHAPE_COLORS),
        SHAPES[int(fits.argmax())],
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
