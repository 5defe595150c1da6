"""Latent sizes, conditioning frames and their noise masks, the sampler's start point."""

from types import SimpleNamespace

import pytest
import torch

from ltx_core.conditioning import (
    ConditionedLatent,
    check_multiple,
    check_num_frames,
    condition_first_frame,
    condition_frames,
    empty_latent,
    initial_latent,
    pixel_to_latent_frame,
)
from ltx_core.errors import SettingsError

# The published VAE's geometry, without building a VAE.
GEOMETRY = SimpleNamespace(temporal_compression=8, spatial_compression=32, latent_channels=128)


def test_empty_latent_has_the_vae_grid_and_generates_every_token():
    latent = empty_latent(2, 17, 64, 96, GEOMETRY)
    assert latent.samples.shape == (2, 128, 3, 2, 3)
    assert latent.noise_mask.shape == (2, 1, 3, 2, 3) and (latent.noise_mask == 1).all()
    assert latent.num_tokens == 18


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (500, "height 500 is not a positive multiple of 32; nearest valid: 480 or 512"),
        (16, "height 16 is not a positive multiple of 32; nearest valid: 32$"),
        (0, "height 0 is not a positive multiple of 32; nearest valid: 32$"),
        (-64, "height -64 is not a positive multiple of 32; nearest valid: 32$"),
        (64.0, "height 64.0 must be a whole number"),
    ],
)
def test_sizes_that_are_not_multiples_of_32_name_the_nearest_valid_ones(value, message):
    with pytest.raises(SettingsError, match=message):
        check_multiple("height", value, 32)


@pytest.mark.parametrize(
    ("frames", "nearest"),
    [(24, "17 or 25"), (100, "97 or 105"), (0, "1$"), (-8, "1$"), (2, "1 or 9")],
)
def test_frame_counts_that_are_not_8k_plus_1_name_the_nearest_valid_ones(frames, nearest):
    with pytest.raises(SettingsError, match=rf"num_frames {frames} is not 8k \+ 1 .*nearest valid: {nearest}"):
        check_num_frames(frames)


@pytest.mark.parametrize("frames", [1, 9, 121, 257])
def test_valid_frame_counts_pass(frames):
    check_num_frames(frames)


def test_first_frame_conditioning_sets_the_frame_and_its_mask():
    """Strength 1 gives t_c = 0 on latent frame 0: those tokens stay clean."""
    latent = empty_latent(1, 17, 64, 64, GEOMETRY)
    frame = torch.randn(1, 128, 1, 2, 2)
    conditioned = condition_first_frame(latent, frame, strength=1.0)
    torch.testing.assert_close(conditioned.samples[:, :, :1], frame)
    assert (conditioned.noise_mask[:, :, 0] == 0).all() and (conditioned.noise_mask[:, :, 1:] == 1).all()
    assert (latent.noise_mask == 1).all(), "the input latent must not be modified"
    partial = condition_first_frame(latent, frame, strength=0.75)
    assert (partial.noise_mask[:, :, 0] == 0.25).all()


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_outside_0_1_is_refused(strength):
    latent = empty_latent(1, 9, 32, 32, GEOMETRY)
    with pytest.raises(SettingsError, match=r"strength .* outside \[0, 1\]"):
        condition_first_frame(latent, torch.zeros(1, 128, 1, 1, 1), strength)


def test_conditioning_frames_past_the_clip_are_refused():
    latent = empty_latent(1, 17, 32, 32, GEOMETRY)
    with pytest.raises(SettingsError, match="fall outside the clip's 3 latent frames; allowed start: 0 to 1"):
        condition_frames(latent, torch.zeros(1, 128, 2, 1, 1), latent_frame_index=2)


def test_a_conditioning_latent_of_another_size_is_refused():
    latent = empty_latent(1, 9, 64, 64, GEOMETRY)
    with pytest.raises(SettingsError, match="does not fit the latent"):
        condition_first_frame(latent, torch.zeros(1, 128, 1, 1, 2))
    with pytest.raises(SettingsError, match="expected 1"):
        condition_first_frame(latent, torch.zeros(1, 128, 2, 2, 2))


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (121, "frame index 121 is outside the clip of 121 frames; allowed: 0 to 120"),
        (-1, "outside the clip"),
        (12, "index 12 does not start a latent frame; nearest valid: 8 or 16"),
    ],
)
def test_pixel_frame_indices_must_start_a_latent_frame_inside_the_clip(index, message):
    with pytest.raises(SettingsError, match=message):
        pixel_to_latent_frame(index, 121)


def test_pixel_frame_index_maps_to_its_latent_frame():
    assert pixel_to_latent_frame(0, 9) == 0 and pixel_to_latent_frame(16, 121) == 2


def test_comfyui_shaped_masks_are_expanded_and_bad_latents_refused():
    mask = torch.ones(1, 1, 3, 1, 1)
    mask[:, :, 0] = 0.0
    latent = ConditionedLatent(torch.zeros(1, 128, 3, 2, 2), mask)
    assert latent.noise_mask.shape == (1, 1, 3, 2, 2)
    with pytest.raises(SettingsError, match=r"latent has shape \(1, 4, 8, 8\); LTX-Video latents are 5-D"):
        ConditionedLatent(torch.zeros(1, 4, 8, 8), torch.ones(1))
    with pytest.raises(SettingsError, match=r"noise_mask values must lie in \[0, 1\]"):
        ConditionedLatent(torch.zeros(1, 128, 1, 1, 1), torch.full((1, 1, 1, 1, 1), 2.0))
    with pytest.raises(SettingsError, match="does not fit a latent"):
        ConditionedLatent(torch.zeros(1, 128, 3, 2, 2), torch.ones(1, 1, 2, 2, 2))


def test_initial_latent_puts_each_token_at_its_own_noise_level(generator):
    """Mask 1: the generator's noise in (B, C, f, h, w) order; mask 0: the clean frame;
    mask m: m * noise + (1 - m) * clean (Lightricks' lerp by strength)."""
    latent = empty_latent(1, 17, 32, 64, GEOMETRY)
    clean = torch.randn(1, 128, 1, 1, 2)
    latent = condition_first_frame(latent, clean, strength=0.6)
    x = initial_latent(latent, generator)
    noise = torch.randn(1, 128, 3, 1, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x[:, :, 1:], noise[:, :, 1:], atol=0, rtol=0)
    torch.testing.assert_close(x[:, :, :1], 0.4 * noise[:, :, :1] + 0.6 * clean)
    hard = condition_first_frame(empty_latent(1, 9, 32, 64, GEOMETRY), clean)
    torch.testing.assert_close(initial_latent(hard, torch.Generator().manual_seed(1))[:, :, :1], clean, atol=0, rtol=0)
