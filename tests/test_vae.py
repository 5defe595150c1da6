"""The causal video VAE on tiny configs of each release family: shapes, causality,
normalization, seeded decode noise, configs and key layout of the real releases, and
the messages for bad input. If these fail, latents no longer line up with frames (or
with ComfyUI's LTXV latents), or a decode stops being reproducible from its seed."""

import json
from dataclasses import replace

import pytest
import torch

from benchmarks.memory_probe import PeakLiveBytes
from ltx_core.checkpoint.keymaps import vae_family, vae_family_from_keys
from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.models.configs import (
    LTXV_VAE_0_9_0,
    LTXV_VAE_0_9_1,
    LTXV_VAE_0_9_5,
    TINY_VAE_0_9_0,
    TINY_VAE_0_9_1,
    TINY_VAE_0_9_5,
    VAEConfig,
)
from ltx_core.models.vae import CausalVideoVAE

ATOL = 1e-5
TINY = {"0.9.0": TINY_VAE_0_9_0, "0.9.1": TINY_VAE_0_9_1, "0.9.5": TINY_VAE_0_9_5}
REAL = {"0.9.0": LTXV_VAE_0_9_0, "0.9.1": LTXV_VAE_0_9_1, "0.9.5": LTXV_VAE_0_9_5}


def tiny_vae(family: str) -> CausalVideoVAE:
    """A tiny VAE with seeded random weights; noise scales and statistics made non-trivial
    (they start at zero / identity) so the tests see them act."""
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY[family]).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if "per_channel_scale" in name:
                param.normal_(0.0, 0.3)
        vae.per_channel_statistics.get_buffer("mean-of-means").normal_(0.0, 0.5)
        vae.per_channel_statistics.get_buffer("std-of-means").uniform_(0.5, 1.5)
    return vae


def video(frames: int, height: int = 32, width: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1


@pytest.fixture(scope="module", params=list(TINY))
def family_vae(request) -> CausalVideoVAE:
    return tiny_vae(request.param)


@pytest.mark.parametrize("frames", [1, 9, 17])
@torch.no_grad()
def test_encode_and_decode_map_8k_plus_1_frames_to_k_plus_1_latent_frames(family_vae, frames):
    latent = family_vae.encode(video(frames))
    assert latent.shape == (1, 128, (frames - 1) // 8 + 1, 1, 2)
    decoded = family_vae.decode(latent, generator=torch.Generator().manual_seed(0))
    assert decoded.shape == (1, 3, frames, 32, 64)


@torch.no_grad()
def test_one_frame_encoded_alone_equals_the_first_latent_frame_of_a_clip(family_vae):
    clip = video(17)
    first = family_vae.encode(clip[:, :, :1])
    assert torch.allclose(first, family_vae.encode(clip)[:, :, :1], atol=ATOL)


@torch.no_grad()
def test_later_frames_do_not_change_earlier_latent_frames(family_vae):
    clip = video(17)
    changed = clip.clone()
    changed[:, :, 9:] = -changed[:, :, 9:]
    a, b = family_vae.encode(clip), family_vae.encode(changed)
    assert torch.allclose(a[:, :, :2], b[:, :, :2], atol=ATOL)
    assert not torch.allclose(a[:, :, 2:], b[:, :, 2:], atol=ATOL)


def test_normalize_and_denormalize_are_inverse_per_channel():
    vae = tiny_vae("0.9.5")
    z = torch.randn(2, 128, 2, 3, 4)
    assert torch.allclose(vae.denormalize(vae.normalize(z)), z, atol=ATOL)
    stats = vae.per_channel_statistics
    expected = (z - stats.get_buffer("mean-of-means").view(1, -1, 1, 1, 1)) / stats.get_buffer("std-of-means").view(
        1, -1, 1, 1, 1
    )
    assert torch.allclose(vae.normalize(z), expected)


@pytest.mark.parametrize("family", ["0.9.1", "0.9.5"])
@torch.no_grad()
def test_decode_is_reproducible_from_the_seed_and_changes_with_it(family):
    vae = tiny_vae(family)
    latent = torch.randn(1, 128, 2, 1, 2, generator=torch.Generator().manual_seed(3))

    def decode(seed):
        return vae.decode(latent, 0.05, 0.025, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(decode(7), decode(7))
    assert not torch.allclose(decode(7), decode(8), atol=ATOL)


@torch.no_grad()
def test_decode_timestep_changes_a_timestep_conditioned_decoder():
    vae = tiny_vae("0.9.5")
    latent = torch.randn(1, 128, 2, 1, 2)
    at = {t: vae.decode(latent, t, 0.0, torch.Generator().manual_seed(0)) for t in (0.0, 0.05)}
    assert not torch.allclose(at[0.0], at[0.05], atol=ATOL)


@torch.no_grad()
def test_without_decode_noise_a_decoder_that_injects_none_ignores_the_seed():
    vae = tiny_vae("0.9.5")
    latent = torch.randn(1, 128, 2, 1, 2)
    a = vae.decode(latent, 0.05, 0.0, torch.Generator().manual_seed(1))
    assert torch.allclose(a, vae.decode(latent, 0.05, 0.0, torch.Generator().manual_seed(2)))


@torch.no_grad()
def test_the_0_9_0_decoder_ignores_timestep_noise_and_seed():
    vae = tiny_vae("0.9.0")
    latent = torch.randn(1, 128, 2, 1, 2)
    a = vae.decode(latent, 0.0, 0.0, torch.Generator().manual_seed(1))
    b = vae.decode(latent, 0.3, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


@torch.no_grad()
def test_the_decode_noise_is_mixed_into_the_normalized_latent_unless_asked_otherwise():
    """Lightricks' pipeline and ComfyUI mix before denormalizing, diffusers after."""
    vae = tiny_vae("0.9.5")
    latent = torch.randn(1, 128, 2, 1, 2)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
    s = 0.25
    normalized = vae.decode(vae.normalize(vae.denormalize(latent) * (1 - s) + noise * s), 0.05, 0.0)
    default = vae.decode(latent, 0.05, s, torch.Generator().manual_seed(5))
    denorm = vae.decode(latent, 0.05, s, torch.Generator().manual_seed(5), mix_noise_denormalized=True)
    assert torch.allclose(denorm, normalized, atol=ATOL)
    mixed_first = vae.decode(latent * (1 - s) + noise * s, 0.05, 0.0)
    assert torch.allclose(default, mixed_first, atol=ATOL)
    assert not torch.allclose(default, denorm, atol=ATOL)


@torch.no_grad()
def test_sampling_the_posterior_draws_from_the_generator():
    vae = tiny_vae("0.9.5")
    clip = video(9)
    a = vae.encode(clip, torch.Generator().manual_seed(1), sample=True)
    assert torch.equal(a, vae.encode(clip, torch.Generator().manual_seed(1), sample=True))
    assert not torch.allclose(a, vae.encode(clip), atol=1e-7)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 24, 32, 32), r"frame count 24 is not 8k\+1; nearest valid: 17 or 25"),
        ((1, 3, 0, 32, 32), r"frame count 0 is not 8k\+1; nearest valid: 1"),
        ((1, 3, 9, 500, 32), r"height 500 is not a multiple of 32; nearest valid: 480 or 512"),
        ((1, 3, 9, 32, 20), r"width 20 is not a multiple of 32; nearest valid: 32"),
        ((1, 4, 9, 32, 32), r"video has 4 channels; the VAE takes 3 \(RGB\)"),
        ((3, 9, 32, 32), r"video must be 5-D \(B, C, F, H, W\)"),
    ],
)
def test_encode_refuses_bad_videos_with_a_clear_message(shape, message):
    vae = tiny_vae("0.9.0")
    with pytest.raises(SettingsError, match=message):
        vae.encode(torch.zeros(shape))


@pytest.mark.parametrize(
    ("latent_shape", "kwargs", "message"),
    [
        ((1, 16, 2, 1, 1), {}, r"latent of shape \(1, 16, 2, 1, 1\) is not an LTX-Video latent"),
        ((1, 128, 2, 1), {}, r"this VAE takes \(B, 128, frames, height, width\)"),
        ((1, 128, 2, 1, 1), {"timestep": 1.5}, r"decode timestep 1.5 is outside \[0, 1\]"),
        ((1, 128, 2, 1, 1), {"decode_noise_scale": -0.1}, r"decode_noise_scale -0.1 is outside \[0, 1\]"),
    ],
)
def test_decode_refuses_bad_latents_and_settings_with_a_clear_message(latent_shape, kwargs, message):
    vae = tiny_vae("0.9.1")
    with pytest.raises(SettingsError, match=message):
        vae.decode(torch.zeros(latent_shape), **kwargs)


# ---------------------------------------------------------------------- configs


# `config["vae"]` of ltx-video-2b-v0.9.safetensors as Lightricks quotes it
# (`ltx_video/utils/diffusers_config_mapping.py`, OURS_VAE_CONFIG).
METADATA_0_9_0 = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "blocks": [
        ["res_x", 4],
        ["compress_all", 1],
        ["res_x_y", 1],
        ["res_x", 3],
        ["compress_all", 1],
        ["res_x_y", 1],
        ["res_x", 3],
        ["compress_all", 1],
        ["res_x", 3],
        ["res_x", 4],
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
}


def test_metadata_of_the_0_9_0_file_reads_as_the_0_9_0_config():
    assert VAEConfig.from_metadata(METADATA_0_9_0) == LTXV_VAE_0_9_0


def test_absent_metadata_fields_take_lightricks_defaults():
    cfg = VAEConfig.from_metadata({"dims": 3, "latent_channels": 128, "blocks": [["res_x", 1]], "double_z": True})
    assert cfg.spatial_padding_mode == "zeros"  # not ComfyUI's "reflect"
    assert (cfg.norm_layer, cfg.latent_log_var, cfg.use_quant_conv) == ("group_norm", "per_channel", True)
    assert (cfg.patch_size, cfg.encoder_base_channels, cfg.timestep_conditioning) == (1, 128, False)


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        (
            {**METADATA_0_9_0, "_class_name": "AutoencoderKL"},
            CheckpointError,
            "_class_name 'AutoencoderKL' is not 'CausalVideoAutoencoder'",
        ),
        ({k: v for k, v in METADATA_0_9_0.items() if k != "latent_channels"}, CheckpointError, "lacks latent_channels"),
        ({**METADATA_0_9_0, "blocks": [["attn_res_x", 1]]}, SettingsError, "block 'attn_res_x' is not supported"),
        (
            {**METADATA_0_9_0, "norm_layer": "batch_norm"},
            SettingsError,
            "norm_layer='batch_norm' is not supported; allowed: 'pixel_norm'",
        ),
        (
            {**METADATA_0_9_0, "use_quant_conv": True},
            SettingsError,
            "latent_log_var='uniform' requires use_quant_conv=False",
        ),
    ],
)
def test_unsupported_metadata_is_refused_with_a_clear_message(metadata, error, message):
    with pytest.raises(error, match=message):
        VAEConfig.from_metadata(metadata)


@pytest.mark.parametrize("family", list(REAL))
def test_every_release_compresses_32x32x8_into_128_channels(family):
    cfg = REAL[family]
    assert (cfg.spatial_compression, cfg.temporal_compression, cfg.latent_channels) == (32, 8, 128)
    assert (TINY[family].spatial_compression, TINY[family].temporal_compression) == (32, 8)
    assert vae_family(cfg) == vae_family(TINY[family]) == family


def real_shapes(family: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in CausalVideoVAE(REAL[family]).state_dict().items()}


@pytest.mark.parametrize("family", list(REAL))
def test_real_configs_have_the_keys_diffusers_and_comfyui_detect_releases_by(family):
    """Facts about the official files, from diffusers' `infer_diffusers_model_type` and
    ComfyUI's `VAE.__init__` detection: our names and widths must match them."""
    shapes = real_shapes(family)
    assert shapes["decoder.up_blocks.0.res_blocks.0.conv1.conv.weight"][0] == (512 if family == "0.9.0" else 1024)
    assert ("decoder.up_blocks.9.res_blocks.0.conv1.conv.weight" in shapes) == (family == "0.9.0")
    assert ("decoder.last_time_embedder.timestep_embedder.linear_1.weight" in shapes) == (family != "0.9.0")
    assert ("encoder.down_blocks.1.conv.conv.bias" in shapes) == (family == "0.9.5")
    assert (shapes["encoder.conv_out.conv.weight"][1] == 2048) == (family == "0.9.5")
    assert shapes["per_channel_statistics.mean-of-means"] == (128,)
    assert vae_family_from_keys("vae." + k for k in shapes) == family


def test_only_0_9_1_injects_noise_in_the_decoder():
    families = {f for f in REAL if any("per_channel_scale1" in k for k in real_shapes(f))}
    assert families == {"0.9.1"}


def test_a_state_dict_without_the_unused_statistics_still_loads_strictly():
    vae = tiny_vae("0.9.5")
    state = {k: v for k, v in vae.state_dict().items() if "mean-of-stds" not in k}
    CausalVideoVAE(TINY_VAE_0_9_5).load_state_dict(state, strict=True)


@pytest.mark.parametrize("family", list(REAL))
def test_a_config_survives_the_round_trip_through_json_metadata(family):
    metadata = json.loads(json.dumps(REAL[family].to_metadata()))
    assert metadata["_class_name"] == "CausalVideoAutoencoder"
    assert VAEConfig.from_metadata(metadata) == REAL[family]


@pytest.mark.parametrize(
    "changes",
    [
        {"spatial_padding_mode": "reflect"},
        {"norm_layer": "group_norm", "encoder_base_channels": 32, "decoder_base_channels": 32},
        {"norm_layer": "layer_norm"},
        {"latent_log_var": "per_channel", "use_quant_conv": True},
    ],
)
@torch.no_grad()
def test_other_settings_lightricks_code_accepts_build_and_keep_the_shapes(changes):
    torch.manual_seed(0)
    vae = CausalVideoVAE(replace(TINY_VAE_0_9_0, **changes)).eval()
    # 64 x 64: reflect padding needs latents wider than one cell
    latent = vae.encode(video(9, 64, 64), torch.Generator().manual_seed(0), sample=True)
    assert latent.shape == (1, 128, 2, 2, 2)
    assert vae.decode(latent).shape == (1, 3, 9, 64, 64)


# ---------------------------------------------------------------------- time-chunked layers


def decode_both(vae: CausalVideoVAE, latent: torch.Tensor, time_chunk: int, **kwargs):
    """(whole decode, time-chunked decode, whether both left their generators alike)."""
    generators = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)]
    whole = vae.decode(latent, 0.05, 0.025, generators[0], **kwargs)
    chunked = vae.decode(latent, 0.05, 0.025, generators[1], time_chunk=time_chunk, **kwargs)
    return whole, chunked, torch.equal(generators[0].get_state(), generators[1].get_state())


@pytest.mark.parametrize("time_chunk", [1, 2, 3, 100])
@pytest.mark.parametrize("latent_frames", [1, 2, 3, 5])
@torch.no_grad()
def test_time_chunked_layers_give_the_frames_of_the_whole_decode(family_vae, latent_frames, time_chunk):
    """Every family (0.9.1: injected noise and timestep), chunks of one frame up to longer
    than the clip; the same noise from the same seed. Only convolution algorithms picked
    per input length may round differently (measured <= 2.5e-6)."""
    latent = torch.randn(1, 128, latent_frames, 1, 2, generator=torch.Generator().manual_seed(3))
    whole, chunked, same_draws = decode_both(family_vae, latent, time_chunk)
    assert chunked.shape == whole.shape == (1, 3, 8 * (latent_frames - 1) + 1, 32, 64)
    assert (chunked - whole).abs().max() <= ATOL
    assert same_draws


@pytest.mark.parametrize("time_chunk", [1, 2, 3])
@torch.no_grad()
def test_time_chunked_layers_of_a_causal_decoder_read_two_frames_in_front(time_chunk):
    torch.manual_seed(0)
    vae = CausalVideoVAE(replace(TINY_VAE_0_9_1, causal_decoder=True)).eval()
    latent = torch.randn(2, 128, 4, 1, 2, generator=torch.Generator().manual_seed(3))
    whole, chunked, _ = decode_both(vae, latent, time_chunk, mix_noise_denormalized=True)
    assert (chunked - whole).abs().max() <= ATOL


@pytest.mark.parametrize("time_chunk", [0, -1, 1.5, True, "4"])
def test_a_time_chunk_that_is_not_a_whole_number_of_frames_is_refused(time_chunk):
    vae = tiny_vae("0.9.1")
    with pytest.raises(
        SettingsError,
        match=rf"time_chunk {time_chunk!r} is not allowed; allowed: a whole "
        r"number of frames >= 1 \(None: ",
    ):
        vae.decode(torch.zeros(1, 128, 2, 1, 2), time_chunk=time_chunk)


def test_time_chunks_refuse_a_group_norm_decoder_whose_statistics_span_all_frames():
    vae = CausalVideoVAE(
        replace(TINY_VAE_0_9_0, norm_layer="group_norm", encoder_base_channels=32, decoder_base_channels=32)
    )
    with pytest.raises(SettingsError, match="time_chunk needs a pixel- or layer-norm decoder"):
        vae.decode(torch.zeros(1, 128, 2, 1, 2), time_chunk=2)


def test_the_memory_probe_counts_new_storages_until_they_are_freed():
    weights = torch.zeros(1000)
    with PeakLiveBytes() as probe:
        a = torch.ones(250) + 1  # the ones die once the sum exists: 2 x 1000 bytes at most
        view = weights[:500].view(50, 10)  # views and in-place results reuse a storage
        view.add_(a[:10])
        assert probe.current == 1000
        del a, view
        assert probe.current == 0
    assert probe.peak == 2000


def decode_peak_bytes(vae: CausalVideoVAE, latent: torch.Tensor, time_chunk: int | None) -> int:
    with torch.no_grad(), PeakLiveBytes() as probe:
        vae.decode(latent, 0.05, 0.025, torch.Generator().manual_seed(7), time_chunk=time_chunk)
    return probe.peak


def test_time_chunked_layers_lower_the_decodes_peak_memory():
    """Tiny 0.9.1, 65 frames at 64x64 (fp32, CPU), peak bytes of the tensors the decode
    creates: whole 6.64 MiB, time_chunk=4 3.97 MiB (ratio 0.60), time_chunk=1 3.68 MiB.
    The tiny decoder peaks in its output stage (48 channels before unpatchifying, against
    8 in its last resnet blocks): whole, conv_out's output and its unpatchified copy
    (3.05 MiB each); chunked, the video (3.05 MiB) and a chunk. The real 0.9.1 decoder
    (128 channels in its last blocks) peaks in its resnet blocks instead
    (benchmarks/vae_decode_memory.py)."""
    vae = tiny_vae("0.9.1")
    latent = torch.randn(1, 128, 9, 2, 2, generator=torch.Generator().manual_seed(3))
    whole = decode_peak_bytes(vae, latent, None)
    video = 3 * 65 * 64 * 64 * 4
    assert whole > 2 * video
    assert decode_peak_bytes(vae, latent, 4) < 0.65 * whole
    assert decode_peak_bytes(vae, latent, 1) < 1.3 * video
    # one chunk as long as the clip keeps what the whole decode keeps, beside the injected
    # noise (a few (H, W) planes) drawn before the layers
    assert whole <= decode_peak_bytes(vae, latent, 100) <= 1.01 * whole
