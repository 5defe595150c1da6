"""The synthetic clips (`ltx_core.training.data`): a pure function of their seed, the held-out
split never reaches training, and every shape stands out from its background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ltx_core.training import analysis, data


def test_the_same_seed_and_index_give_the_same_clip():
    """Training data and the evaluation set must be reproducible on any machine."""
    a, b = data.sample_clip_spec(3, 17), data.sample_clip_spec(3, 17)
    assert a == b
    assert torch.equal(data.render_clip(a, 9, 64, 64), data.render_clip(b, 9, 64, 64))
    assert data.sample_clip_spec(3, 18) != a


def test_held_out_combinations_never_appear_in_training_but_every_word_does():
    """A leak would make the held-out evaluation measure memory, not composition."""
    train = data.training_specs(0, 0, 3000)
    heldout = data.heldout_specs(300)

    def held(shape, background):
        return data.is_heldout(shape.color, shape.shape, shape.motion, background)

    assert not any(held(s.main, s.background) for s in train)
    assert not any(s.second and held(s.second, s.background) for s in train)
    assert all(held(s.main, s.background) for s in heldout)
    assert {s.main.color for s in train} == set(data.SHAPE_COLORS)
    assert {s.background for s in train} == set(data.BACKGROUND_COLORS)
    assert {s.main.motion for s in train} == set(data.MOTIONS)
    # both kinds are read: held-out triples with any background, and held-out color pairs
    assert any(data.is_heldout_pair(s.main.color, s.background) for s in heldout)
    assert any(data.is_heldout_triple(s.main.color, s.main.shape, s.main.motion) for s in heldout)


def test_every_held_out_pair_leaves_its_color_and_background_trained_with_others():
    for color in data.SHAPE_COLORS:
        trained = [b for b in data.BACKGROUND_COLORS if data.is_valid(color, b) and not data.is_heldout_pair(color, b)]
        assert len(trained) >= 5, color
    for background in data.BACKGROUND_COLORS:
        trained = [
            c for c in data.SHAPE_COLORS if data.is_valid(c, background) and not data.is_heldout_pair(c, background)
        ]
        assert len(trained) >= 5, background


def test_the_earlier_worlds_held_out_triples_stay_held_out():
    """The model trained before this world never saw these triples: they stay unseen, and no
    (color, background) pair of the earlier world is held out (that model trained on all)."""
    old_colors = list(data.SHAPE_COLORS)[: data.OLD_SHAPE_COLORS]
    for ci, color in enumerate(old_colors):
        for si, shape in enumerate(data.SHAPES):
            for mi, motion in enumerate(data.MOTIONS):
                assert data.is_heldout_triple(color, shape, motion) == ((ci + 2 * si + 3 * mi) % 8 == 0)
        for background in list(data.BACKGROUND_COLORS)[: data.OLD_BACKGROUNDS]:
            assert not data.is_heldout_pair(color, background)


def test_every_shape_stands_out_from_its_background():
    """The reader segments by distance from the background: the contrast rule is its contract."""
    for spec in data.training_specs(1, 0, 500) + data.heldout_specs(100):
        assert data.contrast(spec.main.color, spec.background) >= data.MIN_CONTRAST
        if spec.second:
            assert data.contrast(spec.second.color, spec.background) >= data.MIN_CONTRAST


def test_backgrounds_stay_near_their_named_color_and_the_readers_plane():
    """Gradients and textures keep a background's median at its named color, and within
    well inside the shape's distance of the plane the reader fits, for light backgrounds as for dark."""
    spec = data.training_specs(2, 0, 1)[0]
    for background in data.BACKGROUND_COLORS:
        for style in data.BACKGROUND_STYLES:
            clip = data.ClipSpec(spec.main, background, style, 1.0)
            py = ((torch.arange(64) + 0.5) / 64).view(64, 1).expand(64, 64)
            px = ((torch.arange(64) + 0.5) / 64).view(1, 64).expand(64, 64)
            pixels = data._background(clip, py, px).permute(1, 2, 0)  # (H, W, 3)
            named = torch.tensor(data.COLORS[background])
            assert (pixels.reshape(-1, 3).median(0).values - named).norm() < 0.1, (background, style)
            residual = (pixels - analysis.background_model(pixels[None])).norm(dim=-1).max()
            assert residual < 0.6 * analysis.SHAPE_DISTANCE, (background, style)


def test_rendered_clips_are_in_range_with_light_and_dark_backgrounds():
    specs = data.training_specs(0, 0, 40)
    assert {data.is_dark(s.background) for s in specs} == {True, False}
    for spec in specs[:6]:
        video = data.render_clip(spec, 9, 64, 64)
        assert video.shape == (3, 9, 64, 64)
        assert video.min() >= -1 and video.max() <= 1
        corner = (video[:, 0, 0, 0] + 1) / 2  # no shape reaches the corner pixel
        assert (corner - torch.tensor(data.COLORS[spec.background])).abs().max() < analysis.SHAPE_DISTANCE


def test_the_earlier_worlds_clips_are_drawn_as_they_were():
    """Its colors and dark backgrounds keep their pixels, so what the shipped model learned
    of them still holds: the shipped i2v workflow's first frame (drawn by the earlier code,
    scripts/make_example_inputs.py) comes out the same."""
    from PIL import Image

    spec = data.ClipSpec(
        main=data.Shape("yellow", "square", "up", "fast", x=0.5, y=0.76, size=0.14),
        background="dark blue",
        background_style="gradient",
        texture_phase=0.0,
    )
    video = data.render_clip(spec, 25, 256, 256)
    frames = ((video + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 3, 0)
    shipped = Path(__file__).resolve().parents[2] / "workflows" / "input" / "ltxv-example.png"
    assert torch.equal(frames[0], torch.from_numpy(np.array(Image.open(shipped).convert("RGB"))))
