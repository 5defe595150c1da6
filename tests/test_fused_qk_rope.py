"""The fused QK-norm + RoPE op: its reference is the transformer's own math, and the Triton
kernel (run here through Triton's CPU interpreter, on the GPU by the CUDA test) matches it."""

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.rope import rope_cos_sin, rope_pair_cos_sin
from ltx_core.models.transformer import BlockKernels, LTXVTransformer
from ltx_core.speed import fused_qk_rope
from ltx_core.speed.optimize import compile_regions
from tests import triton_interpreter
from tests.test_fp8 import tiny_inputs

triton = pytest.importorskip("triton", reason="Triton ships with CUDA builds of torch; the kernel needs it")

# The kernel works in fp32 and rounds once: in fp32 only the order of its sums differs.
FP32_ATOL = 1e-5


def qk_inputs(batch=2, tokens=7, width=90, dtype=torch.float32, fused_projection=True, seed=0):
    """q and k as the model gives them (chunks of the fused q/k/v output: strided rows),
    RMSNorm weights, and the pair tables of real RoPE coordinates."""
    g = torch.Generator().manual_seed(seed)
    if fused_projection:
        q, k, _ = (torch.randn(batch, tokens, 3 * width, generator=g) * 3).to(dtype).chunk(3, dim=-1)
    else:
        q, k = ((torch.randn(batch, tokens, width, generator=g) * 3).to(dtype) for _ in range(2))
    q_weight, k_weight = ((torch.rand(width, generator=g) + 0.5).to(dtype) for _ in range(2))
    coords = torch.rand(batch, 3, tokens, generator=g) * torch.tensor([5.0, 512, 768])[None, :, None]
    cos, sin = rope_pair_cos_sin(coords, width, 10000.0, (20, 2048, 2048))
    return q, k, q_weight, k_weight, cos.to(dtype), sin.to(dtype)


def interpreted(call: str) -> None:
    triton_interpreter.interpreted("tests.test_fused_qk_rope", call)


def test_pair_tables_are_the_channel_tables_at_even_channels_with_padding_pairs_unrotated():
    coords = torch.rand(1, 3, 5) * 100
    for width in (96, 98, 100):  # width % 6 = 0, 2, 4
        cos, sin = rope_pair_cos_sin(coords, width, 10000.0, (20, 2048, 2048))
        full_cos, full_sin = rope_cos_sin(coords, width, 10000.0, (20, 2048, 2048))
        assert cos.shape == (1, 5, width // 2)
        assert torch.equal(full_cos[..., 0::2], cos) and torch.equal(full_cos[..., 1::2], cos)
        assert torch.equal(full_sin[..., 0::2], sin)
        padding = (width % 6) // 2
        assert (cos[..., :padding] == 1).all() and (sin[..., :padding] == 0).all()
        assert not (sin[..., padding:] == 0).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda q, k, qw, kw, c, s: (q, k[:, :-1], qw, kw, c, s), r"q \(2, 7, 90\) .* and k \(2, 6, 90\)"),
        (
            lambda q, k, qw, kw, c, s: (q, k.double(), qw, kw, c, s),
            r"allowed: the same \(batch, tokens, even width\) and dtype",
        ),
        (lambda q, k, qw, kw, c, s: (q, k, qw[:-2], kw, c, s), r"norm weights \(88,\), \(90,\); allowed: \(90,\)"),
        (
            lambda q, k, qw, kw, c, s: (q, k, qw, kw, c.repeat(1, 1, 2), s),
            r"cos table \(2, 7, 90\); allowed: \(2 or 1, 7, 45\)",
        ),
        (lambda q, k, qw, kw, c, s: (q, k, qw, kw, c, s[:, :3]), r"sin table \(2, 3, 45\)"),
    ],
)
def test_inputs_of_the_wrong_shape_are_refused_before_the_kernel_reads_them(change, message):
    with pytest.raises(SettingsError, match=message):
        fused_qk_rope.qk_norm_rope(*change(*qk_inputs()), 1e-5)


def test_small_widths_get_whole_pair_tables():
    for width in (2, 4, 6, 8):
        cos, sin = rope_pair_cos_sin(torch.rand(1, 3, 2) * 9, width, 10000.0, (20, 2048, 2048))
        assert cos.shape == sin.shape == (1, 2, width // 2)


def test_an_odd_rope_width_is_refused_with_the_reason():
    with pytest.raises(SettingsError, match="RoPE width 95 is odd"):
        rope_pair_cos_sin(torch.zeros(1, 3, 2), 95, 10000.0, (20, 2048, 2048))


@torch.no_grad()
def test_a_model_with_the_fused_op_gives_the_unfused_velocity():
    """Off CUDA the op runs its reference: the same velocity as the model's own QK-norm and
    RoPE, bit for bit apart from where the tables are expanded."""
    torch.manual_seed(0)
    reference = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused.load_state_dict(reference.state_dict())
    assert fused_qk_rope.enable(fused) == TINY_TRANSFORMER.num_layers
    assert fused.kernels == BlockKernels(qk_norm_rope=fused_qk_rope.qk_norm_rope)
    inputs = tiny_inputs(TINY_TRANSFORMER)
    assert (fused(*inputs) - reference(*inputs)).abs().max() <= FP32_ATOL


@torch.no_grad()
def test_the_fused_op_traces_into_a_compiled_region_without_a_graph_break():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    inputs = tiny_inputs(TINY_TRANSFORMER)
    fused_qk_rope.enable(model)
    expected = model(*inputs)
    compile_regions(model, backend="eager")  # fullgraph=True: a graph break raises
    assert torch.equal(model(*inputs), expected)


@torch.no_grad()
def check_kernel_in_fp32() -> None:
    for width in (96, 100, 64):  # padding pairs 0 and 2; pairs not a power of two, and one that is
        for fused_projection in (True, False):  # strided chunks of the q/k/v output, and plain
            inputs = qk_inputs(width=width, fused_projection=fused_projection)
            got = fused_qk_rope.qk_norm_rope(*inputs, 1e-5)
            expected = fused_qk_rope.qk_norm_rope_reference(*inputs, 1e-5)
            for g, e in zip(got, expected):
                assert g.shape == e.shape and g.is_contiguous()
                assert (g - e).abs().max() <= FP32_ATOL, (width, fused_projection, (g - e).abs().max())


@torch.no_grad()
def check_kernel_with_tables_broadcast_over_the_batch() -> None:
    q, k, q_weight, k_weight, cos, sin = qk_inputs(batch=3, tokens=5, width=96)
    cos, sin = cos[:1], sin[:1]  # one table for every batch item
    got = fused_qk_rope.qk_norm_rope(q, k, q_weight, k_weight, cos, sin, 1e-5)
    expected = fused_qk_rope.qk_norm_rope_reference(q, k, q_weight, k_weight, cos, sin, 1e-5)
    for g, e in zip(got, expected):
        assert (g - e).abs().max() <= FP32_ATOL


@torch.no_grad()
def check_model_with_the_kernel() -> None:
    """The tiny model with the kernel in every self-attention gives the unfused velocity."""
    torch.manual_seed(0)
    reference = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused.load_state_dict(reference.state_dict())
    fused_qk_rope.enable(fused)
    inputs = tiny_inputs(TINY_TRANSFORMER)
    assert (fused(*inputs) - reference(*inputs)).abs().max() <= FP32_ATOL


@torch.no_grad()
def check_kernel_rounds_bf16_once() -> None:
    """In bf16 each value is the fp32 result rounded once: within one bf16 step of it (the
    interpreter's cast truncates; on the GPU it rounds to nearest, half a step, which the
    CUDA test checks). Rounding the normalized values before the rotation, as eager bf16
    math does, would miss this bound."""
    inputs = qk_inputs(width=96, dtype=torch.bfloat16)
    got = fused_qk_rope.qk_norm_rope(*inputs, 1e-5)
    exact = fused_qk_rope.qk_norm_rope_reference(*(t.float() for t in inputs), 1e-5)
    step = torch.finfo(torch.bfloat16).eps
    for g, e in zip(got, exact):
        assert g.dtype == torch.bfloat16
        assert ((g.float() - e).abs() <= step * e.abs() + 1e-6).all()


def check_self_check_tells_a_wrong_kernel() -> None:
    assert fused_qk_rope.matches_reference("cpu")
    right = fused_qk_rope._qk_norm_rope_triton

    def one_percent_off(*args):
        q, k = right(*args)
        return q * 1.01, k

    fused_qk_rope._qk_norm_rope_triton = one_percent_off
    assert not fused_qk_rope.matches_reference("cpu")


def test_the_triton_kernel_matches_the_reference_in_fp32():
    interpreted("check_kernel_in_fp32()")


def test_the_triton_kernel_reads_one_table_for_every_batch_item():
    interpreted("check_kernel_with_tables_broadcast_over_the_batch()")


def test_the_tiny_model_with_the_triton_kernel_gives_the_unfused_velocity():
    interpreted("check_model_with_the_kernel()")


def test_the_triton_kernel_rounds_bf16_once():
    interpreted("check_kernel_rounds_bf16_once()")


def test_the_self_check_passes_for_the_kernel_and_fails_for_a_wrong_one():
    interpreted("check_self_check_tells_a_wrong_kernel()")


def test_a_failing_check_fails_its_test():
    """The subprocess harness itself: an assertion in the child is this test's failure."""
    with pytest.raises(AssertionError, match="AssertionError"):
        interpreted("fused_qk_rope.__name__ and (_ for _ in ()).throw(AssertionError('child'))")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernel runs on CUDA only (run on the GPU)")
@torch.no_grad()
def test_the_compiled_kernel_matches_the_reference_at_the_2b_width_on_cuda():
    inputs = [t.cuda() for t in qk_inputs(batch=2, tokens=6144, width=2048, dtype=torch.bfloat16)]
    got = fused_qk_rope.qk_norm_rope(*inputs, 1e-5)
    exact = fused_qk_rope.qk_norm_rope_reference(*(t.float() for t in inputs), 1e-5)
    half_step = torch.finfo(torch.bfloat16).eps / 2
    for g, e in zip(got, exact):
        assert ((g.float() - e).abs() <= half_step * e.abs() + 1e-5).all()
    assert fused_qk_rope.matches_reference("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernel runs on CUDA only (run on the GPU)")
@torch.no_grad()
def test_optimize_transformer_turns_the_kernel_on_at_the_2b_width_on_cuda():
    """Its self-check at the real width passes, so the lever is on, and the velocity keeps
    to the unfused one within bf16 rounding."""
    from ltx_core.speed.optimize import Speed
    from tests.cuda_models import velocity_gap_at_2b_width

    levers, gap = velocity_gap_at_2b_width(Speed())
    assert levers["fused_qk_rope"] == 2
    assert gap < 0.02
