"""Where one DiT step and one decode spend their time and memory on the GPU (issue 6),
to choose levers for `bench_gpu_speed.py`: GEMM rates bf16 vs FP8 row-wise at the model's
shapes, one forward per lever variant (CUDA-graph replays), a kernel table from the
profiler, and VAE decode time / peak memory eager vs regionally compiled.

    PYTHONUNBUFFERED=1 python benchmarks/profile_gpu_step.py --out $OUT
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx_core import acceleration  # noqa: E402
from ltx_core.configs import LTXV_2B, LTXV_VAE_0_9_1  # noqa: E402
from ltx_core.fp8 import KEEP_PRECISE, quantize_rows  # noqa: E402
from ltx_core.rope import fractional_coords, latent_coords, pixel_coords  # noqa: E402
from ltx_core.transformer import LTXVTransformer  # noqa: E402
from ltx_core.vae import CausalVideoVAE  # noqa: E402

GIB = 2**30
F, H, W = 16, 16, 24  # 768x512x121 in latent tokens
TOKENS = F * H * W
RESULTS: dict = {"errors": {}}
REFERENCE: dict = {}  # variant -> one batch-1 forward output


def stage(name):
    def wrap(fn):
        def run(*args, **kwargs):
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                RESULTS["errors"][name] = f"{type(error).__name__}: {error}"[:1500]
                traceback.print_exc()
            finally:
                RESULTS.setdefault("stage_s", {})[name] = round(time.perf_counter() - t0, 1)
                OUT.joinpath("profile.json").write_text(json.dumps(RESULTS, indent=2, default=str))
        return run
    return wrap


@stage("gemm rates")
def gemm_rates():
    rows = {}
    for m in (TOKENS, 2 * TOKENS):
        for k, n in ((2048, 2048), (2048, 8192), (8192, 2048)):
            a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            flop = 2 * m * n * k
            t_bf16 = acceleration.time_cuda(lambda: a @ b.t(), repeats=20)
            aq, sa = quantize_rows(a)
            bq, sb = quantize_rows(b)
            sb = sb.reshape(1, -1).contiguous()
            t_fp8 = acceleration.time_cuda(lambda: torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb,
                                                                   out_dtype=torch.bfloat16), repeats=20)
            quant = torch.compile(quantize_rows, dynamic=False)
            t_q = acceleration.time_cuda(lambda: quant(a), repeats=20)
            rows[f"{m}x{k}x{n}"] = dict(bf16_tflops=flop / t_bf16 / 1e12, fp8_tflops=flop / t_fp8 / 1e12,
                                        bf16_us=t_bf16 * 1e6, fp8_us=t_fp8 * 1e6, quantize_us=t_q * 1e6)
            print(f"  {m}x{k}x{n}: {rows[f'{m}x{k}x{n}']}", flush=True)
    RESULTS["gemm"] = rows


def inputs(batch):
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(batch, TOKENS, 128, generator=g).cuda().bfloat16()
    t = torch.full((batch, 1), 0.5, device="cuda")
    text = torch.randn(batch, 128, 4096, generator=g).cuda().bfloat16()
    mask = torch.zeros(batch, 128, dtype=torch.long, device="cuda")
    mask[:, :32] = 1
    coords = fractional_coords(pixel_coords(latent_coords(F, H, W, batch, device="cuda")), 25.0)
    return latent, t, text, mask, coords


def fresh_model(state):
    with torch.device("meta"):
        model = LTXVTransformer(LTXV_2B)
    model.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    return model.eval().requires_grad_(False)


def forward_time(fast, batch, repeats=10):
    args = inputs(batch)
    t0 = time.perf_counter()
    fast(*args)
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    return acceleration.time_cuda(lambda: fast(*args), repeats=repeats, warmup=1), first


def variant(name, state, batches=(1, 2), inductor=None, **levers):
    @stage(f"forward: {name}")
    def go():
        torch._dynamo.reset()
        saved = {}
        for key, value in (inductor or {}).items():
            saved[key] = getattr(torch._inductor.config, key)
            setattr(torch._inductor.config, key, value)
        try:
            model = fresh_model(state)
            fast = acceleration.optimize_transformer(model, attention="cudnn", cuda_graphs=True, **levers)
            row = RESULTS.setdefault("forward", {})[name] = {"levers": fast.levers}
            out = fast(*inputs(1)).float()
            if "bf16 compile" in REFERENCE:
                row["max_abs_vs_bf16_compile"] = (out - REFERENCE["bf16 compile"]).abs().max().item()
            REFERENCE.setdefault(name, out)
            for b in batches:
                t, first = forward_time(fast, b)
                row[f"b{b}_ms"], row[f"b{b}_first_s"] = t * 1e3, first
                print(f"  {name} b{b}: {t * 1e3:.2f} ms/forward (first {first:.1f}s)", flush=True)
            return fast, model
        finally:
            for key, value in saved.items():
                setattr(torch._inductor.config, key, value)
    return go()


@stage("kernel profile")
def kernel_profile(name, fast, batch=1):
    from torch.profiler import ProfilerActivity, profile

    args = inputs(batch)
    plain = acceleration.OptimizedTransformer(fast.model, fast.attention, cuda_graphs=False)
    plain(*args)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        plain(*args)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90)
    OUT.joinpath(f"kernels_{name}.txt").write_text(table)
    totals: dict = {}
    for ev in prof.key_averages():
        key = ev.key.lower()
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if ev.device_type is not None and "cuda" not in str(ev.device_type).lower():
            continue
        kind = ("attention" if any(s in key for s in ("fmha", "attention", "flash", "cudnn", "sdpa"))
                else "gemm" if any(s in key for s in ("gemm", "sm90", "cutlass", "nvjet", "f8f8", "xmma", "mm_"))
                else "triton" if "triton" in key else "other")
        totals[kind] = totals.get(kind, 0) + t / 1e3
        totals["launches"] = totals.get("launches", 0) + ev.count
    RESULTS.setdefault("kernel_ms_by_kind", {})[name] = totals
    print(table[:6000], flush=True)
    print(f"  by kind (ms): {totals}", flush=True)


@stage("dit memory")
def dit_memory(fast):
    base = torch.cuda.memory_allocated()
    row = {}
    for b in (1, 2):
        gc.collect()
        torch.cuda.reset_peak_memory_stats()
        fast(*inputs(b))
        torch.cuda.synchronize()
        row[f"b{b}_peak_above_base_gib"] = (torch.cuda.max_memory_allocated() - base) / GIB
    row["weights_gib"] = sum(p.numel() * p.element_size() for p in fast.model.parameters()) / GIB
    RESULTS["dit_memory"] = row
    print(f"  {row}", flush=True)


@stage("vae decode")
def vae_decode():
    with torch.device("cuda"):
        vae = CausalVideoVAE(LTXV_VAE_0_9_1).eval().requires_grad_(False).to(torch.bfloat16)
    latent = torch.randn(1, 128, F, H, W, generator=torch.Generator().manual_seed(1)).cuda().bfloat16()

    def decode():
        return vae.decode(latent, 0.05, 0.025, torch.Generator().manual_seed(2))

    row = RESULTS["decode"] = {"weights_gib": sum(p.numel() * 2 for p in vae.parameters()) / GIB,
                               "decoder_weights_gib": sum(p.numel() * 2 for p in vae.decoder.parameters()) / GIB}
    for name in ("eager", "compiled_resnet_blocks"):
        if name == "compiled_resnet_blocks":
            t0 = time.perf_counter()
            acceleration.compile_vae_decoder(vae)
            reference = ref_frames
            out = decode()
            torch.cuda.synchronize()
            row["compile_first_s"] = time.perf_counter() - t0
            row["compiled_vs_eager_max_abs"] = (out.float() - reference.float()).abs().max().item()
        else:
            ref_frames = decode()
        gc.collect()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t = acceleration.time_cuda(decode, repeats=3, warmup=1)
        row[name] = dict(s=t, peak_above_weights_gib=(torch.cuda.max_memory_allocated() - base) / GIB)
        print(f"  decode {name}: {row[name]}", flush=True)


def main():
    global OUT
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    OUT = args.out
    OUT.mkdir(parents=True, exist_ok=True)
    RESULTS["device"] = torch.cuda.get_device_name()
    acceleration.raise_recompile_limit()
    gemm_rates()
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.device("cuda"):
        base = LTXVTransformer(LTXV_2B)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1, generator=g)
    state = {k: v.to(torch.bfloat16) for k, v in base.state_dict().items()}
    del base
    vae_decode()
    result = variant("bf16 compile", state)
    if result:
        kernel_profile("bf16", result[0])
        dit_memory(result[0])
        del result
    result = variant("fp8 all block linears", state, fp8=True)
    if result:
        kernel_profile("fp8", result[0])
        del result
    variant("fp8 feed-forward only", state, batches=(1,), fp8=True,
            fp8_keep_precise=KEEP_PRECISE + ("*.attn1.*", "*.attn2.*"))
    variant("bf16 compile + GELU epilogue", state, fused_gelu=True)
    variant("bf16 compile + coordinate descent", state, batches=(1,),
            inductor={"coordinate_descent_tuning": True})
    print(json.dumps({k: RESULTS.get(k) for k in ("forward", "kernel_ms_by_kind", "dit_memory", "decode",
                                                  "errors")}, indent=1, default=str))


if __name__ == "__main__":
    main()
