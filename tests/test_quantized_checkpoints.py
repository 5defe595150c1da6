"""Quantized checkpoints (Lightricks' FP8, ComfyUI's scaled FP8, GGUF) load with their
weights kept quantized and compute exactly what a float model of the dequantized weights
computes; format detection reads tensors and metadata, never names; bad files are refused
naming what is wrong.

The files are tiny ones written here, 256 wide so that the GGUF K-quants fit their rows."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_core.checkpoint.gguf_quants import dequantize
from ltx_core.checkpoint.keymaps import TRANSFORMER_PREFIX, VAE_PREFIX
from ltx_core.checkpoint.loading import inspect_checkpoint, load_checkpoint, load_transformer, load_vae
from ltx_core.checkpoint.quantized_writing import (
    SCALED_FP8_MARKER,
    fp8_tensors,
    gguf_types,
    transformer_only,
    write_gguf_checkpoint,
)
from ltx_core.checkpoint.versions import ModelConfigs
from ltx_core.checkpoint.writing import config_metadata, official_tensors
from ltx_core.errors import CheckpointError
from ltx_core.models import configs as C
from ltx_core.models.quantized_linear import QuantizedLinear
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.transformer import LTXVTransformer
from tests.fixtures_checkpoints import random_models

CONFIGS = ModelConfigs(C.TINY_TRANSFORMER_WIDE, C.TINY_VAE_0_9_5)
METADATA = {"config": json.dumps(config_metadata(CONFIGS)), "format": "pt"}
# A Q4_K_M-like file: the fused q/k/v of one layer from parts of two types.
MIXED = {"attn1.to_v.weight": "Q6_K", "attn2.to_v.weight": "Q6_K"}
GGUF_CASES = {"Q8_0": None, "Q4_K": None, "Q6_K": None, "Q5_0": None, "Q4_K_M": MIXED}


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    return official_tensors(*random_models(CONFIGS, seed=3))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tensors) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quantized")
    paths = {"plain": folder / "plain.safetensors"}
    save_file(tensors, str(paths["plain"]), metadata=METADATA)
    for fmt in ("fp8", "scaled_fp8"):
        paths[fmt] = folder / f"{fmt}.safetensors"
        save_file(fp8_tensors(tensors, scaled=fmt == "scaled_fp8"), str(paths[fmt]), metadata=METADATA)
    weights = transformer_only(tensors)
    for name, mixed in GGUF_CASES.items():
        qtype = name.removesuffix("_M")
        paths[name] = write_gguf_checkpoint(
            folder / f"{name}.gguf", weights, gguf_types(weights, qtype, mixed), CONFIGS
        )
    return paths


def stored(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        return {k: file.get_tensor(k) for k in file.keys()}


def reference_state(path: Path) -> dict[str, torch.Tensor]:
    """The transformer's fp32 state dict a float model gets from the file, dequantized here
    independently of the loader: FP8 upcast (times its scale), GGUF by `gguf_quants`."""
    if path.suffix == ".gguf":
        from ltx_core.checkpoint.gguf_file import GGUFFile

        file = GGUFFile(path)
        return {n: dequantize(file.raw(n), file.qtype(n), file.shape(n), torch.float32) for n in file.names}
    raw = stored(path)
    state = {}
    for key, tensor in raw.items():
        name = key.removeprefix(TRANSFORMER_PREFIX)
        if key == SCALED_FP8_MARKER or not key.startswith(TRANSFORMER_PREFIX):
            continue
        if name.endswith((".scale_weight", ".scale_input")):
            continue
        weight = tensor.float()
        scale_key = key.removesuffix(".weight") + ".scale_weight"
        if tensor.dtype == torch.float8_e4m3fn and scale_key in raw:
            weight = weight * raw[scale_key].float()
        state[name] = weight
    return state


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(2, 16, C.TINY_TRANSFORMER_WIDE.in_channels, generator=g)
    sigma = torch.rand(2, 16, generator=g)
    text = torch.randn(2, 8, C.TINY_TRANSFORMER_WIDE.caption_channels, generator=g)
    mask = torch.ones(2, 8)
    mask[-1, 5:] = 0
    coords = fractional_coords(pixel_coords(latent_coords(1, 4, 4, 2), causal_fix=True), 25)
    return latent, sigma, text, mask, coords


def tensor_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def quantized_layers(model) -> dict[str, QuantizedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}


# ---------------------------------------------------------------- exact dequantization


@pytest.mark.parametrize("fmt", ["fp8", "scaled_fp8"])
def test_fp8_weights_dequantize_to_the_stored_values_upcast_times_their_scales_exactly(files, fmt):
    model, info = load_transformer(files[fmt])
    assert info.quantization == fmt
    raw = stored(files[fmt])
    layer = quantized_layers(model)["transformer_blocks.1.attn1.to_qkv"]
    parts = []
    for name in ("to_q", "to_k", "to_v"):
        key = f"{TRANSFORMER_PREFIX}transformer_blocks.1.attn1.{name}"
        scale = raw[f"{key}.scale_weight"].float() if fmt == "scaled_fp8" else 1.0
        parts.append(raw[f"{key}.weight"].float() * scale)
    assert torch.equal(layer.dequantized_weight(), torch.cat(parts))
    ff = quantized_layers(model)["transformer_blocks.0.ff.net.2"]
    key = f"{TRANSFORMER_PREFIX}transformer_blocks.0.ff.net.2"
    scale = raw[f"{key}.scale_weight"].float() if fmt == "scaled_fp8" else 1.0
    assert torch.equal(ff.dequantized_weight(), raw[f"{key}.weight"].float() * scale)


def test_a_scaled_file_read_without_its_scales_would_be_far_off(files):
    """The bug class the scales guard against: the stored values alone are not the weights."""
    raw = stored(files["scaled_fp8"])
    key = f"{TRANSFORMER_PREFIX}transformer_blocks.0.attn1.to_q"
    upcast, scale = raw[f"{key}.weight"].float(), raw[f"{key}.scale_weight"].float()
    layer = quantized_layers(load_transformer(files["scaled_fp8"])[0])["transformer_blocks.0.attn1.to_qkv"]
    assert scale < 0.01 and not torch.allclose(layer.dequantized_weight()[: upcast.shape[0]], upcast)


@pytest.mark.parametrize("fmt", ["fp8", "scaled_fp8", *GGUF_CASES])
def test_the_loaded_model_computes_what_a_float_model_of_the_dequantized_weights_does(files, fmt):
    model, _ = load_transformer(files[fmt])
    assert quantized_layers(model), "no layer stayed quantized"
    reference = LTXVTransformer(C.TINY_TRANSFORMER_WIDE).eval()
    reference.load_state_dict(reference_state(files[fmt]), strict=True)
    with torch.no_grad():
        ours, expected = model(*inputs()), reference(*inputs())
    assert (ours - expected).abs().max() <= 1e-5


def test_mixed_gguf_types_make_one_fused_layer_of_parts_of_both_types(files):
    model, _ = load_transformer(files["Q4_K_M"])
    layers = quantized_layers(model)
    assert layers["transformer_blocks.0.attn1.to_qkv"].kinds == ["gguf:Q4_K", "gguf:Q4_K", "gguf:Q6_K"]
    assert layers["transformer_blocks.0.attn2.to_kv"].kinds == ["gguf:Q4_K", "gguf:Q6_K"]


@pytest.mark.parametrize("fmt,largest", [("fp8", 0.5), ("scaled_fp8", 0.5), ("Q8_0", 0.4), ("Q4_K", 0.3)])
def test_quantized_layers_hold_quantized_storage(files, fmt, largest):
    """Parameters and buffers of the loaded model, against the same model in fp32."""
    plain, _ = load_transformer(files["plain"])
    model, _ = load_transformer(files[fmt])
    assert tensor_bytes(model) < largest * tensor_bytes(plain)
    for layer in quantized_layers(model).values():
        assert all(part.data.dtype == torch.uint8 for part in layer.parts)


def test_other_tensors_load_in_the_requested_dtype_and_the_fp8_file_s_vae_loads_normally(files):
    transformer, vae, info = load_checkpoint(files["fp8"], dtype="bf16")
    assert info.quantization == "fp8"
    assert transformer.patchify_proj.weight.dtype == torch.bfloat16
    assert transformer.transformer_blocks[0].attn1.to_qkv.bias.dtype == torch.bfloat16
    plain_vae, _ = load_vae(files["plain"], dtype="bf16")
    for (name, ours), (_, theirs) in zip(vae.state_dict().items(), plain_vae.state_dict().items()):
        assert torch.equal(ours, theirs), name


def test_bf16_forward_runs_on_dequantized_weights_of_its_dtype(files):
    model, _ = load_transformer(files["scaled_fp8"], dtype="bf16")
    latent, sigma, text, mask, coords = inputs()
    with torch.no_grad():
        out = model(latent.bfloat16(), sigma, text.bfloat16(), mask, coords)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# ---------------------------------------------------------------- detection


def test_format_detection_reads_the_tensors_not_the_file_name(files, tmp_path):
    misnamed = {
        "fp8": tmp_path / "ltxv-2b-bf16.safetensors",
        "scaled_fp8": tmp_path / "model-fp8.safetensors",
        "plain": tmp_path / "ltxv-13b-fp8-scaled.safetensors",
        "Q8_0": tmp_path / "ltxv-2b.safetensors",
    }
    for fmt, path in misnamed.items():
        shutil.copy(files[fmt], path)
        info = inspect_checkpoint(path)[0]
        assert info.quantization == ("gguf" if fmt == "Q8_0" else fmt), fmt


def test_gguf_info_takes_its_config_from_metadata_and_has_only_the_transformer(files):
    info, sources, _, _ = inspect_checkpoint(files["Q4_K"])
    assert (info.layout, info.version, info.config_source) == ("gguf", "0.9.5", "metadata")
    assert info.configs.transformer == C.TINY_TRANSFORMER_WIDE and set(sources) == {"transformer"}


def test_a_gguf_without_a_config_gets_the_stock_one_of_its_version(files, tensors, tmp_path):
    weights = transformer_only(tensors)
    path = write_gguf_checkpoint(tmp_path / "bare.gguf", weights, gguf_types(weights, "Q8_0"))
    with pytest.warns(UserWarning, match="stock 0.9.5"):
        info = inspect_checkpoint(path)[0]
    assert info.config_source == "stock" and info.configs.transformer == C.LTXV_2B_0_9_5
    with warnings.catch_warnings(), pytest.raises(CheckpointError, match="stock 0.9.5"):
        warnings.simplefilter("ignore")
        load_transformer(path)


# ---------------------------------------------------------------- refusals


def rewrite(path: Path, tensors: dict, metadata: dict | None = METADATA) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_a_scaled_file_missing_a_scale_is_refused_naming_the_weight(files, tmp_path):
    broken = stored(files["scaled_fp8"])
    del broken[f"{TRANSFORMER_PREFIX}transformer_blocks.1.ff.net.2.scale_weight"]
    path = rewrite(tmp_path / "missing_scale.safetensors", broken)
    with pytest.raises(CheckpointError, match=r"transformer_blocks\.1\.ff\.net\.2\.weight.*scale_weight"):
        load_transformer(path)


def test_a_gguf_file_asked_for_the_vae_says_where_to_get_it(files):
    for load in (load_vae, load_checkpoint):
        with pytest.raises(CheckpointError, match="holds only the transformer.*official single"):
            load(files["Q8_0"])


@pytest.mark.parametrize(
    "key,message",
    [
        (f"{TRANSFORMER_PREFIX}transformer_blocks.0.scale_shift_table", "only linear layers"),
        (f"{TRANSFORMER_PREFIX}transformer_blocks.0.attn1.q_norm.weight", "only linear layers"),
        (f"{VAE_PREFIX}decoder.conv_in.conv.weight", "only the transformer's linear weights"),
    ],
)
def test_fp8_in_a_tensor_that_is_no_linear_weight_is_refused(files, tmp_path, key, message):
    broken = stored(files["fp8"])
    broken[key] = broken[key].to(torch.float8_e4m3fn)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(rewrite(tmp_path / "odd.safetensors", broken))
    assert key in str(error.value)


def test_a_scale_of_a_weight_that_is_not_fp8_is_refused(files, tmp_path):
    broken = stored(files["scaled_fp8"])
    broken[f"{TRANSFORMER_PREFIX}proj_out.scale_weight"] = torch.tensor(0.5)
    with pytest.raises(CheckpointError, match=r"proj_out\.scale_weight.*not stored as FP8"):
        load_transformer(rewrite(tmp_path / "orphan.safetensors", broken))


def test_a_nan_byte_in_an_fp8_weight_is_refused_naming_it(files, tmp_path):
    broken = stored(files["fp8"])
    key = f"{TRANSFORMER_PREFIX}transformer_blocks.1.attn2.to_k.weight"
    raw = broken[key].view(torch.uint8).clone()
    raw[3, 5] = 0x7F  # e4m3fn's NaN
    broken[key] = raw.view(torch.float8_e4m3fn)
    with pytest.raises(CheckpointError, match=r"NaN.*transformer_blocks\.1\.attn2\.to_k\.weight"):
        load_transformer(rewrite(tmp_path / "nan.safetensors", broken))


def test_a_nan_block_scale_in_a_gguf_weight_is_refused(files, tmp_path):
    import gguf

    data = bytearray(files["Q8_0"].read_bytes())
    name = "transformer_blocks.0.ff.net.0.proj.weight"
    offset = next(int(t.data_offset) for t in gguf.GGUFReader(files["Q8_0"]).tensors if t.name == name)
    data[offset : offset + 2] = torch.tensor([float("nan")], dtype=torch.float16).view(torch.uint8).numpy().tobytes()
    path = tmp_path / "nan.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"NaN.*ff\.net\.0\.proj\.weight"):
        load_transformer(path)


def test_truncated_quantized_files_are_refused_naming_the_file(files, tmp_path):
    for fmt in ("scaled_fp8", "Q4_K"):
        data = files[fmt].read_bytes()
        path = tmp_path / f"truncated{files[fmt].suffix}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="truncated|corrupt") as error:
            load_transformer(path)
        assert str(path) in str(error.value)


def test_a_scaled_fp8_file_of_another_model_is_refused_saying_what_it_is(tmp_path):
    flux = {
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": torch.zeros(48, 16).to(torch.float8_e4m3fn),
        "model.diffusion_model.double_blocks.0.img_attn.qkv.scale_weight": torch.tensor(1.0),
        "model.diffusion_model.scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn),
    }
    with pytest.raises(CheckpointError, match="Flux"):
        inspect_checkpoint(rewrite(tmp_path / "flux.safetensors", flux, None))


def test_a_gguf_file_of_another_architecture_is_refused(tmp_path):
    path = write_gguf_checkpoint(
        tmp_path / "flux.gguf", {"img_in.weight": torch.zeros(32, 32)}, {"img_in.weight": "F16"}
    )
    data = path.read_bytes().replace(b"ltxv", b"flux", 1)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="'flux'.*not LTX-Video"):
        load_transformer(path)


def test_comfyui_mixed_quantization_metadata_is_refused_with_what_is_allowed(files, tmp_path):
    path = rewrite(tmp_path / "mixed.safetensors", stored(files["fp8"]), {**METADATA, "_quantization_metadata": "{}"})
    with pytest.raises(CheckpointError, match="per-layer quantization metadata.*allowed"):
        inspect_checkpoint(path)


# ---------------------------------------------------------------- with the speed levers


@pytest.mark.parametrize("fmt", ["scaled_fp8", "Q4_K_M"])
def test_quantized_layers_trace_whole_in_the_compiled_regions(files, fmt):
    """Regional compile traces each block as one graph (`fullgraph`): the per-call
    dequantization must not break it ('eager' backend: traced, no code generated)."""
    from ltx_core.speed.optimize import Speed, optimize_transformer

    model, _ = load_transformer(files[fmt])
    with torch.no_grad():
        expected = model(*inputs())
    runner = optimize_transformer(model, Speed(compile=True, compile_backend="eager"))
    assert (runner(*inputs()) - expected).abs().max() <= 1e-5


def test_a_gguf_with_prefixed_names_or_only_float_tensors_loads(files, tensors, tmp_path):
    weights = {f"{TRANSFORMER_PREFIX}{k}": v for k, v in transformer_only(tensors).items()}
    path = write_gguf_checkpoint(tmp_path / "prefixed.gguf", weights, gguf_types(weights, "F16"), CONFIGS)
    model, info = load_transformer(path)
    assert info.quantization == "gguf" and not quantized_layers(model)
    half = {k: v.half().float() for k, v in transformer_only(tensors).items()}
    assert torch.equal(model.transformer_blocks[0].ff.net[2].weight, half["transformer_blocks.0.ff.net.2.weight"])


@pytest.mark.parametrize("fmt", ["plain", "fp8", "Q4_K_M"])
def test_loaded_bytes_from_the_headers_are_what_the_loaded_model_holds(files, fmt):
    from ltx_core.checkpoint.quantized import loaded_bytes

    info, sources, _, _ = inspect_checkpoint(files[fmt])
    model, _ = load_transformer(files[fmt], dtype="bf16")
    assert loaded_bytes(sources["transformer"], 2) == tensor_bytes(model)


def test_a_lora_goes_beside_quantized_layers_and_fp8_matmuls_leave_its_branch_alone(files):
    from ltx_core.lora import LoRABranch, LoRAFile, LoRAWeights, apply_loras
    from ltx_core.speed.fp8 import convert_to_fp8, fp8_supported

    model, _ = load_transformer(files["scaled_fp8"])
    with torch.no_grad():
        before = model(*inputs())
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(2, 256, generator=g) * 0.1, torch.randn(256, 2, generator=g) * 0.1
    apply_loras(model, [(LoRAFile({"transformer_blocks.0.attn1.to_k": LoRAWeights(down, up, None)}, "'l'"), 1.0)])
    branch = model.transformer_blocks[0].attn1.to_qkv
    assert isinstance(branch, LoRABranch) and isinstance(branch.base, QuantizedLinear)
    with torch.no_grad():
        assert not torch.allclose(model(*inputs()), before)
    if fp8_supported("cpu"):
        swapped = convert_to_fp8(model)
        assert "transformer_blocks.1.attn1.to_qkv" in swapped and "transformer_blocks.0.attn1.to_qkv" not in swapped


def test_scales_without_the_marker_are_applied_too(files, tmp_path):
    unmarked = stored(files["scaled_fp8"])
    del unmarked[SCALED_FP8_MARKER]
    path = rewrite(tmp_path / "unmarked.safetensors", unmarked)
    model, info = load_transformer(path)
    marked, _ = load_transformer(files["scaled_fp8"])
    assert info.quantization == "scaled_fp8"
    with torch.no_grad():
        assert torch.equal(model(*inputs()), marked(*inputs()))


def test_a_scale_of_an_odd_shape_is_refused_with_what_is_allowed(files, tmp_path):
    broken = stored(files["scaled_fp8"])
    broken[f"{TRANSFORMER_PREFIX}transformer_blocks.0.ff.net.2.scale_weight"] = torch.ones(3)
    with pytest.raises(CheckpointError, match=r"ff\.net\.2\.scale_weight' has shape \[3\]; allowed: one value"):
        load_transformer(rewrite(tmp_path / "odd_scale.safetensors", broken))
