"""Quantized weights as the files people download store them, kept quantized in memory.

Formats, told apart by a file's tensors and metadata, never by its name (`file_format`):
  - "plain": every tensor in a float dtype;
  - "fp8": Lightricks' FP8 releases (`ltxv-*-fp8.safetensors`): the official layout with
    the blocks' attention and feed-forward weights stored as float8_e4m3fn and no scale.
    Lightricks' inference loads them as float8_e4m3fn weights for its Q8 kernels and
    ComfyUI gives an FP8 weight without a scale the scale 1: a weight is the stored value
    upcast;
  - "scaled_fp8": ComfyUI's scaled FP8: a `scaled_fp8` marker tensor (or, without it,
    `scale_weight` tensors) and, per FP8 weight `X.weight`, a `X.scale_weight` (and an
    optional `X.scale_input`, which only FP8 activations use): the weight is the stored
    value upcast times its scale. Reading such a file without its scales gives noise, so
    a missing scale is refused;
  - "gguf": a GGUF file (ComfyUI-GGUF), told by its magic bytes (`gguf_file.is_gguf`).

`QuantizedWeight` holds one stored weight and dequantizes it exactly on demand
(`models.quantized_linear.QuantizedLinear` does so per call); `QuantizedSource` is a
model's tensors whose named weights load as `QuantizedWeight` instead of float tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from . import gguf_quants  # torch only: the `gguf` package is imported on first use
from .tensors import TensorSource

# safetensors dtype names -> our kind names (torch's dtype names)
FP8_KINDS = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
FP8_DTYPES = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
# An FP8 byte with the sign bit cleared at or above this is NaN (e4m3fn has no infinity;
# e5m2 has infinities at 0x7C and NaNs above): found without converting a value.
FP8_NON_FINITE_FROM = {"float8_e4m3fn": 0x7F, "float8_e5m2": 0x7C}
GGUF_KIND_PREFIX = "gguf:"
FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}  # GGUF's float types
# Byte offsets of the fp16 scale fields (d, and dmin or m) inside one block of each type,
# after ggml's block layouts (`ggml-common.h`): the only places a quantized block can hold
# a NaN or an infinity, since its other fields are integers.
SCALE_FIELDS = {
    "Q8_0": (0,),
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}
PLAIN_KIND = "plain"  # a float part of a layer whose other parts are quantized
SCALED_FP8_MARKERS = ("scaled_fp8", "model.diffusion_model.scaled_fp8")
SCALE_WEIGHT, SCALE_INPUT = ".scale_weight", ".scale_input"
# ComfyUI's newer per-layer quantization (`comfy_quant` entries) names itself here.
COMFY_MIXED_QUANT_METADATA = "_quantization_metadata"


def file_format(dtypes: Mapping[str, str], metadata: Mapping[str, str] | None, source: str) -> str:
    """'plain', 'fp8' or 'scaled_fp8' for a safetensors file: from its tensors' names and
    dtypes (name -> safetensors dtype, e.g. "F8_E4M3") and its metadata."""
    if COMFY_MIXED_QUANT_METADATA in (metadata or {}) or any(k.endswith(".comfy_quant") for k in dtypes):
        raise CheckpointError(
            f"{source} uses ComfyUI's per-layer quantization metadata, which is not supported; "
            "allowed: plain, Lightricks' FP8, ComfyUI's scaled FP8 (a `scaled_fp8` tensor) and GGUF files"
        )
    # the marker is what ComfyUI looks for; scales without it are read too, since ignoring
    # them would give noise
    if any(key in dtypes for key in SCALED_FP8_MARKERS) or any(k.endswith(SCALE_WEIGHT) for k in dtypes):
        return "scaled_fp8"
    return "fp8" if any(d in FP8_KINDS for d in dtypes.values()) else "plain"


class QuantizedWeight(nn.Module):
    """One stored weight: `kind` ("float8_e4m3fn", "float8_e5m2", "gguf:Q4_K", ... or
    "plain"), its torch `shape` and, for scaled FP8, its `scale` (one value, or one per row).

    FP8 values and the scale are kept as raw bytes (uint8 buffers): a model-wide
    `.to(dtype)` converts floating buffers, which would silently turn FP8 storage into
    bf16 and round an fp32 scale; bytes move between devices and are never converted."""

    def __init__(self, data: Tensor, kind: str, shape: tuple[int, ...], scale: Tensor | None = None):
        super().__init__()
        self.kind, self.shape = kind, tuple(shape)
        stored = data.view(torch.uint8) if kind in FP8_DTYPES else data
        self.register_buffer("data", stored)
        scale_bytes = None if scale is None else scale.float().reshape(-1).contiguous().view(torch.uint8)
        self.register_buffer("scale_bytes", scale_bytes)

    @property
    def scale(self) -> Tensor | None:
        """The fp32 scale as a column: (1, 1), or (rows, 1) for one per row."""
        return None if self.scale_bytes is None else self.scale_bytes.view(torch.float32).reshape(-1, 1)

    def dequantize(self, dtype: torch.dtype, device: torch.device | str | None = None) -> Tensor:
        """The weight in `dtype` on `device` (default: where it is stored): FP8 is the stored
        value upcast to fp32, times its scale where there is one, then cast; GGUF is
        `gguf_quants.dequantize`; a plain part is cast."""
        data = self.data if device is None else self.data.to(device)
        if self.kind in FP8_DTYPES:
            weight = data.view(FP8_DTYPES[self.kind]).float()
            if self.scale_bytes is not None:
                weight = weight * self.scale.to(weight.device)
            return weight.to(dtype)
        if self.kind.startswith(GGUF_KIND_PREFIX):
            return gguf_quants.dequantize(data, self.kind.removeprefix(GGUF_KIND_PREFIX), self.shape, dtype)
        return data.to(dtype)

    def fp8_rows(self) -> tuple[Tensor, Tensor] | None:
        """(float8_e4m3fn values (rows, cols), fp32 scale per row (rows,)) for the FP8
        matmul path without dequantizing; None for any other kind."""
        if self.kind != "float8_e4m3fn":
            return None
        rows = self.shape[0]
        scale = self.scale if self.scale is not None else torch.ones(1, 1, device=self.data.device)
        return self.data.view(torch.float8_e4m3fn), scale.reshape(-1).expand(rows).contiguous()

    def holds_non_finite(self) -> Tensor:
        """A bool tensor on the weight's device (no sync): a NaN or an infinity in the stored
        values or the scale. FP8 and GGUF are checked on their bit patterns and block scales,
        without dequantizing (`raw_holds_non_finite`)."""
        if self.kind in FP8_DTYPES:
            bad = ((self.data & 0x7F) >= FP8_NON_FINITE_FROM[self.kind]).any()
        elif self.kind.startswith(GGUF_KIND_PREFIX):
            bad = raw_holds_non_finite(self.data, self.kind.removeprefix(GGUF_KIND_PREFIX), self.shape)
        else:
            bad = ~torch.isfinite(self.data).all()
        if self.scale_bytes is not None:
            bad = bad | ~torch.isfinite(self.scale).all()
        return bad

    def extra_repr(self) -> str:
        scaled = ", scaled" if self.scale_bytes is not None else ""
        return f"kind={self.kind}, shape={list(self.shape)}{scaled}"


@dataclass(frozen=True)
class QuantizedSource(TensorSource):
    """A model's tensors (`locations`: all of them, for the strict name and shape check)
    where the weights named in `kinds` are stored quantized: `read` gives the others as
    float tensors, `read_quantized` each of those as a `QuantizedWeight`.

    A location's reader is a `SafetensorsHeader`, or for GGUF a reader with `raw(key)`."""

    kinds: Mapping[str, str] = field(default_factory=dict)  # name -> kind
    scales: Mapping[str, tuple[object, str]] = field(default_factory=dict)  # weight name -> scale location
    format: str = "fp8"

    def plain(self) -> TensorSource:
        return TensorSource(self.part, {n: loc for n, loc in self.locations.items() if n not in self.kinds})

    def read(self, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        """The tensors stored in a float dtype, in `dtype` on `device` (NaN/Inf refused)."""
        return self.plain().read(dtype, device)

    def read_quantized(self, names: list[str], device: torch.device) -> list[QuantizedWeight]:
        """Quantized weights `names` (one layer's parts) as stored, on `device`: GGUF bytes
        from the memory map, safetensors tensors and their scales in one read per file."""
        wanted: dict[object, list[str]] = {}
        for name in names:
            if not self.kinds[name].startswith(GGUF_KIND_PREFIX):
                for reader, key in (self.locations[name], *([self.scales[name]] if name in self.scales else [])):
                    wanted.setdefault(reader, []).append(key)
        read = {
            (reader, key): t for reader, keys in wanted.items() for key, t in reader.read(keys, None, device).items()
        }
        weights = []
        for name in names:
            reader, key = self.locations[name]
            kind = self.kinds[name]
            data = reader.raw(key).to(device) if kind.startswith(GGUF_KIND_PREFIX) else read[reader, key]
            scale = read[self.scales[name]] if name in self.scales else None
            weights.append(QuantizedWeight(data, kind, self.shape(name), scale))
        return weights


def loaded_bytes(source: TensorSource, dtype_bytes: int) -> int:
    """Bytes a model loaded from `source` holds: quantized weights as stored (FP8 one byte a
    value, GGUF its blocks), every other tensor at `dtype_bytes` a value (the load dtype).
    For memory plans made from headers alone, before any weight is read."""
    kinds = getattr(source, "kinds", {})
    total = 0
    for name in source.locations:
        numel, kind = math.prod(source.shape(name)), kinds.get(name)
        if kind is None or kind == PLAIN_KIND:
            total += numel * dtype_bytes
        elif kind in FP8_DTYPES:
            total += numel
        else:
            total += gguf_quants.byte_count(kind.removeprefix(GGUF_KIND_PREFIX), numel)
    return total


def raw_holds_non_finite(raw: Tensor, qtype: str, shape: tuple[int, ...]) -> Tensor:
    """A bool tensor: whether the stored bytes of a `qtype` tensor hold a NaN or an
    infinity, read from the blocks' fp16 scale fields alone (no dequantization); a type
    whose layout is not listed here is dequantized once instead."""
    if qtype in FLOAT_TYPES:
        values = raw.contiguous().reshape(-1).view(FLOAT_TYPES[qtype])
        return ~torch.isfinite(values).all()
    if qtype not in SCALE_FIELDS:
        return ~torch.isfinite(gguf_quants.dequantize(raw, qtype, shape)).all()
    blocks = raw.contiguous().reshape(-1, gguf_quants.block_geometry(qtype)[1])
    fields = [blocks[:, at : at + 2].contiguous().view(torch.float16) for at in SCALE_FIELDS[qtype]]
    return ~torch.isfinite(torch.cat(fields, dim=-1)).all()


def refuse_non_finite_quantized(source: TensorSource, weights: Mapping[str, QuantizedWeight]) -> None:
    """`tensors.refuse_non_finite` for quantized weights: one device sync for all."""
    if not weights:
        return
    names = list(weights)
    flags = torch.stack([weights[name].holds_non_finite().reshape(()) for name in names]).tolist()
    bad = [name for name, flag in zip(names, flags) if flag]
    if bad:
        shown = ", ".join(source.locations[name][1] for name in bad[:5])
        raise CheckpointError(
            f"{source.label()}: {len(bad)} quantized {source.part} weight(s) hold NaN or infinite values "
            f"(or scales): {shown}; the file is damaged (a broken download, or a bad conversion); download it again"
        )


def plain_weight(tensor: Tensor) -> QuantizedWeight:
    """A float part of a fused layer whose other parts are quantized."""
    return QuantizedWeight(tensor, PLAIN_KIND, tuple(tensor.shape))


# ---------------------------------------------------------------- the single file's FP8 tensors


def single_file_source(header, part: str, prefix: str, fmt: str) -> TensorSource:
    """One model's tensors of an official single file in format `fmt`: a `QuantizedSource`
    where FP8 weights are stored, their scales (scaled FP8) checked and set apart."""
    names = {k[len(prefix) :]: k for k in header.shapes if k.startswith(prefix) and k not in SCALED_FP8_MARKERS}
    kinds = {n: FP8_KINDS[header.dtypes[k]] for n, k in names.items() if header.dtypes[k] in FP8_KINDS}
    where = f"{str(header.path)!r}"
    if kinds and part != "transformer":
        raise CheckpointError(
            f"{where}: {part} tensor {names[min(kinds)]!r} is stored as {kinds[min(kinds)]}; only the "
            "transformer's linear weights may be FP8 (the VAE is stored in a float dtype in every FP8 release)"
        )
    for name in sorted(kinds):
        if not name.endswith(".weight") or len(header.shapes[names[name]]) != 2:
            raise CheckpointError(
                f"{where}: {part} tensor {names[name]!r} is stored as {kinds[name]}, but only linear "
                "layers' 2-D weights may be FP8; the file was converted wrongly"
            )
    scales, scale_names = {}, set()
    if fmt == "scaled_fp8" and part == "transformer":
        scale_names = {n for n in names if n.endswith((SCALE_WEIGHT, SCALE_INPUT))}
        scales = {n: (header, names[_scale_name(header, names, n, kinds)]) for n in sorted(kinds)}
        _refuse_orphan_scales(header, names, scale_names, kinds)
    locations = {n: (header, k) for n, k in names.items() if n not in scale_names}
    if not kinds:
        return TensorSource(part, locations)
    return QuantizedSource(part, locations, kinds, scales, fmt)


def _scale_name(header, names: Mapping[str, str], weight: str, kinds: Mapping[str, str]) -> str:
    """The `scale_weight` of FP8 weight `weight`, which must be there and hold one value or
    one per row: without it the upcast weight is off by its scale (noise)."""
    scale = weight.removesuffix(".weight") + SCALE_WEIGHT
    if scale not in names:
        raise CheckpointError(
            f"{str(header.path)!r} is a scaled-FP8 file (a `scaled_fp8` marker or `scale_weight` tensors) but "
            f"its FP8 weight "
            f"{names[weight]!r} has no {names[weight].removesuffix('.weight') + SCALE_WEIGHT!r}; without its "
            "scale the weight is wrong; the file is incomplete or was converted wrongly"
        )
    count = 1
    for size in header.shapes[names[scale]]:
        count *= size
    rows = header.shapes[names[weight]][0]
    if count not in (1, rows):
        raise CheckpointError(
            f"{str(header.path)!r}: scale {names[scale]!r} has shape {list(header.shapes[names[scale]])}; "
            f"allowed: one value, or one per row of {names[weight]!r} ({rows})"
        )
    return scale


def _refuse_orphan_scales(header, names, scale_names, kinds) -> None:
    """A `scale_weight` whose weight is not FP8: which values it scales is unclear."""
    for scale in sorted(n for n in scale_names if n.endswith(SCALE_WEIGHT)):
        weight = scale.removesuffix(SCALE_WEIGHT) + ".weight"
        if weight not in kinds:
            stored = header.dtypes.get(names.get(weight, ""), "absent")
            raise CheckpointError(
                f"{str(header.path)!r}: scale {names[scale]!r} belongs to a weight that is not stored as FP8 "
                f"({weight!r}: {stored}); allowed: scales of FP8 linear weights only"
            )
