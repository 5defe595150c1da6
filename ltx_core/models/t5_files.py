"""Reading T5 weight files beyond plain tensors: small JSON pieces, and ComfyUI's quantized
single files (plain fp8 `t5xxl_fp8_e4m3fn`, scaled fp8 `t5xxl_fp8_e4m3fn_scaled`, and the
newer `weight_scale` + `comfy_quant` layout), dequantized once at load (value * scale) so
the encoder runs in the requested dtype."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CheckpointError

# Storage dtypes a single file's tensors may have; fp8 values convert exactly to fp16, bf16
# and fp32, so an unscaled fp8 tensor is simply upcast.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
# ComfyUI's two scaled-fp8 layouts name a weight's per-tensor scale differently: the older
# one (marked by a `scaled_fp8` tensor) `<layer>.scale_weight`, the newer `<layer>.weight_scale`
# beside a format in `<layer>.comfy_quant` (JSON bytes) or in the file's metadata entry
# QUANT_METADATA. Dequantized weight = weight.float() * scale.
WEIGHT_SCALES = ("scale_weight", "weight_scale")
# Activation scales serve fp8 matmuls only; the dequantized encoder computes in float.
INPUT_SCALES = ("scale_input", "input_scale")
COMFY_QUANT = "comfy_quant"
QUANT_METADATA = "_quantization_metadata"


def read_json(data: str | bytes, what: str, path: Path) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"text encoder {path}: {what} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"text encoder {path}: {what} is {value!r}, not a JSON object")
    return value


def quant_formats(state: dict[str, torch.Tensor], metadata: dict[str, str], prefix: str, path: Path) -> dict:
    """Layer name -> quantization format the file declares (newer ComfyUI layout), from the
    metadata entry and the per-layer `comfy_quant` tensors, which are popped off `state`."""
    formats = {}
    if QUANT_METADATA in metadata:
        layers = read_json(metadata[QUANT_METADATA], f"metadata {QUANT_METADATA}", path).get("layers", {})
        if not isinstance(layers, dict):
            raise CheckpointError(f"text encoder {path}: metadata {QUANT_METADATA} 'layers' is not an object")
        formats = {name[len(prefix) :]: conf for name, conf in layers.items() if name.startswith(prefix)}
    for key in [key for key in state if key.endswith("." + COMFY_QUANT)]:
        data = bytes(state.pop(key).to(torch.uint8).tolist())
        formats[key[: -len(COMFY_QUANT) - 1]] = read_json(data, f"tensor {key}", path)
    # a declaration without a format leaves the format to the weight's own fp8 dtype
    named = {layer: conf.get("format") if isinstance(conf, dict) else conf for layer, conf in formats.items()}
    return {layer: None if fmt is None else str(fmt) for layer, fmt in named.items()}


def _pop_weight_scales(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    """Layer name -> (key, per-tensor weight scale), popped off `state` with the activation
    scales, in either ComfyUI layout."""
    scales = {}
    for key in list(state):
        layer, _, name = key.rpartition(".")
        if name in WEIGHT_SCALES:
            scales[layer] = (key, state.pop(key))
        elif name in INPUT_SCALES:
            del state[key]
    return scales


def _check_scale(key: str, scale: torch.Tensor, path: Path) -> None:
    if scale.numel() != 1 or not scale.is_floating_point():
        raise CheckpointError(
            f"text encoder {path}: {key} is a {scale.dtype} tensor of shape {tuple(scale.shape)}; "
            "only one float scale per weight (per-tensor fp8) is supported"
        )
    if not torch.isfinite(scale.float()).all():
        raise CheckpointError(f"text encoder {path}: {key} is {scale.item()}, not a finite scale; the file is damaged")


def _dequantize_weight(
    key: str, weight: torch.Tensor, fmt: str | None, scale: tuple[str, torch.Tensor] | None, path: Path
) -> torch.Tensor:
    """One scaled fp8 weight as float32 values (weight * scale)."""
    if fmt is not None and fmt not in FP8_FORMATS:
        raise CheckpointError(
            f"text encoder {path}: tensor {key} ({weight.dtype}) is quantized as {fmt!r}, which is "
            f"not supported; supported: per-tensor {', '.join(FP8_FORMATS)}, or fp16/bf16/fp32 weights"
        )
    if weight.dtype not in FP8_FORMATS.values() or (fmt is not None and weight.dtype != FP8_FORMATS[fmt]):
        raise CheckpointError(
            f"text encoder {path}: tensor {key} is stored as {weight.dtype} but is declared "
            f"{fmt or 'scaled fp8'}; the file is inconsistent"
        )
    if scale is None:
        raise CheckpointError(f"text encoder {path}: tensor {key} is declared {fmt or 'fp8'} but has no weight_scale")
    _check_scale(*scale, path)
    return weight.float() * scale[1].float().reshape(())


def dequantize(state: dict[str, torch.Tensor], formats: dict, dtype_of, path: Path) -> None:
    """Replaces every scaled fp8 weight in `state` by its float values in the dtype it loads
    in (`dtype_of(key)`), and drops the quantization tensors. Skipping the scales would load
    noise."""
    scales = _pop_weight_scales(state)
    # a declared layer without its weight is outside the encoder or reported as missing later
    layers = sorted(layer for layer in formats.keys() | scales.keys() if f"{layer}.weight" in state)
    for layer in layers:
        key = f"{layer}.weight"
        value = _dequantize_weight(key, state[key], formats.get(layer), scales.get(layer), path)
        state[key] = value.to(dtype_of(key))
    for key, value in state.items():
        if value.dtype not in FLOAT_DTYPES and value.dtype not in FP8_FORMATS.values():
            raise CheckpointError(
                f"text encoder {path}: tensor {key} is stored as {value.dtype}, a quantized type "
                f"that is not supported; supported: fp32, fp16, bf16, {', '.join(FP8_FORMATS)} "
                "(plain or with per-tensor scales)"
            )
