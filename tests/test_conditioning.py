"""Latent sizes, conditioning frames and their noise masks, the sampler's start point."""

from types import SimpleNamespace

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.sampling.conditioning import (
    PREFIX_LATENT_FRAMES,
    ConditionedLatent,
    ConditioningItem,
    Keyframe,
    add_keyframe,
    check_multiple,
    check_num_frames,
    condition_first_frame,
    condition_frames,
    empty_latent,
    initial_keyframes,
    initial_latent,
    pixel_to_latent_frame,
)

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


# ---------------------------------------------------------------- conditioning on any frame


def frames_latent(count: int, seed: int = 1, height: int = 2, width: int = 3) -> torch.Tensor:
    return torch.randn(1, 128, count, height, width, generator=torch.Generator().manual_seed(seed))


def test_an_image_at_frame_0_replaces_the_first_latent_frame_and_adds_no_tokens():
    latent = add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), frames_latent(1), 0, strength=0.8)
    assert latent.keyframes == () and latent.num_keyframe_tokens == 0
    assert torch.equal(latent.samples[:, :, :1], frames_latent(1))
    torch.testing.assert_close(latent.noise_mask[:, :, 0], torch.full((1, 1, 2, 3), 0.2))
    assert (latent.noise_mask[:, :, 1:] == 1).all()


def test_an_image_elsewhere_becomes_keyframe_tokens_at_its_pixel_frame():
    """Any frame, not only a latent frame's start: the tokens carry the exact frame."""
    empty = empty_latent(1, 25, 64, 96, GEOMETRY)
    latent = add_keyframe(add_keyframe(empty, frames_latent(1), 13, 0.6), frames_latent(1, 2), 24)
    assert [(k.frame_index, k.strength, k.num_tokens) for k in latent.keyframes] == [(13, 0.6, 6), (24, 1.0, 6)]
    assert torch.equal(latent.samples, empty.samples) and torch.equal(latent.noise_mask, empty.noise_mask)
    assert latent.num_tokens == 24 and latent.num_keyframe_tokens == 12


def test_a_clip_elsewhere_gives_two_prefix_latent_frames_as_tokens_and_the_rest_to_the_grid():
    """Lightricks' `_handle_non_first_conditioning_sequence`: a 25-frame clip (4 latent
    frames) at pixel frame 8 -> latent frames 0-1 as tokens, 2-3 onto grid frames 3-4."""
    clip = frames_latent(4)
    latent = add_keyframe(empty_latent(1, 41, 64, 96, GEOMETRY), clip, 8, strength=1.0)
    [keyframe] = latent.keyframes
    assert PREFIX_LATENT_FRAMES == 2 and keyframe.frame_index == 8
    assert torch.equal(keyframe.samples, clip[:, :, :2])
    assert torch.equal(latent.samples[:, :, 3:5], clip[:, :, 2:])
    assert (latent.noise_mask[:, :, 3:5] == 0).all() and (latent.noise_mask[:, :, :3] == 1).all()


def test_a_clip_at_frame_0_is_video_extension_on_the_grid():
    clip = frames_latent(2)
    latent = add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), clip, 0)
    assert latent.keyframes == () and torch.equal(latent.samples[:, :, :2], clip)
    assert (latent.noise_mask[:, :, :2] == 0).all() and (latent.noise_mask[:, :, 2:] == 1).all()


def test_keyframes_follow_the_latent_through_later_first_frame_conditioning():
    latent = add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), frames_latent(1), 24)
    assert len(condition_first_frame(latent, frames_latent(1, 3)).keyframes) == 1


@pytest.mark.parametrize(
    ("count", "frame_index", "message"),
    [
        (1, 25, r"conditioning frame index 25 with 1 frame\(s\) reaches past the clip of 25 frames; allowed: 0 to 24"),
        (2, 24, r"frame index 24 with 9 frame\(s\) reaches past the clip of 25 frames; allowed: 0 to 16"),
        (1, -1, r"conditioning frame index -1 .*allowed: 0 to 24"),
        (2, 12, r"conditioning clip at frame 12 does not start a latent frame; .*nearest valid: 8 or 16"),
    ],
)
def test_a_keyframe_outside_the_clip_or_off_the_latent_grid_is_refused(count, frame_index, message):
    with pytest.raises(SettingsError, match=message):
        add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), frames_latent(count), frame_index)


def test_a_keyframe_of_another_size_is_refused():
    with pytest.raises(SettingsError, match=r"conditioning latent of shape \(1, 128, 1, 3, 3\) does not fit"):
        add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), frames_latent(1, width=3, height=3), 8)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_a_keyframe_strength_outside_0_1_is_refused(strength):
    with pytest.raises(SettingsError, match=r"conditioning strength .* is outside \[0, 1\]"):
        add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), frames_latent(1), 8, strength)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.rand(4, 32, 32, 3), "conditioning clip frame count 4 is not 8k \\+ 1 .*nearest valid: 1 or 9"),
        (torch.rand(32, 32), r"conditioning item \(32, 32\) is not an image or a clip"),
        (torch.rand(0, 32, 32, 3), r"conditioning item \(0, 32, 32, 3\) is not an image or a clip"),
    ],
)
def test_a_conditioning_item_that_is_not_an_image_or_an_8k_plus_1_clip_is_refused(frames, message):
    with pytest.raises(SettingsError, match=message):
        ConditioningItem(frames)


def test_an_image_item_becomes_a_one_frame_clip():
    assert ConditioningItem(torch.rand(32, 64, 3), 8, 0.5).frames.shape == (1, 32, 64, 3)


def test_keyframes_start_at_their_own_noise_level(generator):
    """Strength 1: exactly the clean frames; strength 0.25 at sigma 1: level 0.75."""
    latent = add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), frames_latent(1), 8)
    latent = add_keyframe(latent, frames_latent(1, 2), 16, strength=0.25)
    hard, soft = initial_keyframes(latent, generator)
    assert torch.equal(hard, frames_latent(1))
    same = torch.Generator().manual_seed(0)  # the fixture's seed: one draw per keyframe, in order
    _, noise = (torch.randn(1, 128, 1, 2, 3, generator=same) for _ in range(2))
    torch.testing.assert_close(soft, 0.75 * noise + 0.25 * frames_latent(1, 2))


def test_the_initial_latent_at_a_first_sigma_below_1_is_the_source_noised_to_it():
    """Video-to-video: x = sigma * noise + (1 - sigma) * source where the mask is 1."""
    source = frames_latent(3)
    latent = ConditionedLatent(source)
    x = initial_latent(latent, torch.Generator().manual_seed(0), start_sigma=0.25)
    noise = torch.randn(source.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, 0.25 * noise + 0.75 * source)


# ---------------------------------------------------------------- in-context tokens on a coarser grid


@pytest.mark.parametrize("scale", [0, -1, 1.5, 2.0, True, "2"])
def test_a_keyframe_spatial_scale_that_is_not_a_whole_number_of_at_least_1_is_refused(scale):
    with pytest.raises(SettingsError, match=f"keyframe spatial_scale {scale!r} must be a whole number of at least 1"):
        Keyframe(frames_latent(1), 0, spatial_scale=scale)


def test_a_keyframe_is_on_the_videos_grid_unless_told_and_follows_the_latent():
    """The default scale 1 keeps every existing keyframe as it was; a scaled one keeps its
    scale through later conditioning (it rides in `keyframes` like any other)."""
    latent = add_keyframe(empty_latent(1, 25, 64, 96, GEOMETRY), frames_latent(1), 8)
    assert latent.keyframes[0].spatial_scale == 1
    coarse = Keyframe(torch.zeros(1, 128, 1, 1, 1), 0, 0.5, spatial_scale=2)
    latent = ConditionedLatent(latent.samples, latent.noise_mask, latent.keyframes + (coarse,))
    latent = condition_first_frame(latent, frames_latent(1))
    assert latent.keyframes[1] is coarse and latent.num_keyframe_tokens == 6 + 1


def test_below_sigma_1_a_start_is_noised_first_then_blended_by_strength_and_keyframes_lerp_from_noise():
    """The official (and diffusers') order for a run that starts from a latent below sigma 1
    (video-to-video, a multi-scale second pass): `start` noised to the first sigma, each
    token then lerped towards its conditioning by its strength; extra tokens lerped from
    pure noise by theirs, whatever the sigma. Without a start, the sigma scales the level."""
    from dataclasses import replace

    from ltx_core.sampling.conditioning import Keyframe, initial_keyframes, initial_latent

    g = torch.Generator().manual_seed(0)
    start, clean = torch.randn(1, 4, 3, 2, 2, generator=g), torch.randn(1, 4, 1, 2, 2, generator=g)
    key = torch.randn(1, 4, 1, 2, 2, generator=g)
    latent = condition_frames(ConditionedLatent(start, start=start), clean, 0, 0.6)
    latent = replace(latent, keyframes=(Keyframe(key, 16, 0.7),))
    draws = torch.Generator().manual_seed(1)
    x = initial_latent(latent, draws, 0.5)
    keyframe = initial_keyframes(latent, draws, 0.5)[0]
    noise = torch.Generator().manual_seed(1)
    video_noise, key_noise = torch.randn(start.shape, generator=noise), torch.randn(key.shape, generator=noise)
    noised = 0.5 * video_noise + 0.5 * start
    expected = noised.clone()
    expected[:, :, :1] = torch.lerp(noised[:, :, :1], clean, 0.6)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(keyframe, torch.lerp(key_noise, key, 0.7), atol=1e-6, rtol=0)
    no_start, draws = replace(latent, start=None), torch.Generator().manual_seed(1)
    initial_latent(no_start, draws, 0.5)  # the video's draw first, as above
    scaled = initial_keyframes(no_start, draws, 0.5)[0]
    torch.testing.assert_close(scaled, torch.lerp(key_noise, key, 1 - 0.5 * 0.3), atol=1e-6, rtol=0)
