"""The LoRA loader and IC-LoRA control nodes, in-process with the real ComfyUI modules (as
tests/test_nodes.py): a LoRA changes the sampler's result exactly as the core's
`apply_loras` does, the base transformer is left as it was after each run, strengths can
change between runs, and the control node reads its grid from the IC-LoRA."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from .test_nodes import PACK_NAME, pack, tiny_models  # noqa: F401 (fixtures)

TEXT = [
    [
        torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1)),
        {"attention_mask": torch.ones(1, 8, dtype=torch.bool)},
    ]
]
SAMPLER = dict(
    seed=3, steps=2, cfg=3.0, frame_rate=25.0, dynamic_shift=True, base_shift=0.95, max_shift=2.05, terminal=0.1
)
MODULES = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2", "transformer_blocks.0.attn2.to_v")


@pytest.fixture(scope="module")
def lora_nodes(pack):
    return importlib.import_module(f"{PACK_NAME}.nodes.lora")


@pytest.fixture(scope="module")
def core_lora(pack):
    return importlib.import_module(f"{PACK_NAME}.ltx_core.lora")


@pytest.fixture
def loras_folder(tmp_path, monkeypatch, pack, core_lora, tiny_models):
    """Two LoRAs of the tiny transformer's shapes in a `loras` model folder: a plain one and
    an IC-LoRA whose metadata asks for a control grid twice as coarse."""
    import folder_paths

    transformer, _ = tiny_models
    layers = sys.modules[f"{PACK_NAME}.nodes.memory"].core_model(transformer)
    g = torch.Generator().manual_seed(4)
    weights = {}
    for name in MODULES:
        layer_name, rows = layers.checkpoint_linear(name)
        inputs = layers.linear_layers()[layer_name].in_features
        weights[name] = core_lora.LoRAWeights(
            torch.randn(2, inputs, generator=g) * 0.3, torch.randn(rows.stop - rows.start, 2, generator=g) * 0.3
        )
    core_lora.save_lora(tmp_path / "style.safetensors", weights)
    core_lora.save_lora(tmp_path / "ic.safetensors", weights, metadata={"reference_downscale_factor": "2"})
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))
    folder_paths.filename_list_cache.clear() if hasattr(folder_paths, "filename_list_cache") else None
    return tmp_path


@pytest.fixture
def empty(pack):
    (latent,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreEmptyLatentVideo"]().generate(
        width=128, height=64, frames=9, batch_size=1
    )
    return latent


def sample(pack, model, latent):
    (result,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreSampler"]().sample(model, TEXT, TEXT, latent, **SAMPLER)
    return result["samples"]


def test_the_lora_loader_lists_the_folder_and_the_sampler_applies_it_as_the_core_does(
    pack, lora_nodes, core_lora, tiny_models, loras_folder, empty
):
    transformer, _ = tiny_models
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    assert {"style.safetensors", "ic.safetensors"} <= set(lora_nodes.lora_names())
    assert lora_nodes.LTXVCoreLoraLoader.VALIDATE_INPUTS("style.safetensors") is True
    assert "not in models/loras" in lora_nodes.LTXVCoreLoraLoader.VALIDATE_INPUTS("missing.safetensors")
    base_state = {k: v.clone() for k, v in memory.core_model(transformer).state_dict().items()}
    plain = sample(pack, transformer, empty)

    (with_lora,) = lora_nodes.LTXVCoreLoraLoader().load(transformer, "style.safetensors", 0.8)
    assert lora_nodes.loras_of(transformer) == (), "the input model keeps its own (empty) stack"
    styled = sample(pack, with_lora, empty)
    after = memory.core_model(transformer).state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_state.items()), "the base weights are back after the run"

    applied = core_lora.apply_loras(
        memory.core_model(transformer), [(core_lora.read_lora(loras_folder / "style.safetensors"), 0.8)]
    )
    by_hand = sample(pack, transformer, empty)
    applied.remove()
    assert torch.equal(styled, by_hand) and not torch.equal(styled, plain)
    assert torch.equal(sample(pack, transformer, empty), plain)

    (stacked,) = lora_nodes.LTXVCoreLoraLoader().load(with_lora, "style.safetensors", -0.8)  # cancels out
    assert (sample(pack, stacked, empty) - plain).abs().max() < 1e-5


def test_a_file_that_is_no_lora_is_refused_by_the_loader_naming_it(pack, lora_nodes, tiny_models, loras_folder):
    from safetensors.torch import save_file

    transformer, _ = tiny_models
    save_file({"model.diffusion_model.proj_out.weight": torch.zeros(2, 2)}, str(loras_folder / "ckpt.safetensors"))
    with pytest.raises(Exception, match="ckpt.safetensors"):
        lora_nodes.LTXVCoreLoraLoader().load(transformer, "ckpt.safetensors", 1.0)


def test_the_control_node_takes_the_ic_loras_grid_and_the_sampler_uses_its_tokens(
    pack, lora_nodes, tiny_models, loras_folder, empty
):
    transformer, vae = tiny_models
    (ic_model,) = lora_nodes.LTXVCoreLoraLoader().load(transformer, "ic.safetensors", 1.0)
    control = torch.rand(9, 64, 128, 3, generator=torch.Generator().manual_seed(6))
    (latent,) = lora_nodes.LTXVCoreAddControl().add(ic_model, vae, empty, control, 1.0, 0)
    [tokens] = latent["ltxv_core_keyframes"]
    assert tokens.spatial_scale == 2 and tuple(tokens.samples.shape[2:]) == (2, 1, 2)
    (same_grid,) = lora_nodes.LTXVCoreAddControl().add(transformer, vae, empty, control, 1.0, 1)
    assert same_grid["ltxv_core_keyframes"][0].spatial_scale == 1
    assert not torch.equal(sample(pack, ic_model, latent), sample(pack, ic_model, empty))
    with pytest.raises(ValueError, match="control video frame count"):
        lora_nodes.LTXVCoreAddControl().add(ic_model, vae, empty, control[:6], 1.0, 0)
