"""Our GGUF reading and dequantization against diffusers' GGUF path.

diffusers (`quantizers/gguf/utils.py`) dequantizes in torch too. Called with
dtype=float32 its block decoders must give our values exactly. Its default path,
`dequantize_gguf_tensor` (what its GGUF linear layers run), passes no dtype, so the
scale products are computed in fp16: those values agree with ours, which follow ggml's
fp32 arithmetic, only to fp16 rounding (FP16_PATH_RTOL).

A tiny LTX-Video transformer, 256 wide so that K-quants hold its layers, is written as a
ComfyUI-GGUF file with a different type per tensor; diffusers' `from_single_file` must
load the same bytes, types and shapes into each tensor that our reader names.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import cycle

import numpy as np
import pytest
import torch

from ltx_core.checkpoint.gguf_file import GGUFFile
from ltx_core.checkpoint.gguf_quants import SUPPORTED_TYPES, block_size, can_hold, dequantize
from ltx_core.checkpoint.gguf_writing import write_gguf
from ltx_core.checkpoint.keymaps import transformer_from_diffusers
from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.transformer import LTXVTransformer

from ..fixtures_checkpoints import diffusers_transformer_kwargs
from ..test_gguf_quants import random_raw

diffusers = pytest.importorskip("diffusers")
gguf = pytest.importorskip("gguf")
from diffusers import GGUFQuantizationConfig, LTXVideoTransformer3DModel  # noqa: E402
from diffusers.quantizers.gguf.utils import (  # noqa: E402
    GGUFParameter,
    dequantize_functions,
    dequantize_gguf_tensor,
)

pytestmark = pytest.mark.parity

# diffusers' fp32 block decoders against ours: the same arithmetic, so equal.
ATOL = 1e-6
# diffusers' default (fp16 arithmetic) path: a few fp16 roundings of each value.
FP16_PATH_RTOL = 4e-3
# Every type diffusers decodes and we support (it leaves F32 and F16 as plain tensors).
DIFFUSERS_TYPES = [t for t in SUPPORTED_TYPES if gguf.GGMLQuantizationType[t] in dequantize_functions]
# 256 wide (2 heads x 128): every linear layer but `patchify_proj` (128 wide) takes K-quants.
GGUF_TRANSFORMER = replace(
    TINY_TRANSFORMER, num_layers=1, attention_head_dim=128, caption_channels=256, cross_attention_dim=256
)
WRITTEN_TYPES = ("Q4_K", "Q8_0", "Q5_K", "Q6_K", "Q4_0", "Q5_1", "BF16", "F16", "Q4_1", "Q5_0")


def diffusers_fp32(raw: torch.Tensor, qtype: str) -> torch.Tensor:
    """diffusers' block decoder of `qtype`, asked for float32 arithmetic."""
    qt = gguf.GGMLQuantizationType[qtype]
    block, nbytes = gguf.GGML_QUANT_SIZES[qt]
    blocks = raw.reshape(-1, nbytes)
    return dequantize_functions[qt](blocks, block, nbytes, dtype=torch.float32).reshape(-1)


def fp16_path_close(theirs: torch.Tensor, ours: torch.Tensor) -> None:
    scale = float(ours.abs().max()) or 1.0
    torch.testing.assert_close(theirs.float(), ours, atol=FP16_PATH_RTOL * scale, rtol=FP16_PATH_RTOL)


@pytest.mark.parametrize("qtype", DIFFUSERS_TYPES)
def test_block_decoders_match_diffusers(qtype):
    assert {"Q8_0", "Q4_K", "Q5_K", "Q6_K", "BF16"} <= set(DIFFUSERS_TYPES)
    raw = torch.from_numpy(random_raw(qtype, rows=4, blocks_per_row=4 if block_size(qtype) > 1 else 128, seed=9))
    ours = dequantize(raw, qtype, (_numel(raw, qtype),))
    torch.testing.assert_close(diffusers_fp32(raw, qtype), ours, atol=ATOL, rtol=0)
    fp16_path_close(
        dequantize_gguf_tensor(GGUFParameter(raw, quant_type=gguf.GGMLQuantizationType[qtype])).reshape(-1), ours
    )


def _numel(raw: torch.Tensor, qtype: str) -> int:
    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    return raw.numel() // nbytes * block


# ---------------------------------------------------------------- a whole file


def official_tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = LTXVTransformer(GGUF_TRANSFORMER).state_dict()
    return {name: torch.randn_like(t) * 0.05 for name, t in state.items()}


def mixed_types(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """A type per tensor, cycling through WRITTEN_TYPES over the 2-D ones; the rest F32."""
    types, order = {}, cycle(WRITTEN_TYPES)
    for name, tensor in tensors.items():
        qtype = next(order) if tensor.ndim >= 2 else "F32"
        types[name] = qtype if can_hold(qtype, tuple(tensor.shape)) else "F32"
    return types


@pytest.fixture(scope="module")
def gguf_pair(tmp_path_factory):
    """(our GGUFFile, diffusers' model loaded from the same file by from_single_file)."""
    folder = tmp_path_factory.mktemp("gguf-parity")
    tensors = official_tensors()
    path = folder / "ltxv-tiny-mixed.gguf"
    write_gguf(path, tensors, mixed_types(tensors))
    LTXVideoTransformer3DModel(**diffusers_transformer_kwargs(GGUF_TRANSFORMER)).save_config(folder / "transformer")
    reference = LTXVideoTransformer3DModel.from_single_file(
        str(path),
        config=str(folder),
        subfolder="transformer",
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
        local_files_only=True,
    )
    return GGUFFile(path), reference


def diffusers_tensors(reference) -> dict[str, torch.Tensor]:
    """diffusers' parameters and buffers under our (official) names, quantized ones as loaded."""
    return transformer_from_diffusers(dict(reference.state_dict(keep_vars=True)))


def test_the_file_covers_every_written_type(gguf_pair):
    ours, _ = gguf_pair
    assert {ours.qtype(name) for name in ours.names} == {*WRITTEN_TYPES, "F32"}


def test_from_single_file_loads_our_names_bytes_types_and_shapes(gguf_pair):
    ours, reference = gguf_pair
    theirs = diffusers_tensors(reference)
    assert set(theirs) == set(ours.names)
    for name in ours.names:
        tensor, qtype = theirs[name], ours.qtype(name)
        if qtype in ("F32", "F16"):  # diffusers keeps these as plain tensors
            assert not isinstance(tensor, GGUFParameter) and tuple(tensor.shape) == ours.shape(name), name
            continue
        assert isinstance(tensor, GGUFParameter), name
        assert tensor.quant_type.name == qtype, name
        assert tuple(tensor.quant_shape) == ours.shape(name), name
        assert torch.equal(tensor.as_tensor().view(torch.uint8), ours.raw(name).reshape(tensor.shape)), name


def test_from_single_file_values_match_ours(gguf_pair):
    ours, reference = gguf_pair
    theirs = diffusers_tensors(reference)
    for name in ours.names:
        qtype, shape = ours.qtype(name), ours.shape(name)
        values = dequantize(ours.raw(name), qtype, shape)
        tensor = theirs[name]
        if isinstance(tensor, GGUFParameter):
            raw = tensor.as_tensor().view(torch.uint8)
            torch.testing.assert_close(diffusers_fp32(raw, qtype).reshape(shape), values, atol=ATOL, rtol=0)
            fp16_path_close(dequantize_gguf_tensor(tensor).reshape(shape), values)
        else:
            torch.testing.assert_close(tensor.detach().float(), values, atol=0, rtol=0)


def test_gguf_s_numpy_reads_the_same_values(gguf_pair):
    ours, _ = gguf_pair
    reader = gguf.GGUFReader(ours.path)
    for tensor in reader.tensors:
        expected = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        values = dequantize(ours.raw(tensor.name), ours.qtype(tensor.name), ours.shape(tensor.name))
        torch.testing.assert_close(values, torch.from_numpy(np.array(expected, np.float32)).reshape(values.shape))
