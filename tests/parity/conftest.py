"""Shared parity fixtures: tiny diffusers models with seeded random weights, each beside
our model loaded with the same weights through `ltx_core.checkpoint.keymaps` (strict). Both halves
are shared between tests: do not modify them."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

from ltx_core.checkpoint.keymaps import transformer_from_diffusers, vae_from_diffusers
from ltx_core.models.configs import TINY_TRANSFORMER, TINY_VAE_0_9_5, TransformerConfig, VAEConfig
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE

from ..fixtures_checkpoints import diffusers_transformer_kwargs

# TINY_TRANSFORMER without the causal time fix: diffusers' LTXPipeline and
# LTXImageToVideoPipeline never apply it (see `denoise.token_coords`).
TINY_TRANSFORMER_UNSHIFTED = replace(TINY_TRANSFORMER, causal_temporal_positioning=False)

# diffusers' AutoencoderKLLTXVideo with the 0.9.5 layout of TINY_VAE_0_9_5: one layer per
# block, encoder 8 -> 128 wide, decoder 64 -> 16, no injected noise, timestep-conditioned.
DIFFUSERS_TINY_VAE_0_9_5 = dict(
    block_out_channels=(8, 16, 32, 64, 128),
    down_block_types=("LTXVideo095DownBlock3D",) * 4,
    decoder_block_out_channels=(16, 32, 64),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, True, True),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False),
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2),
    timestep_conditioning=True,
    # diffusers counts 2x per scaling block (64, 16); the 0.9.5 layout compresses 32 x 8
    spatial_compression_ratio=32,
    temporal_compression_ratio=8,
)


def diffusers_transformer(cfg: TransformerConfig, std: float = 0.1) -> LTXVideoTransformer3DModel:
    """diffusers' transformer at `cfg`'s sizes, every tensor random (norm weights around 1)."""
    torch.manual_seed(0)
    reference = LTXVideoTransformer3DModel(**diffusers_transformer_kwargs(cfg)).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.normal_(1.0 if "norm" in name else 0.0, std)
    return reference


def diffusers_vae(config: dict) -> AutoencoderKLLTXVideo:
    """diffusers' VAE with its zero/one-initialized tensors randomized too."""
    torch.manual_seed(0)
    reference = AutoencoderKLLTXVideo(**config).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith("timestep_scale_multiplier"):
                parameter.fill_(700.0)
        reference.latents_mean.normal_(0.0, 0.5)
        reference.latents_std.uniform_(0.5, 1.5)
    return reference


def ours_from_diffusers_transformer(reference, cfg: TransformerConfig) -> LTXVTransformer:
    ours = LTXVTransformer(cfg).eval()
    ours.load_state_dict(transformer_from_diffusers(reference.state_dict()), strict=True)
    return ours


def ours_from_diffusers_vae(reference, cfg: VAEConfig) -> CausalVideoVAE:
    ours = CausalVideoVAE(cfg).eval()
    ours.load_state_dict(vae_from_diffusers(reference.state_dict(), cfg), strict=True)
    return ours


@pytest.fixture(scope="session")
def transformer_pair():
    """(diffusers LTXVideoTransformer3DModel, our LTXVTransformer) with the same weights."""
    reference = diffusers_transformer(TINY_TRANSFORMER_UNSHIFTED)
    return reference, ours_from_diffusers_transformer(reference, TINY_TRANSFORMER_UNSHIFTED)


@pytest.fixture(scope="session")
def vae_pair():
    """(diffusers AutoencoderKLLTXVideo, our CausalVideoVAE), 0.9.5 layout, same weights."""
    reference = diffusers_vae(DIFFUSERS_TINY_VAE_0_9_5)
    return reference, ours_from_diffusers_vae(reference, TINY_VAE_0_9_5)


@pytest.fixture(scope="session")
def texts():
    """(prompt, negative) embeddings of caption width 32, each with padding."""
    g = torch.Generator().manual_seed(11)
    prompt = TextEmbeddings(torch.randn(1, 8, 32, generator=g), torch.tensor([[1] * 5 + [0] * 3]).bool())
    negative = TextEmbeddings(torch.randn(1, 8, 32, generator=g), torch.tensor([[1] * 2 + [0] * 6]).bool())
    return prompt, negative
