"""Whose random draws a seed gives (`Request.noise_draws`): "diffusers" (one CPU generator,
channels-first noise; the Python API's default) and "lightricks" (Lightricks'
inference.py: a generator on the run's device for the pipeline's draws, its initial noise
drawn token-major as (B, f*h*w, C) and rearranged; a second generator seeded the same,
standing for the global RNG its script seeds, for the posterior samples and the decode
noise). The command line's default for a single pass is "lightricks"."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from ltx_core import cli
from ltx_core.errors import SettingsError
from ltx_core.models.text_encoder import load_text_encoder
from ltx_core.multiscale import generate_multiscale
from ltx_core.pipeline import (
    Models,
    Request,
    decode_frames,
    encode_text,
    generate,
    prepare_latent,
    run_draws,
)
from ltx_core.release_passes import MultiScaleSettings
from ltx_core.sampling.conditioning import empty_latent, initial_latent
from ltx_core.sampling.denoise import denoise

from .fixtures_checkpoints import write_official_single_file
from .test_multiscale import FIRST, OFFICIAL_FACTOR, SECOND

SMALL = dict(prompt="a red fox", width=64, height=32, num_frames=9, steps=2, seed=11)


@pytest.fixture(scope="module")
def models(tiny_transformer, tiny_vae, tiny_t5_folder):
    return Models(tiny_transformer, tiny_vae, load_text_encoder(tiny_t5_folder))


def test_the_lightricks_initial_noise_is_drawn_token_major_then_rearranged(tiny_vae):
    """The documented layout: draw (B, f*h*w, C) from the seeded generator, rearrange to
    (B, C, f, h, w); not the channels-first draw of the same generator."""
    latent = empty_latent(1, 17, 64, 96, tiny_vae)
    b, c, f, h, w = latent.samples.shape
    token_major = initial_latent(latent, torch.Generator().manual_seed(7), token_major=True)
    by_hand = torch.randn(b, f * h * w, c, generator=torch.Generator().manual_seed(7))
    assert torch.equal(token_major, rearrange(by_hand, "b (f h w) c -> b c f h w", f=f, h=h, w=w))
    channels_first = initial_latent(latent, torch.Generator().manual_seed(7))
    assert torch.equal(channels_first, torch.randn(b, c, f, h, w, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(token_major, channels_first)


def test_run_draws_give_one_generator_or_lightricks_two_streams():
    diffusers = run_draws(Request(**SMALL), "cpu")
    assert diffusers.sampling is diffusers.posterior is diffusers.decode and not diffusers.token_major
    lightricks = run_draws(Request(**SMALL, noise_draws="lightricks"), "cpu")
    assert lightricks.posterior is lightricks.decode and lightricks.sampling is not lightricks.posterior
    assert lightricks.token_major and lightricks.sampling.initial_seed() == lightricks.decode.initial_seed() == 11


def test_a_lightricks_run_is_its_stages_with_the_draws_from_their_streams(models):
    """Image to video: the first frame's posterior sample and then the decode noise from the
    'global' stream, the token-major initial noise from the pipeline's stream."""
    image = torch.rand(32, 64, 3, generator=torch.Generator().manual_seed(3))
    request = Request(**SMALL, first_frame=image, noise_draws="lightricks")
    frames = generate(models, request)

    pipeline_rng, global_rng = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    text, negative = encode_text(models.text_encoder, request.prompt, request.negative_prompt, request.max_tokens)
    latent = prepare_latent(models.vae, 9, 32, 64, image, 1.0, global_rng)
    sigmas = request.sigma_schedule(latent.num_tokens, models.scheduler)
    latent = denoise(
        models.transformer,
        latent,
        text,
        negative,
        sigmas,
        request.guidance(),
        request.frame_rate,
        pipeline_rng,
        token_major_noise=True,
    )
    expected = decode_frames(
        models.vae, latent.samples, request.decode_timestep, request.decode_noise_scale, global_rng
    )
    assert torch.equal(frames, expected[0])
    assert not torch.equal(frames, generate(models, Request(**SMALL, first_frame=image)))


def test_an_unknown_noise_draw_and_lightricks_in_the_multi_scale_pipeline_are_refused(models):
    with pytest.raises(SettingsError, match="noise_draws 'numpy' is not known; allowed: diffusers, lightricks"):
        Request(**SMALL, noise_draws="numpy")
    with pytest.raises(SettingsError, match="noise_draws 'lightricks' is for single-pass runs"):
        generate_multiscale(
            models, None, Request(**SMALL, noise_draws="lightricks"), MultiScaleSettings(FIRST, SECOND, OFFICIAL_FACTOR)
        )


def test_the_command_line_draws_as_lightricks_unless_told(capsys, monkeypatch, tmp_path, tiny_t5_folder):
    checkpoint = write_official_single_file(tmp_path / "tiny.safetensors", "0.9.1")
    requests = []
    real = cli.generate
    monkeypatch.setattr(cli, "generate", lambda models, req, **k: requests.append(req) or real(models, req, **k))
    monkeypatch.setattr(cli, "write_mp4", lambda *a, **k: None)
    base = ["generate", "--prompt", "a fox", "--checkpoint", str(checkpoint), "--text-encoder", str(tiny_t5_folder)]
    size = ["--device", "cpu", "--width", "32", "--height", "32", "--frames", "9", "--steps", "1"]
    for flags in ([], ["--noise-draws", "diffusers"]):
        assert cli.main([*base, "--output", str(tmp_path / "o.mp4"), *size, *flags]) == 0, capsys.readouterr().err
    assert [r.noise_draws for r in requests] == ["lightricks", "diffusers"]
