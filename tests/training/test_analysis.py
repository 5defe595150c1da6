"""The image analysis (`ltx_core.training.analysis`) reads what the data says."""

from __future__ import annotations

from dataclasses import replace

import torch

from ltx_core.training import analysis, data


def frames_of(spec: data.ClipSpec, size: int = 96) -> torch.Tensor:
    return ((data.render_clip(spec, 25, size, size) + 1) / 2).permute(1, 2, 3, 0)


def test_the_analysis_reads_the_ground_truth_of_held_out_clips():
    """The evaluation's reader must be right on real clips before it judges generated ones:
    both colors, the shape and the motion, on dark, mid and light backgrounds."""
    specs = data.heldout_specs(40)
    assert {data.is_dark(s.background) for s in specs} == {True, False}
    for spec in specs:
        reading = analysis.read_clip(frames_of(spec))
        m = spec.main
        assert (reading.color, reading.background, reading.shape, reading.motion) == (
            m.color,
            spec.background,
            m.shape,
            m.motion,
        ), spec
        assert (reading.color_any, reading.background_any) == (m.color, spec.background)


def test_a_shape_darker_than_a_light_background_is_segmented_whatever_the_style():
    """A black or brown shape on white, beige or light gray: the shape is the pixels far from
    the fitted background, not the bright ones."""
    base = next(s for s in data.training_specs(4, 0, 400) if s.main.motion == "right" and s.second is None)
    for color, background in (("black", "white"), ("brown", "beige"), ("blue", "light gray")):
        for style in data.BACKGROUND_STYLES:
            spec = replace(base, main=replace(base.main, color=color), background=background, background_style=style)
            frames = frames_of(spec)
            reading = analysis.read_clip(frames)
            assert (reading.color, reading.background, reading.motion) == (color, background, "right"), (color, style)
            truth = frames_of(replace(spec, main=replace(spec.main, color=background))) != frames
            mask = analysis.shape_masks(frames)
            assert (mask & ~truth.any(-1)).sum() < 0.01 * mask.numel()  # no background taken for shape


def test_a_bounce_blurred_at_its_end_still_reads_as_a_bounce():
    """A decoded fast bounce can carry more shape area at its end (motion blur): its
    centroid's rise-and-return decides, not the area, which would read it as growing."""
    spec = next(s for s in data.training_specs(3, 0, 400) if s.main.motion == "bounce" and s.main.speed == "fast")
    spec = replace(spec, second=None, background="black", main=replace(spec.main, color="yellow"))
    frames = frames_of(spec, 128)
    blurred = frames.clone()
    tail = blurred[-4:].permute(0, 3, 1, 2)  # (4, 3, H, W)
    blurred[-4:] = torch.nn.functional.max_pool2d(tail, 15, stride=1, padding=7).permute(0, 2, 3, 1)
    area = analysis.shape_masks(blurred).flatten(1).sum(1).float()
    assert area[-3:].mean() / area[:3].mean() > analysis.SCALE_RATIO  # the area alone says "grow"
    assert analysis.read_clip(frames).motion == "bounce"
    assert analysis.read_clip(blurred).motion == "bounce"


def test_an_empty_clip_reads_as_its_background_and_no_shape():
    reading = analysis.read_clip(torch.full((9, 32, 32, 3), 0.97))
    assert reading.color is None and reading.motion is None
    assert reading.background == "white"


def test_color_families_join_the_dark_and_light_shades():
    assert analysis.color_family("dark blue") == analysis.color_family("light blue") == "blue"
    assert analysis.color_family("beige") == "beige"


def test_a_clip_longer_than_the_trained_one_is_read_in_its_first_and_last_windows():
    """Each window of 25 frames is read as a 25-frame clip is (speed over the trained span); a
    clip of 25 frames or fewer is read whole."""
    spec = data.heldout_specs(1)[0]
    clip = frames_of(spec)
    (whole,) = analysis.read_windows(clip, 25)
    assert whole == analysis.read_clip(clip)
    longer = torch.cat([clip, clip[-1:].expand(24, -1, -1, -1)])  # 49 frames: the last one held
    first, last = analysis.read_windows(longer, 25)
    assert first == analysis.read_clip(longer[:25]) and last == analysis.read_clip(longer[24:])
    assert first.color == spec.main.color and last.motion == "still"


def disc_clip(x_from: float, x_to: float, radius_from: float, radius_to: float, size: int = 96) -> torch.Tensor:
    """A red disc on black whose center and radius (fractions of the frame) change linearly."""
    frames = torch.zeros(25, size, size, 3)
    ys, xs = torch.meshgrid(*(((torch.arange(size) + 0.5) / size),) * 2, indexing="ij")
    for index, t in enumerate(torch.linspace(0, 1, 25)):
        x, r = x_from + (x_to - x_from) * t, radius_from + (radius_to - radius_from) * t
        frames[index][(xs - x) ** 2 + (ys - 0.5) ** 2 <= r**2] = torch.tensor(data.COLORS["red"])
    return frames


def test_a_shape_that_slides_far_and_grows_a_little_reads_as_its_slide():
    """Generated shapes drift in size: a disc that crossed half the frame while its area grew
    by 1.4x slid (the drawn motions do one or the other); one that kept its place and grew
    2.25x grew, and one that grew so with a little drift still grew."""
    assert analysis.read_clip(disc_clip(0.72, 0.27, 0.10, 0.12)).motion == "left"
    assert analysis.read_clip(disc_clip(0.5, 0.5, 0.10, 0.15)).motion == "grow"
    assert analysis.read_clip(disc_clip(0.45, 0.53, 0.10, 0.15)).motion == "grow"
    assert analysis.read_clip(disc_clip(0.5, 0.5, 0.15, 0.10)).motion == "shrink"


def one_shape(shape: str, motion: str, color: str, background: str) -> data.ClipSpec:
    """A one-shape training clip of the given shape, motion and colors, on a plain background."""
    spec = next(s for s in data.training_specs(5, 0, 2000) if s.second is None and s.main.motion == motion)
    return replace(
        spec, background=background, background_style="plain", main=replace(spec.main, shape=shape, color=color)
    )


def rounded(frames: torch.Tensor, background: str, radius: int) -> torch.Tensor:
    """The clip with its shape's corners rounded to `radius` pixels, as a decoder draws them:
    the shape opened by a disc (eroded, then dilated)."""
    back = torch.tensor(data.COLORS[background])
    inside = ((frames - back).abs().sum(-1) > 0.05).float()[:, None]
    ys, xs = torch.meshgrid(torch.arange(-radius, radius + 1), torch.arange(-radius, radius + 1), indexing="ij")
    disc = (ys**2 + xs**2 <= radius**2).float()[None, None]
    eroded = torch.nn.functional.conv2d(inside, disc, padding=radius) > disc.sum() - 0.5
    kept = torch.nn.functional.conv2d(eroded.float(), disc, padding=radius)[:, 0, ..., None] > 0.5
    return torch.where(kept, frames[inside[:, 0].bool()].median(0).values, back)


def box_fill(mask: torch.Tensor) -> float:
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    return float(mask.sum() / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)))


def test_rounded_corners_read_as_the_nearer_shape():
    """Generated shapes come out with rounded corners. A triangle rounded so that it fills
    more of its box than the old fill threshold allowed a triangle (it read as a circle)
    reads triangle; a square rounded by a third of its side square; a circle circle."""
    triangle = rounded(frames_of(one_shape("triangle", "still", "green", "white"), 128), "white", 8)
    assert box_fill(analysis.shape_masks(triangle)[0]) > 0.64
    assert analysis.read_clip(triangle).shape == "triangle"
    square = rounded(frames_of(one_shape("square", "still", "green", "white"), 128), "white", 10)
    assert analysis.read_clip(square).shape == "square"
    circle = rounded(frames_of(one_shape("circle", "still", "green", "white"), 128), "white", 8)
    assert analysis.read_clip(circle).shape == "circle"


def test_specks_and_a_second_copy_leave_the_shape_and_its_track_alone():
    """A decoder leaves stray specks at a light frame's edges, and now and then draws the
    shape twice: the largest region is the shape, so its outline and track are its own."""
    frames = frames_of(one_shape("square", "right", "blue", "white"), 128)
    frames[:, 2:4, 2:4] = frames[:, -4:-2, -4:-2] = frames[:, 2:4, -4:-2] = 0.0  # specks in three corners
    frames[-6:, 100:108, 10:18] = torch.tensor(data.COLORS["blue"])  # a small copy near the end
    reading = analysis.read_clip(frames)
    assert (reading.color, reading.shape, reading.motion) == ("blue", "square", "right")
    body = analysis.largest_components(analysis.shape_masks(frames))
    assert not body[:, :8, :8].any() and not body[-6:, 100:108, 10:18].any()


def test_the_shape_color_is_read_in_its_core_not_its_rim():
    """A decoded shape's rim blends into the background: the median of every shape pixel
    read a black disc on light gray as brown, an orange one on light blue as gray and a red
    one on white as pink; the pixels farthest from the background keep the shape's color."""
    size = 128
    ys, xs = torch.meshgrid(*(((torch.arange(size) + 0.5) / size),) * 2, indexing="ij")
    radius = ((xs - 0.5) ** 2 + (ys - 0.5) ** 2).sqrt()
    for color, background, outer, rim in (("black", "light gray", 0.2, 0.1), ("orange", "light blue", 0.22, 0.15),
                                          ("red", "white", 0.22, 0.15)):  # fmt: skip
        alpha = ((outer - radius) / rim).clamp(0, 1)[..., None]  # solid inside outer - rim, then a linear rim
        back, shape = torch.tensor(data.COLORS[background]), torch.tensor(data.COLORS[color])
        frames = (back * (1 - alpha) + shape * alpha).expand(25, size, size, 3).clone()
        assert analysis.read_clip(frames).color == color, color
