"""The spatially tiled decode against diffusers' `LTXI2VLongMultiPromptPipeline.
vae_decode_tiled` (which documents itself as ComfyUI's tiled decode): the same tiles, ramps
and blend on the same weights, the decode noise mixed after denormalizing as it mixes it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers.pipelines.ltx.pipeline_ltx_i2v_long_multi_prompt import LTXI2VLongMultiPromptPipeline

from ltx_core.checkpoint.keymaps import vae_from_diffusers
from ltx_core.models.vae import CausalVideoVAE

from .test_vae_parity import OURS_TINY, randomized_reference

pytestmark = pytest.mark.parity
ATOL = 1e-4


@pytest.mark.parametrize(("tiles", "overlap"), [((2, 2), 1), ((1, 3), 2), ((3, 2), 0)])
@torch.no_grad()
def test_tiled_decode_matches_diffusers(tiles, overlap):
    ref = randomized_reference("0.9.5")  # no injected decoder noise: the tiles draw nothing
    ours = CausalVideoVAE(OURS_TINY["0.9.5"]).eval()
    ours.load_state_dict(vae_from_diffusers(ref.state_dict(), OURS_TINY["0.9.5"]), strict=True)
    latent = torch.randn(1, 128, 2, 4, 6, generator=torch.Generator().manual_seed(5))
    pipe = SimpleNamespace(
        vae=ref,
        _execution_device=torch.device("cpu"),
        _denormalize_latents=LTXI2VLongMultiPromptPipeline._denormalize_latents,
        vae_temporal_compression_ratio=ours.temporal_compression,  # the tiny config's, as ours decodes
        vae_spatial_compression_ratio=ours.spatial_compression,
    )
    theirs = LTXI2VLongMultiPromptPipeline.vae_decode_tiled(
        pipe,
        latent,
        decode_timestep=0.05,
        decode_noise_scale=0.025,
        horizontal_tiles=tiles[1],
        vertical_tiles=tiles[0],
        overlap=overlap,
        last_frame_fix=False,
        generator=torch.Generator().manual_seed(9),
    )
    got = ours.decode(
        latent,
        0.05,
        0.025,
        torch.Generator().manual_seed(9),
        mix_noise_denormalized=True,
        tiles=tiles,
        tile_overlap=overlap,
    )
    assert theirs.shape == got.shape == (1, 3, 9, 128, 192)
    assert (got.clamp(-1, 1) - theirs).abs().max() <= ATOL
