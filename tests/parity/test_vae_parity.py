"""`CausalVideoVAE` against diffusers' `AutoencoderKLLTXVideo`, one tiny config per release
family, with diffusers' weights mapped in strictly by `vae_from_diffusers`. If this fails,
either the model math or the key map is wrong, and real checkpoints decode to garbage."""

import pytest
import torch
from diffusers import AutoencoderKLLTXVideo

from ltx_core.checkpoint.keymaps import vae_from_diffusers
from ltx_core.models.configs import TINY_VAE_0_9_0, TINY_VAE_0_9_1, TINY_VAE_0_9_5
from ltx_core.models.vae import CausalVideoVAE

pytestmark = pytest.mark.parity

ATOL = 1e-4

# diffusers configs with the layout of each family (the real ones are in diffusers'
# `scripts/convert_ltx_to_diffusers.py`), at the tiny configs' widths and one layer per
# block: encoder 8 -> 32 (0.9.0 / 0.9.1) or 8 -> 128 (0.9.5), decoder 64 -> 8 wide.
DIFFUSERS_TINY = {
    "0.9.0": dict(
        block_out_channels=(8, 16, 32, 32),
        decoder_block_out_channels=(8, 16, 32, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
    ),
    "0.9.1": dict(
        block_out_channels=(8, 16, 32, 32),
        decoder_block_out_channels=(16, 32, 64),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(True, True, True, False),
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
    ),
    "0.9.5": dict(
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
    ),
}
OURS_TINY = {"0.9.0": TINY_VAE_0_9_0, "0.9.1": TINY_VAE_0_9_1, "0.9.5": TINY_VAE_0_9_5}


def randomized_reference(family: str) -> AutoencoderKLLTXVideo:
    """Seeded diffusers VAE whose zero/one-initialized tensors are randomized too: noise
    scales, latent statistics, the timestep multiplier."""
    torch.manual_seed(0)
    ref = AutoencoderKLLTXVideo(**DIFFUSERS_TINY[family]).eval()
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if "per_channel_scale" in name:
                param.normal_(0.0, 0.3)
            if name.endswith("timestep_scale_multiplier"):
                param.fill_(700.0)
        ref.latents_mean.normal_(0.0, 0.5)
        ref.latents_std.uniform_(0.5, 1.5)
    return ref


@pytest.fixture(scope="module", params=list(DIFFUSERS_TINY))
def pair(request):
    family = request.param
    ref = randomized_reference(family)
    ours = CausalVideoVAE(OURS_TINY[family]).eval()
    ours.load_state_dict(vae_from_diffusers(ref.state_dict(), OURS_TINY[family]), strict=True)
    return ref, ours


def clip(frames: int = 17) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, frames, 32, 64, generator=g) * 2 - 1


def reference_normalized(ref: AutoencoderKLLTXVideo, z: torch.Tensor) -> torch.Tensor:
    return (z - ref.latents_mean.view(1, -1, 1, 1, 1)) / ref.latents_std.view(1, -1, 1, 1, 1)


def reference_denormalized(ref: AutoencoderKLLTXVideo, z: torch.Tensor) -> torch.Tensor:
    return z * ref.latents_std.view(1, -1, 1, 1, 1) + ref.latents_mean.view(1, -1, 1, 1, 1)


@torch.no_grad()
def test_encoded_latent_mean_matches_diffusers(pair):
    ref, ours = pair
    video = clip()
    expected = reference_normalized(ref, ref.encode(video).latent_dist.mean)
    assert (ours.encode(video) - expected).abs().max() <= ATOL


@torch.no_grad()
def test_sampled_latent_matches_diffusers_for_the_same_generator(pair):
    ref, ours = pair
    video = clip(9)
    posterior = ref.encode(video).latent_dist
    expected = reference_normalized(ref, posterior.sample(torch.Generator().manual_seed(4)))
    got = ours.encode(video, torch.Generator().manual_seed(4), sample=True)
    assert (got - expected).abs().max() <= ATOL


def reference_decode(ref, latent, timestep, noise_scale, seed, mix_denormalized):
    """diffusers' decoder fed as Lightricks' pipeline (noise mixed into the normalized
    latent) or as diffusers' LTXPipeline (mixed after denormalizing); the decoder's own
    injected noise comes from the global RNG, set to where our generator stands."""
    generator = torch.Generator().manual_seed(seed)
    if not ref.config.timestep_conditioning:
        return ref.decode(reference_denormalized(ref, latent)).sample
    noise = torch.randn(latent.shape, generator=generator)

    def mix(z):
        return z * (1 - noise_scale) + noise * noise_scale

    if mix_denormalized:
        z = mix(reference_denormalized(ref, latent))
    else:
        z = reference_denormalized(ref, mix(latent))
    with torch.random.fork_rng():
        torch.default_generator.set_state(generator.get_state())
        return ref.decode(z, torch.full((latent.shape[0],), timestep)).sample


@pytest.mark.parametrize(("timestep", "noise_scale"), [(0.0, 0.0), (0.05, 0.025)])
@pytest.mark.parametrize("mix_denormalized", [False, True])
@torch.no_grad()
def test_decoded_video_matches_diffusers_with_the_same_noise(pair, timestep, noise_scale, mix_denormalized):
    ref, ours = pair
    latent = torch.randn(2, 128, 3, 1, 2, generator=torch.Generator().manual_seed(2))
    expected = reference_decode(ref, latent, timestep, noise_scale, 9, mix_denormalized)
    got = ours.decode(
        latent, timestep, noise_scale, torch.Generator().manual_seed(9), mix_noise_denormalized=mix_denormalized
    )
    assert got.shape == (2, 3, 17, 32, 64)
    assert (got - expected).abs().max() <= ATOL
