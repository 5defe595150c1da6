"""FP8 linear layers (row-wise float8_e4m3fn weights and activations, `torch._scaled_mm`)
on the CPU, where recent torch runs `_scaled_mm` too; GPU speed is the benchmark's job."""

import pytest
import torch
from torch import nn

from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.speed.fp8 import FP8_DTYPE, FP8_MAX, KEEP_PRECISE, FP8Linear, convert_to_fp8, quantize_rows

# e4m3 keeps 3 mantissa bits: a value rounds by at most 2**-4 of itself (half an ulp).
E4M3_RELATIVE_STEP = 2.0**-4
# Relative error of a whole FP8 layer / model output against fp32 (measured ~0.03 / ~0.05).
LAYER_RTOL = 0.06
MODEL_RTOL = 0.12

pytestmark = pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="torch without _scaled_mm")


def relative_error(ours, reference):
    return ((ours.float() - reference.float()).norm() / reference.float().norm()).item()


def test_quantize_rows_scales_each_row_to_the_fp8_range_and_reconstructs_within_one_rounding_step():
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [[1e-3], [1.0], [30.0], [1e3], [0.5]]
    )
    values, scale = quantize_rows(x)
    assert values.dtype == FP8_DTYPE and scale.shape == (5, 1)
    assert torch.allclose(values.float().abs().amax(dim=1), torch.full((5,), FP8_MAX))
    error = (values.float() * scale - x).abs()
    assert (error <= E4M3_RELATIVE_STEP * x.abs() + 1e-9 * scale).all()


def test_an_all_zero_row_quantizes_to_zeros_without_nan():
    values, scale = quantize_rows(torch.zeros(2, 32))
    assert torch.isfinite(scale).all() and (values.float() == 0).all()


@pytest.mark.parametrize("rows", [32, 7], ids=["aligned rows", "rows padded to 16"])
def test_fp8_linear_matches_the_fp32_linear_within_fp8_rounding(rows):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(2, rows, 64)
    layer = FP8Linear(linear, out_dtype=torch.float32)
    out = layer(x)
    assert out.shape == (2, rows, 48)
    assert relative_error(out, linear(x)) < LAYER_RTOL
    assert relative_error(layer.dequantized_weight(), linear.weight) < E4M3_RELATIVE_STEP


def test_convert_to_fp8_swaps_block_linears_and_keeps_the_precise_ones():
    model = LTXVTransformer(TINY_TRANSFORMER)
    swapped = convert_to_fp8(model)
    assert swapped and all(name.startswith("transformer_blocks.") for name in swapped)
    for name, module in model.named_modules():
        if name.split(".")[0] in KEEP_PRECISE and name:
            assert not isinstance(module, FP8Linear), name
    assert isinstance(model.transformer_blocks[0].ff.net[2], FP8Linear)
    assert isinstance(model.proj_out, nn.Linear) and isinstance(model.adaln_single.linear, nn.Linear)


def test_convert_to_fp8_frees_each_replaced_layer_before_the_next(monkeypatch):
    """The model is never held twice (every original weight beside its FP8 copy): a
    replaced layer is gone by the next replacement, so the conversion's memory peak is the
    model's plus one layer's."""
    import gc
    import weakref

    model = LTXVTransformer(TINY_TRANSFORMER)
    originals = [weakref.ref(m) for m in model.linear_layers().values()]
    alive_beyond_the_model = []
    replace = model.replace_linear

    def counted(name, layer):
        gc.collect()
        alive = sum(ref() is not None for ref in originals)
        in_model = sum(isinstance(m, nn.Linear) for m in model.linear_layers().values())
        alive_beyond_the_model.append(alive - in_model)
        return replace(name, layer)

    monkeypatch.setattr(model, "replace_linear", counted)
    assert len(convert_to_fp8(model)) > 2
    assert max(alive_beyond_the_model) <= 1, alive_beyond_the_model  # the one being replaced


def tiny_inputs(cfg, batch=2, frames=2, height=2, width=2):
    g = torch.Generator().manual_seed(3)
    tokens = frames * height * width
    latent = torch.randn(batch, tokens, cfg.in_channels, generator=g)
    sigma = torch.rand(batch, generator=g)
    text = torch.randn(batch, 5, cfg.caption_channels, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    coords = fractional_coords(pixel_coords(latent_coords(frames, height, width, batch)), 25.0)
    return latent, sigma, text, mask, coords


@torch.no_grad()
def test_an_fp8_transformer_stays_close_to_the_fp32_one():
    torch.manual_seed(0)
    reference = LTXVTransformer(TINY_TRANSFORMER).eval()
    fp8_model = LTXVTransformer(TINY_TRANSFORMER).eval()
    fp8_model.load_state_dict(reference.state_dict())
    convert_to_fp8(fp8_model, out_dtype=torch.float32)
    inputs = tiny_inputs(TINY_TRANSFORMER)
    expected = reference(*inputs)
    got = fp8_model(*inputs)
    assert torch.isfinite(got).all()
    assert 0 < relative_error(got, expected) < MODEL_RTOL


# ---------------------------------------------------------------- the fused feed-forward


def test_gelu_quantize_rows_is_the_row_quantization_of_the_biased_gelu():
    """The custom op's reference path (the CPU's): quantize_rows(gelu_tanh(x + bias))."""
    from ltx_core.speed.fp8 import gelu_quantize_rows

    torch.manual_seed(0)
    x, bias = torch.randn(5, 64) * 3, torch.randn(64)
    values, scale = gelu_quantize_rows(x, bias)
    expected_values, expected_scale = quantize_rows(torch.nn.functional.gelu(x + bias, approximate="tanh"))
    assert values.dtype == FP8_DTYPE and scale.shape == (5, 1)
    assert torch.equal(values.float(), expected_values.float()) and torch.equal(scale, expected_scale)


def test_the_reference_check_accepts_the_op_and_refuses_a_wrong_one(monkeypatch):
    from ltx_core.speed import fp8

    fp8.quantize_kernel_matches_reference.cache_clear()
    assert fp8.quantize_kernel_matches_reference("cpu")
    plain = fp8.quantize_rows
    monkeypatch.setattr(fp8, "quantize_rows", lambda x: plain(x * 1.1))  # a kernel 10% off
    fp8.quantize_kernel_matches_reference.cache_clear()
    assert not fp8.quantize_kernel_matches_reference("cpu")
    fp8.quantize_kernel_matches_reference.cache_clear()


def test_the_layers_quantize_their_inputs_with_the_reference_off_cuda():
    """`quantize_activations` (the FP8 layers' input quantization) is `quantize_rows` itself
    wherever the kernel does not run."""
    from ltx_core.speed.fp8 import quantize_activations

    x = torch.randn(9, 48, generator=torch.Generator().manual_seed(1)) * 5
    values, scale = quantize_activations(x)
    expected_values, expected_scale = quantize_rows(x)
    assert torch.equal(values.float(), expected_values.float()) and torch.equal(scale, expected_scale)


def check_the_kernel_against_the_reference() -> None:
    """Run under Triton's CPU interpreter: the kernel's scales are the reference's to fp32
    rounding, with and without the GELU, a zero row and large values included. The
    interpreter's own FP8 cast rounds wrongly (126.5 to 64 and 160 to 176, where the GPU
    gives 128 and 160; subnormals to 0), so its values are held to the reference only
    loosely here: the same sign, within half their size, most of them equal; the CUDA test
    holds them exactly."""
    from ltx_core.speed import fp8

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(33, 1000, generator=g) * 4).to(torch.bfloat16)
    x[3] = 0
    x[5, :500] = 3000
    bias = torch.randn(1000, generator=g).to(torch.bfloat16)
    for gelu_bias in (None, bias):
        values, scale = fp8._quantize_rows_triton(x, gelu_bias)
        ref_values, ref_scale = fp8._in_one_pass(x, gelu_bias)
        assert values.dtype == FP8_DTYPE and values.shape == x.shape and scale.shape == (33, 1)
        assert torch.allclose(scale, ref_scale, rtol=1e-5, atol=0)
        got, expected = values.float(), ref_values.float()
        assert (got == expected).float().mean() > 0.9
        assert ((got - expected).abs() <= expected.abs() / 2 + 2**-8).all()  # subnormals flushed
        assert (got * expected >= 0).all()


def test_the_triton_quantize_kernel_matches_the_reference_under_the_interpreter():
    from tests import triton_interpreter

    triton_interpreter.interpreted("tests.test_fp8", "check_the_kernel_against_the_reference()")


def test_the_fused_fp8_feed_forward_gives_the_unfused_fp8_output():
    """FP8FeedForward = FP8 layer 1 (no bias) -> bias + GELU + quantization in one op -> FP8
    layer 2: the unfused FP8 feed-forward's numbers, with the same weights."""
    from ltx_core.speed.fp8 import FP8FeedForward, fuse_fp8_feed_forwards

    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    convert_to_fp8(model, out_dtype=torch.float32, keep_precise=())
    inputs = tiny_inputs(TINY_TRANSFORMER)
    unfused = model(*inputs)
    assert fuse_fp8_feed_forwards(model) == TINY_TRANSFORMER.num_layers
    assert all(isinstance(block.ff.net[0], FP8FeedForward) for block in model.transformer_blocks)
    fused = model(*inputs)
    assert (fused - unfused).abs().max() <= 1e-5 * unfused.abs().max()


def test_feed_forwards_left_in_their_precision_are_not_fused():
    from ltx_core.speed.fp8 import fuse_fp8_feed_forwards

    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    convert_to_fp8(model, out_dtype=torch.float32, keep_precise=KEEP_PRECISE + ("*.ff.*",))
    assert fuse_fp8_feed_forwards(model) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel runs on CUDA only (run on the GPU)")
@pytest.mark.parametrize("gelu", [True, False])
@pytest.mark.parametrize("width", [8192, 1000, 64])
def test_the_triton_quantize_kernel_matches_the_torch_reference(width, gelu):
    """The CUDA kernel against the CPU reference on the same bf16 inputs, with the GELU
    (`gelu_quantize_rows`) and without (`quantize_activations`): the same scales to fp32
    rounding; without the GELU the FP8 values equal (both divide rounded to nearest), with it
    equal but for rare one-step differences (the kernel's exp-based tanh against torch's); a
    zero input row and large values included."""
    from ltx_core.speed.fp8 import gelu_quantize_rows, quantize_activations

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(257, width, generator=g) * 4).to(torch.bfloat16)
    x[3] = 0
    x[5, : width // 2] = 3000
    bias = torch.randn(width, generator=g).to(torch.bfloat16)
    if gelu:
        values, scale = gelu_quantize_rows(x.cuda(), bias.cuda())
        ref_values, ref_scale = gelu_quantize_rows(x, bias)
    else:
        values, scale = quantize_activations(x.cuda())
        ref_values, ref_scale = quantize_rows(x)
    assert values.dtype == FP8_DTYPE and values.shape == x.shape and scale.shape == (257, 1)
    assert torch.allclose(scale.cpu(), ref_scale, rtol=1e-5, atol=0)
    got, expected = values.cpu().float(), ref_values.float()
    if not gelu:
        assert torch.equal(got, expected)
    assert (got != expected).float().mean() < 1e-3
    assert ((got - expected).abs() <= expected.abs() * E4M3_RELATIVE_STEP * 2 + 2**-9).all()


def test_elsewhere_the_bias_is_added_in_a_pass_of_its_own():
    """The epilogue bias is a CUDA cuBLAS feature; elsewhere the layer adds it itself."""
    layer = FP8Linear(torch.nn.Linear(32, 48).to(torch.bfloat16))
    assert not layer.bias_in_epilogue
    x = torch.randn(5, 32).to(torch.bfloat16)
    assert torch.equal(layer(x), layer.matmul_quantized(*quantize_rows(x), bias=False) + layer.bias)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuBLAS' epilogue bias runs on CUDA only (run on the GPU)")
@torch.no_grad()
def test_the_epilogue_bias_on_cuda_gives_the_separately_added_bias():
    torch.manual_seed(0)
    layer = FP8Linear(torch.nn.Linear(2048, 6144).cuda().to(torch.bfloat16))
    if not layer.bias_in_epilogue:  # the H100 with torch 2.11 takes it (gpu_speed.json's FP8 stage)
        pytest.skip("this torch / cuBLAS adds no bias in row-wise scaled FP8 GEMMs")
    x = torch.randn(6144, 2048, device="cuda").to(torch.bfloat16)
    fused = layer(x).float()
    layer.bias_in_epilogue = False
    separate = layer(x).float()
    # the epilogue adds in fp32 and rounds once; the separate add rounds twice
    assert ((fused - separate).abs() <= 2 * torch.finfo(torch.bfloat16).eps * separate.abs() + 1e-2).all()


def test_a_cpu_torch_without_row_wise_scaled_mm_is_refused_with_the_reason(monkeypatch):
    """torch 2.11's CPU `_scaled_mm` takes only per-tensor scales: FP8 is refused up front,
    not left to fail inside the first forward."""
    from ltx_core.errors import SettingsError
    from ltx_core.speed import fp8
    from ltx_core.speed.optimize import Speed, optimize_transformer

    assert fp8.fp8_supported("cpu")  # this torch (2.14) takes them
    monkeypatch.setattr(fp8, "_cpu_takes_row_wise_scales", lambda: False)
    with pytest.raises(SettingsError, match=r"_scaled_mm takes row-wise scales .* has neither"):
        optimize_transformer(LTXVTransformer(TINY_TRANSFORMER), Speed(fp8=True))
