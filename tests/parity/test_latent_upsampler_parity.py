"""Latent upsamplers against diffusers: `LatentUpsampler` loaded from the folder diffusers'
`save_pretrained` writes, against `LTXLatentUpsamplerModel`; and `upsample_latent`,
`adain_filter` and `tone_map` against `LTXLatentUpsamplePipeline` (output_type "latent")
with the parity VAE's per-channel statistics. Small random weights, fp32, CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import LTXLatentUpsamplePipeline
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

from ltx_core.checkpoint.upsampler import load_latent_upsampler
from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER, TINY_TEMPORAL_UPSAMPLER, LatentUpsamplerConfig
from ltx_core.sampling.latent_ops import adain_filter, tone_map, upsample_latent

pytestmark = pytest.mark.parity

ATOL = 1e-4
TINY = {
    "spatial": TINY_SPATIAL_UPSAMPLER,
    "temporal": TINY_TEMPORAL_UPSAMPLER,
    "spatiotemporal": replace(TINY_SPATIAL_UPSAMPLER, temporal_upsample=True),
    "spatial-per-frame": replace(TINY_SPATIAL_UPSAMPLER, dims=2),
}


def diffusers_upsampler(cfg: LatentUpsamplerConfig, seed: int = 0) -> LTXLatentUpsamplerModel:
    """diffusers' model at `cfg`, every tensor random (norm weights around 1)."""
    torch.manual_seed(seed)
    settings = {k: v for k, v in cfg.to_metadata().items() if k != "_class_name"}
    reference = LTXLatentUpsamplerModel(**settings).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.05)
    return reference


@pytest.fixture(scope="module", params=list(TINY))
def upsampler_pair(request, tmp_path_factory):
    """(diffusers model, ours loaded strictly from the folder diffusers wrote)."""
    reference = diffusers_upsampler(TINY[request.param])
    folder = tmp_path_factory.mktemp(request.param)
    reference.save_pretrained(folder / "latent_upsampler", safe_serialization=True)
    ours = load_latent_upsampler(folder)
    assert ours.cfg == TINY[request.param]
    return reference, ours


def normalized_latent(frames=3, height=4, width=5, seed=1) -> torch.Tensor:
    return torch.randn(1, 128, frames, height, width, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_upsampler_matches_diffusers(upsampler_pair):
    reference, ours = upsampler_pair
    raw = normalized_latent() * 2 + 0.5
    expected = reference(raw)
    assert ours(raw).shape == expected.shape
    torch.testing.assert_close(ours(raw), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("tone_map_compression", [0.0, 0.6])
@pytest.mark.parametrize("adain_factor", [0.0, 0.5, 1.0])
@torch.no_grad()
def test_upsample_latent_matches_the_diffusers_pipeline(upsampler_pair, vae_pair, adain_factor, tone_map_compression):
    reference, ours = upsampler_pair
    reference_vae, our_vae = vae_pair
    pipeline = LTXLatentUpsamplePipeline(vae=reference_vae, latent_upsampler=reference)
    pipeline.set_progress_bar_config(disable=True)
    latent = normalized_latent()
    expected = pipeline(
        latents=latent,
        adain_factor=adain_factor,
        tone_map_compression_ratio=tone_map_compression,
        output_type="latent",
        return_dict=False,
    )[0]
    actual = upsample_latent(
        ours, our_vae, latent, adain_factor=adain_factor, tone_map_compression=tone_map_compression
    )
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


@torch.no_grad()
def test_official_order_adain_on_normalized_latents_matches_the_pipeline(upsampler_pair, vae_pair):
    """The official multi-scale pipeline runs AdaIN (factor 1) after re-normalizing; diffusers
    before. Per-channel statistics commute with the per-channel normalization."""
    reference, ours = upsampler_pair
    reference_vae, our_vae = vae_pair
    pipeline = LTXLatentUpsamplePipeline(vae=reference_vae, latent_upsampler=reference)
    latent = normalized_latent()
    expected = pipeline(latents=latent, adain_factor=1.0, output_type="latent", return_dict=False)[0]
    actual = adain_filter(upsample_latent(ours, our_vae, latent), latent, 1.0)
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("factor", [-1.0, 0.0, 0.5, 1.0, 2.0])
def test_adain_filter_matches_diffusers(factor):
    g = torch.Generator().manual_seed(2)
    latent, reference = torch.randn(2, 128, 5, 8, 10, generator=g) * 2 + 1, torch.randn(2, 128, 3, 4, 5, generator=g)
    expected = LTXLatentUpsamplePipeline.adain_filter_latent(None, latent, reference, factor)
    torch.testing.assert_close(adain_filter(latent, reference, factor), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("compression", [0.0, 0.3, 0.6, 1.0])
def test_tone_map_matches_diffusers(compression):
    latent = torch.randn(2, 128, 3, 4, 5, generator=torch.Generator().manual_seed(3)) * 3
    expected = LTXLatentUpsamplePipeline.tone_map_latents(None, latent, compression)
    torch.testing.assert_close(tone_map(latent, compression), expected, atol=ATOL, rtol=0)
