"""Writing the official single file: weights, configs and version round-trip through
`checkpoint.load_checkpoint`; a wrong version label writes nothing."""

from __future__ import annotations

import json

import pytest
import torch

from ltx_core.checkpoint import writing as cw
from ltx_core.checkpoint.loading import load_checkpoint
from ltx_core.errors import CheckpointError

from .fixtures_checkpoints import header_of, random_models, release_configs


def test_save_single_file_round_trips_weights_configs_and_version(tmp_path):
    transformer, vae = random_models(release_configs("0.9.1"), seed=5)
    path = cw.save_single_file(tmp_path / "out.safetensors", transformer, vae, version="0.9.1")
    loaded = load_checkpoint(path)
    assert loaded.version == "0.9.1" and loaded.configs.vae == vae.cfg and loaded.configs.transformer == transformer.cfg
    for name, tensor in vae.state_dict().items():
        assert torch.equal(loaded.vae.state_dict()[name], tensor), name
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def test_saved_metadata_has_the_published_shape(tmp_path):
    transformer, vae = random_models(release_configs("0.9.5"))
    path = cw.save_single_file(tmp_path / "out.safetensors", transformer, vae)
    config = json.loads(header_of(path)[1]["config"])
    assert config["transformer"]["_class_name"] == "Transformer3DModel"
    assert config["vae"]["_class_name"] == "CausalVideoAutoencoder"
    assert config["vae"]["encoder_blocks"][1] == ["compress_space_res", {"multiplier": 2}]
    assert config["scheduler"]["_class_name"] == "RectifiedFlowScheduler"


def test_save_single_file_refuses_a_wrong_version_label_and_writes_nothing(tmp_path):
    transformer, vae = random_models(release_configs("0.9.0"))
    with pytest.raises(CheckpointError, match="as LTX-Video 0.9.5: its tensors are 0.9.0"):
        cw.save_single_file(tmp_path / "out.safetensors", transformer, vae, version="0.9.5")
    assert list(tmp_path.iterdir()) == []


def test_save_single_file_casts_to_the_asked_dtype(tmp_path):
    transformer, vae = random_models(release_configs("0.9.5"))
    path = cw.save_single_file(tmp_path / "out.safetensors", transformer, vae, dtype=torch.bfloat16)
    tensors, _ = header_of(path)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
