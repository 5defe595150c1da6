"""The shipped demo model's file (`ltx_core.training.demo_model`): the official layout, and
the package limits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.training.demo_model import (
    DEMO_CHECKPOINT,
    DEMO_SCHEDULER,
    DEMO_TRANSFORMER,
    DEMO_VAE,
    save_demo_checkpoint,
)


def test_the_exported_file_has_the_official_layout_and_metadata(tmp_path):
    """Every loader reads the shipped file like the real thing: prefixes and `config` JSON."""
    torch.manual_seed(0)
    path = save_demo_checkpoint(
        LTXVTransformer(DEMO_TRANSFORMER), CausalVideoVAE(DEMO_VAE), tmp_path / "tiny.safetensors"
    )
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        config = json.loads(f.metadata()["config"])
        assert f.get_tensor("model.diffusion_model.patchify_proj.weight").dtype == torch.bfloat16
    assert "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight" in keys
    assert config["transformer"]["num_layers"] == DEMO_TRANSFORMER.num_layers
    assert config["vae"]["timestep_conditioning"] is True
    assert path.stat().st_size < 16 * 2**20


def test_the_demo_files_carry_the_demo_schedule_which_loading_reads(tmp_path):
    """The exported file and the shipped one name the demo's schedule in their metadata, and
    loading hands it on (the CLI samples with a checkpoint's own schedule)."""
    from ltx_core.checkpoint.loading import inspect_checkpoint

    path = save_demo_checkpoint(
        LTXVTransformer(DEMO_TRANSFORMER), CausalVideoVAE(DEMO_VAE), tmp_path / "tiny.safetensors"
    )
    for file in (path, DEMO_CHECKPOINT):
        info, *_ = inspect_checkpoint(file, "fp32", "cpu")
        assert info.configs.scheduler == DEMO_SCHEDULER, file


SHIPPED = ["ltxv-tiny.safetensors", "t5-tiny/model.safetensors", "t5-tiny/spiece.model"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_assets_stay_under_the_package_limits(name):
    from ltx_core.preflight import SHIPPED_ASSETS as ASSETS

    path = ASSETS / name
    if not path.exists():
        pytest.skip(f"{name} not shipped in this checkout")
    assert path.stat().st_size < 16 * 2**20
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 30_000_000
