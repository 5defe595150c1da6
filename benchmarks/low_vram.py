"""Low-VRAM running on one GPU: the 13B model (bf16 and FP8) and the 2B at 768x512x121,
20 steps with CFG, under memory caps (`torch.cuda.set_per_process_memory_fraction`)
against uncapped, each run offloaded as `--offload auto` chooses for the cap: the memory
planner picks none, the models one at a time, or the fewest transformer blocks streamed
from CPU memory that fit (`memory_plan.choose_offload`, `ltx_core.offload`).

Each row times the DiT's 20 steps (`dit_s`) and the whole run after the text encoder
(`whole_s`: the empty latent, the steps, the VAE decode, and every move of weights between
CPU memory and the GPU), and reads the peak allocated memory. Random weights of the real
configs; the prompt's embeddings are random too (the T5 is not part of the measurement).

    python -m benchmarks.low_vram [--models 13B,2B] [--caps none,24,16,8] [--steps 20]
    python -m benchmarks.low_vram --tiny      # the tiny configs on the CPU: the script's test
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ltx_core import memory_plan as planner
from ltx_core.models import configs as C
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.models.transformer import RESIDENT_BLOCKS, LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.offload import place_models
from ltx_core.pipeline import Models, decode_frames, on_device, prepare_latent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.scheduler import flow_sigmas
from ltx_core.speed.optimize import Speed, optimize_transformer

from .gpu_measure import GIB, fresh_peak, peak_gib, timed
from .gpu_speed_pipelines import randomize_

RESULTS = Path(__file__).parent / "results" / "low_vram.json"
CONFIGS = {"13B": C.LTXV_13B, "2B": C.LTXV_2B_0_9_5, "tiny": C.TINY_TRANSFORMER}
FRAME_RATE, GUIDANCE, TEXT_TOKENS = 25.0, 3.0, 128


@dataclass(frozen=True)
class Size:
    width: int
    height: int
    frames: int
    steps: int


def build(name: str, fp8: bool, device: torch.device, dtype: torch.dtype) -> Models:
    """Random weights of `name`'s transformer and the 0.9.5 VAE, made on `device` in `dtype`
    (FP8 quantized there) and kept in CPU memory."""
    tiny = name == "tiny"
    generator = torch.Generator(device=device).manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the 13B in fp32 would not fit beside its bf16 copy
    try:
        with torch.device(device):
            transformer = LTXVTransformer(CONFIGS[name])
            vae = CausalVideoVAE(C.TINY_VAE if tiny else C.LTXV_VAE_0_9_5)
    finally:
        torch.set_default_dtype(previous)
    for module in (transformer, vae):
        randomize_(module, generator)
        module.eval().requires_grad_(False)
    runner = optimize_transformer(transformer, Speed(fp8=True)) if fp8 else None
    for module in (transformer, vae):
        module.to("cpu")
    return Models(transformer, vae, text_encoder=None, runner=runner)


def text_pair(cfg, device: torch.device, dtype: torch.dtype) -> tuple[TextEmbeddings, TextEmbeddings]:
    g = torch.Generator().manual_seed(1)
    make = lambda: TextEmbeddings(
        torch.randn(1, TEXT_TOKENS, cfg.caption_channels, generator=g).to(device, dtype),
        torch.ones(1, TEXT_TOKENS, dtype=torch.bool, device=device),
    )
    return make(), make()


def workload(models: Models, size: Size, device: torch.device, fp8: bool, dtype_name: str) -> planner.Workload:
    """The run as the planner sees it: the DiT and the decode (no text stage)."""
    transformer, vae = models.transformer.cfg, models.vae.cfg
    size_of = planner.DTYPE_BYTES[dtype_name]
    return planner.Workload(
        transformer,
        vae,
        size.width,
        size.height,
        size.frames,
        steps=size.steps,
        dtype=dtype_name,
        device=device.type,
        stages=("sampling", "decode"),
        weights=planner.WeightBytes(
            planner.transformer_params(transformer) * size_of, planner.vae_params(vae) * size_of, 0
        ),
        fp8=fp8,
    )


def placed(models: Models, work: planner.Workload, device: torch.device) -> Models:
    """The models as `--offload auto` runs them: resident on `device`, or placed."""
    models.transformer.use_block_weights(RESIDENT_BLOCKS)
    if work.offload == "none":
        for module in (models.transformer, models.vae):
            module.to(device)
        return replace(models, placement=None)
    for module in (models.transformer, models.vae):
        module.to("cpu")
    holder = replace(models, text_encoder=_NoText())
    return replace(models, placement=place_models(holder, device, work.streamed_blocks))


class _NoText:
    """The placement's text-encoder slot, empty: the prompt comes as embeddings."""

    model = torch.nn.Module()


def run_once(models: Models, size: Size, texts, device: torch.device) -> dict:
    """One generation after the text encoder: (dit_s, whole_s)."""
    start = time.perf_counter()
    with on_device(models, models.vae):
        latent = prepare_latent(models.vae, size.frames, size.height, size.width)
    sigmas = flow_sigmas(size.steps, latent.num_tokens)
    with on_device(models, models.transformer):
        latent, dit_s = timed(
            lambda: denoise(
                models.runner or models.transformer,
                latent,
                *texts,
                sigmas,
                GUIDANCE,
                FRAME_RATE,
                torch.Generator().manual_seed(0),
            ),  # fmt: skip
            device,
        )
    with on_device(models, models.vae):
        frames, _ = timed(lambda: decode_frames(models.vae, latent.samples, time_chunk=32), device)
    return {"dit_s": round(dit_s, 3), "whole_s": round(time.perf_counter() - start, 3), "frames": frames.shape[1]}


def measure(name: str, fp8: bool, caps: list[float | None], size: Size, device: torch.device) -> list[dict]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = build(name, fp8, device, dtype)
    texts = text_pair(models.transformer.cfg, device, dtype)
    rows = []
    base = workload(models, size, device, fp8, "bf16" if dtype == torch.bfloat16 else "fp32")
    run_once(placed(models, base, device), replace(size, steps=1), texts, device)  # kernels warmed, not timed
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    for cap in caps:
        budget = int(cap * GIB) if cap is not None else (total or 10**15)
        work = planner.choose_offload(base, budget)
        plan = planner.estimate(work)
        row = {"model": name, "dtype": "fp8" if fp8 else str(dtype).split(".")[-1], "cap_gib": cap,
               "offload": work.offload, "streamed_blocks": work.streamed_blocks,
               "planned_peak_gib": round(plan.peak_bytes / GIB, 2)}  # fmt: skip
        if plan.peak_bytes > budget:
            rows.append({**row, "fits": False})
            print(row, "does not fit", flush=True)
            continue
        run_models = placed(models, work, device)
        fresh_peak(device)
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), device)
        try:
            row.update(run_once(run_models, size, texts, device))
        except torch.OutOfMemoryError as error:
            row.update(fits=False, error=str(error).split("\n")[0][:200])
        else:
            row.update(fits=True, peak_gib=peak_gib(device).get("peak_allocated_gib"))
        rows.append(row)
        print(row, flush=True)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    resident = next((r for r in rows if r["cap_gib"] is None and r.get("fits")), None)
    for row in rows:
        if resident and row.get("fits"):
            row["whole_vs_uncapped"] = round(row["whole_s"] / resident["whole_s"], 2)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="13B:bf16,13B:fp8,2B:bf16")
    parser.add_argument("--caps", default="none,24,16,8", help="GiB per cap; 'none' uncapped")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="the tiny configs on the CPU (the script's test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny else "cuda:0")
    size = Size(64, 32, 9, 2) if args.tiny else Size(768, 512, 121, args.steps)
    caps = [None if c == "none" else float(c) for c in args.caps.split(",")]
    runs = (
        [("tiny", False)] if args.tiny else [(m, d == "fp8") for m, d in (x.split(":") for x in args.models.split(","))]
    )
    rows = []
    for name, fp8 in runs:
        rows += measure(name, fp8, caps, size, device)
        report = _report(rows, size, device)
        if not args.tiny or args.out != RESULTS:  # after each model: a cut-off run keeps its rows
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def _report(rows: list[dict], size: Size, device: torch.device) -> dict:
    return {
        "benchmark": "low_vram",
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "setting": f"{size.width}x{size.height}x{size.frames}, {size.steps} steps, CFG {GUIDANCE}, random weights; "
        "whole_s: after the text encoder (empty latent, steps, decode, weight moves); the offload "
        "--offload auto chooses under each cap",
        "rows": rows,
    }


if __name__ == "__main__":
    main()
