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
