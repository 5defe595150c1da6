"""LoRA files: every layout read into official module names, told from the keys alone;
the kinds and files this loader refuses, each with a message naming them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.lora import LAYOUTS, LoRAWeights, lora_header, read_lora, save_lora
from ltx_core.lora.files import detect_layout, official_module_name

MODULES = {
    "transformer_blocks.3.attn1.to_q": (16, 16),
    "transformer_blocks.0.attn2.to_out.0": (16, 16),
    "transformer_blocks.12.ff.net.0.proj": (64, 16),
    "patchify_proj": (16, 128),
    "adaln_single.emb.timestep_embedder.linear_1": (16, 256),
    "caption_projection.linear_2": (16, 16),
}


def lora_weights(alpha: float | None = 2.0, dtype=torch.float32, rank: int = 4) -> dict[str, LoRAWeights]:
    g = torch.Generator().manual_seed(0)
    return {
        name: LoRAWeights(
            torch.randn(rank, i, generator=g).to(dtype), torch.randn(o, rank, generator=g).to(dtype), alpha
        )
        for name, (o, i) in MODULES.items()
    }


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("alpha", [None, 2.0])
def test_every_layout_reads_back_under_official_names(tmp_path, layout, alpha):
    written = lora_weights(alpha)
    lora = read_lora(save_lora(tmp_path / "x.safetensors", written, layout))
    assert lora.layout == layout
    assert set(lora.modules) == set(written)
    for name, w in written.items():
        got = lora.modules[name]
        assert torch.equal(got.down, w.down) and torch.equal(got.up, w.up)
        assert got.alpha == alpha and got.scale == (1.0 if alpha is None else alpha / 4)


def test_the_keys_spell_each_layout_as_published(tmp_path):
    keys = {}
    for layout in LAYOUTS:
        path = save_lora(tmp_path / f"{layout}.safetensors", lora_weights(), layout)
        keys[layout] = set(lora_header(path).shapes)
    assert "diffusion_model.transformer_blocks.3.attn1.to_q.lora_A.weight" in keys["comfyui"]
    assert "diffusion_model.transformer_blocks.3.attn1.to_q.alpha" in keys["comfyui"]
    assert "transformer.proj_in.lora_B.weight" in keys["diffusers"]
    assert "transformer.time_embed.emb.timestep_embedder.linear_1.lora_A.weight" in keys["diffusers"]
    assert "lora_unet_transformer_blocks_0_attn2_to_out_0.lora_down.weight" in keys["kohya"]
    assert "lora_unet_adaln_single_emb_timestep_embedder_linear_1.alpha" in keys["kohya"]
    assert "transformer_blocks.12.ff.net.0.proj.lora_B.weight" in keys["official"]


def test_the_layout_comes_from_the_keys_not_the_file_name(tmp_path):
    path = save_lora(tmp_path / "lora_unet_diffusers_transformer.safetensors", lora_weights(), "comfyui")
    assert read_lora(path).layout == "comfyui"
    assert detect_layout(["lora_unet_proj_out.lora_up.weight", "lora_unet_proj_out.lora_down.weight"]) == "kohya"
    assert detect_layout(["something.else"]) is None


@pytest.mark.parametrize(
    ("name", "layout", "official"),
    [
        ("transformer_blocks_3_attn1_to_out_0", "kohya", "transformer_blocks.3.attn1.to_out.0"),
        ("transformer_blocks_27_ff_net_0_proj", "kohya", "transformer_blocks.27.ff.net.0.proj"),
        ("adaln_single_linear", "kohya", "adaln_single.linear"),
        ("proj_in", "kohya", "patchify_proj"),  # diffusers' names with underscores
        ("time_embed_emb_timestep_embedder_linear_2", "kohya", "adaln_single.emb.timestep_embedder.linear_2"),
        ("transformer_blocks_0_norm1", "kohya", "transformer_blocks_0_norm1"),  # unknown: kept, reported later
        ("proj_in", "diffusers", "patchify_proj"),
        ("proj_in", "comfyui", "patchify_proj"),  # diffusers' spelling under another prefix
        ("time_embed.linear", "official", "adaln_single.linear"),
        ("time_embed.linear", "diffusers", "adaln_single.linear"),
        ("transformer_blocks.1.attn1.to_k", "diffusers", "transformer_blocks.1.attn1.to_k"),
    ],
)
def test_module_names_map_to_the_official_ones(name, layout, official):
    assert official_module_name(name, layout) == official


def test_tensors_keep_their_dtype(tmp_path):
    lora = read_lora(save_lora(tmp_path / "x.safetensors", lora_weights(dtype=torch.bfloat16)))
    assert all(w.down.dtype == torch.bfloat16 for w in lora.modules.values())


def test_diffusers_alphas_come_from_its_peft_config(tmp_path):
    weights = lora_weights(alpha=8.0)
    weights["patchify_proj"] = LoRAWeights(weights["patchify_proj"].down, weights["patchify_proj"].up, 2.0)
    path = save_lora(tmp_path / "x.safetensors", weights, "diffusers")
    config = json.loads(lora_header(path).metadata["lora_adapter_metadata"])
    assert config["transformer.lora_alpha"] == 8.0 and config["transformer.alpha_pattern"] == {"proj_in": 2.0}
    lora = read_lora(path)
    assert lora.modules["patchify_proj"].scale == 0.5 and lora.modules["caption_projection.linear_2"].scale == 2.0
    # without a config, diffusers uses alpha = rank
    plain = read_lora(save_lora(tmp_path / "y.safetensors", lora_weights(alpha=None), "diffusers"))
    assert {w.scale for w in plain.modules.values()} == {1.0}


def test_reference_downscale_factor_from_the_metadata(tmp_path):
    plain = read_lora(save_lora(tmp_path / "a.safetensors", lora_weights()))
    assert plain.reference_downscale_factor == 1
    ic = read_lora(save_lora(tmp_path / "b.safetensors", lora_weights(), metadata={"reference_downscale_factor": "2"}))
    assert ic.reference_downscale_factor == 2 and ic.metadata["reference_downscale_factor"] == "2"
    bad = read_lora(
        save_lora(tmp_path / "c.safetensors", lora_weights(), metadata={"reference_downscale_factor": "0.5"})
    )
    with pytest.raises(CheckpointError, match=r"reference_downscale_factor='0.5' is not allowed; allowed: a whole"):
        _ = bad.reference_downscale_factor


def pair(prefix: str, rank: int = 2) -> dict[str, torch.Tensor]:
    return {f"{prefix}.lora_A.weight": torch.ones(rank, 16), f"{prefix}.lora_B.weight": torch.ones(16, rank)}


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ({"diffusion_model.proj_out.dora_scale": torch.ones(16, 1)}, "DoRA"),
        ({"diffusion_model.proj_out.hada_w1_a": torch.ones(16, 2)}, "LoHa"),
        ({"diffusion_model.proj_out.lokr_w1": torch.ones(4, 4)}, "LoKr"),
        ({"diffusion_model.transformer_blocks.0.norm1.diff": torch.ones(16)}, "weight diff"),
        ({"diffusion_model.proj_out.diff_b": torch.ones(16)}, "bias diff"),
    ],
)
def test_unsupported_key_kinds_are_refused_by_name(tmp_path, extra, kind):
    path = tmp_path / "x.safetensors"
    save_file({**pair("diffusion_model.proj_out"), **extra}, str(path))
    with pytest.raises(CheckpointError, match=rf"key kinds this loader does not apply \({kind}: '{next(iter(extra))}'"):
        read_lora(path)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"diffusion_model.proj_out.lora_A.weight": torch.ones(2, 16)}, r"'proj_out' has only .*lora_A.weight"),
        (
            {
                "diffusion_model.proj_out.lora_A.weight": torch.ones(2, 16),
                "diffusion_model.proj_out.lora_B.weight": torch.ones(16, 3),
            },
            r"'proj_out' has down \(2, 16\) and up \(16, 3\)",
        ),
        (
            {**pair("diffusion_model.proj_out"), "diffusion_model.proj_out.alpha": torch.ones(2)},
            r"alpha' has shape \(2,\)",
        ),
        ({"model.diffusion_model.proj_out.weight": torch.ones(16, 16)}, r"holds no LoRA tensors \(keys like 'model"),
        (
            {
                "diffusion_model.proj_out.lora_A.weight": torch.full((2, 16), float("nan")),
                "diffusion_model.proj_out.lora_B.weight": torch.ones(16, 2),
            },
            "hold NaN or infinite values: diffusion_model.proj_out.lora_A.weight",
        ),
    ],
)
def test_broken_lora_files_are_refused_with_what_is_wrong(tmp_path, tensors, message):
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=message):
        read_lora(path)


def test_missing_pickled_and_corrupt_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="LoRA file .*nothing.safetensors' does not exist"):
        read_lora(tmp_path / "nothing.safetensors")
    pickled = tmp_path / "lora.pt"
    pickled.write_bytes(b"PK\x03\x04 zip")
    with pytest.raises(CheckpointError, match="is a pickle file"):
        read_lora(pickled)
    corrupt = tmp_path / "lora.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_lora(corrupt)


def test_keys_of_another_model_part_are_ignored_with_a_warning(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({**pair("transformer.proj_out"), **pair("text_encoder.layer.0")}, str(path))
    with pytest.warns(UserWarning, match=r"2 key\(s\) not of its diffusers LoRA layout, ignored: 'text_encoder"):
        lora = read_lora(path)
    assert list(lora.modules) == ["proj_out"]


def test_save_lora_refuses_an_unknown_layout_and_nothing_to_write(tmp_path):
    with pytest.raises(SettingsError, match="LoRA layout 'peft' is not allowed; allowed: comfyui, diffusers"):
        save_lora(tmp_path / "x.safetensors", lora_weights(), "peft")
    with pytest.raises(SettingsError, match="at least one module"):
        save_lora(tmp_path / "x.safetensors", {})
    tuples = {"proj_out": (torch.ones(2, 16), torch.ones(16, 2), 4.0)}
    assert read_lora(save_lora(tmp_path / "t.safetensors", tuples)).modules["proj_out"].scale == 2.0
