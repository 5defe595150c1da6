"""Kernel-level readings `bench_gpu_speed` takes beside its clip timings: GEMM rates in bf16
and FP8 at the 2B model's shapes, the fused QK-norm + RoPE op against Inductor's kernels,
and a CUDA kernel profile of one forward, summed by kernel kind."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.gpu_speed_pipelines import Inputs
from ltx_core.models.rope import apply_rope
from ltx_core.speed import fused_qk_rope, optimize as acceleration
from ltx_core.speed.fp8 import gelu_quantize_rows, quantize_rows


def graphed_seconds(fn, calls: int = 10) -> float:
    """GPU seconds of one `fn()`: `calls` of it captured in a CUDA graph and replayed, so the
    host's dispatch (which can take longer than a short kernel for a Python custom op) is
    not timed."""
    fn()  # autotuning and compilation happen here, outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return acceleration.time_cuda(graph.replay, repeats=20) / calls


def qk_norm_rope_rates(tokens: int, width: int) -> dict:
    """Microseconds of one self-attention's QK-norm + RoPE on the GPU: the Triton op against
    the reference compiled by Inductor (full-width tables, as the unfused model reads them)."""
    rows = {}
    weight = torch.rand(width, device="cuda", dtype=torch.bfloat16) + 0.5

    def unfused(q, k, cos, sin):
        q = torch.nn.functional.rms_norm(q, (width,), weight, 1e-5)
        k = torch.nn.functional.rms_norm(k, (width,), weight, 1e-5)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    compiled = torch.compile(unfused, dynamic=False)
    for batch in (1, 2):
        qkv = torch.randn(batch, tokens, 3 * width, device="cuda", dtype=torch.bfloat16)
        q, k, _ = qkv.chunk(3, dim=-1)
        angles = torch.rand(batch, tokens, width // 2, device="cuda") * 100
        cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
        full = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        rows[f"batch{batch}"] = dict(
            triton_us=round(
                1e6 * graphed_seconds(lambda: fused_qk_rope.qk_norm_rope(q, k, weight, weight, cos, sin, 1e-5)), 1
            ),
            inductor_us=round(1e6 * graphed_seconds(lambda: compiled(q, k, *full)), 1),
        )
        print(f"  qk-norm + rope batch {batch}: {rows[f'batch{batch}']}", flush=True)
    return rows


def gemm_row(a: torch.Tensor, b: torch.Tensor, quantize) -> dict:
    """a @ b.T in bf16 against FP8 row-wise `_scaled_mm`, and the activation's quantization."""
    (m, k), n = a.shape, b.shape[0]
    aq, sa = quantize_rows(a)
    bq, sb = quantize_rows(b)
    sb = sb.reshape(1, -1).contiguous()
    bf16 = acceleration.time_cuda(lambda: a @ b.t(), repeats=20)
    fp8 = acceleration.time_cuda(
        lambda: torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16), repeats=20
    )
    quant = acceleration.time_cuda(lambda: quantize(a), repeats=20)
    flop = 2 * m * n * k
    return dict(
        bf16_tflops=round(flop / bf16 / 1e12),
        fp8_tflops=round(flop / fp8 / 1e12),
        bf16_us=round(bf16 * 1e6, 1),
        fp8_us=round(fp8 * 1e6, 1),
        quantize_us=round(quant * 1e6, 1),
    )


def gelu_quantize_row(a: torch.Tensor, gelu_quantize_compiled) -> dict:
    """Bias + GELU + row quantization of `a`, Inductor's kernels against our Triton pass."""
    bias = torch.randn(a.shape[1], device="cuda", dtype=torch.bfloat16)
    return dict(
        gelu_quantize_inductor_us=round(
            1e6 * acceleration.time_cuda(lambda: gelu_quantize_compiled(a, bias), repeats=20), 1
        ),
        gelu_quantize_triton_us=round(1e6 * acceleration.time_cuda(lambda: gelu_quantize_rows(a, bias), repeats=20), 1),
    )


def gemm_rates(tokens: int) -> dict:
    """`gemm_row` at the 2B model's linear shapes, batch 1 and 2 (CFG)."""
    rows = {}
    quantize = torch.compile(quantize_rows, dynamic=False)
    gelu_quantize_compiled = torch.compile(
        lambda x, bias: quantize_rows(torch.nn.functional.gelu(x + bias, approximate="tanh")), dynamic=False
    )
    for m in (tokens, 2 * tokens):
        for k, n in ((2048, 2048), (2048, 8192), (8192, 2048)):
            a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            row = rows[f"{m}x{k}x{n}"] = gemm_row(a, b, quantize)
            if k == 8192:  # the feed-forward's hidden activation: bias + GELU + quantization
                row.update(gelu_quantize_row(a, gelu_quantize_compiled))
            print(f"  gemm {m}x{k}x{n}: {row}", flush=True)
    return rows


def kernel_kind(key: str) -> str:
    """Which kind of work a CUDA kernel's name says it does."""
    if key.startswith("triton"):  # fused glue; names list the ops it absorbed
        return "triton"
    if any(s in key for s in ("fmha", "attention", "flash", "cudnn", "sdpa")):
        return "attention"
    if any(s in key for s in ("gemm", "sm90", "cutlass", "nvjet", "f8f8", "xmma", "matmul")):
        return "gemm"
    return "other"


def kernel_profile(name: str, model, attention: str, inputs: Inputs, R: dict, out_dir: Path) -> None:
    """CUDA time per kernel kind for one batch-1 forward, into R["kernel_profile"][name]; the
    full table goes to out_dir/gpu_kernels_NAME.txt."""
    from torch.profiler import ProfilerActivity, profile

    plain = acceleration.OptimizedTransformer(model, attention)
    sigma = torch.full((1, 1), 0.5, device=inputs.probe.device)
    args = (inputs.probe.to(torch.bfloat16), sigma, inputs.text, inputs.text_mask, inputs.coords)
    plain(*args)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        plain(*args)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    (out_dir / f"gpu_kernels_{name}.txt").write_text(
        averages.table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=100)
    )
    totals: dict = {}
    for event in averages:
        if "cuda" not in str(getattr(event, "device_type", "cuda")).lower():
            continue
        microseconds = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        kind = kernel_kind(event.key.lower())
        totals[f"{kind}_ms"] = totals.get(f"{kind}_ms", 0.0) + microseconds / 1e3
        totals["kernels"] = totals.get("kernels", 0) + event.count
    R.setdefault("kernel_profile", {})[name] = totals
    print(f"  kernels {name}: {totals}", flush=True)
