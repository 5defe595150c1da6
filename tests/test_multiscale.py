"""The official multi-scale pipeline (`ltx_core.multiscale`) on tiny random models: frames
of the asked size and count, pass sizes rounded as the official code rounds them,
conditioning encoded again at each pass's size, the same seed giving the same video,
and the official order (the upsample then AdaIN, the second pass's noise from the same
generator, decode noise then tone mapping then the decode) against a reference chained
by hand from the core's stage functions."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ltx_core import multiscale, pipeline
from ltx_core.errors import SettingsError
from ltx_core.models.configs import SchedulerConfig
from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER, TINY_TEMPORAL_UPSAMPLER
from ltx_core.models.text_encoder import load_text_encoder
from ltx_core.multiscale import decode_second_pass, generate_multiscale, pass_sigmas, resize_frames
from ltx_core.pipeline import (
    Models,
    Request,
    decode_frames,
    encode_first_frame,
    encode_text,
    prepare_latent,
)
from ltx_core.release_config import load_preset
from ltx_core.release_passes import MultiScaleSettings, PassSettings, multi_scale_sizes
from ltx_core.sampling.conditioning import ConditionedLatent, ConditioningItem, condition_first_frame
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.latent_ops import adain_filter, tone_map
from ltx_core.sampling.scheduler import explicit_sigmas, flow_sigmas, skip_steps

from .test_latent_upsampler import random_upsampler

# The official factor of every multi-scale release config, as written in the files.
OFFICIAL_FACTOR = 0.6666666
FIRST = PassSettings(timesteps=(1.0, 0.9, 0.7), guidance_scale=3.0, stg_scale=0.0)
SECOND = PassSettings(timesteps=(0.9, 0.7), guidance_scale=1.0, stg_scale=0.0, tone_map_compression_ratio=0.6)
SETTINGS = MultiScaleSettings(FIRST, SECOND, OFFICIAL_FACTOR)
# 96x64 asked: the first pass at 32x32, the second at 64x64, the frames resized to 96x64
SMALL = dict(
    prompt="a red fox jumps over the lazy dog",
    negative_prompt="blurry",
    width=96,
    height=64,
    num_frames=9,
    seed=3,
    decode_timestep=0.05,
    decode_noise_scale=0.025,
)


@pytest.fixture(scope="module")
def models(tiny_transformer, tiny_vae, tiny_t5_folder):
    return Models(tiny_transformer, tiny_vae, load_text_encoder(tiny_t5_folder))


@pytest.fixture(scope="module")
def upsampler():
    return random_upsampler(TINY_SPATIAL_UPSAMPLER)


def image(height: int, width: int, seed: int = 5) -> torch.Tensor:
    return torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- whole runs


def test_two_passes_give_frames_of_the_asked_size_and_count(models, upsampler):
    frames = generate_multiscale(models, upsampler, Request(**SMALL), SETTINGS)
    assert frames.shape == (9, 64, 96, 3)
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    assert frames.std() > 0.01, "a constant video would pass any size check"


def test_a_multi_scale_release_config_runs_as_its_settings(models, upsampler):
    """A shipped preset (the 2B 0.9.8 distilled: published timesteps, no guidance)."""
    release = load_preset("ltxv-2b-0.9.8-distilled")
    frames = generate_multiscale(models, upsampler, Request(**SMALL), release)
    assert torch.equal(frames, generate_multiscale(models, upsampler, Request(**SMALL), release.multi_scale()))
    assert frames.shape == (9, 64, 96, 3)


def test_the_same_seed_gives_the_same_video_and_another_seed_another(models, upsampler):
    request = Request(**SMALL)
    once = generate_multiscale(models, upsampler, request, SETTINGS)
    again = generate_multiscale(models, upsampler, request, SETTINGS)
    other = generate_multiscale(models, upsampler, Request(**{**SMALL, "seed": 4}), SETTINGS)
    assert torch.equal(once, again)
    assert (once - other).abs().max() > 1e-3


def test_steps_are_counted_across_both_passes(models, upsampler):
    seen = []
    generate_multiscale(models, upsampler, Request(**SMALL), SETTINGS, callback=lambda i, n, x, d: seen.append((i, n)))
    assert seen == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]


# ---------------------------------------------------------------- the pass sizes


# (asked width, height, factor) -> (first pass, second pass) as (height, width)
SIZES = [
    ((768, 512, OFFICIAL_FACTOR), ((320, 480), (640, 960))),  # int(768 * 0.6666666) = 511 -> 480
    ((768, 512, 2 / 3), ((320, 512), (640, 1024))),  # an exact 2/3: 512 stays 512
    ((1216, 704, OFFICIAL_FACTOR), ((448, 800), (896, 1600))),
    ((1280, 720, OFFICIAL_FACTOR), ((448, 832), (896, 1664))),
    ((704, 480, OFFICIAL_FACTOR), ((288, 448), (576, 896))),
    ((96, 64, OFFICIAL_FACTOR), ((32, 32), (64, 64))),
    ((512, 512, 0.5), ((256, 256), (512, 512))),
]


@pytest.mark.parametrize("asked, expected", SIZES, ids=[f"{w}x{h}@{f:.4g}" for (w, h, f), _ in SIZES])
def test_pass_sizes_follow_the_official_rounding(asked, expected):
    width, height, factor = asked
    assert multi_scale_sizes(height, width, factor) == expected
    # LTXMultiScalePipeline: x = int(size * factor); x - x % vae_scale_factor; the second at twice that
    official = [int(size * factor) - int(size * factor) % 32 for size in (height, width)]
    assert expected == (tuple(official), (2 * official[0], 2 * official[1]))
    assert MultiScaleSettings(FIRST, SECOND, factor).pass_sizes(height, width) == expected


def test_frames_are_resized_bilinearly_only_where_the_second_pass_differs():
    frames = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    assert resize_frames(frames, 64, 64) is frames
    expected = F.interpolate(frames.permute(0, 3, 1, 2), size=(64, 96), mode="bilinear", align_corners=False)
    assert torch.equal(resize_frames(frames, 64, 96), expected.permute(0, 2, 3, 1))


# ---------------------------------------------------------------- conditioning per pass


def test_conditioning_is_encoded_again_at_each_passs_size(models, upsampler, monkeypatch):
    """A first frame and a keyframe, each stretched to the pass's size and encoded there;
    in the second pass the first frame's tokens are its new encoding, held clean."""
    encoded, starts = [], []

    def spy(function):
        def encode(vae, frames, *args, **kwargs):
            result = function(vae, frames, *args, **kwargs)
            encoded.append((function.__name__, tuple(frames.shape[-3:-1]), result))
            return result

        return encode

    real_denoise = multiscale.denoise

    def spy_denoise(transformer, latent, *args, **kwargs):
        starts.append(latent)
        return real_denoise(transformer, latent, *args, **kwargs)

    first_frame_encoder, frames_encoder = pipeline.encode_first_frame, pipeline.encode_frames
    monkeypatch.setattr(pipeline, "encode_first_frame", spy(first_frame_encoder))  # prepare_latent's
    monkeypatch.setattr(multiscale, "encode_first_frame", spy(first_frame_encoder))
    monkeypatch.setattr(pipeline, "encode_frames", spy(frames_encoder))  # condition_on_items'
    monkeypatch.setattr(multiscale, "denoise", spy_denoise)
    keyframe = ConditioningItem(image(64, 96, seed=6), frame_index=8)
    request = Request(**SMALL, first_frame=image(64, 96), conditions=(keyframe,))
    generate_multiscale(models, upsampler, request, SETTINGS)
    sizes = [(name, size) for name, size, _ in encoded]
    assert sizes == [
        ("encode_first_frame", (32, 32)),
        ("encode_frames", (32, 32)),
        ("encode_first_frame", (64, 64)),
        ("encode_frames", (64, 64)),
    ]
    second = starts[1]
    assert second.samples.shape[-2:] == (2, 2) and second.keyframes[0].samples.shape[-2:] == (2, 2)
    assert torch.equal(second.samples[:, :, :1], encoded[2][2]) and (second.noise_mask[:, :, 0] == 0).all()
    assert torch.equal(second.keyframes[0].samples, encoded[3][2])


# ---------------------------------------------------------------- the official order


def hand_chained(models, upsampler, request: Request, first_frame: torch.Tensor) -> torch.Tensor:
    """The official `LTXMultiScalePipeline` written out from the core's pieces: one
    generator through both passes and the decode; `_upsample_latents` then
    `adain_filter_latent`; the second pass from the upsampled latent noised to its first
    sigma, the first frame encoded at its size; the decode noise mixed into the
    normalized latent, tone mapping, the decode; the frames resized to the asked size."""
    transformer, vae = models.transformer, models.vae
    generator = torch.Generator().manual_seed(request.seed)
    text, negative = encode_text(models.text_encoder, request.prompt, request.negative_prompt)
    (h1, w1), (h2, w2) = multi_scale_sizes(request.height, request.width, OFFICIAL_FACTOR)

    def stretched(height, width):
        return F.interpolate(
            first_frame.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", align_corners=False
        )[0].permute(1, 2, 0)

    latent = prepare_latent(vae, request.num_frames, h1, w1, stretched(h1, w1), 1.0, generator)
    first = denoise(
        transformer,
        latent,
        text,
        negative,
        explicit_sigmas(FIRST.timesteps),
        Guidance(cfg_scale=3.0),
        request.frame_rate,
        generator,
    ).samples
    with torch.no_grad():
        upsampled = vae.normalize(upsampler(vae.denormalize(first)))
    upsampled = adain_filter(upsampled, first, 1.0)
    frame = encode_first_frame(vae, stretched(h2, w2), w2, h2, generator)
    latent = condition_first_frame(ConditionedLatent(upsampled), frame, 1.0)
    sigmas = explicit_sigmas(SECOND.timesteps)
    second = denoise(
        transformer,
        latent,
        text,
        None,
        sigmas,
        Guidance(cfg_scale=1.0),
        request.frame_rate,
        generator,
        start_sigma=float(sigmas[0]),
    ).samples
    noise = torch.randn(second.shape, generator=generator)
    scale = request.decode_noise_scale
    mapped = tone_map(second * (1 - scale) + noise * scale, SECOND.tone_map_compression_ratio)
    frames = decode_frames(vae, mapped, request.decode_timestep, 0.0, generator)[0]
    return F.interpolate(
        frames.permute(0, 3, 1, 2), size=(request.height, request.width), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)


def test_the_official_order_matches_a_reference_chained_by_hand(models, upsampler):
    request = Request(**SMALL, first_frame=image(64, 96))
    ours = generate_multiscale(models, upsampler, request, SETTINGS)
    reference = hand_chained(models, upsampler, request, request.first_frame)
    assert ours.shape == reference.shape == (9, 64, 96, 3)
    assert (ours - reference).abs().max() <= 1e-6


def test_tone_mapping_acts_after_the_decode_noise_and_before_the_decode(models):
    """Mixed in first, the noise is compressed with the latent, as the official
    `tone_map_latents` after the decode noise; the other order gives other frames. At
    ratio 0 the decode is `pipeline.decode_frames` itself."""
    latent = torch.randn(1, 128, 2, 2, 2, generator=torch.Generator().manual_seed(2)) * 2
    request = Request(**SMALL)

    def decoded(ratio: float, tone_map_first: bool = False) -> torch.Tensor:
        start = tone_map(latent, ratio) if tone_map_first else latent
        ratio = 0.0 if tone_map_first else ratio
        return decode_second_pass(models.vae, start, request, ratio, torch.Generator().manual_seed(9))

    plain = decode_frames(
        models.vae, latent, request.decode_timestep, request.decode_noise_scale, torch.Generator().manual_seed(9)
    )[0]
    assert torch.equal(decoded(0.0), plain)
    assert (decoded(0.6) - decoded(0.6, tone_map_first=True)).abs().max() > 1e-4
    assert (decoded(0.6) - plain).abs().max() > 1e-3


def test_each_pass_takes_the_models_scheduler_at_its_own_token_count(models, upsampler, monkeypatch):
    """Without published timesteps a pass's sigmas are the scheduler's for its own size
    (the shift grows with the tokens), less its skipped steps, as `retrieve_timesteps`."""
    seen = []
    real_denoise = multiscale.denoise
    monkeypatch.setattr(
        multiscale,
        "denoise",
        lambda t, latent, p, n, sigmas, *a, **k: (
            seen.append((latent.num_tokens, sigmas)),
            real_denoise(t, latent, p, n, sigmas, *a, **k),
        )[1],
    )
    scheduler = SchedulerConfig(sampler="linear-quadratic")
    first = PassSettings(num_inference_steps=4, skip_final_inference_steps=1, guidance_scale=1.0, stg_scale=0.0)
    second = PassSettings(num_inference_steps=4, skip_initial_inference_steps=2, guidance_scale=1.0, stg_scale=0.0)
    quadratic = Models(models.transformer, models.vae, models.text_encoder, scheduler=scheduler)
    generate_multiscale(quadratic, upsampler, Request(**SMALL), MultiScaleSettings(first, second, OFFICIAL_FACTOR))
    (tokens_1, sigmas_1), (tokens_2, sigmas_2) = seen
    assert (tokens_1, tokens_2) == (2 * 1 * 1, 2 * 2 * 2)
    assert torch.equal(sigmas_1, skip_steps(flow_sigmas(4, tokens_1, scheduler), 0, 1))
    assert torch.equal(sigmas_2, skip_steps(flow_sigmas(4, tokens_2, scheduler), 2, 0))
    assert torch.equal(pass_sigmas(SECOND, 8), explicit_sigmas(SECOND.timesteps))


# ---------------------------------------------------------------- refused


def test_what_the_pipeline_cannot_run_is_refused_before_any_work(models, upsampler, monkeypatch):
    monkeypatch.setattr(multiscale, "denoise", lambda *a, **k: pytest.fail("a pass ran"))
    source = torch.rand(9, 64, 96, 3)
    with pytest.raises(SettingsError, match="video-to-video .* does not combine with the multi-scale pipeline"):
        generate_multiscale(models, upsampler, Request(**SMALL, source_video=source), SETTINGS)
    with pytest.raises(SettingsError, match=r"makes a latent of \(frames, height, width\) \(3, 1, 1\)"):
        generate_multiscale(models, random_upsampler(TINY_TEMPORAL_UPSAMPLER), Request(**SMALL), SETTINGS)
    with pytest.raises(SettingsError, match="a base release config has one"):
        generate_multiscale(models, upsampler, Request(**SMALL), load_preset("ltxv-2b-0.9.5"))
    with pytest.raises(SettingsError, match="width 32 times downscale_factor 0.6666666 is 21 pixels"):
        generate_multiscale(models, upsampler, Request(**{**SMALL, "width": 32}), SETTINGS)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(second_pass=FIRST), "second_pass starts at sigma 1"),
        (
            dict(first_pass=PassSettings(num_inference_steps=4, skip_initial_inference_steps=1, stg_scale=0.0)),
            "first_pass.skip_initial_inference_steps needs a latent to start from",
        ),
        (dict(downscale_factor=0.0), "downscale_factor 0.0 is not allowed"),
        (dict(stg_mode="skip"), "stg_mode 'skip' is not known"),
    ],
)
def test_settings_the_official_pipeline_cannot_chain_are_refused(change, message):
    with pytest.raises(SettingsError, match=message):
        MultiScaleSettings(**{**dict(first_pass=FIRST, second_pass=SECOND, downscale_factor=0.5), **change})


def test_the_requests_decode_tiles_reach_the_second_passs_decode(models, upsampler, monkeypatch):
    """--decode-tiles with a multi-scale preset decodes in tiles, as the memory plan counts it."""
    seen = []
    decode = models.vae.decode
    monkeypatch.setattr(models.vae, "decode", lambda *a, **k: seen.append(k.get("tiles")) or decode(*a, **k))
    frames = generate_multiscale(
        models, upsampler, Request(**SMALL, decode_tiles=(1, 2), decode_tile_overlap=0), SETTINGS
    )
    assert seen == [(1, 2)] and frames.shape == (9, 64, 96, 3)


def test_a_one_shot_run_gives_the_same_frames_and_frees_the_text_encoder_and_transformer(models, upsampler):
    """The command line's one video (`Models.one_shot`): both passes sample before the
    transformer leaves the device, and the frames are those of models kept for reuse."""
    kept = generate_multiscale(models, upsampler, Request(**SMALL), SETTINGS)
    once = replace(copy.deepcopy(models), one_shot=True)
    assert torch.equal(generate_multiscale(once, upsampler, Request(**SMALL), SETTINGS), kept)
    for released in (once.transformer, once.text_encoder.model):
        assert {p.device.type for p in released.parameters()} == {"meta"}
    assert {p.device.type for p in once.vae.parameters()} == {"cpu"}
