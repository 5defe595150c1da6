"""Speed levers keep the transformer's outputs (CPU parts; CUDA graphs and the SDPA
backend choice need a GPU and are exercised by benchmarks/bench_gpu_speed.py)."""

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.models.configs import TINY_TRANSFORMER, TINY_VAE_0_9_1
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.speed.optimize import (
    CUDAGraphForward,
    FusedParts,
    Speed,
    attention_context,
    compile_regions,
    compile_vae_decoder,
    optimize_transformer,
    pick_attention_backend,
)
from tests.test_fp8 import MODEL_RTOL, relative_error, tiny_inputs

# Fusing projections concatenates the same weights: only the GEMM's summation order may move.
FUSED_ATOL = 1e-5


def twin_models():
    torch.manual_seed(0)
    reference = LTXVTransformer(TINY_TRANSFORMER).eval()
    other = LTXVTransformer(TINY_TRANSFORMER).eval()
    other.load_state_dict(reference.state_dict())
    return reference, other


@torch.no_grad()
def test_regional_compile_traces_each_region_as_one_graph_with_the_same_output():
    torch._dynamo.reset()
    reference, compiled = twin_models()
    compile_regions(compiled, backend="eager")  # fullgraph=True: a graph break raises
    inputs = tiny_inputs(TINY_TRANSFORMER)
    assert torch.equal(compiled(*inputs), reference(*inputs))


@torch.no_grad()
def test_a_compiled_vae_decoder_decodes_whole_and_in_time_chunks_as_the_eager_one():
    """Traced by Dynamo (a counting backend that runs the traced graphs eagerly). The
    time-chunked decode runs each block's compiled `forward_window` on 51 chunks (layers of
    5, 9, 17, 33 frames in chunks of 2): chunks differ only near the clip's ends, so a few
    graphs per layer shape (24 with torch 2.14), and none more on a second decode."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    vae = CausalVideoVAE(TINY_VAE_0_9_1).eval()
    for name, param in vae.named_parameters():
        if "per_channel_scale" in name:
            param.normal_(0.0, 0.3)
    latent = torch.randn(1, 128, 5, 1, 2, generator=torch.Generator().manual_seed(1))

    def decode(time_chunk=None):
        return vae.decode(latent, 0.05, 0.025, torch.Generator().manual_seed(7), time_chunk=time_chunk)

    whole, graphs = decode(), []
    compile_vae_decoder(vae, backend=lambda gm, inputs: graphs.append(gm) or gm.forward)
    chunked = decode(time_chunk=2)
    assert 0 < len(graphs) <= 4 * 7  # 4 resnet blocks and 3 upsamplers, at most 4 kinds of chunk each
    count = len(graphs)
    assert (decode(time_chunk=2) - whole).abs().max() <= FUSED_ATOL and len(graphs) == count
    assert (chunked - whole).abs().max() <= FUSED_ATOL
    assert torch.equal(decode(), whole)


@torch.no_grad()
def test_optimize_transformer_with_fp8_and_fusion_runs_on_cpu_close_to_the_original():
    reference, other = twin_models()
    fast = optimize_transformer(other, Speed(fp8=True))
    assert fast.levers["fp8_layers"] > 0 and fast.levers["attention"] == "default"
    assert fast.model is other and next(other.parameters()).device.type == "cpu"
    inputs = tiny_inputs(TINY_TRANSFORMER)
    assert relative_error(fast(*inputs), reference(*inputs)) < MODEL_RTOL


def test_attention_backend_names_are_checked():
    with pytest.raises(SettingsError, match="attention backend 'fa9'; allowed"):
        attention_context("fa9")
    with pytest.raises(SettingsError, match="attention backend 'fa9'; allowed"):
        optimize_transformer(LTXVTransformer(TINY_TRANSFORMER), Speed(attention="fa9"))


def test_auto_attention_falls_back_to_the_default_order_off_cuda():
    assert pick_attention_backend(1, 2, 16, 8, device="cpu") == "default"


def test_cuda_graphs_refuse_a_model_on_the_cpu():
    with pytest.raises(SettingsError, match="cuda_graphs needs the model on a CUDA device"):
        optimize_transformer(LTXVTransformer(TINY_TRANSFORMER), Speed(cuda_graphs=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_a_captured_forward_replays_with_new_inputs():
    weight = torch.randn(8, 8, device="cuda")
    graphed = CUDAGraphForward(lambda x: (x @ weight).relu())
    for seed in range(3):
        x = torch.randn(4, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        assert torch.allclose(graphed(x), (x @ weight).relu())
    assert len(graphed.graphs) == 1
    wide = torch.randn(6, 8, device="cuda")
    assert torch.allclose(graphed(wide), (wide @ weight).relu())  # a second shape, same memory pool
    assert torch.allclose(graphed(x), (x @ weight).relu())
    assert len(graphed.graphs) == 2


@torch.no_grad()
def test_the_gelu_epilogue_op_computes_linear_then_gelu_and_is_used_only_where_it_is_the_tanh_form():
    from ltx_core.speed.optimize import fuse_gelu_epilogues, gelu_epilogue_is_tanh, linear_gelu_tanh

    x, w, b = torch.randn(3, 5, 16), torch.randn(32, 16), torch.randn(32)
    expected = torch.nn.functional.gelu(
        torch.nn.functional.linear(x, w, b), approximate="tanh" if gelu_epilogue_is_tanh("cpu") else "none"
    )
    assert torch.allclose(linear_gelu_tanh(x, w, b), expected, atol=1e-5)
    model = LTXVTransformer(TINY_TRANSFORMER)
    swapped = fuse_gelu_epilogues(model)
    assert not gelu_epilogue_is_tanh("cpu")  # the CPU kernel computes the exact GELU: left unfused
    assert swapped == 0


def test_the_default_levers_fuse_the_fp8_feed_forward():
    """optimize_transformer's fused parts by default (the CLI's and the loader node's): with
    fp8 the feed-forward's GELU + quantization in one op, same numbers as unfused."""
    from ltx_core.speed.fp8 import FP8FeedForward

    torch.manual_seed(0)
    plain = LTXVTransformer(TINY_TRANSFORMER).eval()
    inputs = tiny_inputs(TINY_TRANSFORMER)
    unfused = LTXVTransformer(TINY_TRANSFORMER).eval()
    unfused.load_state_dict(plain.state_dict())
    reference = optimize_transformer(unfused, Speed(fp8=True), FusedParts(fp8_quantize=False))
    fast = optimize_transformer(plain, Speed(fp8=True))
    assert fast.levers["fp8_fused_feed_forwards"] == TINY_TRANSFORMER.num_layers
    assert "fp8_fused_feed_forwards" not in reference.levers
    assert all(hasattr(b.attn1, "to_qkv") and isinstance(b.ff.net[0], FP8FeedForward) for b in plain.transformer_blocks)
    expected = reference(*inputs)
    assert (fast(*inputs) - expected).abs().max() <= 0.05 * expected.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the one-pass quantization is a CUDA kernel (run on the GPU)")
def test_on_cuda_the_fp8_layers_quantize_their_inputs_in_one_pass_with_the_same_velocity():
    """The default fp8 levers on CUDA: every FP8 layer's input quantized by the Triton kernel;
    the velocity that of the layers quantizing with PyTorch ops, to FP8 rounding steps."""
    torch.manual_seed(0)
    plain = LTXVTransformer(TINY_TRANSFORMER).cuda().to(torch.bfloat16).eval()
    other = LTXVTransformer(TINY_TRANSFORMER).cuda().to(torch.bfloat16).eval()
    other.load_state_dict(plain.state_dict())
    latent, sigma, text, mask, coords = (x.cuda() for x in tiny_inputs(TINY_TRANSFORMER))
    inputs = (latent.to(torch.bfloat16), sigma, text.to(torch.bfloat16), mask, coords)
    fast = optimize_transformer(plain, Speed(fp8=True))
    reference = optimize_transformer(other, Speed(fp8=True), FusedParts(fp8_quantize=False))
    assert fast.levers["fp8_one_pass_quantize"] == fast.levers["fp8_layers"] > 0
    assert "fp8_one_pass_quantize" not in reference.levers
    expected = reference(*inputs).float()
    assert relative_error(fast(*inputs), expected) < 0.02


def test_compiling_on_cuda_compiles_the_vae_decoder_too_and_not_on_the_cpu():
    """The CLI's --compile and the loader's compile option give the same levers: on a GPU
    the decoder's layers are compiled as well (the whole run's decode); the CPU keeps it eager."""
    assert Speed.chosen(compile=True, fp8=False, device="cuda", stays_put=True).compile_vae
    assert not Speed.chosen(compile=False, fp8=True, device="cuda", stays_put=True).compile_vae
    assert not Speed.chosen(compile=True, fp8=False, device="cpu", stays_put=True).compile_vae


def test_fast_kernels_alone_turn_on_the_fused_kernels_and_timed_attention_on_cuda_only():
    """--fast-kernels without --compile or --fp8: no compile, no CUDA graphs, the attention
    timed ('auto'), which makes `optimize_transformer` apply the fused kernels; the CPU and
    the defaults stay the plain model."""
    kernels = Speed.chosen(compile=False, fp8=False, device="cuda", stays_put=True, kernels=True)
    assert kernels == Speed(attention="auto") and kernels.changes_transformer
    assert not Speed.chosen(compile=False, fp8=False, device="cuda", stays_put=True).changes_transformer
    assert not Speed.chosen(compile=False, fp8=False, device="cpu", stays_put=True, kernels=True).changes_transformer
