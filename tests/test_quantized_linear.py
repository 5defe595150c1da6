"""`QuantizedLinear` (weights kept as stored, dequantized per call) and its way into the
FP8 matmuls: `FP8Linear.from_quantized` takes e4m3 weights and their scales as stored."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ltx_core.checkpoint.quantized import QuantizedWeight, plain_weight
from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.models.quantized_linear import QuantizedLinear
from ltx_core.speed.fp8 import FP8Linear, convert_to_fp8, fp8_supported

E4M3 = torch.float8_e4m3fn


def fp8_part(rows: int, cols: int, seed: int, scale: float | None = None, kind=E4M3) -> QuantizedWeight:
    g = torch.Generator().manual_seed(seed)
    values = (torch.randn(rows, cols, generator=g) * 4).to(kind)
    name = "float8_e4m3fn" if kind == E4M3 else "float8_e5m2"
    return QuantizedWeight(values, name, (rows, cols), None if scale is None else torch.tensor(scale))


def test_parts_stack_along_rows_and_the_forward_is_f_linear_of_the_dequantized_weight():
    parts = [fp8_part(32, 16, 0, 0.01), fp8_part(32, 16, 1), fp8_part(16, 16, 2, 0.5, torch.float8_e5m2)]
    bias = torch.randn(80)
    layer = QuantizedLinear(parts, bias)
    assert (layer.in_features, layer.out_features) == (16, 80)
    expected = torch.cat(
        [
            parts[0].data.view(E4M3).float() * 0.01,
            parts[1].data.view(E4M3).float(),
            parts[2].data.view(torch.float8_e5m2).float() * 0.5,
        ]
    )
    assert torch.equal(layer.dequantized_weight(), expected)
    x = torch.randn(3, 5, 16)
    assert torch.equal(layer(x), F.linear(x, expected, bias))


def test_a_plain_part_beside_quantized_ones():
    plain = torch.randn(8, 16)
    layer = QuantizedLinear([fp8_part(8, 16, 0), plain_weight(plain)])
    assert torch.equal(layer.dequantized_weight()[8:], plain) and layer.fp8_rows() is None


def test_a_model_wide_dtype_cast_keeps_fp8_bytes_and_exact_scales():
    part = fp8_part(16, 16, 0, 0.0123456789)
    layer = QuantizedLinear([part], torch.zeros(16))
    before = layer.dequantized_weight()
    layer.to(torch.bfloat16)
    assert part.data.dtype == torch.uint8 and part.scale.dtype == torch.float32
    assert torch.equal(layer.dequantized_weight(), before)
    assert layer.bias.dtype == torch.bfloat16


def test_parts_of_unequal_widths_are_refused():
    with pytest.raises(CheckpointError, match="equal widths"):
        QuantizedLinear([fp8_part(8, 16, 0), fp8_part(8, 32, 1)])


def test_fp8_rows_repeat_a_part_s_single_scale_per_row():
    layer = QuantizedLinear([fp8_part(16, 32, 0, 0.25), fp8_part(16, 32, 1)])
    values, scales = layer.fp8_rows()
    assert values.dtype == E4M3 and values.shape == (32, 32)
    assert torch.equal(scales, torch.tensor([0.25] * 16 + [1.0] * 16))
    assert torch.equal(values.float() * scales[:, None], layer.dequantized_weight())


def test_from_quantized_multiplies_by_the_stored_weight_without_rounding_it_again():
    layer = QuantizedLinear([fp8_part(32, 32, 0, 0.02), fp8_part(16, 32, 1, 0.5)], torch.randn(48))
    fp8 = FP8Linear.from_quantized(*layer.fp8_rows(), layer.bias, torch.float32)
    assert torch.equal(fp8.dequantized_weight(), layer.dequantized_weight())
    assert (fp8.in_features, fp8.out_features) == (32, 48)


def test_from_quantized_refuses_a_weight_that_is_not_e4m3():
    with pytest.raises(SettingsError, match="one scale per row"):
        FP8Linear.from_quantized(torch.zeros(4, 4), torch.ones(4), None, torch.float32)


@pytest.mark.skipif(not fp8_supported("cpu"), reason="this torch's _scaled_mm takes no row-wise scales on the CPU")
def test_convert_to_fp8_feeds_stored_e4m3_layers_as_stored_and_keeps_other_kinds():
    from ltx_core.models.configs import TINY_TRANSFORMER
    from ltx_core.models.transformer import LTXVTransformer

    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    ff = model.transformer_blocks[0].ff.net[2]
    stored = QuantizedLinear(
        [QuantizedWeight(ff.weight.detach().to(E4M3), "float8_e4m3fn", tuple(ff.weight.shape))], ff.bias.detach()
    )
    model.replace_linear("transformer_blocks.0.ff.net.2", stored)
    # a layer of another kind (GGUF blocks, say) keeps dequantizing per call
    other = QuantizedLinear([plain_weight(ff.weight.detach())], ff.bias.detach())
    model.replace_linear("transformer_blocks.1.ff.net.2", other)
    swapped = convert_to_fp8(model)
    assert "transformer_blocks.0.ff.net.2" in swapped and "transformer_blocks.1.ff.net.2" not in swapped
    fp8 = model.transformer_blocks[0].ff.net[2]
    assert isinstance(fp8, FP8Linear) and torch.equal(fp8.dequantized_weight(), stored.dequantized_weight())
    assert isinstance(model.transformer_blocks[1].ff.net[2], QuantizedLinear)
    x = torch.randn(4, fp8.in_features)
    reference = F.linear(x, stored.dequantized_weight(), stored.bias)
    assert ((fp8(x) - reference).norm() / reference.norm()) < 0.06
