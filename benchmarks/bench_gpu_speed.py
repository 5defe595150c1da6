"""Our pipeline against diffusers' LTXPipeline on one GPU, in one process.

Both get the same random 2B transformer weights, the same VAE 0.9.1 weights, the same
random prompt embeddings (128 tokens), the same initial noise and decode noise
(`gpu_speed_pipelines`); 768x512x121, 20 steps, guidance 3 (batched) or 1. Timed per stage
(DiT steps, decode, whole after the text encoder), with peak GPU memory, our cold start
(load from safetensors + compile + graph capture), and errors: ours bf16 vs ours fp32,
ours FP8 vs ours bf16, ours vs diffusers.

Levers are measured one by one (eager vs regional compile, CUDA graphs, SDPA backend,
bias+GELU GEMM epilogue, compiled VAE decoder blocks, batched vs
sequential CFG) and the best measured configuration is the one reported. The run is a
list of stages (`STAGES`); every stage writes the JSON again, so a failure keeps what came
before; stages past `--budget-s` are skipped and listed. Kernel tables of one forward go
beside the JSON (gpu_kernels_bf16.txt, gpu_kernels_fp8.txt).

    PYTHONUNBUFFERED=1 python -m benchmarks.bench_gpu_speed --out $OUT/gpu_speed.json
    python -m benchmarks.bench_gpu_speed --tiny --out /tmp/tiny.json     # CPU dry run
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch

from benchmarks.gpu_kernel_rates import gemm_rates, kernel_profile, qk_norm_rope_rates
from benchmarks.gpu_measure import (
    GIB,
    error_stats,
    fresh_peak,
    live_cuda_tensors,
    max_peak,
    module_gib,
    peak_gib,
    sync,
    timed,
)
from benchmarks.gpu_speed_pipelines import (
    GUIDANCE,
    MODES,
    TIMES,
    Inputs,
    Setup,
    build_diffusers,
    diffusers_call,
    diffusers_pipe,
    diffusers_probe,
    make_inputs,
    on_cpu,
    our_decode,
    our_denoise,
    our_generate,
    our_probe,
    ours_transformer,
    ours_vae,
)
from ltx_core.checkpoint.keymaps import transformer_from_diffusers
from ltx_core.models.configs import LTXV_2B, LTXV_VAE_0_9_1, TINY_TRANSFORMER, TINY_VAE_0_9_1
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import DEFAULT_DECODE_TIME_CHUNK
from ltx_core.speed import fused_qk_rope, optimize as acceleration
from ltx_core.speed.fp8 import KEEP_PRECISE as FP8_KEEP_PRECISE, quantize_kernel_matches_reference

# The targets (seconds, GiB).
TARGETS = dict(ours_bf16_nocfg_s=1.35, ours_bf16_cfg_s=2.5, ours_fp8_nocfg_s=1.0, ours_fp8_cfg_s=1.8, ours_peak_gib=8.0)


# ---------------------------------------------------------------- bookkeeping


class Report:
    def __init__(self, path: Path, budget_s: float):
        self.path, self.budget_s, self.start = path, budget_s, time.perf_counter()
        self.data: dict = {"errors": {}, "skipped": [], "levers": {}, "stages": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str))

    @contextmanager
    def stage(self, name: str, needs_s: float = 0.0):
        """Run a stage unless the budget is spent; record its failure and carry on."""
        if self.elapsed() + needs_s > self.budget_s:
            self.data["skipped"].append(name)
            print(f"[{self.elapsed():6.1f}s] skip {name} (budget)", flush=True)
            self.save()
            yield False
            return
        print(f"[{self.elapsed():6.1f}s] {name}", flush=True)
        try:
            yield True
        except Exception as error:
            self.data["errors"][name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        finally:
            self.save()


@dataclass
class Bench:
    """What the stages share: settings, inputs, the report, and the models built so far (a
    stage that needs a model an earlier stage failed to build fails in turn, recorded)."""

    setup: Setup
    report: Report
    repeats: int
    chunks: tuple[int, ...]  # time-chunked decodes measured against the whole decode
    inputs: Inputs
    weights_file: Path  # our bf16 transformer as safetensors, for the cold start
    keep: dict = field(default_factory=dict)  # outputs compared across variants, on the CPU
    fp32_state: dict | None = None
    d_transformer: torch.nn.Module | None = None
    d_vae: torch.nn.Module | None = None
    pipe: object = None
    vae: torch.nn.Module | None = None  # ours, with diffusers' VAE weights
    bf16_fast: acceleration.OptimizedTransformer | None = None
    bf16_model: LTXVTransformer | None = None
    fp8_fast: acceleration.OptimizedTransformer | None = None
    fp8_model: LTXVTransformer | None = None

    @property
    def R(self) -> dict:
        return self.report.data

    @property
    def dev(self) -> torch.device:
        return self.setup.device


def record_settings(b: Bench) -> None:
    import diffusers

    setup, dev = b.setup, b.dev
    b.R.update(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__,
        size=f"{setup.width}x{setup.height}x{setup.frames}",
        steps=setup.steps,
        guidance=GUIDANCE,
        text_tokens=setup.text_len,
        latent_tokens=setup.tokens,
        targets=TARGETS,
    )
    b.R["diffusers"] = diffusers.__version__


# ---------------------------------------------------------------- building our models


def load_from_file(b: Bench) -> LTXVTransformer:
    from safetensors.torch import load_file

    return ours_transformer(load_file(str(b.weights_file), device=str(b.dev)), b.setup, torch.bfloat16)


def optimized(b: Bench, model, fp8=False, gelu=True, compile=True, graphs=None, **parts):
    """`optimize_transformer` with the setup's backend and the chosen attention; `gelu` and
    `parts` turn fused kernels off one at a time (`FusedParts`) to measure what each gives."""
    setup = b.setup
    speed = acceleration.Speed(
        compile=compile and setup.compile_backend != "none",
        fp8=fp8,
        cuda_graphs=setup.cuda_graphs if graphs is None else graphs,
        attention=b.R["levers"].get("attention_choice", "default"),
        compile_backend=setup.compile_backend,
    )
    return acceleration.optimize_transformer(model, speed, acceleration.FusedParts(gelu_epilogue=gelu, **parts))


def build_models(b: Bench) -> None:
    """diffusers' models (bf16, on the device), our VAE from their weights (on the CPU until
    its stage) and our transformer's fp32 weights (on the CPU)."""
    d_transformer, d_vae = build_diffusers(b.setup)
    b.fp32_state = {k: v.detach().cpu() for k, v in transformer_from_diffusers(d_transformer.state_dict()).items()}
    d_transformer.to(torch.bfloat16)
    d_vae.to(torch.bfloat16)
    b.vae = ours_vae(d_vae.float(), b.setup)  # diffusers' bf16 weights, back in fp32 to load
    d_vae.to(torch.bfloat16)
    b.vae.cpu()
    b.d_transformer, b.d_vae = d_transformer, d_vae
    b.R["transformer_params_b"] = round(sum(v.numel() for v in b.fp32_state.values()) / 1e9, 3)


def write_bf16_weights(b: Bench) -> None:
    from safetensors.torch import save_file

    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in b.fp32_state.items()}, str(b.weights_file))


# ---------------------------------------------------------------- diffusers


def time_diffusers(b: Bench) -> None:
    """diffusers' whole pipeline (best of `repeats`) and its DiT steps alone, nocfg and cfg."""
    dev, inputs, setup = b.dev, b.inputs, b.setup
    fresh_peak(dev)
    b.pipe = pipe = diffusers_pipe(b.d_transformer, b.d_vae)
    pipe.set_progress_bar_config(disable=True)
    diffusers_call(pipe, inputs, setup, GUIDANCE, "pt", steps=2)  # warm-up (cuDNN plans, allocator)
    d = b.R["stages"]["diffusers"] = {}
    for name, guidance in MODES:
        # one mode's outputs stay on the GPU while the next is timed, as they always have:
        # rebinding `frames` and `latents` keeps the peak comparable with earlier results
        frames, whole = timed(lambda: diffusers_call(pipe, inputs, setup, guidance, "pt"), dev)
        for _ in range(b.repeats - 1):
            whole = min(whole, timed(lambda: diffusers_call(pipe, inputs, setup, guidance, "pt"), dev)[1])
        latents, dit = timed(lambda: diffusers_call(pipe, inputs, setup, guidance, "latent"), dev)
        d[name] = dict(whole_s=whole, dit_s=dit, decode_s=whole - dit)
        b.keep[f"diffusers_{name}_frames"] = frames.permute(0, 1, 3, 4, 2).cpu()  # (B, F, H, W, 3)
        b.keep[f"diffusers_{name}_tokens"] = latents.float().cpu()
        print(f"  diffusers {name}: {d[name]}", flush=True)
    record_diffusers(b, d)


def record_diffusers(b: Bench, d: dict) -> None:
    d["peak"] = peak_gib(b.dev)
    d["weights_gib"] = round(module_gib(b.d_transformer, b.d_vae), 3)
    b.R["diffusers_nocfg_s"], b.R["diffusers_cfg_s"] = d["nocfg"]["whole_s"], d["cfg"]["whole_s"]
    b.R["diffusers_peak_gib"] = d["peak"].get("peak_allocated_gib")  # as ours: allocated tensors
    b.R["diffusers_peak_reserved_gib"] = d["peak"].get("peak_reserved_gib")
    b.keep["diffusers_probe"] = diffusers_probe(b.d_transformer, b.inputs, b.setup).cpu()


def diffusers_off_gpu(b: Bench) -> None:
    b.d_transformer.cpu()
    b.d_vae.cpu()
    b.pipe = None  # its last outputs went with `time_diffusers`: ours are measured without them
    fresh_peak(b.dev)


def fp32_reference(b: Bench) -> None:
    """Our eager fp32 transformer: one forward and the nocfg latents, the errors' reference."""
    ref = ours_transformer(b.fp32_state, b.setup, torch.float32)
    b.keep["fp32_probe"] = our_probe(ref, b.inputs, torch.float32).cpu()
    b.keep["fp32_nocfg_tokens"] = our_denoise(ref, b.inputs, 1.0, torch.float32).cpu()
    del ref
    fresh_peak(b.dev)


# ---------------------------------------------------------------- attention and decode levers


def choose_attention(b: Bench) -> None:
    """Time the SDPA backends at the real shapes (one self-attention) and keep the fastest."""
    if b.dev.type != "cuda":
        return
    cfg = b.setup.transformer_cfg
    timings = {
        batch: acceleration.time_attention_backends(
            batch, cfg.num_attention_heads, b.setup.tokens, cfg.attention_head_dim
        )
        for batch in (1, 2)
    }
    b.R["levers"]["attention_s_per_call"] = timings
    best = min(timings[1], key=timings[1].get)
    b.R["levers"]["attention_choice"] = best
    print(f"  attention: {timings} -> {best}", flush=True)


def measure_decode(b: Bench, lever: dict, name: str, chunk: int | None) -> torch.Tensor:
    """One decode configuration: its first decode, then the best of 2 and the peak above the
    weights, into `lever`; returns the first decode's frames."""
    dev, tokens = b.dev, b.inputs.noise
    b.setup.decode_time_chunk = chunk
    frames, first = timed(lambda: our_decode(b.vae, tokens, b.setup), dev)
    lever[f"{name}_first_s"] = first
    fresh_peak(dev)
    base = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    lever[f"{name}_s"] = min(timed(lambda: our_decode(b.vae, tokens, b.setup), dev)[1] for _ in range(2))
    if dev.type == "cuda":
        lever[f"{name}_peak_above_weights_gib"] = (torch.cuda.max_memory_allocated(dev) - base) / GIB
    return frames


def time_decode(b: Bench) -> None:
    """Our VAE decode: eager vs compiled decoder blocks, whole vs time-chunked layers."""
    b.vae.to(b.dev)
    lever = b.R["levers"]["vae_decode"] = {}
    reference = measure_decode(b, lever, "eager", None)
    first_chunk = b.chunks[0]
    lever["eager_chunked_vs_whole_frames"] = error_stats(
        measure_decode(b, lever, f"eager_chunk{first_chunk}", first_chunk), reference
    )
    acceleration.compile_vae_decoder(b.vae, backend=b.setup.compile_backend)
    # the default chunk compiles first, on cold caches: its first decode is the
    # compilation a user's first clip pays (`vae_compile_extra_s`)
    chunks = sorted(set(b.chunks) | {DEFAULT_DECODE_TIME_CHUNK}, key=lambda c: c != DEFAULT_DECODE_TIME_CHUNK)
    for chunk in chunks:
        lever[f"compiled_chunk{chunk}_vs_eager_frames"] = error_stats(
            measure_decode(b, lever, f"compiled_chunk{chunk}", chunk), reference
        )
    lever["compiled_vs_eager_frames"] = error_stats(measure_decode(b, lever, "compiled", None), reference)
    choose_decode(b, lever, chunks)
    print(f"  decode: {lever}", flush=True)


def choose_decode(b: Bench, lever: dict, chunks: list[int]) -> None:
    """Compiled or eager decoder, and the chunk sizes the timed and the low-memory clips use."""
    levers = b.R["levers"]
    best_chunk = min(chunks, key=lambda c: lever[f"compiled_chunk{c}_s"])
    levers["vae_compiled"] = min(lever["compiled_s"], lever[f"compiled_chunk{best_chunk}_s"]) < lever["eager_s"]
    # time-chunked layers hold the decode's memory to a fraction of the peak target; the
    # timed configuration decodes as the CLI and the node do by default
    # (`DEFAULT_DECODE_TIME_CHUNK` frames per chunk), not by whichever of whole and chunked
    # won this run by a few ms; the low-memory configuration (its own stage) uses the fastest
    levers["low_memory_decode_time_chunk"] = best_chunk
    b.setup.decode_time_chunk = DEFAULT_DECODE_TIME_CHUNK
    levers["decode_time_chunk"] = b.setup.decode_time_chunk
    if levers["vae_compiled"]:
        key = f"compiled_chunk{b.setup.decode_time_chunk}"
        levers["vae_compile_extra_s"] = lever[f"{key}_first_s"] - lever[f"{key}_s"]
    else:
        for module in b.vae.modules():
            module._compiled_call_impl = None  # back to eager


# ---------------------------------------------------------------- our whole pipeline


def clip(b: Bench, fast, guidance: float) -> tuple:
    """One clip with our pipeline: (frames, tokens, {dit_s, decode_s, whole_s})."""
    return our_generate(fast, b.vae, b.inputs, b.setup, guidance, torch.bfloat16)


def best_times(runs: list[tuple]) -> dict:
    return {k: min(r[2][k] for r in runs) for k in TIMES}


def cold_load(b: Bench, v: dict, fp8: bool, gelu: bool) -> tuple:
    """Load our bf16 weights from the file and optimize them, timed; returns (fast, model)."""
    t0 = time.perf_counter()
    model = load_from_file(b)
    sync(b.dev)
    v["load_s"] = time.perf_counter() - t0
    v["load_note"] = "safetensors file written moments before: read from the page cache"
    t1 = time.perf_counter()
    fast = optimized(b, model, fp8=fp8, gelu=gelu)
    v["optimize_s"] = time.perf_counter() - t1
    v["levers"] = {**fast.levers, "vae_compiled": b.R["levers"].get("vae_compiled", False)}
    return fast, model


def first_clip(b: Bench, v: dict, fast, model, name: str, guidance: float, fp8: bool) -> tuple:
    """The first clip at this batch size, which compiles and captures; if that fails, CUDA
    graphs off, then compile off, and the clip again. Returns (fast, model)."""
    try:
        v[f"first_clip_{name}"] = clip(b, fast, guidance)[2]
        return fast, model
    except Exception as error:
        traceback.print_exc()
        v[f"fallback_{name}"] = f"{type(error).__name__}: {error}"[:2000]
    if fast.cuda_graphs:
        fast = acceleration.OptimizedTransformer(model, fast.attention, cuda_graphs=False)
    else:
        model = load_from_file(b)
        fast = optimized(b, model, fp8=fp8, gelu=False, compile=False, graphs=False)
    v["levers"] = {**fast.levers, "cuda_graphs": fast.cuda_graphs, "fallback": True}
    v[f"first_clip_{name}"] = clip(b, fast, guidance)[2]
    return fast, model


def warm_clips(b: Bench, v: dict, tag: str, fast, name: str, guidance: float) -> None:
    """`repeats` warm clips: the best times, every run's, and this mode's peak memory."""
    fresh_peak(b.dev)  # this mode's peak: one clip at a time, earlier clips on the CPU
    runs = [on_cpu(clip(b, fast, guidance)) for _ in range(b.repeats)]
    v[f"peak_{name}"] = peak_gib(b.dev)
    v[name] = best_times(runs)
    v[name]["runs"] = [r[2] for r in runs]
    b.keep[f"{tag}_{name}_frames"], b.keep[f"{tag}_{name}_tokens"] = runs[-1][0], runs[-1][1]
    print(f"  {tag} {name}: " + ", ".join(f"{k} {v[name][k]:.3f}" for k in TIMES), flush=True)


def time_pipeline(b: Bench, tag: str, fp8: bool, gelu: bool = True) -> tuple:
    """Our whole pipeline: load, optimize, first clip (cold), then warm clips nocfg and cfg,
    into R["stages"][tag]; returns (fast, model)."""
    fresh_peak(b.dev)
    v = b.R["stages"][tag] = {
        "baseline_allocated_gib": round(torch.cuda.memory_allocated(b.dev) / GIB, 3) if b.dev.type == "cuda" else None,
        "baseline_live_tensors": live_cuda_tensors(),
    }
    fast, model = cold_load(b, v, fp8, gelu)
    for name, guidance in MODES:
        fast, model = first_clip(b, v, fast, model, name, guidance, fp8)
        if name == "nocfg":
            # a user's first clip also pays the VAE's compilation, done in its own stage here
            v["cold_start_s"] = (
                v["load_s"]
                + v["optimize_s"]
                + v["first_clip_nocfg"]["whole_s"]
                + b.R["levers"].get("vae_compile_extra_s", 0.0)
            )
            print(f"  {tag} cold start {v['cold_start_s']:.1f}s", flush=True)
        warm_clips(b, v, tag, fast, name, guidance)
    v["peak"] = max_peak(v["peak_nocfg"], v["peak_cfg"])
    v["weights_gib"] = round(module_gib(model, b.vae), 3)
    b.keep[f"{tag}_probe"] = our_probe(fast, b.inputs, torch.bfloat16).cpu()
    print(
        f"  {tag} memory: {v['peak']}, weights {v['weights_gib']} GiB, "
        f"baseline {v['baseline_allocated_gib']} GiB, live {v['baseline_live_tensors']}",
        flush=True,
    )
    return fast, model


def time_ours_bf16(b: Bench) -> None:
    b.bf16_fast, b.bf16_model = time_pipeline(b, "ours_bf16", fp8=False)
    s, R = b.R["stages"]["ours_bf16"], b.R
    R["ours_bf16_nocfg_s"], R["ours_bf16_cfg_s"] = s["nocfg"]["whole_s"], s["cfg"]["whole_s"]
    R["cold_start_s"] = s["cold_start_s"]
    R["cold_start_without_vae_compile_s"] = s["cold_start_s"] - R["levers"].get("vae_compile_extra_s", 0.0)
    R["ours_peak_gib"] = s["peak"].get("peak_allocated_gib")
    R["ours_peak_reserved_gib"] = s["peak"].get("peak_reserved_gib")


def time_ours_fp8(b: Bench) -> None:
    b.fp8_fast, b.fp8_model = time_pipeline(b, "ours_fp8", fp8=True)
    s, R, keep = b.R["stages"]["ours_fp8"], b.R, b.keep
    R["ours_fp8_nocfg_s"], R["ours_fp8_cfg_s"] = s["nocfg"]["whole_s"], s["cfg"]["whole_s"]
    R["ours_fp8_peak_gib"] = s["peak"].get("peak_allocated_gib")
    R["fp8_probe_vs_bf16"] = error_stats(keep["ours_fp8_probe"], keep["ours_bf16_probe"])
    R["fp8_max_abs_err_vs_bf16"] = R["fp8_probe_vs_bf16"]["max_abs"]
    R["fp8_nocfg_latents_vs_bf16"] = error_stats(keep["ours_fp8_nocfg_tokens"], keep["ours_bf16_nocfg_tokens"])
    R["fp8_nocfg_frames_vs_bf16"] = error_stats(keep["ours_fp8_nocfg_frames"], keep["ours_bf16_nocfg_frames"])


def bf16_errors(b: Bench) -> None:
    """Ours bf16 against ours fp32 and against diffusers."""
    R, keep = b.R, b.keep
    R["bf16_probe_vs_fp32"] = error_stats(keep["ours_bf16_probe"], keep["fp32_probe"])
    R["bf16_max_abs_err_vs_fp32"] = R["bf16_probe_vs_fp32"]["max_abs"]
    R["bf16_nocfg_latents_vs_fp32"] = error_stats(keep["ours_bf16_nocfg_tokens"], keep["fp32_nocfg_tokens"])
    R["ours_vs_diffusers"] = {
        "probe_velocity": error_stats(keep["ours_bf16_probe"], keep["diffusers_probe"]),
        "nocfg_latents": error_stats(keep["ours_bf16_nocfg_tokens"], keep["diffusers_nocfg_tokens"]),
        "nocfg_frames": error_stats(keep["ours_bf16_nocfg_frames"], keep["diffusers_nocfg_frames"]),
        "cfg_frames": error_stats(keep["ours_bf16_cfg_frames"], keep["diffusers_cfg_frames"]),
        "diffusers_probe_vs_fp32": error_stats(keep["diffusers_probe"], keep["fp32_probe"]),
    }


def time_low_memory(b: Bench) -> None:
    """The bf16 model without CUDA graphs and with the fastest time-chunked decode: CUDA
    graphs keep the captured steps' activations in a private pool that is still held while
    the VAE decodes; without them the steps' memory is free."""
    b.bf16_fast = None
    gc.collect()
    torch.cuda.empty_cache() if b.dev.type == "cuda" else None
    lean = acceleration.OptimizedTransformer(
        b.bf16_model, b.R["levers"].get("attention_choice", "default"), cuda_graphs=False
    )
    saved_chunk, b.setup.decode_time_chunk = (
        b.setup.decode_time_chunk,
        b.R["levers"].get("low_memory_decode_time_chunk"),
    )
    v = b.R["stages"]["ours_bf16_low_memory"] = {"decode_time_chunk": b.setup.decode_time_chunk, "cuda_graphs": False}
    try:
        for name, guidance in MODES:
            low_memory_mode(b, v, lean, name, guidance)
    finally:
        b.setup.decode_time_chunk = saved_chunk
    v["peak"] = max_peak(v["peak_nocfg"], v["peak_cfg"])
    b.R["ours_low_memory_nocfg_s"], b.R["ours_low_memory_cfg_s"] = v["nocfg"]["whole_s"], v["cfg"]["whole_s"]
    b.R["ours_low_memory_peak_gib"] = v["peak"].get("peak_allocated_gib")
    print(f"  low memory peak: {v['peak']}", flush=True)


def low_memory_mode(b: Bench, v: dict, lean, name: str, guidance: float) -> None:
    clip(b, lean, guidance)  # warm-up
    fresh_peak(b.dev)
    runs = [on_cpu(clip(b, lean, guidance)) for _ in range(b.repeats)]
    v[f"peak_{name}"] = peak_gib(b.dev)
    v[name] = best_times(runs)
    v[f"{name}_frames_vs_speed_config"] = error_stats(runs[-1][0].cpu(), b.keep[f"ours_bf16_{name}_frames"])
    print(f"  low memory {name}: {v[name]}", flush=True)


def free_bf16(b: Bench) -> None:
    b.bf16_fast = b.bf16_model = None
    fresh_peak(b.dev)


# ---------------------------------------------------------------- DiT levers


def time_dit(b: Bench, name: str, fast, baseline: str | None = None, label: str = "") -> None:
    """DiT steps only (nocfg and cfg) of a variant, after a 2-step warm-up, the best of
    `repeats` runs as for the stages; beside them `{label}_dit_*_s`, the DiT times of the
    stage `baseline` it differs from."""
    lever = b.R["levers"][name] = {}
    for cfg_name, guidance in MODES:
        our_denoise(fast, b.inputs, guidance, torch.bfloat16, steps=2)
        lever[f"dit_{cfg_name}_s"] = min(
            timed(lambda: our_denoise(fast, b.inputs, guidance, torch.bfloat16), b.dev)[1] for _ in range(b.repeats)
        )
        if baseline is not None:
            lever[f"{label}_dit_{cfg_name}_s"] = b.R["stages"][baseline][cfg_name]["dit_s"]
    print(f"  {name}: {lever}", flush=True)


def fresh_model_lever(b: Bench, name: str, baseline: str | None = None, label: str = "", **levers) -> None:
    """`time_dit` of a fresh model from the file, optimized with `levers` (recompiles)."""
    fresh_peak(b.dev)
    time_dit(b, name, optimized(b, load_from_file(b), **levers), baseline=baseline, label=label)
    fresh_peak(b.dev)


def no_cuda_graphs_lever(b: Bench) -> None:
    if b.setup.cuda_graphs:
        time_dit(b, "no_cuda_graphs", acceleration.OptimizedTransformer(b.bf16_model, b.bf16_fast.attention))


def sequential_cfg_lever(b: Bench) -> None:
    seq = timed(lambda: our_denoise(b.bf16_fast, b.inputs, GUIDANCE, torch.bfloat16, sequential_cfg=True), b.dev)[1]
    b.R["levers"]["cfg_sequential_dit_s"] = seq
    b.R["levers"]["cfg_batched_dit_s"] = b.R["stages"]["ours_bf16"]["cfg"]["dit_s"]


# ---------------------------------------------------------------- kernels


def kernel_profile_stage(b: Bench, name: str) -> None:
    """One forward of the bf16 or FP8 model (compiled, no graphs), by kernel kind."""
    if b.dev.type == "cuda":
        model, fast = (b.bf16_model, b.bf16_fast) if name == "bf16" else (b.fp8_model, b.fp8_fast)
        kernel_profile(name, model, fast.attention, b.inputs, b.R, b.report.path.parent)


def kernel_rates(b: Bench) -> None:
    if b.dev.type != "cuda":
        return
    cfg = b.setup.transformer_cfg
    b.R["gemm_rates"] = gemm_rates(b.setup.tokens)
    b.R["fp8_quantize_kernel_matches_reference"] = quantize_kernel_matches_reference(b.dev)
    b.R["qk_norm_rope_us"] = qk_norm_rope_rates(b.setup.tokens, cfg.inner_dim)
    b.R["fused_qk_rope_kernel_matches_reference"] = fused_qk_rope.matches_reference(
        b.dev, torch.bfloat16, cfg.inner_dim
    )


# ---------------------------------------------------------------- the run


class Stage(NamedTuple):
    name: str  # also its key in the results' "errors" and "skipped": keep names stable
    run: Callable[[Bench], None]
    needs_s: float = 0.0  # skipped when less than this is left of the budget


STAGES = (
    Stage("build diffusers models (fp32 weights kept on the CPU)", build_models),
    Stage("diffusers LTXPipeline bf16", time_diffusers),
    Stage("diffusers models off the GPU", diffusers_off_gpu),
    Stage("ours fp32 reference (eager): one forward and the nocfg latents", fp32_reference),
    Stage("write our bf16 weights as safetensors (for the cold start)", write_bf16_weights),
    Stage("SDPA backends at the real shapes (one self-attention)", choose_attention),
    Stage("VAE decode: eager vs compiled blocks, whole vs time-chunked layers", time_decode),
    Stage("ours bf16: compile + CUDA graphs + chosen attention + GELU epilogue", time_ours_bf16),
    Stage("kernel profile: one bf16 forward (compiled, no graphs)", partial(kernel_profile_stage, name="bf16"), 20),
    Stage("lever: CUDA graphs off (same compiled model)", no_cuda_graphs_lever, 30),
    Stage("lever: CFG as two sequential batch-1 passes", sequential_cfg_lever, 30),
    Stage("errors: ours bf16 vs ours fp32 and vs diffusers", bf16_errors),
    Stage("low memory: no CUDA graphs (their pool outlives the steps) + time-chunked decode", time_low_memory),
    Stage("free the bf16 model", free_bf16),
    Stage(
        "lever: no GELU epilogue (a fresh compiled model)",
        partial(fresh_model_lever, name="no_gelu_epilogue", baseline="ours_bf16", label="with_epilogue", gelu=False),
        60,
    ),
    Stage(
        "lever: QK-norm + RoPE left to Inductor, bf16 (a fresh model, recompiles)",
        partial(
            fresh_model_lever, name="bf16_unfused_qk_rope", baseline="ours_bf16", label="fused", qk_norm_rope=False
        ),
        60,
    ),
    Stage(
        "lever: eager (no compile, no graphs)",
        partial(fresh_model_lever, name="eager", gelu=False, compile=False, graphs=False),
        40,
    ),
    Stage("ours FP8 (row-wise _scaled_mm) + compile + CUDA graphs", time_ours_fp8, 60),
    Stage("kernel profile: one FP8 forward (compiled, no graphs)", partial(kernel_profile_stage, name="fp8"), 20),
    Stage(
        "lever: FP8 only in the feed-forward (attention projections bf16)",
        partial(
            fresh_model_lever,
            name="fp8_feed_forward_only",
            baseline="ours_fp8",
            label="all_linears",
            fp8=True,
            fp8_keep_precise=FP8_KEEP_PRECISE + ("*.attn1.*", "*.attn2.*"),
        ),
        100,
    ),
    Stage("GEMM rates at the model's shapes: bf16 vs FP8 row-wise, and the quantization", kernel_rates, 30),
    Stage(
        "lever: FP8 feed-forward unfused (GELU + quantization left to Inductor)",
        partial(
            fresh_model_lever,
            name="fp8_unfused_feed_forward",
            baseline="ours_fp8",
            label="fused",
            fp8=True,
            fp8_quantize=False,
        ),
        90,
    ),
)


def run(setup: Setup, report: Report, repeats: int, chunks: tuple[int, ...] = (8, 16, 32)) -> None:
    weights_file = Path(tempfile.mkdtemp()) / "transformer_bf16.safetensors"
    bench = Bench(setup, report, repeats, chunks, make_inputs(setup), weights_file)
    record_settings(bench)
    for stage in STAGES:
        with report.stage(stage.name, stage.needs_s) as ok:
            if ok:
                stage.run(bench)
    write_results(report)


# ---------------------------------------------------------------- results


def summarize(R: dict) -> None:
    """`speedup_vs_diffusers` into R, and a table of the headline numbers on stdout."""
    rows = []
    d = R["stages"].get("diffusers", {})
    for tag in ("diffusers", "ours_bf16", "ours_fp8"):
        s = R["stages"].get(tag) or {}
        for name in [mode for mode, _ in MODES if mode in s]:
            base = d.get(name, {}).get("whole_s")
            rows.append(
                [f"{tag} {name}", *(s[name].get(k) for k in TIMES), base / s[name]["whole_s"] if base else None]
            )
    R["speedup_vs_diffusers"] = {r[0]: r[4] for r in rows}
    print("\n{:<22}{:>9}{:>9}{:>9}{:>11}".format("variant", "DiT s", "decode s", "whole s", "x diffusers"))
    for r in rows:
        print(
            f"{r[0]:<22}"
            + "".join(f"{x:>9.3f}" if x is not None else "{:>9}".format("-") for x in r[1:4])
            + (f"{r[4]:>11.2f}" if r[4] else "")
        )
    for key in (
        "ours_peak_gib",
        "ours_fp8_peak_gib",
        "diffusers_peak_gib",
        "cold_start_s",
        "bf16_max_abs_err_vs_fp32",
        "fp8_max_abs_err_vs_bf16",
        "ours_low_memory_nocfg_s",
        "ours_low_memory_cfg_s",
        "ours_low_memory_peak_gib",
    ):
        print(f"{key:<28}{R.get(key)}")
    print("levers:", json.dumps(R.get("levers"), default=str)[:1500])
    if R["errors"]:
        print("errors:", json.dumps(R["errors"])[:1500])
    print("skipped:", R["skipped"])


def write_results(report: Report) -> None:
    summarize(report.data)
    report.save()


def make_setup(tiny: bool) -> Setup:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if tiny:
        return Setup(
            64,
            64,
            9,
            2,
            8,
            TINY_TRANSFORMER,
            TINY_VAE_0_9_1,
            "tiny",
            device,
            "inductor" if device.type == "cuda" else "eager",
            device.type == "cuda",
        )
    return Setup(768, 512, 121, 20, 128, LTXV_2B, LTXV_VAE_0_9_1, "real", device, "inductor", device.type == "cuda")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_speed.json")
    parser.add_argument("--tiny", action="store_true", help="tiny configs and sizes (a dry run, CPU is fine)")
    parser.add_argument("--budget-s", type=float, default=470.0, help="skip optional stages past this")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--decode-time-chunks",
        default="8,16,32",
        help="time-chunked decodes measured against the whole decode (frames per chunk)",
    )
    args = parser.parse_args(argv)
    report = Report(args.out, args.budget_s)
    try:
        run(make_setup(args.tiny), report, args.repeats, tuple(int(c) for c in args.decode_time_chunks.split(",")))
    except Exception as error:
        report.data["errors"]["run"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
        write_results(report)


if __name__ == "__main__":
    main()
