"""The image analysis (`ltx_core.training.analysis`) reads what the data says."""

from __future__ import annotations

import torch

from ltx_core.training import analysis, data


def test_the_analysis_reads_the_ground_truth_of_held_out_clips():
    """The evaluation's reader must be right on real clips before it judges generated ones."""
    for spec in data.heldout_specs(12):
        frames = ((data.render_clip(spec, 25, 96, 96) + 1) / 2).permute(1, 2, 3, 0)
        reading = analysis.read_clip(frames)
        assert (reading.color, reading.shape, reading.motion) == (spec.main.color, spec.main.shape, spec.main.motion), (
            data.caption(spec)
        )


def test_a_bounce_blurred_at_its_end_still_reads_as_a_bounce():
    """A decoded fast bounce can carry more bright area at its end (motion blur): its
    centroid's rise-and-return decides, not the area, which would read it as growing."""
    from dataclasses import replace as replace_spec

    spec = next(s for s in data.training_specs(3, 0, 400) if s.main.motion == "bounce" and s.main.speed == "fast")
    spec = replace_spec(spec, second=None)
    frames = ((data.render_clip(spec, 25, 128, 128) + 1) / 2).permute(1, 2, 3, 0)
    blurred = frames.clone()
    tail = blurred[-4:].permute(0, 3, 1, 2)  # (4, 3, H, W)
    blurred[-4:] = torch.nn.functional.max_pool2d(tail, 15, stride=1, padding=7).permute(0, 2, 3, 1)
    area = analysis.shape_masks(blurred).flatten(1).sum(1).float()
    assert area[-3:].mean() / area[:3].mean() > analysis.SCALE_RATIO  # the area alone says "grow"
    assert analysis.read_clip(frames).motion == "bounce"
    assert analysis.read_clip(blurred).motion == "bounce"


def test_an_empty_clip_reads_as_nothing():
    reading = analysis.read_clip(torch.zeros(9, 32, 32, 3))
    assert reading.color is None and reading.motion is None
