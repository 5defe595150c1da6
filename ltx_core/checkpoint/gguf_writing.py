"""GGUF files out, for tests and benchmarks: torch weights quantized to ggml types and
written by the `gguf` package's GGUFWriter, laid out as ComfyUI-GGUF lays out LTX-Video.

`gguf` ships quantizers for the legacy 32-value types only; the K-quants (Q4_K, Q5_K,
Q6_K) and Q8_0 are quantized here in torch (any device), from the block layouts that
`gguf_quants` decodes. The K-quant quantizers fit each group's scale (and offset) by a
small search with a least-squares refit, then round the group scales to the 6- or 8-bit
integers the format keeps; they aim at a low error, not at ggml's bit-exact output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..errors import SettingsError
from .gguf_quants import SUPPORTED_TYPES, block_geometry, can_hold

# Types `quantize` can produce: every readable one but Q2_K / Q3_K (ggml has no quantizer
# of those worth testing against).
QUANTIZABLE_TYPES: tuple[str, ...] = tuple(t for t in SUPPORTED_TYPES if t not in ("Q2_K", "Q3_K"))
# Kept in F32 when one type is asked for every tensor, as ComfyUI-GGUF's converter does:
# `scale_shift_table` is an nn.Parameter that its loader cannot dequantize into.
KEPT_IN_F32 = ("scale_shift_table",)
FALLBACK_TYPE = "F32"  # lossless from bf16 sources, unlike F16
# Candidate scales tried per group: (levels + step) / range, steps around 0.
SEARCH_STEPS = tuple(step / 5 for step in range(-5, 6))
# Super-blocks fitted at once: on a CPU few enough for the search's temporaries to stay in
# cache; on a GPU enough to keep it busy, bounding memory all the same.
CPU_CHUNK_BLOCKS = 4096
GPU_CHUNK_BLOCKS = 65536


# ---------------------------------------------------------------- small helpers


def _fp16_bytes(values: torch.Tensor) -> torch.Tensor:
    """(n,) float32 -> (n, 2) bytes of their fp16 value (what ggml stores as scales)."""
    return values.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def _fp16_round(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float16).float()


def _round_away(values: torch.Tensor) -> torch.Tensor:
    """Round half away from zero (C's roundf), not torch's half to even, as ggml does."""
    magnitude = values.abs()
    whole = magnitude.floor()
    return torch.sign(values) * (whole + (2 * (magnitude - whole)).floor())


def _inverse(values: torch.Tensor) -> torch.Tensor:
    """1 / values, 0 where values is 0 (an all-zero group quantizes to zeros)."""
    return torch.where(values == 0, torch.zeros_like(values), 1 / values)


def _pack_nibbles(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return (low.to(torch.uint8) & 0x0F) | (high.to(torch.uint8) << 4)


def _pack_bits(planes: torch.Tensor, width: int) -> torch.Tensor:
    """(n, k, m) values of `width` bits -> (n, m) bytes, plane i at bit i * width."""
    shifts = torch.arange(planes.shape[1], device=planes.device).view(1, -1, 1) * width
    return (planes.to(torch.int32) << shifts).sum(dim=1).to(torch.uint8)


# ---------------------------------------------------------------- Q8_0


def _q8_0(x: torch.Tensor) -> torch.Tensor:
    """(n, 32) -> (n, 34): fp16 d = max|x| / 127, int8 q = round(x / d); the same
    arithmetic as gguf's reference quantizer, so the bytes match it."""
    d = x.abs().amax(dim=-1, keepdim=True) / 127
    q = _round_away(x * _inverse(d)).to(torch.int8).view(torch.uint8)
    return torch.cat([_fp16_bytes(d), q], dim=-1)


# ---------------------------------------------------------------- group fits


def _least_squares(x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) minimizing |scale * q + offset - x|^2 per row, with offset <= 0
    (the K-quant formats store the offset as a subtracted non-negative minimum)."""
    n = x.shape[-1]
    sq, sx = q.sum(-1), x.sum(-1)
    sqq, sqx = (q * q).sum(-1), (q * x).sum(-1)
    det = n * sqq - sq * sq
    free = det != 0
    scale = torch.where(free, (n * sqx - sq * sx) / torch.where(free, det, 1), 0)
    offset = torch.where(free, (sqq * sx - sq * sqx) / torch.where(free, det, 1), sx / n)
    pinned = offset > 0  # the best offset is positive: use none, refit the scale alone
    scale = torch.where(pinned, sqx / sqq.clamp(min=1e-30), scale)
    offset = torch.where(pinned, 0, offset)
    return scale.clamp(min=0), offset


def _fit_affine(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of `x`: (scale >= 0, offset <= 0) with x ~ scale * q + offset, q in 0..levels.

    Rounding to a grid spanning [min(x, 0), max(x)] is tried at several grid densities;
    each rounding gets its least-squares scale and offset, and the best fit wins."""
    low = x.amin(-1).clamp(max=0)
    span = x.amax(-1) - low
    best_scale, best_offset = span / levels, low
    best_error = (
        (_round_affine(x, best_scale, best_offset, levels) * best_scale[:, None] + low[:, None] - x) ** 2
    ).sum(-1)
    for step in SEARCH_STEPS:
        inverse = _inverse(span / (levels + step))
        q = ((x - low[:, None]) * inverse[:, None]).round().clamp(0, levels)
        scale, offset = _least_squares(x, q)
        q = _round_affine(x, scale, offset, levels)
        error = ((q * scale[:, None] + offset[:, None] - x) ** 2).sum(-1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale = torch.where(better, scale, best_scale)
        best_offset = torch.where(better, offset, best_offset)
    return best_scale, best_offset


def _round_affine(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, levels: int) -> torch.Tensor:
    return ((x - offset[..., None]) * _inverse(scale)[..., None]).round().clamp(0, levels)


def _fit_symmetric(x: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Per row of `x`: a signed scale with x ~ scale * q, q in low..high (low = -high - 1):
    the largest magnitude maps to `low` (the longer side), the rest by a search and refit."""
    peak = x.gather(-1, x.abs().argmax(-1, keepdim=True)).squeeze(-1)
    best_scale = peak / low
    best_error = ((_round_symmetric(x, best_scale, low, high) * best_scale[:, None] - x) ** 2).sum(-1)
    for step in SEARCH_STEPS:
        q = (x * _inverse(peak / (low - step))[:, None]).round().clamp(low, high)
        scale = (q * x).sum(-1) / (q * q).sum(-1).clamp(min=1e-30)
        q = _round_symmetric(x, scale, low, high)
        error = ((q * scale[:, None] - x) ** 2).sum(-1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale = torch.where(better, scale, best_scale)
    return best_scale


def _round_symmetric(x: torch.Tensor, scale: torch.Tensor, low: int, high: int) -> torch.Tensor:
    return (x * _inverse(scale)[..., None]).round().clamp(low, high)


# ---------------------------------------------------------------- K-quants


def _k_affine_fit(x: torch.Tensor, levels: int):
    """(n, 256) -> fp16 d, dmin (n,), 6-bit scales and mins (n, 8), q (n, 256) in 0..levels."""
    n = x.shape[0]
    groups = x.reshape(n * 8, 32)
    scale, offset = (value.reshape(n, 8) for value in _fit_affine(groups, levels))
    d = _fp16_round(scale.amax(-1) / 63)
    dmin = _fp16_round((-offset).amax(-1) / 63)
    scales = (scale * _inverse(d)[:, None]).round().clamp(0, 63)
    mins = (-offset * _inverse(dmin)[:, None]).round().clamp(0, 63)
    # requantize against the scales as stored, so rounding them costs as little as possible
    q = _round_affine(groups, (d[:, None] * scales).reshape(-1), (-dmin[:, None] * mins).reshape(-1), levels)
    return d, dmin, scales, mins, q.reshape(n, 256)


def _k_table(scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """Eight 6-bit scales and mins -> the 12-byte table `gguf_quants._k_scales_mins` reads."""
    sc, m = scales.to(torch.uint8), mins.to(torch.uint8)
    low = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    high = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    extra = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return torch.cat([low, high, extra], dim=-1)


def _k_low_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 256) -> 128 bytes: per 64 values, the first 32 in low nibbles, the next in high."""
    pairs = q.reshape(q.shape[0], 4, 2, 32)
    return _pack_nibbles(pairs[:, :, 0], pairs[:, :, 1]).reshape(q.shape[0], 128)


def _q4_k(x: torch.Tensor) -> torch.Tensor:
    d, dmin, scales, mins, q = _k_affine_fit(x, 15)
    return torch.cat([_fp16_bytes(d), _fp16_bytes(dmin), _k_table(scales, mins), _k_low_nibbles(q)], dim=-1)


def _q5_k(x: torch.Tensor) -> torch.Tensor:
    d, dmin, scales, mins, q = _k_affine_fit(x, 31)
    q = q.to(torch.uint8)
    high = _pack_bits((q >> 4).reshape(q.shape[0], 8, 32), 1)
    return torch.cat([_fp16_bytes(d), _fp16_bytes(dmin), _k_table(scales, mins), high, _k_low_nibbles(q & 0x0F)], -1)


def _q6_k(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    groups = x.reshape(n * 16, 16)
    scale = _fit_symmetric(groups, -32, 31).reshape(n, 16)
    d = _fp16_round(scale.abs().amax(-1) / 127)
    scales = (scale * _inverse(d)[:, None]).round().clamp(-127, 127)
    q = _round_symmetric(groups, (d[:, None] * scales).reshape(-1), -32, 31).reshape(n, 256)
    q = (q + 32).to(torch.uint8)
    low = (q & 0x0F).reshape(n, 2, 2, 64)
    ql = _pack_nibbles(low[:, :, 0], low[:, :, 1]).reshape(n, 128)
    qh = _pack_bits((q >> 4).reshape(n * 2, 4, 32), 2).reshape(n, 64)
    return torch.cat([ql, qh, scales.to(torch.int8).view(torch.uint8), _fp16_bytes(d)], dim=-1)


_TORCH_QUANTIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q8_0": _q8_0,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}
_FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def quantize(weight: torch.Tensor, qtype: str) -> torch.Tensor:
    """`weight` as ggml stores it in `qtype`: uint8 of shape (*weight.shape[:-1], row bytes),
    on the weight's device. Rows must be whole blocks (see `gguf_quants.can_hold`)."""
    if qtype not in QUANTIZABLE_TYPES:
        raise SettingsError(f"cannot quantize to GGUF type {qtype!r}; allowed: {', '.join(QUANTIZABLE_TYPES)}")
    shape = tuple(weight.shape) or (1,)
    if not can_hold(qtype, shape):
        raise SettingsError(
            f"a tensor of shape {list(shape)} cannot be {qtype}: its last dimension must be a multiple "
            f"of {block_geometry(qtype)[0]}"
        )
    x = weight.detach().reshape(shape).float()
    if not bool(torch.isfinite(x).all()):
        raise SettingsError(f"cannot quantize to {qtype} a tensor holding NaN or infinite values")
    block, _ = block_geometry(qtype)
    if qtype in _FLOATS:
        packed = x.to(_FLOATS[qtype]).contiguous().view(torch.uint8)
    elif qtype in _TORCH_QUANTIZERS:
        blocks = x.reshape(-1, block)
        quantizer = _TORCH_QUANTIZERS[qtype]
        chunk = CPU_CHUNK_BLOCKS if x.device.type == "cpu" else GPU_CHUNK_BLOCKS
        packed = torch.cat([quantizer(part) for part in blocks.split(chunk)])
    else:
        packed = _numpy_quantize(x, qtype)
    return packed.reshape(*shape[:-1], -1)


def _numpy_quantize(x: torch.Tensor, qtype: str) -> torch.Tensor:
    """The legacy types through gguf's own (reference) numpy quantizers."""
    import gguf

    data = gguf.quants.quantize(x.cpu().numpy(), gguf.GGMLQuantizationType[qtype])
    return torch.from_numpy(data).to(x.device)


# ---------------------------------------------------------------- files


def choose_types(tensors: Mapping[str, torch.Tensor], qtypes: Mapping[str, str] | str) -> dict[str, str]:
    """Each tensor's type in the file. One type for all: tensors it cannot hold (1-D ones,
    rows not whole blocks) and `scale_shift_table` fall back to F32, as ComfyUI-GGUF's
    converter keeps them. A mapping: exactly those types, each checked."""
    if isinstance(qtypes, str):
        _check_quantizable(qtypes)
        return {name: _type_or_fallback(name, tuple(t.shape), qtypes) for name, t in tensors.items()}
    missing = sorted(set(tensors) - set(qtypes))
    if missing:
        raise SettingsError(f"qtypes gives no GGUF type for tensors {missing[:5]}; allowed: one type per tensor")
    for name, tensor in tensors.items():
        _check_quantizable(qtypes[name])
        if not can_hold(qtypes[name], tuple(tensor.shape) or (1,)):
            raise SettingsError(
                f"tensor {name!r} of shape {list(tensor.shape)} cannot be {qtypes[name]}: its last dimension "
                f"must be a multiple of {block_geometry(qtypes[name])[0]}"
            )
    return {name: qtypes[name] for name in tensors}


def _check_quantizable(qtype: str) -> None:
    if qtype not in QUANTIZABLE_TYPES:
        raise SettingsError(f"GGUF type {qtype!r} cannot be written; allowed: {', '.join(QUANTIZABLE_TYPES)}")


def _type_or_fallback(name: str, shape: tuple[int, ...], qtype: str) -> str:
    if len(shape) < 2 or any(kept in name for kept in KEPT_IN_F32) or not can_hold(qtype, shape):
        return FALLBACK_TYPE
    return qtype


def write_gguf(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    qtypes: Mapping[str, str] | str,
    architecture: str = "ltxv",
    metadata: Mapping[str, str | int | float | bool] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, str]:
    """Write `tensors` (names kept as given) to the GGUF file `path` with
    `general.architecture` = `architecture` and the key-value `metadata` (e.g. an official
    `config` JSON string); returns each tensor's type as written (see `choose_types` for
    the F32 fallback of a single type). `device`: where to quantize (None: where each
    tensor is; a GPU makes the K-quant search of a large model fast)."""
    import gguf

    chosen = choose_types(tensors, qtypes)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (metadata or {}).items():
        _add_field(writer, key, value)
    for name, tensor in tensors.items():
        data = quantize(tensor if device is None else tensor.to(device), chosen[name]).cpu().numpy()
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[chosen[name]])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return chosen


def _add_field(writer, key: str, value: str | int | float | bool) -> None:
    """One scalar key-value field, typed as `GGUFFile.metadata` reads it back."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float64(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        raise SettingsError(f"GGUF metadata {key!r} is a {type(value).__name__}; allowed: str, int, float, bool")
