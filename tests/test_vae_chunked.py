"""Time-chunked VAE decode gives the frames of one whole decode (tiny VAEs, fp32, CPU)."""

import pytest
import torch

from ltx_core.models.configs import LTXV_VAE_0_9_1, TINY_VAE_0_9_0, TINY_VAE_0_9_1, TINY_VAE_0_9_5
from ltx_core.errors import SettingsError
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.vae_chunked import _ChunkedDecoder, decode_in_chunks, plan_windows, time_radius

# Windows compute each frame from the same inputs as the whole decode; only convolution
# algorithms picked per input size may round differently.
ATOL = 1e-5
LATENT_FRAMES = 9

FAMILIES = {"0.9.0": TINY_VAE_0_9_0, "0.9.1": TINY_VAE_0_9_1, "0.9.5": TINY_VAE_0_9_5}


def random_vae(cfg):
    """Seeded, with the zero-initialized noise scales randomized so injected noise shows."""
    torch.manual_seed(0)
    vae = CausalVideoVAE(cfg).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if "per_channel_scale" in name:
                param.normal_(0.0, 0.3)
    return vae


def latent(frames=LATENT_FRAMES):
    return torch.randn(1, 128, frames, 1, 2, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("chunk_frames", [1, 4])
@torch.no_grad()
def test_chunked_decode_gives_the_frames_of_the_whole_decode(family, chunk_frames):
    vae = random_vae(FAMILIES[family])
    z = latent()
    whole = vae.decode(z, 0.05, 0.025, torch.Generator().manual_seed(7))
    chunked = decode_in_chunks(vae, z, 0.05, 0.025, torch.Generator().manual_seed(7), chunk_frames=chunk_frames)
    assert chunked.shape == whole.shape == (1, 3, 8 * (LATENT_FRAMES - 1) + 1, 32, 64)
    assert (chunked - whole).abs().max() <= ATOL
    assert isinstance(vae.decoder, torch.nn.Module) and not isinstance(vae.decoder, _ChunkedDecoder)


@torch.no_grad()
def test_windows_with_time_chunked_layers_give_the_frames_of_the_whole_decode():
    """The two memory savers combine: windows along the clip, each layer chunked within."""
    vae = random_vae(TINY_VAE_0_9_1)
    z = latent()
    whole = vae.decode(z, 0.05, 0.025, torch.Generator().manual_seed(7))
    both = decode_in_chunks(vae, z, 0.05, 0.025, torch.Generator().manual_seed(7), chunk_frames=4, time_chunk=3)
    assert (both - whole).abs().max() <= ATOL


@torch.no_grad()
def test_a_halo_shorter_than_the_time_radius_changes_frames():
    """The radius is needed: one frame less and the chunk edges differ (so the test above can fail)."""
    vae = random_vae(TINY_VAE_0_9_1)
    z = latent()
    whole = vae.decode(z, 0.05, 0.0, torch.Generator().manual_seed(7))
    chunked_decoder = _ChunkedDecoder(vae.decoder, 2, 8)
    chunked_decoder.radius -= 1
    original, vae.decoder = vae.decoder, chunked_decoder
    try:
        short = vae.decode(z, 0.05, 0.0, torch.Generator().manual_seed(7))
    finally:
        vae.decoder = original
    assert (short - whole).abs().max() > 10 * ATOL


def test_time_radius_counts_each_conv_at_its_frame_rate():
    """Sum of (k - 1) / rate over the tiny 0.9.1 decoder's 3-frame convs: 8 at the latent
    rate (conv_in, the mid block's 2 convs, the first upsampler's conv), 6 / 2 at 2x,
    6 / 4 at 4x, 6 / 8 at 8x (2 convs and conv_out) = 13.25, half of it on each side
    (non-causal): 7 after rounding up. The real 0.9.1 decoder, with more layers: 31."""
    assert time_radius(CausalVideoVAE(TINY_VAE_0_9_1).decoder) == 7
    with torch.device("meta"):
        real = CausalVideoVAE(LTXV_VAE_0_9_1).decoder
    assert time_radius(real) == 31


def test_windows_tile_the_clip_and_stay_bounded_whatever_its_length():
    for frames in (1, 7, 40, 400):
        plan = plan_windows(frames, chunk_frames=4, radius=3)
        assert [c for _, _, c, _ in plan] == list(range(0, frames, 4))
        assert plan[-1][3] == frames
        assert max(end - start for start, end, _, _ in plan) <= 4 + 2 * 3
    with pytest.raises(SettingsError, match="chunk_frames 0 must be at least 1"):
        plan_windows(5, 0, 2)
