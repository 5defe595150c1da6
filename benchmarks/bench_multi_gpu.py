"""One video on 1, 2 and 4 GPUs (`ltx_core.parallel.distributed`), bf16, NCCL.

For each clip size (768x512x121 and 1216x704x257) and each GPU count, every layout of that
many ranks (1: one process; 2: 2-way sequence, 2-way CFG; 4: 4-way sequence, 2-way CFG x
2-way sequence) is timed on:
- `dit_s`: the 20 guided DiT steps (`denoise.denoise`, guidance 3 batched, so CFG
  parallel has two halves to split);
- `pipeline_s`: those steps plus the time-split denoising decode (`pipeline.decode_frames`);
  the text encoder is left out (random 128-token embeddings, as bench_gpu_speed).
with each rank's peak GPU memory, and the final latent's largest difference from the
1-GPU run (bf16: reduction order only). The 2B 0.9.5 transformer and VAE carry seeded
random weights (timing does not depend on them; every rank builds the same ones).
Speed-ups are against the 1-GPU run of the same size; the targets (`TARGETS`) are
the DiT steps' speed-ups at 1216x704x257.

Each GPU count runs in its own spawned world (rank r on cuda:r); a world that fails or
hangs is recorded and the next one starts fresh. The JSON is written after every
measurement, and `--gpus`/`--sizes` runs merge into an existing file, so the benchmark
can be split over several commands:

    python -m benchmarks.bench_multi_gpu                       # 1, 2, 4 GPUs, both sizes
    python -m benchmarks.bench_multi_gpu --gpus 4 --sizes 1216x704x257 --latent-dir /tmp/latents
    python -m benchmarks.bench_multi_gpu --tiny --cpu --out /tmp/multi.json   # gloo dry run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from benchmarks.gpu_measure import GIB, fresh_peak, sync
from ltx_core.models.configs import LTXV_2B_0_9_5, LTXV_VAE_0_9_5, TINY_TRANSFORMER, TINY_VAE
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.parallel.distributed import ParallelLayout, ParallelRun, ParallelTransformer, make_groups, parallelize
from ltx_core.pipeline import Models, decode_frames, prepare_latent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.scheduler import flow_sigmas
from ltx_core.speed.optimize import Speed, optimize_transformer

STEPS, GUIDANCE, FRAME_RATE, TEXT_TOKENS, SEED = 20, 3.0, 25.0, 128, 42
SIZES = ("768x512x121", "1216x704x257")
TINY_SIZES = ("64x64x17", "96x64x25")
# 4 heads so the tiny model splits 4 ways, as tests/test_distributed.py
TINY_MODEL = replace(TINY_TRANSFORMER, num_attention_heads=4, attention_head_dim=4)
LAYOUTS = {1: ((1, 1),), 2: ((2, 1), (1, 2)), 4: ((4, 1), (2, 2)), 8: ((8, 1), (4, 2))}  # (sequence, cfg)
TARGETS = {"1216x704x257": {"dit": {"2": 1.8, "4": 3.2}}}
# A rank that waits longer than this in a collective gives up (an OOM on another rank).
COLLECTIVE_TIMEOUT_S = 300.0


def parse_size(text: str) -> tuple[int, int, int]:
    width, height, frames = (int(v) for v in text.split("x"))
    return width, height, frames


# ---------------------------------------------------------------- one rank


def build_models(tiny: bool, device: torch.device, dtype: torch.dtype) -> Models:
    """Seeded random weights, built on the device (every rank draws the same ones)."""
    torch.manual_seed(SEED)
    with device:
        transformer = LTXVTransformer(TINY_MODEL if tiny else LTXV_2B_0_9_5)
        vae = CausalVideoVAE(TINY_VAE if tiny else LTXV_VAE_0_9_5)
    return Models(transformer.to(device, dtype).eval(), vae.to(device, dtype).eval(), text_encoder=None)


def random_texts(caption_channels: int, device: torch.device) -> tuple[TextEmbeddings, TextEmbeddings]:
    g = torch.Generator().manual_seed(SEED)
    mask = torch.zeros(1, TEXT_TOKENS, dtype=torch.bool)
    mask[:, :32] = True  # a prompt of 32 tokens, padded to 128 as the pipeline does
    return tuple(
        TextEmbeddings(torch.randn(1, TEXT_TOKENS, caption_channels, generator=g).to(device), mask.to(device))
        for _ in range(2)
    )


def peaks_per_rank(device: torch.device) -> list[float] | None:
    """Every rank's peak allocated GiB since `fresh_peak` (rank order); None on CPU."""
    if device.type != "cuda":
        return None
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / GIB], device=device)
    pieces = [torch.empty_like(peak) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, peak)
    return [round(p.item(), 3) for p in pieces]


def timed(fn, device: torch.device):
    """(result, wall seconds), all ranks started together and the device drained."""
    dist.barrier()
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def measure(models: Models, size: str, steps: int, device: torch.device, entry: dict) -> torch.Tensor:
    """Into `entry`: the DiT steps alone (after a warm-up step), then steps + decode (after
    a warm-up decode of a short clip). Returns the denoised latent."""
    width, height, frames = parse_size(size)
    text, negative = random_texts(models.transformer.cfg.caption_channels, device)
    latent = prepare_latent(models.vae, frames, height, width)
    tokens = entry["tokens"] = latent.num_tokens

    def run_denoise(step_count: int):
        return denoise(
            models.runner or models.transformer,
            latent,
            text,
            negative,
            flow_sigmas(step_count, tokens),
            GUIDANCE,
            FRAME_RATE,
            torch.Generator().manual_seed(SEED),
        ).samples

    def decode(z):
        return decode_frames(models.vae, z, generator=torch.Generator().manual_seed(SEED))

    run_denoise(1)  # NCCL communicators, cuBLAS and SDPA kernels
    fresh_peak(device)
    denoised, seconds = timed(lambda: run_denoise(steps), device)
    entry.update(dit_s=round(seconds, 3), dit_peak_gib_per_gpu=peaks_per_rank(device))
    try:
        decode(denoised[:, :, : 2 * dist.get_world_size()])  # cuDNN's choices for these planes
        fresh_peak(device)
        _, seconds = timed(lambda: decode(run_denoise(steps)), device)
        entry.update(pipeline_s=round(seconds, 3), pipeline_peak_gib_per_gpu=peaks_per_rank(device))
    except torch.OutOfMemoryError as error:  # the whole clip's decode on too few GPUs
        entry["pipeline_error"] = f"out of memory: {str(error).splitlines()[0]}"
        fresh_peak(device)
    return denoised


def rank_main(rank: int, world: int, init_file: str, options: dict, out_dir: str) -> None:
    """One rank of a world: every layout and size; rank 0 appends entries to a JSON-lines file."""
    cpu = options["cpu"]
    device = torch.device("cpu") if cpu else torch.device("cuda", rank)
    if not cpu:
        torch.cuda.set_device(device)
    dist.init_process_group(
        "gloo" if cpu else "nccl",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    dtype = torch.float32 if cpu else torch.bfloat16
    models = build_models(options["tiny"], device, dtype)
    if options["compile"]:  # regional compile, as bench_gpu_speed; the collectives trace into the block graphs
        speed = Speed(compile=True, compile_backend="eager" if cpu else "inductor")
        models.runner = optimize_transformer(models.transformer, speed)
    lines = Path(out_dir) / f"world{world}.jsonl"
    for size in options["sizes"]:
        for sequence, cfg in LAYOUTS[world]:
            layout = ParallelLayout(sequence, cfg)
            run = ParallelRun(layout, rank, device, *make_groups(layout, COLLECTIVE_TIMEOUT_S))
            entry = dict(size=size, gpus=world, sequence=sequence, cfg=cfg)
            parallel = parallelize(models, run)
            try:
                with torch.no_grad():
                    latent = measure(parallel, size, options["steps"], device, entry)
                entry["latent_max_abs_diff_vs_1_gpu"] = compare_with_one_gpu(latent, size, world, out_dir)
            except torch.OutOfMemoryError as error:  # every rank runs the same shapes: all fail alike
                entry["error"] = f"out of memory: {str(error).splitlines()[0]}"
                fresh_peak(device)
            finally:
                if isinstance(parallel.runner, ParallelTransformer):
                    parallel.runner.close()  # the next layout installs its own attention
            if rank == 0:
                with lines.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
                print(json.dumps(entry), flush=True)
    dist.destroy_process_group()


def compare_with_one_gpu(latent: torch.Tensor, size: str, world: int, out_dir: str) -> float | None:
    """The 1-GPU world stores its final latent; the others report their largest difference."""
    path = Path(out_dir) / f"latent_{size}.safetensors"
    if world == 1:
        if dist.get_rank() == 0:
            save_file({"latent": latent.float().cpu().contiguous()}, path)
        return 0.0
    if not path.exists():
        return None
    return (latent.float().cpu() - load_file(path)["latent"]).abs().max().item()


# ---------------------------------------------------------------- the worlds and the report


def run_world(world: int, options: dict, out_dir: Path, timeout_s: float) -> tuple[list[dict], str | None]:
    """Spawn `world` ranks; (their entries, an error or None)."""
    init_file = out_dir / f"init{world}"
    init_file.unlink(missing_ok=True)
    context = mp.get_context("spawn")
    processes = [
        context.Process(target=rank_main, args=(rank, world, str(init_file), options, str(out_dir)))
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(deadline - time.monotonic(), 1.0))
    error = None
    if any(p.is_alive() for p in processes):
        error = f"timed out after {timeout_s:.0f} s"
    elif any(p.exitcode != 0 for p in processes):
        error = f"exit codes {[p.exitcode for p in processes]}"
    for process in processes:
        if process.is_alive():
            process.kill()
    lines = out_dir / f"world{world}.jsonl"
    entries = [json.loads(line) for line in lines.read_text().splitlines()] if lines.exists() else []
    return entries, error


def device_name(cpu: bool) -> str:
    if cpu:
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), gloo"
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, NCCL"


def summarize(entries: list[dict]) -> dict:
    """Best layout per size and GPU count, and its speed-up over one GPU."""
    summary = {}
    for size in sorted({e["size"] for e in entries}):
        per_size = {}
        for gpus in sorted({e["gpus"] for e in entries if e["size"] == size}):
            row = {}
            for stage in ("dit", "pipeline"):
                key = f"{stage}_s"
                done = [e for e in entries if e["size"] == size and key in e]
                one = next((e[key] for e in done if e["gpus"] == 1), None)
                candidates = [e for e in done if e["gpus"] == gpus]
                if not candidates:
                    row[stage] = None  # out of memory or not run: see the entries
                    continue
                best = min(candidates, key=lambda e: e[key])
                row[stage] = dict(
                    seconds=best[key],
                    layout=f"sequence {best['sequence']} x cfg {best['cfg']}",
                    peak_gib_per_gpu=best[f"{stage}_peak_gib_per_gpu"],
                    speedup=round(one / best[key], 2) if one else None,
                )
            per_size[str(gpus)] = row
        summary[size] = per_size
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "multi_gpu.json")
    parser.add_argument("--gpus", default="1,2,4", help="GPU counts, comma-separated (default: %(default)s)")
    parser.add_argument("--sizes", default=None, help=f"WxHxF, comma-separated (default: {','.join(SIZES)})")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes (a dry run)")
    parser.add_argument("--cpu", action="store_true", help="processes on the CPU with gloo, fp32")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="regional torch.compile of the DiT (acceleration.optimize_transformer; eager backend on the CPU)",
    )
    parser.add_argument(
        "--latent-dir",
        type=Path,
        default=None,
        help="where the 1-GPU run leaves its latents "
        "for the others to compare with, across invocations (default: a temporary folder)",
    )
    parser.add_argument("--world-timeout-s", type=float, default=1800.0, help="per GPU count")
    args = parser.parse_args(argv)
    gpus = [int(g) for g in args.gpus.split(",")]
    if not args.cpu and max(gpus) > torch.cuda.device_count():
        parser.error(f"--gpus {args.gpus} needs {max(gpus)} GPUs; this machine has {torch.cuda.device_count()}")
    args.gpus = gpus
    args.sizes = args.sizes.split(",") if args.sizes else list(TINY_SIZES if args.tiny else SIZES)
    return args


def start_report(args: argparse.Namespace) -> dict:
    """The existing report at --out (other GPU counts and sizes stay) with this run's settings."""
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.update(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device_name(args.cpu),
        torch=torch.__version__,
        model="tiny (4 heads), random weights" if args.tiny else "LTX-Video 2B 0.9.5 + VAE 0.9.5, random weights",
        dtype="fp32" if args.cpu else "bf16",
        compile=args.compile,
        steps=args.steps,
        guidance=GUIDANCE,
        targets=TARGETS,
        note="dit_s: the guided DiT steps; pipeline_s: steps + time-split decode, text encoder "
        "excluded; speed-ups against 1 GPU at the same size",
    )
    report["entries"] = [
        e for e in report.get("entries", []) if not (e["size"] in args.sizes and e["gpus"] in args.gpus)
    ]
    report["errors"] = {k: v for k, v in report.get("errors", {}).items() if int(k) not in args.gpus}
    return report


def run_worlds(args: argparse.Namespace, report: dict, latent_dir: Path) -> None:
    """Each GPU count in its own world, 1 first (the others compare their latent with its);
    the report is written after each."""
    options = dict(cpu=args.cpu, tiny=args.tiny, sizes=args.sizes, steps=args.steps, compile=args.compile)
    for world in sorted(args.gpus):
        print(f"--- {world} GPU(s)", flush=True)
        (latent_dir / f"world{world}.jsonl").unlink(missing_ok=True)
        try:
            new, error = run_world(world, options, latent_dir, args.world_timeout_s)
        except Exception:
            new, error = [], traceback.format_exc()
        report["entries"] += new
        if error:
            report["errors"][str(world)] = error
        report["summary"] = summarize(report["entries"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


def main(argv=None) -> None:
    args = parse_args(argv)
    report = start_report(args)
    with tempfile.TemporaryDirectory() as scratch:
        latent_dir = args.latent_dir or Path(scratch)
        latent_dir.mkdir(parents=True, exist_ok=True)
        run_worlds(args, report, latent_dir)
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
