"""The synthetic clips (`ltx_core.training.data`): a pure function of their seed, and the
held-out split never reaches training."""

from __future__ import annotations

import torch

from ltx_core.training import analysis, data


def test_the_same_seed_and_index_give_the_same_clip_and_caption():
    """Training data and the evaluation set must be reproducible on any machine."""
    a, b = data.sample_clip_spec(3, 17), data.sample_clip_spec(3, 17)
    assert a == b and data.caption(a) == data.caption(b)
    assert torch.equal(data.render_clip(a, 9, 64, 64), data.render_clip(b, 9, 64, 64))
    assert data.sample_clip_spec(3, 18) != a


def test_held_out_combinations_never_appear_in_training_but_every_word_does():
    """A leak would make the held-out evaluation measure memory, not composition."""
    train = data.training_specs(0, 0, 2000)
    heldout = data.heldout_specs(200)
    assert not any(data.is_heldout(s.main.color, s.main.shape, s.main.motion) for s in train)
    assert not any(s.second and data.is_heldout(s.second.color, s.second.shape, s.second.motion) for s in train)
    assert all(data.is_heldout(s.main.color, s.main.shape, s.main.motion) for s in heldout)
    seen = {(s.main.color, s.main.shape, s.main.motion) for s in train}
    for color in data.SHAPE_COLORS:
        assert any(c == color for c, _, _ in seen)
    for motion in data.MOTIONS:
        assert any(m == motion for _, _, m in seen)
    assert len({(s.main.color, s.main.shape, s.main.motion) for s in heldout}) == 24


def test_rendered_clips_are_in_range_and_keep_backgrounds_darker_than_shapes():
    spec = data.sample_clip_spec(0, 5)
    video = data.render_clip(spec, 9, 64, 64)
    assert video.shape == (3, 9, 64, 64)
    assert video.min() >= -1 and video.max() <= 1
    assert (video + 1).div(2).amax(0).max() > analysis.BRIGHTNESS_THRESHOLD
