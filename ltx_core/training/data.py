"""Captioned synthetic clips: one or two flat shapes moving over a dark, mid or light background.

Every clip is a pure function of (seed, index): its attributes come from a seeded
`torch.Generator`, its pixels from signed-distance fields, so the same index gives the
same clip on any device. Its captions (`captions.py`) are a pure function of the clip
and a variant number.

Two kinds of (shape color, background, shape, motion) combinations are held out: every
background with one (color, shape, motion) triple in eight, and a few (shape color,
background) pairs with any shape and motion. Training never draws them, the evaluation
draws only from them (`heldout_specs`); every word still appears in training with other
partners, so the held-out prompts test composition, not unseen words.

A shape always differs from its background by at least `MIN_CONTRAST` (RGB distance),
so the reader (`analysis.py`) can segment it by its distance from the background's color,
whether the shape is brighter or darker than the background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# One RGB per name, shared by shapes and backgrounds, so a color is read the same wherever it
# is; the earlier world's colors keep their values, so its clips are drawn as they were.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.15, 0.85, 0.20),
    "blue": (0.20, 0.40, 1.00),
    "yellow": (0.95, 0.90, 0.15),
    "purple": (0.70, 0.25, 0.95),
    "orange": (1.00, 0.55, 0.05),
    "white": (0.95, 0.95, 0.95),
    "cyan": (0.10, 0.90, 0.90),
    "pink": (1.00, 0.50, 0.75),
    "brown": (0.30, 0.17, 0.07),
    "gray": (0.52, 0.52, 0.52),
    "black": (0.03, 0.03, 0.03),
    "dark blue": (0.04, 0.07, 0.32),
    "dark green": (0.04, 0.22, 0.08),
    "dark gray": (0.22, 0.22, 0.22),
    "dark red": (0.30, 0.04, 0.05),
    "light gray": (0.76, 0.76, 0.76),
    "beige": (0.94, 0.85, 0.60),
    "light blue": (0.60, 0.78, 1.00),
    "light green": (0.66, 0.94, 0.60),
}
# The first eight shape colors and six backgrounds are the earlier, dark-only world's names.
SHAPE_COLORS = {
    name: COLORS[name]
    for name in (
        "red",
        "green",
        "blue",
        "yellow",
        "purple",
        "orange",
        "white",
        "cyan",
        "pink",
        "brown",
        "gray",
        "black",
    )
}
BACKGROUND_COLORS = {
    name: COLORS[name]
    for name in (
        "black", "dark blue", "dark green", "dark gray", "dark red", "brown",
        "gray", "white", "light gray", "beige", "light blue", "light green",
    )
}  # fmt: skip
OLD_SHAPE_COLORS = 8  # red .. cyan: the colors of the earlier world
OLD_BACKGROUNDS = 6  # black .. brown
MIN_CONTRAST = 0.4  # RGB distance between a shape and its background
DARK_MAX = 0.4  # backgrounds whose channels all stay at or below this are "dark"
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "bounce", "still")
SPEEDS = ("slow", "fast")
BACKGROUND_STYLES = ("plain", "gradient", "textured")

# Fraction of the frame a shape travels in one clip, and how much it scales (grow/shrink).
TRAVEL = {"slow": 0.25, "fast": 0.5}
SCALE = {"slow": 1.5, "fast": 2.0}
BOUNCES = {"slow": 1, "fast": 2}
SECOND_SHAPE_PROBABILITY = 0.25
CORNERS = {"top left": (0.2, 0.2), "top right": (0.8, 0.2), "bottom left": (0.2, 0.8), "bottom right": (0.8, 0.8)}


def contrast(color: str, background: str) -> float:
    return math.dist(COLORS[color], COLORS[background])


def is_heldout_triple(color: str, shape: str, motion: str) -> bool:
    """One (color, shape, motion) triple in eight, with every background; the rule of the
    earlier world, so its held-out triples stay unseen."""
    ci, si, mi = list(SHAPE_COLORS).index(color), SHAPES.index(shape), MOTIONS.index(motion)
    return (ci + 2 * si + 3 * mi) % 8 == 0


def is_heldout_pair(color: str, background: str) -> bool:
    """A few (shape color, background) pairs, with any shape and motion. Only pairs with a
    color or a background new to this world: the earlier model trained on all the others."""
    ci, bi = list(SHAPE_COLORS).index(color), list(BACKGROUND_COLORS).index(background)
    if ci < OLD_SHAPE_COLORS and bi < OLD_BACKGROUNDS:
        return False
    return (ci + 3 * bi) % 7 == 0


def is_heldout(color: str, shape: str, motion: str, background: str | None = None) -> bool:
    """Held out in either way; without a background, whether the triple is (with every one)."""
    pair = background is not None and is_heldout_pair(color, background)
    return is_heldout_triple(color, shape, motion) or pair


def is_valid(color: str, background: str) -> bool:
    """The shape stands out from the background enough to be drawn and read."""
    return contrast(color, background) >= MIN_CONTRAST


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    motion: str
    speed: str
    x: float  # start center, fraction of width
    y: float  # start center, fraction of height
    size: float  # start half-extent, fraction of height


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a clip's pixels; `caption_seed` decides its wording."""

    main: Shape
    background: str
    background_style: str
    texture_phase: float
    second: Shape | None = None
    second_corner: str | None = None
    caption_seed: int = 0


def _pick(options, gen: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=gen))]


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _start_placement(motion: str, speed: str, gen: torch.Generator) -> tuple[float, float, float]:
    """Start center and half-size such that the whole path stays inside the frame."""
    size = _uniform(0.10, 0.14, gen) if motion == "grow" else _uniform(0.12, 0.17, gen)
    if motion == "shrink":
        size = _uniform(0.18, 0.22, gen)
    margin = size * (SCALE[speed] if motion == "grow" else 1.0) + 0.02
    travel = TRAVEL[speed]
    lo, hi = margin, 1.0 - margin
    x, y = _uniform(lo, hi, gen), _uniform(lo, hi, gen)
    if motion == "left":
        x = _uniform(lo + travel, hi, gen)
    elif motion == "right":
        x = _uniform(lo, hi - travel, gen)
    elif motion == "up":
        y = _uniform(lo + travel, hi, gen)
    elif motion == "down":
        y = _uniform(lo, hi - travel, gen)
    elif motion == "bounce":
        y = _uniform(lo + 0.3, hi, gen)  # bounces rise 0.3 of the frame above the floor
    return x, y, size


def _attributes(gen: torch.Generator, heldout: bool) -> tuple[str, str, str, str]:
    """(color, shape, motion, background): drawn until valid and in the asked split."""
    while True:
        color, shape, motion = _pick(list(SHAPE_COLORS), gen), _pick(SHAPES, gen), _pick(MOTIONS, gen)
        background = _pick(list(BACKGROUND_COLORS), gen)
        if is_valid(color, background) and is_heldout(color, shape, motion, background) == heldout:
            return color, shape, motion, background


def sample_clip_spec(seed: int, index: int, heldout: bool = False) -> ClipSpec:
    """The clip `index` of the stream `seed`: training combinations only, or held-out only."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    color, shape, motion, background = _attributes(gen, heldout)
    speed = _pick(SPEEDS, gen)
    x, y, size = _start_placement(motion, speed, gen)
    main = Shape(color, shape, motion, speed, x, y, size)
    second = corner = None
    if not heldout and float(torch.rand((), generator=gen)) < SECOND_SHAPE_PROBABILITY:
        second, corner = _second_shape(main, background, gen)
    return ClipSpec(
        main=main,
        background=background,
        background_style=_pick(BACKGROUND_STYLES, gen),
        texture_phase=_uniform(0.0, 2 * math.pi, gen),
        second=second,
        second_corner=corner,
        caption_seed=int(torch.randint(2**31 - 1, (1,), generator=gen)),
    )


def _second_shape(main: Shape, background: str, gen: torch.Generator) -> tuple[Shape, str]:
    """A still shape in the corner farthest from the main shape's path, in a training combination."""
    corner = max(CORNERS, key=lambda c: (CORNERS[c][0] - main.x) ** 2 + (CORNERS[c][1] - main.y) ** 2)
    options = [
        (c, s)
        for c in SHAPE_COLORS
        for s in SHAPES
        if c != main.color and is_valid(c, background) and not is_heldout(c, s, "still", background)
    ]
    color, shape = _pick(options, gen)
    cx, cy = CORNERS[corner]
    return Shape(color, shape, "still", "slow", cx, cy, 0.09), corner


# ---------------------------------------------------------------- rendering


def shape_track(shape: Shape, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Center x, center y and half-size per frame, fractions of the frame, each (F,)."""
    t = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64)
    x = torch.full_like(t, shape.x)
    y = torch.full_like(t, shape.y)
    size = torch.full_like(t, shape.size)
    d = TRAVEL[shape.speed] * t
    if shape.motion == "left":
        x = x - d
    elif shape.motion == "right":
        x = x + d
    elif shape.motion == "up":
        y = y - d
    elif shape.motion == "down":
        y = y + d
    elif shape.motion == "grow":
        size = size * (1 + (SCALE[shape.speed] - 1) * t)
    elif shape.motion == "shrink":
        size = size / (1 + (SCALE[shape.speed] - 1) * t)
    elif shape.motion == "bounce":
        y = y - 0.3 * torch.sin(math.pi * BOUNCES[shape.speed] * t).abs()
    return x.float(), y.float(), size.float()


def signed_distance(shape: str, px: torch.Tensor, py: torch.Tensor, cx, cy, s) -> torch.Tensor:
    """Signed distance (negative inside) of pixel centers to the shape, frame units."""
    dx, dy = px - cx, py - cy
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - s
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - s
    # triangle with apex at top, base at bottom, fills half its 2s x 2s box
    side = (2 * dx.abs() - dy - s) / math.sqrt(5.0)  # the two slanted edges
    return torch.maximum(side, dy - s)


def is_dark(background: str) -> bool:
    return max(COLORS[background]) <= DARK_MAX


def _background(spec: ClipSpec, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """(3, H, W) background, static over the clip. Dark backgrounds vary in proportion to
    their color and stay dark (as in the earlier world); mid and light ones by a fixed
    amount of lightness, so that no background strays far from its named color."""
    base = torch.tensor(BACKGROUND_COLORS[spec.background], device=px.device).view(3, 1, 1)
    if spec.background_style == "plain":
        return base.expand(3, *px.shape[-2:]).clone()
    dark = is_dark(spec.background)
    high = DARK_MAX if dark else 1.0
    if spec.background_style == "gradient":
        a = spec.texture_phase
        ramp = (math.cos(a) * (px - 0.5) + math.sin(a) * (py - 0.5)) * 0.9 + 0.5  # ~[0, 1]
        return (base * (0.45 + 0.9 * ramp) if dark else base + 0.18 * (ramp - 0.5)).clamp(0.0, high)
    wave = torch.sin(2 * math.pi * 3 * px + spec.texture_phase) * torch.sin(
        2 * math.pi * 3 * py + 2 * spec.texture_phase
    )
    return (base + (0.06 if dark else 0.05) * wave).clamp(0.0, high)


def pixel_centers(height: int, width: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), each (H, W): pixel centers in frame units, fractions of the frame's height
    (the units of `shape_track` and `signed_distance`)."""
    py = ((torch.arange(height, device=device) + 0.5) / height).view(height, 1)
    px = ((torch.arange(width, device=device) + 0.5) / height).view(1, width)
    return px.expand(height, width), py.expand(height, width)


def render_clip(
    spec: ClipSpec, num_frames: int = 25, height: int = 256, width: int = 256, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1]. Edges are anti-aliased over one pixel."""
    px, py = pixel_centers(height, width, device)
    video = _background(spec, py, px).unsqueeze(1).repeat(1, num_frames, 1, 1)  # (3, F, H, W)
    for shape in (spec.second, spec.main):  # main shape drawn last, on top
        if shape is None:
            continue
        cx, cy, s = (v.to(device).view(-1, 1, 1) for v in shape_track(shape, num_frames))
        sdf = signed_distance(shape.shape, px, py, cx, cy, s)  # (F, H, W)
        alpha = (0.5 - sdf * height).clamp(0.0, 1.0).unsqueeze(0)
        color = torch.tensor(COLORS[shape.color], device=device).view(3, 1, 1, 1)
        video = video * (1 - alpha) + color * alpha
    return video * 2 - 1


def render_batch(
    specs: list[ClipSpec], num_frames: int = 25, height: int = 256, width: int = 256, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1]."""
    return torch.stack([render_clip(s, num_frames, height, width, device) for s in specs])


def training_specs(seed: int, start: int, count: int) -> list[ClipSpec]:
    """Clips start .. start+count-1 of the training stream (held-out combinations never appear)."""
    return [sample_clip_spec(seed, i) for i in range(start, start + count)]


HELDOUT_SEED = 20_250_101


def heldout_specs(count: int, seed: int = HELDOUT_SEED) -> list[ClipSpec]:
    """The evaluation set: single shapes in held-out combinations, fixed by `seed`."""
    return [sample_clip_spec(seed, i, heldout=True) for i in range(count)]


# What DiT batches can draw more often (run_tiny's --dit-oversample): a motion, a background,
# or every light / every dark background (`is_dark`).
OVERSAMPLE_CLASSES = (*MOTIONS, *BACKGROUND_COLORS, "light", "dark")


def oversample_weights(specs: list[ClipSpec], factors: dict[str, float]) -> torch.Tensor | None:
    """Per-clip draw weights: the product of the factors of the classes a clip is in (its
    main motion, its background, its background's lightness; 1 for none); None if none named."""
    if not factors:
        return None

    def weight(spec: ClipSpec) -> float:
        classes = {spec.main.motion, spec.background, "dark" if is_dark(spec.background) else "light"}
        return math.prod(factors.get(name, 1.0) for name in classes)

    return torch.tensor([weight(spec) for spec in specs])
