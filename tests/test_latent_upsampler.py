"""Latent upsamplers: the model's shapes and config, loading from the official single file
and a diffusers folder (strict, bad files refused by name), and the operations around
them (normalization, AdaIN, tone mapping)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_core.checkpoint.loading import load_checkpoint
from ltx_core.checkpoint.upsampler import config_from_shapes, inspect_latent_upsampler, load_latent_upsampler
from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.models.latent_upsampler import (
    LTXV_SPATIAL_UPSCALER_0_9_7,
    LTXV_SPATIAL_UPSCALER_0_9_8,
    LTXV_TEMPORAL_UPSCALER_0_9_7,
    TINY_SPATIAL_UPSAMPLER,
    TINY_TEMPORAL_UPSAMPLER,
    LatentUpsampler,
    LatentUpsamplerConfig,
)
from ltx_core.models.vae import PerChannelStatistics
from ltx_core.sampling.latent_ops import adain_filter, tone_map, upsample_latent

from .fixtures_checkpoints import write_official_single_file

TINY_BOTH = replace(TINY_SPATIAL_UPSAMPLER, temporal_upsample=True)
TINY_PER_FRAME = replace(TINY_SPATIAL_UPSAMPLER, dims=2)
TINY = {
    "spatial": TINY_SPATIAL_UPSAMPLER,
    "temporal": TINY_TEMPORAL_UPSAMPLER,
    "both": TINY_BOTH,
    "per-frame": TINY_PER_FRAME,
}
# Equal weights give equal outputs up to CPU kernel choice (see test_checkpoint.ATOL).
ATOL = 1e-5


def random_upsampler(cfg: LatentUpsamplerConfig, seed: int = 0) -> LatentUpsampler:
    """Every tensor random, norm weights around 1, so each layer changes the output."""
    torch.manual_seed(seed)
    model = LatentUpsampler(cfg).eval()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            tensor.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.05)
    return model


def write_upsampler_file(
    path: Path, cfg: LatentUpsamplerConfig, seed: int = 0, metadata: bool = True, change=None
) -> Path:
    """An official-layout upsampler file; `change(tensors)` edits the tensors first."""
    tensors = {k: v.contiguous() for k, v in random_upsampler(cfg, seed).state_dict().items()}
    if change:
        change(tensors)
    save_file(tensors, str(path), metadata={"config": json.dumps(cfg.to_metadata())} if metadata else None)
    return path


def write_upsampler_folder(folder: Path, cfg: LatentUpsamplerConfig, seed: int = 0) -> Path:
    """The diffusers layout, as `LTXLatentUpsamplePipeline.save_pretrained` writes it (the
    parity tests check this against diffusers' own writer)."""
    component = folder / "latent_upsampler"
    component.mkdir(parents=True)
    config = {**cfg.to_metadata(), "_class_name": "LTXLatentUpsamplerModel", "_diffusers_version": "0.42.1"}
    (component / "config.json").write_text(json.dumps(config))
    write_upsampler_file(component / "diffusion_pytorch_model.safetensors", cfg, seed, metadata=False)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LTXLatentUpsamplePipeline"}))
    return folder


def random_statistics(channels: int = 128) -> PerChannelStatistics:
    """The VAE's per-channel statistics (all `upsample_latent` uses of the VAE), random."""
    stats = PerChannelStatistics(channels)
    g = torch.Generator().manual_seed(3)
    stats.get_buffer("mean-of-means").copy_(torch.randn(channels, generator=g) * 0.5)
    stats.get_buffer("std-of-means").copy_(torch.rand(channels, generator=g) + 0.5)
    return stats


def latent(frames=3, height=4, width=5, seed=1) -> torch.Tensor:
    return torch.randn(1, 128, frames, height, width, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the model and its config


@pytest.mark.parametrize("kind", TINY)
@torch.no_grad()
def test_output_has_the_configs_upsampled_size(kind):
    cfg = TINY[kind]
    out = random_upsampler(cfg)(latent(3, 4, 5))
    assert out.shape == (1, 128, *cfg.upsampled_size(3, 4, 5))
    assert torch.isfinite(out).all()


def test_upsampled_sizes():
    assert TINY_SPATIAL_UPSAMPLER.upsampled_size(3, 4, 5) == (3, 8, 10)
    # causal latent: frame 0 stays one frame, the others double
    assert TINY_TEMPORAL_UPSAMPLER.upsampled_size(3, 4, 5) == (5, 4, 5)
    assert TINY_BOTH.upsampled_size(1, 4, 5) == (1, 8, 10)


@pytest.mark.parametrize(
    "cfg", [LTXV_SPATIAL_UPSCALER_0_9_7, LTXV_SPATIAL_UPSCALER_0_9_8, LTXV_TEMPORAL_UPSCALER_0_9_7]
)
def test_published_configs_build_with_the_official_tensor_names(cfg):
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LatentUpsampler(cfg).state_dict().items()}
    assert shapes["initial_conv.weight"] == (512, 128, 3, 3, 3)
    widening = (1024, 512, 3, 3, 3) if cfg.temporal_upsample else (2048, 512, 3, 3)
    assert shapes["upsampler.0.weight"] == widening
    assert "post_upsample_res_blocks.3.norm2.bias" in shapes and "final_conv.bias" in shapes
    assert config_from_shapes(shapes) == cfg


def test_config_metadata_round_trip_and_diffusers_class_name():
    for cfg in TINY.values():
        assert LatentUpsamplerConfig.from_metadata(json.loads(json.dumps(cfg.to_metadata()))) == cfg
    diffusers = {**TINY_SPATIAL_UPSAMPLER.to_metadata(), "_class_name": "LTXLatentUpsamplerModel"}
    assert LatentUpsamplerConfig.from_metadata(diffusers) == TINY_SPATIAL_UPSAMPLER


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mid_channels": 48}, "mid_channels 48 is not a multiple of 32"),
        ({"spatial_upsample": False}, "neither spatial_upsample nor temporal_upsample"),
        ({"temporal_upsample": True, "dims": 2}, "temporal_upsample needs dims 3"),
        ({"dims": 1}, "dims 1 is not allowed"),
        ({"num_blocks_per_stage": 0}, "num_blocks_per_stage is 0"),
    ],
)
def test_bad_configs_are_refused(change, message):
    with pytest.raises(SettingsError, match=message):
        replace(TINY_SPATIAL_UPSAMPLER, **change)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.pop("dims"), "lacks dims"),
        (lambda c: c.update(_class_name="CausalVideoAutoencoder"), "_class_name 'CausalVideoAutoencoder'"),
        (lambda c: c.update(spatial_scale=1.5, rational_resampler=True), "LTX-2 upsampler"),
    ],
)
def test_bad_config_metadata_is_refused(edit, message):
    config = TINY_SPATIAL_UPSAMPLER.to_metadata()
    edit(config)
    with pytest.raises(SettingsError, match=message):
        LatentUpsamplerConfig.from_metadata(config)


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
@torch.no_grad()
def test_single_file_round_trip(tmp_path, kind):
    cfg = TINY[kind]
    path = write_upsampler_file(tmp_path / "up.safetensors", cfg, seed=5)
    loaded = load_latent_upsampler(path)
    assert loaded.cfg == cfg and not loaded.training
    x = latent()
    torch.testing.assert_close(loaded(x), random_upsampler(cfg, seed=5)(x), atol=ATOL, rtol=0)


@torch.no_grad()
def test_diffusers_folder_round_trip_from_the_pipeline_folder_or_its_latent_upsampler(tmp_path):
    folder = write_upsampler_folder(tmp_path / "ltxv-spatial-upscaler", TINY_TEMPORAL_UPSAMPLER, seed=6)
    expected = random_upsampler(TINY_TEMPORAL_UPSAMPLER, seed=6)(latent())
    for path in (folder, folder / "latent_upsampler"):
        loaded = load_latent_upsampler(path)
        assert loaded.cfg == TINY_TEMPORAL_UPSAMPLER
        torch.testing.assert_close(loaded(latent()), expected, atol=ATOL, rtol=0)


def test_dtype_and_device_settings(tmp_path):
    path = write_upsampler_file(tmp_path / "up.safetensors", TINY_SPATIAL_UPSAMPLER)
    assert load_latent_upsampler(path, dtype="bf16").final_conv.weight.dtype == torch.bfloat16
    with pytest.raises(SettingsError, match="dtype 'int8' is not supported"):
        load_latent_upsampler(path, dtype="int8")


def test_file_without_config_metadata_uses_its_shapes_with_a_warning(tmp_path):
    path = write_upsampler_file(tmp_path / "up.safetensors", TINY_BOTH, metadata=False)
    with pytest.warns(UserWarning, match="no readable `config` metadata entry"):
        assert load_latent_upsampler(path).cfg == TINY_BOTH


def test_inspect_reads_headers_only(tmp_path):
    path = write_upsampler_file(tmp_path / "up.safetensors", TINY_PER_FRAME)
    cfg, source = inspect_latent_upsampler(path)
    assert cfg == TINY_PER_FRAME and source.shape("initial_conv.weight") == (32, 128, 3, 3)


def _drop(name):
    return lambda tensors: tensors.pop(name)


@pytest.mark.parametrize(
    "change, message",
    [
        (_drop("final_conv.bias"), r"lacks 1 of the \d+ latent upsampler tensors .* final_conv.bias"),
        (
            lambda t: t.update(extra=torch.zeros(1)),
            r"has 1 latent upsampler tensors its config does not use, e.g. extra",
        ),
        (
            lambda t: t.update({"final_conv.bias": torch.zeros(64)}),
            r"latent upsampler tensor 'final_conv.bias' in .* has shape \[64\], but the config asks for \[128\]",
        ),
    ],
)
def test_strict_load_names_the_file_and_the_key(tmp_path, change, message):
    path = write_upsampler_file(tmp_path / "up.safetensors", TINY_SPATIAL_UPSAMPLER, change=change)
    with pytest.raises(CheckpointError, match=message):
        load_latent_upsampler(path)


def test_config_metadata_that_does_not_match_the_tensors_is_refused(tmp_path):
    path = tmp_path / "up.safetensors"
    tensors = random_upsampler(TINY_SPATIAL_UPSAMPLER).state_dict()
    save_file(tensors, str(path), metadata={"config": json.dumps(TINY_TEMPORAL_UPSAMPLER.to_metadata())})
    shape = r"tensor 'upsampler.0.bias' in .* has shape \[128\], but the config asks for \[64\]"
    with pytest.raises(CheckpointError, match=shape):
        load_latent_upsampler(path)


@pytest.mark.parametrize(
    "value, what", [(float("nan"), "1 NaN and 0 infinite"), (float("inf"), "0 NaN and 1 infinite")]
)
def test_non_finite_weights_are_refused(tmp_path, value, what):
    def poison(tensors):
        tensors["res_blocks.0.conv1.weight"][0, 0, 0, 0, 0] = value

    path = write_upsampler_file(tmp_path / "up.safetensors", TINY_SPATIAL_UPSAMPLER, change=poison)
    with pytest.raises(
        CheckpointError,
        match=f"1 latent upsampler tensor.* hold NaN or infinite values: res_blocks.0.conv1.weight \\({what}",
    ):
        load_latent_upsampler(path)


def test_full_checkpoint_is_refused_as_an_upsampler_and_the_reverse(tmp_path):
    checkpoint = write_official_single_file(tmp_path / "ltxv.safetensors", "0.9.5")
    with pytest.raises(
        CheckpointError,
        match="is an LTX-Video model checkpoint .*not a latent upsampler; load it as "
        "the checkpoint, and pass here an ltxv-spatial-upscaler",
    ):
        load_latent_upsampler(checkpoint)
    upsampler = write_upsampler_file(tmp_path / "ltxv-spatial-upscaler.safetensors", TINY_SPATIAL_UPSAMPLER)
    with pytest.raises(CheckpointError, match="looks like an LTX-Video latent upsampler .*load_latent_upsampler"):
        load_checkpoint(upsampler)


def test_diffusers_folders_of_the_other_kind_are_refused(tmp_path):
    folder = write_upsampler_folder(tmp_path / "upscaler", TINY_SPATIAL_UPSAMPLER)
    with pytest.raises(CheckpointError, match="is a diffusers LTX-Video latent upsampler .*not a checkpoint"):
        load_checkpoint(folder)
    model_folder = tmp_path / "ltxv"
    (model_folder / "transformer").mkdir(parents=True)
    (model_folder / "vae").mkdir()
    with pytest.raises(CheckpointError, match="is a diffusers LTX-Video model folder .*not a latent upsampler"):
        load_latent_upsampler(model_folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a diffusers latent upsampler: it holds neither latent_upsampler/"):
        load_latent_upsampler(empty)


def test_a_header_length_with_the_pickle_protocol_byte_is_no_pickle(tmp_path):
    """A safetensors file opens with its header length; a length of 0x..80 starts like a pickle."""
    tensors = random_upsampler(TINY_SPATIAL_UPSAMPLER).state_dict()
    path = tmp_path / "up.safetensors"
    for pad in range(256):
        save_file(
            tensors, str(path), metadata={"config": json.dumps(TINY_SPATIAL_UPSAMPLER.to_metadata()), "pad": "x" * pad}
        )
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert load_latent_upsampler(path).cfg == TINY_SPATIAL_UPSAMPLER


def test_other_files_are_refused_by_name(tmp_path):
    other = tmp_path / "t5.safetensors"
    save_file({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(CheckpointError, match="is not an LTX-Video latent upsampler .*T5 text encoder"):
        load_latent_upsampler(other)
    pickle = tmp_path / "up.pt"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="is a pickle file"):
        load_latent_upsampler(pickle)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_latent_upsampler(tmp_path / "absent.safetensors")
    truncated = tmp_path / "cut.safetensors"
    whole = write_upsampler_file(tmp_path / "whole.safetensors", TINY_SPATIAL_UPSAMPLER)
    truncated.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_latent_upsampler(truncated)


# ---------------------------------------------------------------- the operations around it


@torch.no_grad()
def test_upsample_latent_works_on_raw_latents_and_returns_normalized_ones():
    upsampler, stats = random_upsampler(TINY_SPATIAL_UPSAMPLER), random_statistics()
    x = latent()
    expected = stats.normalize(upsampler(stats.denormalize(x)))
    torch.testing.assert_close(upsample_latent(upsampler, stats, x), expected, atol=0, rtol=0)
    # in the upsampler's dtype, returned in the latent's
    out = upsample_latent(upsampler.to(torch.bfloat16), stats, x)
    assert out.dtype == torch.float32 and out.shape == (1, 128, 3, 8, 10)


def test_adain_matches_each_channels_statistics_and_blends():
    x, reference = latent(3, 8, 10, seed=4) * 3 + 1, latent(seed=5)
    matched = adain_filter(x, reference, 1.0)
    std, mean = torch.std_mean(matched, dim=(2, 3, 4))
    ref_std, ref_mean = torch.std_mean(reference, dim=(2, 3, 4))
    torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(std, ref_std, atol=1e-5, rtol=0)
    torch.testing.assert_close(adain_filter(x, reference, 0.0), x)
    torch.testing.assert_close(adain_filter(x, reference, 0.5), (x + matched) / 2, atol=1e-5, rtol=0)


def test_adain_does_not_depend_on_the_normalization():
    stats = random_statistics()
    x, reference = latent(3, 8, 10, seed=4), latent(seed=5)
    raw = adain_filter(stats.denormalize(x), stats.denormalize(reference), 0.7)
    torch.testing.assert_close(stats.normalize(raw), adain_filter(x, reference, 0.7), atol=1e-5, rtol=0)


def test_tone_map():
    x = torch.linspace(-6, 6, 101)
    assert torch.equal(tone_map(x, 0.0), x)
    mapped = tone_map(x, 1.0)
    assert torch.all(mapped.abs() <= x.abs()) and torch.equal(mapped.sign(), x.sign())
    # large values towards 1 - 0.6 of themselves, small ones nearly kept
    assert abs(float(tone_map(torch.tensor(100.0), 1.0)) - 40.0) < 1e-3
    assert abs(float(tone_map(torch.tensor(0.1), 1.0)) - 0.1) < 0.004


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: tone_map(latent(), 1.5), "tone-map compression 1.5 is not allowed; allowed: a number from 0 to 1"),
        (lambda: tone_map(latent(), -0.1), "tone-map compression -0.1 is not allowed"),
        (lambda: adain_filter(latent(), latent(), float("nan")), "AdaIN factor nan is not allowed"),
        (lambda: adain_filter(latent(), latent()[:, :64], 1.0), r"does not match the latent's \(1, 128\)"),
    ],
)
def test_bad_settings_are_refused(call, message):
    with pytest.raises(SettingsError, match=message):
        call()
