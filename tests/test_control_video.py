"""IC-LoRA control conditioning (`ltx_core.sampling.control`) on the tiny models: a whole
run with a control video is the run with the control encoded and appended as keyframe
tokens by hand, with coordinates scaled by hand for a downscaled control; the control is
read (it changes the video, and its strength matters); bad controls are refused when the
request is built, before any model runs; the multi-scale passes each get the control at
their own size."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from ltx_core import multiscale, pipeline
from ltx_core.errors import SettingsError
from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER
from ltx_core.models.text_encoder import load_text_encoder
from ltx_core.multiscale import generate_multiscale
from ltx_core.pipeline import Models, Request, decode_frames, encode_text, generate, prepare_latent, seeded_generator
from ltx_core.release_passes import MultiScaleSettings
from ltx_core.sampling.conditioning import Keyframe, empty_latent
from ltx_core.sampling.control import ControlVideo, add_control, control_size, fit_control_frames
from ltx_core.sampling.denoise import all_coords, denoise

from .test_latent_upsampler import random_upsampler
from .test_multiscale import FIRST, SECOND

# 128x64, 9 frames: a latent of 2 x 2 x 4 tokens; a control at downscale 2 has 2 x 1 x 2.
SMALL = dict(prompt="a red fox jumps over the lazy dog", width=128, height=64, num_frames=9, steps=2, seed=5)
# The published VAE's geometry, without building a VAE.
GEOMETRY = SimpleNamespace(temporal_compression=8, spatial_compression=32, latent_channels=128)


@pytest.fixture(scope="module")
def models(tiny_transformer, tiny_vae, tiny_t5_folder):
    return Models(tiny_transformer, tiny_vae, load_text_encoder(tiny_t5_folder))


@pytest.fixture(scope="module")
def upsampler():
    return random_upsampler(TINY_SPATIAL_UPSAMPLER)


def clip(count: int, height: int = 64, width: int = 128, seed: int = 3) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def capture_coords(module):
    """RoPE coordinates of every forward of the transformer, and a handle to stop."""
    seen = []
    handle = module.register_forward_pre_hook(lambda mod, args: seen.append(args[4].clone()))
    return seen, handle


def hand_coords(frames: int, height: int, width: int, scale: int, frame_rate: float) -> torch.Tensor:
    """(1, 3, T) by hand: latent frame k at pixel frame max(8k - 7, 0) (the tiny model's
    causal positioning) in seconds, row i and column j at 32 * scale pixels a step."""
    tokens = [
        (max(8 * k - 7, 0), 32 * scale * i, 32 * scale * j)
        for k in range(frames)
        for i in range(height)
        for j in range(width)
    ]
    coords = torch.tensor(tokens, dtype=torch.float32).T[None]
    coords[:, 0] *= 1.0 / frame_rate  # in fp32, as Lightricks rounds seconds
    return coords


def by_hand(models: Models, request: Request, strength: float, downscale: int) -> torch.Tensor:
    """`generate` chained from the stages, the control resized and encoded by hand (posterior
    mean) and appended as a `Keyframe` of spatial scale `downscale`."""
    vae, control = models.vae, request.control
    generator = seeded_generator(request.seed)
    text, negative = encode_text(models.text_encoder, request.prompt, request.negative_prompt, request.max_tokens)
    latent = prepare_latent(vae, request.num_frames, request.height, request.width, generator=generator)
    size = (request.height // downscale, request.width // downscale)
    pixels = F.interpolate(control.frames.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    video = rearrange(pixels * 2 - 1, "f c h w -> 1 c f h w")
    with torch.no_grad():
        encoded = vae.encode(video, sample=False).float()
    latent = replace(latent, keyframes=(Keyframe(encoded, 0, strength, spatial_scale=downscale),))
    sigmas = request.sigma_schedule(latent.num_tokens, models.scheduler)
    result = denoise(
        models.transformer, latent, text, negative, sigmas, request.guidance(), request.frame_rate, generator
    )
    return decode_frames(vae, result.samples, request.decode_timestep, request.decode_noise_scale, generator)[0]


# ---------------------------------------------------------------- (a), (b): tokens and coordinates


@pytest.mark.parametrize("downscale", [1, 2])
def test_a_run_with_a_control_is_the_run_with_its_tokens_appended_by_hand(models, downscale):
    """Exact: the same frames, and the transformer sees the control's tokens first at the
    coordinates written out by hand (rows and columns `downscale` times the grid's)."""
    request = Request(**SMALL, control=ControlVideo(clip(9, 128, 256), strength=0.8, downscale=downscale))
    seen, handle = capture_coords(models.transformer)
    try:
        frames = generate(models, request)
    finally:
        handle.remove()
    assert torch.equal(frames, by_hand(models, request, 0.8, downscale))
    control = hand_coords(2, 2 // downscale, 4 // downscale, downscale, request.frame_rate)
    video = hand_coords(2, 2, 4, 1, request.frame_rate)
    expected = torch.cat([control, video], dim=2).repeat(2, 1, 1)  # CFG: (uncond, cond)
    assert len(seen) == 2 and all(torch.equal(coords, expected) for coords in seen)


def test_downscale_2_gives_a_quarter_of_the_tokens_covering_the_videos_field_of_view():
    latent = empty_latent(1, 17, 128, 256, GEOMETRY)
    encoded = torch.randn(1, 128, 3, 2, 4)  # 17 frames at 64x128 pixels
    conditioned = add_control(latent, encoded, downscale=2, strength=1.0)
    assert conditioned.num_tokens == 3 * 4 * 8 and conditioned.num_keyframe_tokens == 3 * 2 * 4
    assert torch.equal(conditioned.samples, latent.samples) and torch.equal(conditioned.noise_mask, latent.noise_mask)
    coords = all_coords(conditioned, 25.0, causal_fix=True)
    assert coords.shape == (1, 3, 24 + 96)
    assert torch.equal(coords[:, :, :24], hand_coords(3, 2, 4, 2, 25.0))
    assert torch.equal(coords[:, :, 24:], hand_coords(3, 4, 8, 1, 25.0))
    # the control's last row and column start where the video's last 2 x 2 block does
    assert coords[0, 1, :24].max() == coords[0, 1, 24:].max() - 32
    assert coords[0, 2, :24].max() == coords[0, 2, 24:].max() - 32


def test_the_control_is_fitted_to_a_downscaled_size_of_the_video():
    assert control_size(512, 768, 2) == (256, 384)
    frames = clip(9, 90, 256)  # wider than 2:1: cropped left and right, then resized
    fitted = fit_control_frames(frames, 32, 64)
    assert fitted.shape == (9, 32, 64, 3) and fitted.min() >= 0 and fitted.max() <= 1
    same = clip(9, 32, 64)
    assert fit_control_frames(same, 32, 64) is same


# ---------------------------------------------------------------- (c): the control is read


def test_the_control_changes_the_video_and_its_strength_matters(models):
    plain = generate(models, Request(**SMALL))
    full = generate(models, Request(**SMALL, control=ControlVideo(clip(9), strength=1.0)))
    none = generate(models, Request(**SMALL, control=ControlVideo(clip(9), strength=0.0)))
    other = generate(models, Request(**SMALL, control=ControlVideo(clip(9, seed=4), strength=1.0)))
    assert full.shape == plain.shape == (9, 64, 128, 3)
    assert (full - plain).abs().max() > 1e-3
    assert (full - none).abs().max() > 1e-3
    assert (full - other).abs().max() > 1e-3


def test_a_shorter_control_or_an_image_is_given_from_its_frame(models):
    seen, handle = capture_coords(models.transformer)
    try:
        generate(models, Request(**{**SMALL, "num_frames": 17}, control=ControlVideo(clip(1)[0], frame_index=8)))
    finally:
        handle.remove()
    control = seen[0][0, :, :8]  # one latent frame of 2 x 4 tokens, first
    assert torch.allclose(control[0], torch.full((8,), 8 / 25.0))


# ---------------------------------------------------------------- (d): refused before any model


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ControlVideo(clip(4)), r"control video frame count 4 is not 8k \+ 1 .*nearest valid: 1 or 9"),
        (lambda: ControlVideo(clip(10)), r"control video frame count 10 is not 8k \+ 1 .*nearest valid: 9 or 17"),
        (
            lambda: ControlVideo(torch.rand(64, 128)),
            r"control video \(64, 128\) is not a clip; allowed: \(F, H, W, 3\)",
        ),
        (lambda: ControlVideo(clip(9), downscale=0), r"control downscale 0 must be a whole number of at least 1"),
        (lambda: ControlVideo(clip(9), downscale=1.5), r"control downscale 1.5 must be a whole number of at least 1"),
        (lambda: ControlVideo(clip(9), downscale=2.0), r"control downscale 2.0 must be a whole number"),
        (lambda: ControlVideo(clip(9), downscale=True), r"control downscale True must be a whole number"),
        (lambda: ControlVideo(clip(9), strength=1.5), r"control strength 1.5 is outside \[0, 1\]"),
        (lambda: ControlVideo(clip(9), strength=-0.1), r"control strength -0.1 is outside \[0, 1\]"),
        (lambda: ControlVideo(clip(9), strength=math.nan), r"control strength nan is outside \[0, 1\]"),
        (lambda: ControlVideo(clip(9), strength=math.inf), r"control strength inf is outside \[0, 1\]"),
        (lambda: ControlVideo(clip(9), frame_index=-1), r"control frame index -1 must be a whole number >= 0"),
    ],
)
def test_a_bad_control_is_refused_with_what_is_allowed(make, message):
    with pytest.raises(SettingsError, match=message):
        make()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"control": ControlVideo(clip(17))},
            r"control video has 17 frames, more than the video's 9; allowed: at most 9 frames",
        ),
        (
            {"height": 96, "width": 192, "control": ControlVideo(clip(9), downscale=2)},
            r"the video's height 96 at control downscale 2 gives a control height of 48 pixels, not a multiple of 32; "
            r"allowed: a height that is a multiple of 64 \(nearest valid: 64 or 128\), or downscale 1 or 3",
        ),
        (
            {"width": 256, "control": ControlVideo(clip(9), downscale=4)},
            r"the video's height 64 at control downscale 4 gives a control height of 16 pixels.*or downscale 1 or 2",
        ),
        (
            {"width": 96, "control": ControlVideo(clip(9), downscale=2)},
            r"the video's width 96 at control downscale 2 gives a control width of 48 pixels, .*or downscale 1$",
        ),
        (
            {"num_frames": 17, "control": ControlVideo(clip(9), frame_index=4)},
            r"conditioning clip at frame 4 does not start a latent frame",
        ),
        ({"control": clip(9)}, r"control is a Tensor; allowed: ControlVideo or None"),
    ],
)
def test_a_control_that_does_not_fit_the_video_is_refused_by_the_request(change, message):
    with pytest.raises(SettingsError, match=message):
        Request(**{**SMALL, **change})


def test_a_control_latent_that_does_not_fit_is_refused():
    latent = empty_latent(1, 9, 64, 128, GEOMETRY)
    with pytest.raises(SettingsError, match=r"control latent of shape \(1, 128, 2, 2, 4\) does not fit"):
        add_control(latent, torch.zeros(1, 128, 2, 2, 4), downscale=2)
    with pytest.raises(SettingsError, match=r"latent of 2x4 tokens is not divisible by control downscale 4"):
        add_control(latent, torch.zeros(1, 128, 2, 1, 1), downscale=4)
    with pytest.raises(SettingsError, match=r"reaches past the clip of 9 frames"):
        add_control(latent, torch.zeros(1, 128, 3, 1, 2), downscale=2)


# ---------------------------------------------------------------- (e): the multi-scale passes


def test_each_multi_scale_pass_gets_the_control_at_its_own_size(models, upsampler, monkeypatch):
    """256x128 asked at factor 0.5: the first pass at 128x64 gets the control at 64x32 (2 x 1
    x 2 tokens, scale 2), the second at 256x128 gets it at 128x64 (2 x 2 x 4 tokens)."""
    encoded, latents = [], []
    real_encode, real_denoise = pipeline.encode_frames, multiscale.denoise

    def spy_encode(vae, frames, *args, **kwargs):
        encoded.append(tuple(frames.shape))
        return real_encode(vae, frames, *args, **kwargs)

    def spy_denoise(transformer, latent, *args, **kwargs):
        latents.append(latent)
        return real_denoise(transformer, latent, *args, **kwargs)

    monkeypatch.setattr(pipeline, "encode_frames", spy_encode)
    monkeypatch.setattr(multiscale, "denoise", spy_denoise)
    request = Request(**{**SMALL, "width": 256, "height": 128}, control=ControlVideo(clip(9), 0.9, downscale=2))
    settings = MultiScaleSettings(FIRST, SECOND, 0.5)
    frames = generate_multiscale(models, upsampler, request, settings)
    assert frames.shape == (9, 128, 256, 3) and torch.isfinite(frames).all()
    assert encoded == [(9, 32, 64, 3), (9, 64, 128, 3)]
    for latent, size in zip(latents, [(2, 4), (4, 8)]):
        assert latent.samples.shape[3:] == size
        (control,) = latent.keyframes
        assert control.spatial_scale == 2 and control.strength == 0.9
        assert control.samples.shape[2:] == (2, size[0] // 2, size[1] // 2)


def test_a_control_that_does_not_fit_a_pass_is_refused_naming_the_pass(models, upsampler, monkeypatch):
    """128x64 fits downscale 2, but its first pass at factor 0.5 (64x32) does not."""
    monkeypatch.setattr(pipeline, "encode_frames", lambda *args, **kwargs: pytest.fail("encoded"))
    request = Request(**SMALL, control=ControlVideo(clip(9), downscale=2))
    settings = MultiScaleSettings(FIRST, SECOND, 0.5)
    with pytest.raises(SettingsError, match=r"the multi-scale first pass runs at 64x32: the video's height 32"):
        generate_multiscale(models, upsampler, request, settings)


def test_an_ic_lora_run_is_the_run_with_the_lora_merged_and_the_control_tokens_given_by_hand(models, tmp_path):
    """The whole IC-LoRA path (a LoRA file whose metadata asks for a control grid twice as
    coarse, applied with `apply_loras`; the control given through the request) against the
    LoRA merged into the weights by hand and the control's tokens appended by hand."""
    import copy

    from ltx_core.lora import LoRAWeights, apply_loras, read_lora, save_lora

    transformer = copy.deepcopy(models.transformer)
    g = torch.Generator().manual_seed(9)
    names = ("transformer_blocks.0.attn1.to_k", "transformer_blocks.1.attn2.to_q", "transformer_blocks.0.ff.net.2")
    state = transformer.state_dict()  # the checkpoint's names: to_q / to_k / to_v apart
    weights = {
        name: LoRAWeights(
            torch.randn(4, state[f"{name}.weight"].shape[1], generator=g) * 0.2,
            torch.randn(state[f"{name}.weight"].shape[0], 4, generator=g) * 0.2,
            alpha=2.0,
        )
        for name in names
    }
    path = save_lora(tmp_path / "ic.safetensors", weights, metadata={"reference_downscale_factor": "2"})
    lora = read_lora(path)
    strength = 0.7
    request = Request(
        **SMALL, control=ControlVideo(clip(9, 128, 256), strength=1.0, downscale=lora.reference_downscale_factor)
    )
    applied = apply_loras(transformer, [(lora, strength)])
    frames = generate(replace(models, transformer=transformer), request)
    applied.remove()

    merged = copy.deepcopy(models.transformer)
    hand = merged.state_dict()
    for name, w in weights.items():  # W + strength * alpha / rank * up @ down
        hand[f"{name}.weight"] = hand[f"{name}.weight"] + strength * (w.alpha / 4) * (w.up @ w.down)
    merged.load_state_dict(hand)
    expected = by_hand(replace(models, transformer=merged), request, 1.0, 2)
    assert (frames - expected).abs().max() <= 1e-5
    plain = generate(models, request)
    assert (frames - plain).abs().max() > 1e-3, "the LoRA changes the video"
