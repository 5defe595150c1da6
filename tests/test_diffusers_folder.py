"""The diffusers folder: sharded weights, its text encoder and tokenizer, the published
configs at real size, and bad folders (BAD_INPUTS 9, 12) with their messages."""

from __future__ import annotations

import pytest
import torch

from ltx_core.checkpoint import diffusers_folder as df
from ltx_core.checkpoint.loading import load_checkpoint
from ltx_core.checkpoint.versions import STOCK_CONFIGS
from ltx_core.errors import CheckpointError

from .fixtures_checkpoints import random_models, release_configs, write_diffusers_folder

FAMILIES = ("0.9.0", "0.9.1", "0.9.5")  # the three VAE layouts; 0.9.7 adds only depth


# ---------------------------------------------------------------- loading


def test_sharded_diffusers_transformer_loads_through_its_index(tmp_path):
    folder = write_diffusers_folder(tmp_path / "diffusers", "0.9.5", seed=2, max_shard_size="20KB")
    assert len(list((folder / "transformer").glob("*.safetensors"))) > 1
    loaded = load_checkpoint(folder)
    expected, _ = random_models(release_configs("0.9.5"), seed=2)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(loaded.transformer.state_dict()[name], tensor), name


def test_diffusers_folder_reports_its_text_encoder_and_tokenizer(tmp_path, tiny_t5_folder):
    folder = write_diffusers_folder(tmp_path / "diffusers", "0.9.1", text_encoder=tiny_t5_folder)
    info = load_checkpoint(folder).info
    assert info.text_encoder == folder / "text_encoder" and info.tokenizer == folder / "tokenizer"


# ---------------------------------------------------------------- bad folders


def test_folder_without_the_diffusers_sub_folders_names_the_missing_ones(tmp_path):
    (tmp_path / "model" / "vae").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"is not a diffusers LTX-Video folder: it lacks transformer/ \(expected"):
        load_checkpoint(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="it lacks transformer/, vae/"):
        load_checkpoint(tmp_path / "empty")


def test_diffusers_folder_holding_only_pickles_is_refused(tmp_path):
    for part in ("transformer", "vae"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text("{}")
        (tmp_path / part / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(CheckpointError, match=r"only pickles \(diffusion_pytorch_model.bin\), which are refused"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------- configs at real size

# The published diffusers configs (diffusers' scripts/convert_ltx_to_diffusers.py
# get_vae_config / get_transformer_config), reduced to the fields the translation reads.
PUBLISHED_DIFFUSERS_VAE = {
    "0.9.0": dict(
        block_out_channels=(128, 256, 512, 512),
        decoder_block_out_channels=(128, 256, 512, 512),
        layers_per_block=(4, 3, 3, 3, 4),
        decoder_layers_per_block=(4, 3, 3, 3, 4),
        decoder_inject_noise=(False,) * 5,
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=4,
        latent_channels=128,
        in_channels=3,
        out_channels=3,
    ),
    "0.9.1": dict(
        block_out_channels=(128, 256, 512, 512),
        decoder_block_out_channels=(256, 512, 1024),
        layers_per_block=(4, 3, 3, 3, 4),
        decoder_layers_per_block=(5, 6, 7, 8),
        decoder_inject_noise=(True, True, True, False),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
        patch_size=4,
        latent_channels=128,
        in_channels=3,
        out_channels=3,
    ),
    "0.9.5": dict(
        block_out_channels=(128, 256, 512, 1024, 2048),
        decoder_block_out_channels=(256, 512, 1024),
        layers_per_block=(4, 6, 6, 2, 2),
        decoder_layers_per_block=(5, 5, 5, 5),
        decoder_inject_noise=(False,) * 4,
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
        patch_size=4,
        latent_channels=128,
        in_channels=3,
        out_channels=3,
    ),
}

# fields both 2B (0.9.5) and 13B (0.9.7) transformer configs share, as published
_TRANSFORMER_COMMON = dict(
    caption_channels=4096,
    in_channels=128,
    out_channels=128,
    activation_fn="gelu-approximate",
    qk_norm="rms_norm_across_heads",
    norm_eps=1e-6,
    norm_elementwise_affine=False,
)
PUBLISHED_DIFFUSERS_TRANSFORMER = {
    "0.9.5": dict(
        num_layers=28, num_attention_heads=32, attention_head_dim=64, cross_attention_dim=2048, **_TRANSFORMER_COMMON
    ),
    "0.9.7": dict(
        num_layers=48, num_attention_heads=32, attention_head_dim=128, cross_attention_dim=4096, **_TRANSFORMER_COMMON
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_published_diffusers_vae_configs_translate_to_the_stock_configs(tmp_path, family):
    """The real sizes, which no tiny round trip exercises: the width arithmetic and the
    per-block layer counts must give exactly the published official config."""
    translated = df.vae_config_from_diffusers(PUBLISHED_DIFFUSERS_VAE[family], family, tmp_path)
    assert translated == STOCK_CONFIGS[family].vae


@pytest.mark.parametrize("version", ["0.9.5", "0.9.7"])
def test_published_diffusers_transformer_configs_translate_to_the_stock_configs(tmp_path, version):
    stock = STOCK_CONFIGS[version].transformer
    translated = df.transformer_config_from_diffusers(PUBLISHED_DIFFUSERS_TRANSFORMER[version], stock, tmp_path)
    assert translated == stock


def test_a_diffusers_transformer_with_another_activation_is_refused(tmp_path):
    config = {**PUBLISHED_DIFFUSERS_TRANSFORMER["0.9.5"], "activation_fn": "geglu"}
    with pytest.raises(CheckpointError, match="activation_fn 'geglu' is not supported; allowed: 'gelu-approximate'"):
        df.transformer_config_from_diffusers(config, STOCK_CONFIGS["0.9.5"].transformer, tmp_path)


def test_a_diffusers_vae_config_of_another_layout_is_refused(tmp_path):
    config = {**PUBLISHED_DIFFUSERS_VAE["0.9.1"], "layers_per_block": (4, 3, 3)}
    with pytest.raises(CheckpointError, match=r"does not describe an LTX-Video 0.9.1 VAE: 3 layer counts for 5"):
        df.vae_config_from_diffusers(config, "0.9.1", tmp_path)
