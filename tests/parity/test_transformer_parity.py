"""LTXVTransformer and RoPE against diffusers' LTXVideoTransformer3DModel, fp32 on CPU.

diffusers builds the reference with tiny configs and seeded random weights (every tensor
randomized, the scale_shift_tables and QK-norm weights included, so no path is trivially
zero); its state dict goes through our key map into our model with strict=True. Time
coordinates come from diffusers' own code: LTXPipeline's `rope_interpolation_scale` path
(no causal fix) and LTXConditionPipeline's `_prepare_video_ids` / `_scale_video_ids` path
(causal fix), at 24 and 25 frames per second.
"""

from dataclasses import replace

import pytest
import torch

from ltx_core.checkpoint.keymaps import TRANSFORMER_PREFIX, transformer_from_diffusers
from ltx_core.models.configs import LTXV_2B, LTXV_13B, TINY_TRANSFORMER, TransformerConfig
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords, rope_cos_sin
from ltx_core.models.transformer import LTXVTransformer

from ..fixtures_checkpoints import diffusers_transformer_kwargs

diffusers = pytest.importorskip("diffusers")
from diffusers import LTXConditionPipeline, LTXVideoTransformer3DModel  # noqa: E402
from diffusers.loaders.single_file_utils import convert_ltx_transformer_checkpoint_to_diffusers  # noqa: E402
from diffusers.models.transformers.transformer_ltx import LTXVideoRotaryPosEmbed  # noqa: E402

pytestmark = pytest.mark.parity

ATOL = 1e-4
FRAMES, HEIGHT, WIDTH, BATCH, TEXT_LEN = 3, 2, 3, 2, 6
TOKENS = FRAMES * HEIGHT * WIDTH
VAE_TIME, VAE_SPACE = 8, 32

# Tiny shapes with the real models' RoPE padding: 2048 % 6 == 2 and 4096 % 6 == 4.
SHAPES = {
    "2b-shaped (4 heads x 8, pad 2)": replace(TINY_TRANSFORMER, num_attention_heads=4, cross_attention_dim=32),
    "13b-shaped (2 heads x 8, pad 4)": TINY_TRANSFORMER,
}


def diffusers_reference(cfg: TransformerConfig) -> LTXVideoTransformer3DModel:
    torch.manual_seed(0)
    reference = LTXVideoTransformer3DModel(**diffusers_transformer_kwargs(cfg)).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            mean = 1.0 if "norm" in name else 0.0  # QK-norm weights around 1, all else around 0
            parameter.normal_(mean, 0.3)
    return reference


@pytest.fixture(scope="module", params=list(SHAPES), ids=list(SHAPES))
def models(request):
    cfg = SHAPES[request.param]
    reference = diffusers_reference(cfg)
    ours = LTXVTransformer(cfg).eval()
    ours.load_state_dict(transformer_from_diffusers(reference.state_dict()), strict=True)
    return reference, ours


def model_inputs(cfg: TransformerConfig):
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(BATCH, TOKENS, cfg.in_channels, generator=gen)
    sigma = torch.rand(BATCH, TOKENS, generator=gen)
    sigma[0, : HEIGHT * WIDTH] = 0.02  # a conditioning first frame, as in image-to-video
    text = torch.randn(BATCH, TEXT_LEN, cfg.caption_channels, generator=gen)
    mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.long)
    mask[1, 2:] = 0  # a short prompt, padded
    return latent, sigma, text, mask


def condition_pipeline_coords(frame_rate: float) -> torch.Tensor:
    """LTXConditionPipeline's coordinates: latent ids scaled by the VAE with the causal fix,
    time then in seconds (pipeline_ltx_condition.py, `video_coords * (1 / frame_rate)`)."""
    ids = LTXConditionPipeline._prepare_video_ids(BATCH, FRAMES, HEIGHT, WIDTH)
    coords = LTXConditionPipeline._scale_video_ids(ids, scale_factor=VAE_SPACE, scale_factor_t=VAE_TIME).float()
    coords[:, 0] = coords[:, 0] * (1.0 / frame_rate)
    return coords


@pytest.mark.parametrize("frame_rate", [24, 25])
@pytest.mark.parametrize("per_token", [True, False], ids=["per-token t", "per-sample t"])
@torch.no_grad()
def test_without_the_causal_fix_we_match_ltx_pipeline(models, frame_rate, per_token):
    reference, ours = models
    latent, sigma, text, mask = model_inputs(ours.cfg)
    if not per_token:
        sigma = sigma[:, 0]
    expected = reference(
        latent,
        text,
        sigma * 1000,
        mask,
        num_frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        rope_interpolation_scale=(VAE_TIME / frame_rate, VAE_SPACE, VAE_SPACE),
        return_dict=False,
    )[0]
    coords = fractional_coords(pixel_coords(latent_coords(FRAMES, HEIGHT, WIDTH, BATCH), causal_fix=False), frame_rate)
    torch.testing.assert_close(ours(latent, sigma, text, mask, coords), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("frame_rate", [24, 25])
@torch.no_grad()
def test_with_the_causal_fix_we_match_ltx_condition_pipeline(models, frame_rate):
    reference, ours = models
    latent, sigma, text, mask = model_inputs(ours.cfg)
    reference_coords = condition_pipeline_coords(frame_rate)
    expected = reference(latent, text, sigma * 1000, mask, video_coords=reference_coords, return_dict=False)[0]
    coords = fractional_coords(pixel_coords(latent_coords(FRAMES, HEIGHT, WIDTH, BATCH), causal_fix=True), frame_rate)
    torch.testing.assert_close(coords, reference_coords, atol=0, rtol=0)
    torch.testing.assert_close(ours(latent, sigma, text, mask, coords), expected, atol=ATOL, rtol=0)


def test_the_coordinate_paths_differ_so_both_cases_test_something():
    plain = fractional_coords(pixel_coords(latent_coords(FRAMES, HEIGHT, WIDTH, BATCH), causal_fix=False), 25)
    assert not torch.equal(plain, condition_pipeline_coords(25))


@pytest.mark.parametrize("cfg", [LTXV_2B, LTXV_13B], ids=["2B width 2048", "13B width 4096"])
@pytest.mark.parametrize("frame_rate", [24, 25])
def test_rope_cos_sin_match_diffusers_at_the_real_widths(cfg, frame_rate):
    rope = LTXVideoRotaryPosEmbed(dim=cfg.inner_dim, theta=cfg.positional_embedding_theta)
    coords = condition_pipeline_coords(frame_rate)
    expected_cos, expected_sin = rope(torch.zeros(BATCH, TOKENS, 1), video_coords=coords)
    cos, sin = rope_cos_sin(coords, cfg.inner_dim, cfg.positional_embedding_theta, cfg.positional_embedding_max_pos)
    torch.testing.assert_close(cos, expected_cos, atol=ATOL, rtol=0)
    torch.testing.assert_close(sin, expected_sin, atol=ATOL, rtol=0)


def test_our_names_are_the_official_single_file_names():
    """Our state dict, saved under the official file's prefix, goes through diffusers' own
    single-file converter into LTXVideoTransformer3DModel with strict=True: the names we
    load the official file with are the ones diffusers reads it with."""
    cfg = SHAPES["13b-shaped (2 heads x 8, pad 4)"]
    ours = LTXVTransformer(cfg)
    official_file = {TRANSFORMER_PREFIX + key: tensor for key, tensor in ours.state_dict().items()}
    converted = convert_ltx_transformer_checkpoint_to_diffusers(official_file)
    diffusers_reference(cfg).load_state_dict(converted, strict=True)
