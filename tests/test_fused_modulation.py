"""The fused modulation ops: their references are the block's own math, and the Triton kernels
(run here through Triton's CPU interpreter, on the GPU by the CUDA tests) match them."""

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.transformer import BlockKernels, LTXVTransformer
from ltx_core.speed import fused_modulation
from ltx_core.speed.optimize import Speed, optimize_transformer
from tests import triton_interpreter
from tests.test_fp8 import tiny_inputs

triton = pytest.importorskip("triton", reason="Triton ships with CUDA builds of torch; the kernels need it")

# The kernels work in fp32 and round once: in fp32 only the order of the norm's sum differs.
FP32_ATOL = 1e-5


def modulation_inputs(batch=2, tokens=7, width=90, rows=1, dtype=torch.float32, seed=0):
    """x and y (B, T, D), and shift, scale, gate as the block cuts them from one AdaLN tensor
    (B, rows, 6, D): strided, one row per video (rows 1) or per token."""
    g = torch.Generator().manual_seed(seed)
    x, y = ((torch.randn(batch, tokens, width, generator=g) * 3).to(dtype) for _ in range(2))
    ada = torch.randn(batch, rows, 6, width, generator=g).to(dtype)
    weight = (torch.rand(width, generator=g) + 0.5).to(dtype)
    return x, y, ada[:, :, 0], ada[:, :, 1], ada[:, :, 2], weight


def interpreted(call: str) -> None:
    triton_interpreter.interpreted("tests.test_fused_modulation", call)


def test_the_references_are_the_blocks_unfused_math():
    x, y, shift, scale, gate, weight = modulation_inputs()
    norm = torch.nn.RMSNorm(90, eps=1e-6, elementwise_affine=False)
    assert torch.equal(fused_modulation.norm_modulate(x, scale, shift, None, 1e-6), norm(x) * (1 + scale) + shift)
    assert torch.equal(fused_modulation.gated_residual(x, gate, y), x + gate * y)


@pytest.mark.parametrize(
    "op, change, message",
    [
        ("norm", lambda x, y, h, s, g, w: (x[0], s, h, None), r"norm_modulate: x \(7, 90\); allowed: \(batch"),
        (
            "norm",
            lambda x, y, h, s, g, w: (x, s[:, :, :-1], h, None),
            r"scale \(2, 1, 89\); allowed: \(2, 1 or 7, 90\)",
        ),
        ("norm", lambda x, y, h, s, g, w: (x, s, h[:, :, :3].repeat(1, 2, 30), None), r"shift \(2, 2, 90\)"),
        ("norm", lambda x, y, h, s, g, w: (x, s.double(), h, None), r"scale is torch.float64, x is torch.float32"),
        ("norm", lambda x, y, h, s, g, w: (x, s, h, w[:-1]), r"norm weight \(89,\); allowed: \(90,\)"),
        ("gate", lambda x, y, h, s, g, w: (x, g, y[:, :1]), r"gated_residual: y \(2, 1, 90\); allowed: \(2, 7, 90\)"),
        ("gate", lambda x, y, h, s, g, w: (x, g[:1], y), r"gate \(1, 1, 90\); allowed: \(2, 1 or 7, 90\)"),
    ],
)
def test_inputs_of_the_wrong_shape_are_refused_before_the_kernels_read_them(op, change, message):
    inputs = change(*modulation_inputs())
    with pytest.raises(SettingsError, match=message):
        if op == "norm":
            fused_modulation.norm_modulate(*inputs, 1e-6)
        else:
            fused_modulation.gated_residual(*inputs)


@torch.no_grad()
def test_a_model_with_the_fused_ops_gives_the_unfused_velocity():
    """Off CUDA the ops run their references: the model's own velocity, per-token timesteps
    (each token its own modulation row) and one per video alike."""
    torch.manual_seed(0)
    reference = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused.load_state_dict(reference.state_dict())
    assert fused_modulation.enable(fused) == TINY_TRANSFORMER.num_layers
    ops = dict(norm_modulate=fused_modulation.norm_modulate, gated_residual=fused_modulation.gated_residual)
    assert fused.kernels == BlockKernels(**ops)
    latent, sigma, text, mask, coords = tiny_inputs(TINY_TRANSFORMER)
    for timestep in (sigma, torch.rand(latent.shape[:2])):
        inputs = (latent, timestep, text, mask, coords)
        assert torch.equal(fused(*inputs), reference(*inputs))


def test_optimize_transformer_leaves_the_ops_off_where_they_do_not_run():
    """On the CPU no lever fuses them (the kernels are CUDA's); nothing changes the model."""
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    fast = optimize_transformer(model, Speed(attention="auto"))
    assert "fused_modulation" not in fast.levers and model.kernels.norm_modulate is None


@torch.no_grad()
def check_kernels_in_fp32() -> None:
    for width in (96, 90, 64):  # channels a power of two, and not
        for rows in (1, 7):  # one modulation row per video, one per token
            x, y, shift, scale, gate, weight = modulation_inputs(width=width, rows=rows)
            for w in (None, weight):
                got = fused_modulation.norm_modulate(x, scale, shift, w, 1e-6)
                expected = fused_modulation.norm_modulate_reference(x, scale, shift, w, 1e-6)
                assert got.is_contiguous() and (got - expected).abs().max() <= FP32_ATOL, (width, rows, w is None)
            got = fused_modulation.gated_residual(x, gate, y)
            assert (got - fused_modulation.gated_residual_reference(x, gate, y)).abs().max() <= FP32_ATOL


@torch.no_grad()
def check_kernels_round_bf16_once() -> None:
    """In bf16 each value is the fp32 result rounded once: within one bf16 step of it (the
    interpreter's cast truncates; on the GPU it rounds to nearest)."""
    x, y, shift, scale, gate, weight = modulation_inputs(width=96, rows=7, dtype=torch.bfloat16)
    step = torch.finfo(torch.bfloat16).eps
    pairs = [
        (fused_modulation.norm_modulate(x, scale, shift, weight, 1e-6),
         fused_modulation.norm_modulate_reference(x.float(), scale.float(), shift.float(), weight.float(), 1e-6)),
        (fused_modulation.gated_residual(x, gate, y),
         fused_modulation.gated_residual_reference(x.float(), gate.float(), y.float())),
    ]  # fmt: skip
    for got, exact in pairs:
        assert got.dtype == torch.bfloat16
        assert ((got.float() - exact).abs() <= step * exact.abs() + 1e-6).all()


@torch.no_grad()
def check_model_with_the_kernels() -> None:
    """The tiny model with the kernels in every block gives the unfused velocity."""
    torch.manual_seed(0)
    reference = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused = LTXVTransformer(TINY_TRANSFORMER).eval()
    fused.load_state_dict(reference.state_dict())
    fused_modulation.enable(fused)
    inputs = tiny_inputs(TINY_TRANSFORMER)
    assert (fused(*inputs) - reference(*inputs)).abs().max() <= FP32_ATOL


def check_self_check_tells_a_wrong_kernel() -> None:
    assert fused_modulation.matches_reference("cpu")
    right = fused_modulation._launch_gated_residual
    fused_modulation._launch_gated_residual = lambda *args: right(*args) * 1.01
    assert not fused_modulation.matches_reference("cpu")


def test_the_triton_kernels_match_the_references_in_fp32():
    interpreted("check_kernels_in_fp32()")


def test_the_triton_kernels_round_bf16_once():
    interpreted("check_kernels_round_bf16_once()")


def test_the_tiny_model_with_the_triton_kernels_gives_the_unfused_velocity():
    interpreted("check_model_with_the_kernels()")


def test_the_self_check_passes_for_the_kernels_and_fails_for_a_wrong_one():
    interpreted("check_self_check_tells_a_wrong_kernel()")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels run on CUDA only (run on the GPU)")
@torch.no_grad()
def test_the_compiled_kernels_match_the_references_at_the_2b_width_on_cuda():
    half_step = torch.finfo(torch.bfloat16).eps / 2
    for rows in (1, 6144):
        x, y, shift, scale, gate, weight = (
            t.cuda() for t in modulation_inputs(tokens=6144, width=2048, rows=rows, dtype=torch.bfloat16)
        )
        got = fused_modulation.norm_modulate(x, scale, shift, None, 1e-6)
        exact = fused_modulation.norm_modulate_reference(x.float(), scale.float(), shift.float(), None, 1e-6)
        assert ((got.float() - exact).abs() <= half_step * exact.abs() + 1e-5).all()
        got = fused_modulation.gated_residual(x, gate, y)
        exact = fused_modulation.gated_residual_reference(x.float(), gate.float(), y.float())
        assert ((got.float() - exact).abs() <= half_step * exact.abs() + 1e-5).all()
    assert fused_modulation.matches_reference("cuda", width=2048)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels run on CUDA only (run on the GPU)")
@torch.no_grad()
def test_optimize_transformer_turns_the_kernels_on_without_compiling_on_cuda():
    """Its self-check at the real width passes, so the lever is on without compiling (and off
    with it), and the velocity keeps to the unfused one within bf16 rounding."""
    from tests.cuda_models import velocity_gap_at_2b_width

    levers, gap = velocity_gap_at_2b_width(Speed(attention="auto"))
    assert levers["fused_modulation"] == 2
    assert gap < 0.02


@torch.no_grad()
def test_the_fused_ops_trace_into_a_compiled_region_as_custom_ops_without_a_graph_break():
    """Traced, each call is the custom op (one opaque node); run eagerly, the plain function.
    Either way the velocity is the model's own."""
    from ltx_core.speed.optimize import compile_regions

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = LTXVTransformer(TINY_TRANSFORMER).eval()
    inputs = tiny_inputs(TINY_TRANSFORMER)
    expected = model(*inputs)
    fused_modulation.enable(model)
    compile_regions(model, backend="eager")  # fullgraph=True: a graph break raises
    assert torch.equal(model(*inputs), expected)
