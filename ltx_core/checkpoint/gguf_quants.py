"""Dequantizers of the GGUF (ggml) tensor types, in torch.

Each quantized type stores a tensor as rows of fixed-size blocks: `block_size` values
packed into `bytes_per_block` bytes, with fp16 scale fields beside the packed integers.
The decoders below follow ggml's block layouts (`ggml-common.h`) and are pure torch
tensor ops over all blocks at once, so the same code runs on CPU and CUDA.

The block geometry is read from the `gguf` package (`GGML_QUANT_SIZES`), never re-typed;
the package is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import torch

from ..errors import CheckpointError

# The types LTX-Video GGUF files use (ComfyUI-GGUF converts to these), plus the cheap
# legacy and small K-quants; names are `gguf.GGMLQuantizationType` members.
SUPPORTED_TYPES: tuple[str, ...] = (
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
)

# The scale/min table of Q4_K and Q5_K: eight 6-bit scales and eight 6-bit mins in 12 bytes.
K_SCALE_BYTES = 12


# ---------------------------------------------------------------- block geometry


def check_type(qtype: str) -> None:
    """A CheckpointError unless `qtype` is one of SUPPORTED_TYPES."""
    if qtype not in SUPPORTED_TYPES:
        raise CheckpointError(
            f"GGUF tensor type {qtype!r} is not supported; supported types: {', '.join(SUPPORTED_TYPES)}"
        )


@cache
def block_geometry(qtype: str) -> tuple[int, int]:
    """(values per block, bytes per block) of `qtype`, from `gguf.GGML_QUANT_SIZES`."""
    import gguf

    check_type(qtype)
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    return int(block), int(nbytes)


def block_size(qtype: str) -> int:
    """Values per block (1 for the float types, 32 for legacy quants, 256 for K-quants)."""
    return block_geometry(qtype)[0]


def bytes_per_block(qtype: str) -> int:
    """Bytes one block of `qtype` takes in the file."""
    return block_geometry(qtype)[1]


def byte_count(qtype: str, numel: int) -> int:
    """Bytes `numel` values of `qtype` take; a CheckpointError if they are not whole blocks."""
    block, nbytes = block_geometry(qtype)
    if numel % block:
        raise CheckpointError(f"{numel} values are not whole {qtype} blocks of {block} values")
    return numel // block * nbytes


def can_hold(qtype: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor of torch `shape` splits into rows of whole `qtype` blocks, the way
    ggml stores it (blocks run along the innermost dimension)."""
    return len(shape) > 0 and shape[-1] % block_size(qtype) == 0


# ---------------------------------------------------------------- byte-field helpers


def _split(blocks: torch.Tensor, *sizes: int) -> list[torch.Tensor]:
    """The byte columns of `blocks` (n, bytes) cut at `sizes`; the last part is the rest."""
    parts, start = [], 0
    for size in sizes:
        parts.append(blocks[:, start : start + size])
        start += size
    parts.append(blocks[:, start:])
    return parts


def _f16(column: torch.Tensor) -> torch.Tensor:
    """Two bytes per row, read as a little-endian fp16 scale: (n, 1) float32."""
    return column.contiguous().view(torch.float16).float()


def _shifted(packed: torch.Tensor, shifts: tuple[int, ...], mask: int) -> torch.Tensor:
    """`packed` (n, ..., k) bytes shifted right by each of `shifts` and masked:
    (n, ..., len(shifts), k), the field of every shift beside the others."""
    amounts = torch.tensor(shifts, dtype=torch.uint8, device=packed.device).view(-1, 1)
    return (packed.unsqueeze(-2) >> amounts) & mask


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Bytes (n, k) -> (n, 2k): all low nibbles, then all high nibbles (ggml's order)."""
    return _shifted(packed, (0, 4), 0x0F).reshape(packed.shape[0], -1)


def _bits(packed: torch.Tensor) -> torch.Tensor:
    """Bytes (n, k) -> (n, 8k) bits, little-endian: bit j of the k-byte word at j."""
    return ((packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1).reshape(
        packed.shape[0], -1
    )


# ---------------------------------------------------------------- legacy 32-value blocks


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d, qs = _split(blocks, 2)
    return qs.contiguous().view(torch.int8).float() * _f16(d)


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    d, qs = _split(blocks, 2)
    return _f16(d) * (_nibbles(qs).float() - 8)


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    d, m, qs = _split(blocks, 2, 2)
    return _f16(d) * _nibbles(qs).float() + _f16(m)


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:
    d, qh, qs = _split(blocks, 2, 4)
    q = _nibbles(qs) | (_bits(qh) << 4)
    return _f16(d) * (q.float() - 16)


def _q5_1(blocks: torch.Tensor) -> torch.Tensor:
    d, m, qh, qs = _split(blocks, 2, 2, 4)
    q = _nibbles(qs) | (_bits(qh) << 4)
    return _f16(d) * q.float() + _f16(m)


# ---------------------------------------------------------------- K-quants: 256-value super-blocks


def _k_scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K's 12-byte table -> (scales, mins), each (n, 8) float32 6-bit integers.

    Bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; scales and mins
    4-7 keep their low 4 bits in bytes 8-11 (scale low, min high) and their top 2 bits in
    the top bits of bytes 0-3 (scales) and 4-7 (mins)."""
    low, high, extra = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat([low & 0x3F, (extra & 0x0F) | ((low >> 2) & 0x30)], dim=-1)
    mins = torch.cat([high & 0x3F, (extra >> 4) | ((high >> 2) & 0x30)], dim=-1)
    return scales.float(), mins.float()


def _q2_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    scales, qs, d, dmin = _split(blocks, 16, 64, 2)
    # two halves of 128 values, each 32 bytes holding four 2-bit planes; 16 groups of 16
    q = _shifted(qs.reshape(n, 2, 32), (0, 2, 4, 6), 0x03).reshape(n, 16, 16).float()
    scale = (_f16(d) * (scales & 0x0F).float()).unsqueeze(-1)
    offset = (_f16(dmin) * (scales >> 4).float()).unsqueeze(-1)
    return (scale * q - offset).reshape(n, -1)


def _q3_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    hmask, qs, packed, d = _split(blocks, 32, 64, 12)
    # sixteen 6-bit scales: low 4 bits from bytes 0-7 (low nibbles, then high nibbles),
    # top 2 bits from bytes 8-11 (each byte holds four, two bits apiece)
    low = _nibbles(packed[:, 0:8])
    high = _shifted(packed[:, 8:12], (0, 2, 4, 6), 0x03).reshape(n, 16)
    scales = (low | (high << 4)).float() - 32
    q_low = _shifted(qs.reshape(n, 2, 32), (0, 2, 4, 6), 0x03).reshape(n, 16, 16)
    # the high bit plane, one bit per value across the whole block; a clear bit means -4
    q_high = _shifted(hmask, tuple(range(8)), 0x01).reshape(n, 16, 16)
    q = q_low.float() - 4 * (1 - q_high.float())
    return ((_f16(d) * scales).unsqueeze(-1) * q).reshape(n, -1)


def _k_affine(d: torch.Tensor, dmin: torch.Tensor, table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Q4_K/Q5_K: value = d * scale_j * q - dmin * min_j over eight groups of 32."""
    n = q.shape[0]
    scales, mins = _k_scales_mins(table)
    scale = (_f16(d) * scales).unsqueeze(-1)
    offset = (_f16(dmin) * mins).unsqueeze(-1)
    return (scale * q.reshape(n, 8, 32).float() - offset).reshape(n, -1)


def _q4_k_low(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> 256 4-bit values: each 32-byte chunk gives two groups, low nibbles first."""
    return _shifted(qs.reshape(qs.shape[0], 4, 32), (0, 4), 0x0F).reshape(qs.shape[0], 256)


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    d, dmin, table, qs = _split(blocks, 2, 2, K_SCALE_BYTES)
    return _k_affine(d, dmin, table, _q4_k_low(qs))


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    d, dmin, table, qh, qs = _split(blocks, 2, 2, K_SCALE_BYTES, 32)
    # the fifth bit of group j is bit j of qh[l] for the group's value l
    high = _shifted(qh, tuple(range(8)), 0x01).reshape(qh.shape[0], 256)
    return _k_affine(d, dmin, table, _q4_k_low(qs) | (high << 4))


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    ql, qh, scales, d = _split(blocks, 128, 64, 16)
    # per half of 128 values: 64 bytes of low nibbles (low plane, then high plane) and
    # 32 bytes holding four 2-bit planes of top bits
    low = _shifted(ql.reshape(n, 2, 64), (0, 4), 0x0F).reshape(n, 256)
    high = _shifted(qh.reshape(n, 2, 32), (0, 2, 4, 6), 0x03).reshape(n, 256)
    q = (low | (high << 4)).float() - 32
    scale = (_f16(d) * scales.contiguous().view(torch.int8).float()).unsqueeze(-1)
    return (scale * q.reshape(n, 16, 16)).reshape(n, -1)


_DECODERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q8_0": _q8_0,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q2_K": _q2_k,
    "Q3_K": _q3_k,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}
_FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


# ---------------------------------------------------------------- the entry point


def dequantize(
    raw: torch.Tensor, qtype: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The tensor of torch `shape` in `dtype` that `raw` (its stored bytes, uint8, rows of
    blocks in any layout of the right size, on any device) encodes as `qtype`.

    The values are computed in float32 (ggml's own precision) and cast once at the end.
    A float type already in `dtype` comes back as a view of `raw`, not a copy."""
    check_type(qtype)
    shape = tuple(int(dim) for dim in shape)
    numel = math.prod(shape)
    expected = byte_count(qtype, numel)
    if raw.dtype != torch.uint8:
        raise CheckpointError(f"GGUF {qtype} data must be the stored bytes (torch.uint8), not {raw.dtype}")
    if raw.numel() != expected:
        raise CheckpointError(
            f"GGUF {qtype} data of shape {list(shape)} must be {expected} bytes, got {raw.numel()}: "
            "the file is corrupt or the shape is wrong"
        )
    flat = raw.contiguous().reshape(-1)
    if qtype in _FLOATS:
        return flat.view(_FLOATS[qtype]).to(dtype).reshape(shape)
    blocks = flat.reshape(-1, bytes_per_block(qtype))
    return _DECODERS[qtype](blocks).to(dtype).reshape(shape)
