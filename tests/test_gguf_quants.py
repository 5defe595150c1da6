"""GGUF dequantizers (`gguf_quants`) against the `gguf` package's numpy reference, and our
torch quantizers (`gguf_writing.quantize`) by their round-trip error.

Random blocks are random bytes with every fp16 scale field overwritten by a finite value
of realistic size (weights' scales are small), so no block decodes to NaN or infinity.
"""

from __future__ import annotations

import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch

from ltx_core.checkpoint.gguf_quants import (
    SUPPORTED_TYPES,
    block_geometry,
    block_size,
    byte_count,
    bytes_per_block,
    can_hold,
    dequantize,
)
from ltx_core.checkpoint.gguf_writing import QUANTIZABLE_TYPES, quantize
from ltx_core.errors import CheckpointError, SettingsError

# Max abs difference, in fp32, of our dequantized values from gguf's numpy ones.
ATOL = 1e-4
REQUIRED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
# Byte offsets of the fp16 scale fields in one block (ggml-common.h's block structs).
FP16_FIELDS = {
    "Q8_0": (0,),
    "Q4_0": (0,),
    "Q5_0": (0,),
    "Q4_1": (0, 2),
    "Q5_1": (0, 2),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}
FLOAT_NUMPY = {"F32": np.float32, "F16": np.float16}
# Relative error |dequantize(quantize(w)) - w| / |w| allowed on Gaussian weights.
ROUND_TRIP_REL = {
    "F32": 1e-7,
    "F16": 1e-3,
    "BF16": 5e-3,
    "Q8_0": 0.01,
    "Q4_0": 0.1,
    "Q4_1": 0.09,
    "Q5_0": 0.05,
    "Q5_1": 0.045,
    "Q4_K": 0.075,
    "Q5_K": 0.04,
    "Q6_K": 0.02,
}


def random_raw(qtype: str, rows: int, blocks_per_row: int, seed: int = 0) -> np.ndarray:
    """Stored bytes (rows, row bytes) of random `qtype` data whose scales are finite."""
    rng = np.random.default_rng(seed)
    block, nbytes = block_geometry(qtype)
    if qtype in ("F32", "F16", "BF16"):
        values = rng.standard_normal((rows, blocks_per_row)).astype(np.float32)
        if qtype == "BF16":
            return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return values.astype(FLOAT_NUMPY[qtype]).view(np.uint8)
    raw = rng.integers(0, 256, (rows * blocks_per_row, nbytes), dtype=np.uint8)
    for offset in FP16_FIELDS[qtype]:
        scales = (rng.standard_normal(len(raw)) * 0.01).astype(np.float16)
        raw[:, offset : offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, -1)


def numpy_reference(raw: np.ndarray, qtype: str) -> np.ndarray:
    """gguf's own dequantization of the same bytes, as float32 values."""
    if qtype in FLOAT_NUMPY:
        return raw.view(FLOAT_NUMPY[qtype]).astype(np.float32)
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])


def test_the_required_types_are_supported():
    assert set(REQUIRED_TYPES) <= set(SUPPORTED_TYPES)
    assert all(name in gguf.GGMLQuantizationType.__members__ for name in SUPPORTED_TYPES)


@pytest.mark.parametrize("qtype", SUPPORTED_TYPES)
def test_geometry_is_gguf_s(qtype):
    expected = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    assert block_geometry(qtype) == tuple(expected) == (block_size(qtype), bytes_per_block(qtype))
    assert byte_count(qtype, 4 * block_size(qtype)) == 4 * bytes_per_block(qtype)


@pytest.mark.parametrize("qtype", SUPPORTED_TYPES)
def test_dequantize_matches_gguf_numpy(qtype):
    raw = random_raw(qtype, rows=3, blocks_per_row=4 if block_size(qtype) > 1 else 64)
    reference = torch.from_numpy(np.ascontiguousarray(numpy_reference(raw, qtype)))
    ours = dequantize(torch.from_numpy(raw), qtype, tuple(reference.shape))
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    assert torch.isfinite(reference).all()
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q8_0", "BF16"])
def test_dequantize_any_shape_and_dtype(qtype):
    """The bytes are rows of blocks; the shape may split them any way of the same size."""
    raw = torch.from_numpy(random_raw(qtype, rows=2, blocks_per_row=4 if block_size(qtype) > 1 else 256))
    numel = raw.numel() // bytes_per_block(qtype) * block_size(qtype)
    values = dequantize(raw, qtype, (2, numel // 2))
    shaped = dequantize(raw.reshape(-1), qtype, (2, 4, numel // 8), torch.bfloat16)
    assert shaped.dtype == torch.bfloat16 and shaped.shape == (2, 4, numel // 8)
    assert torch.equal(shaped, values.to(torch.bfloat16).reshape(shaped.shape))


def test_an_unsupported_type_names_it_and_the_supported_ones():
    with pytest.raises(CheckpointError, match=r"IQ4_XS.*not supported.*Q4_K.*Q6_K"):
        dequantize(torch.zeros(136, dtype=torch.uint8), "IQ4_XS", (256,))


def test_wrong_byte_counts_and_dtypes_are_refused():
    with pytest.raises(CheckpointError, match=r"Q8_0 data of shape \[2, 32\] must be 68 bytes, got 34"):
        dequantize(torch.zeros(34, dtype=torch.uint8), "Q8_0", (2, 32))
    with pytest.raises(CheckpointError, match="not whole Q4_K blocks of 256"):
        dequantize(torch.zeros(144, dtype=torch.uint8), "Q4_K", (128,))
    with pytest.raises(CheckpointError, match=r"stored bytes \(torch.uint8\), not torch.float32"):
        dequantize(torch.zeros(17), "Q8_0", (32,))


def test_can_hold_follows_the_innermost_dimension():
    assert can_hold("Q4_K", (3, 512)) and not can_hold("Q4_K", (512, 128))
    assert can_hold("Q8_0", (5, 32)) and can_hold("F16", (7,))


# ---------------------------------------------------------------- our quantizers


def gaussian(rows: int = 64, columns: int = 1024, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, columns, generator=gen) * 0.02


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm())


@pytest.mark.parametrize("qtype", QUANTIZABLE_TYPES)
def test_quantize_round_trip_error(qtype):
    weight = gaussian()
    raw = quantize(weight, qtype)
    assert raw.dtype == torch.uint8 and raw.shape == (64, byte_count(qtype, 1024))
    back = dequantize(raw, qtype, tuple(weight.shape))
    assert relative_error(back, weight) < ROUND_TRIP_REL[qtype]


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_our_quantized_bytes_decode_the_same_in_gguf(qtype):
    raw = quantize(gaussian(8, 512, seed=3), qtype)
    reference = gguf.quants.dequantize(raw.numpy(), gguf.GGMLQuantizationType[qtype])
    torch.testing.assert_close(dequantize(raw, qtype, (8, 512)), torch.from_numpy(reference), atol=ATOL, rtol=0)


def test_q8_0_bytes_are_gguf_s_reference_bytes():
    weight = gaussian(16, 256, seed=5)
    expected = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(quantize(weight, "Q8_0").numpy(), expected)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K", "Q8_0"])
def test_quantize_edge_blocks(qtype):
    """All-zero, constant, all-positive and all-negative blocks, and one outlier."""
    weight = torch.zeros(5, 256)
    weight[1] = 0.5
    weight[2] = torch.linspace(0.1, 0.9, 256)
    weight[3] = -torch.linspace(0.1, 0.9, 256)
    weight[4, 7] = 3.0
    back = dequantize(quantize(weight, qtype), qtype, (5, 256))
    assert torch.isfinite(back).all()
    assert back[0].abs().max() == 0
    assert (back - weight).abs().max() < 0.06
    assert relative_error(back, weight) < 0.02


def test_quantize_refuses_what_it_cannot_write():
    with pytest.raises(SettingsError, match=r"shape \[4, 100\] cannot be Q4_K.*multiple of 256"):
        quantize(torch.zeros(4, 100), "Q4_K")
    with pytest.raises(SettingsError, match="cannot quantize to GGUF type 'Q3_K'; allowed: .*Q6_K"):
        quantize(torch.zeros(4, 256), "Q3_K")
    with pytest.raises(SettingsError, match="NaN or infinite"):
        quantize(torch.full((1, 32), float("nan")), "Q8_0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("qtype", SUPPORTED_TYPES)
def test_dequantize_on_cuda_matches_cpu(qtype):
    raw = torch.from_numpy(random_raw(qtype, rows=4, blocks_per_row=8 if block_size(qtype) > 1 else 256))
    shape = (4, raw.numel() // 4 // bytes_per_block(qtype) * block_size(qtype))
    on_cuda = dequantize(raw.cuda(), qtype, shape)
    assert on_cuda.is_cuda
    torch.testing.assert_close(on_cuda.cpu(), dequantize(raw, qtype, shape), atol=ATOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_quantize_on_cuda_round_trips(qtype):
    weight = gaussian().cuda()
    back = dequantize(quantize(weight, qtype), qtype, tuple(weight.shape))
    assert back.is_cuda and relative_error(back, weight) < ROUND_TRIP_REL[qtype]


def test_importing_the_modules_does_not_import_gguf():
    """The CLI starts fast: `gguf` (and numpy's quant tables) load only when a file is read."""
    code = (
        "import sys, ltx_core.checkpoint, ltx_core.checkpoint.gguf_quants, ltx_core.checkpoint.gguf_file, "
        "ltx_core.checkpoint.gguf_writing; print('gguf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
