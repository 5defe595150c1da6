"""Quantized checkpoints on one GPU: the same random 13B transformer written in each file
format people download, loaded with `ltx_core.checkpoint.loading.load_transformer` (the
quantized weights stay quantized in memory), and run at 768x512x121 (6144 latent tokens).

Formats, one at a time (written, measured, deleted: a 13B bf16 file is ~26 GB):
  - bf16: the official single file;
  - fp8: Lightricks' FP8 layout (the blocks' attention and feed-forward weights cast to
    float8_e4m3fn, no scales), also run through the FP8 matmuls (`Speed(fp8=True)`);
  - scaled_fp8: ComfyUI's scaled FP8 (a per-tensor `scale_weight` per FP8 weight);
  - gguf_q8_0, gguf_q4_k: ComfyUI-GGUF's layout, transformer only, every tensor that
    whole blocks fit in that type (`gguf_writing.write_gguf`'s choice).

Per format: file size, load time (the file was just written, so it is read from the page
cache: the time is the loader's, not the disk's), GPU memory of the loaded weights and
peaks while loading and during a DiT forward, DiT seconds per step (mean after a warm-up,
and x20 for a 20-step run), and the velocity's error against the bf16 weights' velocity.
The weights are PyTorch's default initialization (about +-1/sqrt(width)), smaller than
e4m3's smallest normal value (2**-6) for the 13B's 4096-wide layers: the unscaled
Lightricks layout rounds them coarsely, so its error here is a bound, not a trained
model's; the scaled layout shows what a per-tensor scale buys.
The JSON is written again after every format, so a failure keeps what came before;
formats past `--budget-s` are skipped and listed.

    PYTHONUNBUFFERED=1 python -m benchmarks.quantized_checkpoints --out $OUT/quantized_checkpoints.json
    python -m benchmarks.quantized_checkpoints --tiny --out /tmp/quantized.json   # CPU dry run
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.gpu_measure import GIB, error_stats, fresh_peak, module_gib, peak_gib, timed
from ltx_core.checkpoint.loading import load_transformer
from ltx_core.checkpoint.quantized_writing import fp8_tensors, gguf_types, transformer_only, write_gguf_checkpoint
from ltx_core.checkpoint.versions import ModelConfigs
from ltx_core.checkpoint.writing import config_metadata, official_tensors
from ltx_core.models import configs as C
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE

FORMATS = ("bf16", "fp8", "scaled_fp8", "gguf_q8_0", "gguf_q4_k")
GGUF_TYPES = {"gguf_q8_0": "Q8_0", "gguf_q4_k": "Q4_K"}
STEPS_REPORTED = 20
FRAME_RATE = 25.0
TINY_WIDE = C.TINY_TRANSFORMER_WIDE  # every format holds its layers


# ---------------------------------------------------------------- the files


def write_format(fmt: str, folder: Path, tensors: dict, configs: ModelConfigs, device, with_config: bool) -> Path:
    """One format's file in `folder`, from the official single-file `tensors`."""
    metadata = {"config": json.dumps(config_metadata(configs)), "format": "pt"}
    if fmt in GGUF_TYPES:
        weights = transformer_only(tensors)
        path = folder / f"{fmt}.gguf"
        config = configs if with_config else None
        return write_gguf_checkpoint(path, weights, gguf_types(weights, GGUF_TYPES[fmt]), config, device)
    path = folder / f"{fmt}.safetensors"
    out = tensors if fmt == "bf16" else fp8_tensors(tensors, fmt == "scaled_fp8", device)
    save_file(out, str(path), metadata=metadata)
    return path


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class Setup:
    configs: ModelConfigs
    frames: int
    height: int
    width: int
    text_tokens: int
    device: torch.device
    warmup: int
    steps: int
    with_config: bool  # the GGUF files carry the config (tiny) or not, as published ones (13B)


def make_setup(tiny: bool) -> Setup:
    if tiny:
        return Setup(ModelConfigs(TINY_WIDE, C.TINY_VAE_0_9_5), 2, 4, 4, 8, torch.device("cpu"), 1, 2, True)
    if not torch.cuda.is_available():
        raise SystemExit("quantized_checkpoints times the 13B model on a GPU; no CUDA device here (use --tiny)")
    device = torch.device("cuda")
    # 121 frames, 512x768 pixels -> 16 x 16 x 24 latent = 6144 tokens
    return Setup(ModelConfigs(C.LTXV_13B, C.LTXV_VAE_0_9_5), 16, 16, 24, 128, device, 1, 3, False)


def make_inputs(setup: Setup, cfg: C.TransformerConfig) -> tuple:
    g = torch.Generator().manual_seed(1)
    tokens = setup.frames * setup.height * setup.width
    latent = torch.randn(1, tokens, cfg.in_channels, generator=g)
    sigma = torch.full((1,), 0.7)
    text = torch.randn(1, setup.text_tokens, cfg.caption_channels, generator=g)
    mask = torch.ones(1, setup.text_tokens)
    coords = latent_coords(setup.frames, setup.height, setup.width, 1)
    coords = fractional_coords(pixel_coords(coords, causal_fix=True), FRAME_RATE)
    dtype = torch.bfloat16
    return tuple(
        t.to(setup.device, dtype) if i in (0, 2) else t.to(setup.device)
        for i, t in enumerate((latent, sigma, text, mask, coords))
    )


def random_tensors(setup: Setup) -> dict[str, torch.Tensor]:
    """The official single file's tensors of random bf16 models, on the CPU."""
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:  # built in bf16: the 13B in fp32 would not fit beside its bf16 copy
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(setup.device):
            models = LTXVTransformer(setup.configs.transformer), CausalVideoVAE(setup.configs.vae)
    finally:
        torch.set_default_dtype(previous)
    tensors = official_tensors(*models, torch.bfloat16)
    del models
    return tensors


def measure(
    fmt: str, path: Path, setup: Setup, inputs: tuple, reference: torch.Tensor | None
) -> tuple[dict, torch.Tensor]:
    """Load `path`, run the forward; the row and the velocity (on the CPU)."""
    device = setup.device
    print(f"{fmt}: loading {path.stat().st_size / GIB:.2f} GiB", flush=True)
    fresh_peak(device)
    (model, info), load_s = timed(lambda: load_transformer(path, torch.bfloat16, device), device)
    row = dict(format=fmt, file_gib=round(path.stat().st_size / GIB, 3), quantization=info.quantization)
    row.update(load_s=round(load_s, 2), weights_gib=round(module_gib(model), 3))
    row.update({f"load_{k}": v for k, v in peak_gib(device).items()})
    velocity = run_steps(model, setup, inputs, row, "")
    if reference is not None:
        row["velocity_error_vs_bf16"] = error_stats(velocity, reference)
    if fmt == "fp8" and fp8_matmuls_available(device):
        from ltx_core.speed.fp8 import convert_to_fp8

        row["fp8_matmul_layers"] = len(convert_to_fp8(model))
        fast = run_steps(model, setup, inputs, row, "fp8_matmul_")
        if reference is not None:
            row["fp8_matmul_velocity_error_vs_bf16"] = error_stats(fast, reference)
    del model
    return row, velocity


def fp8_matmuls_available(device: torch.device) -> bool:
    from ltx_core.speed.fp8 import fp8_supported

    return fp8_supported(device)


def run_steps(model, setup: Setup, inputs: tuple, row: dict, prefix: str) -> torch.Tensor:
    """Warm-up forwards, then timed ones: mean seconds per step, x20, the forward's peak."""
    device = setup.device
    with torch.no_grad():
        for _ in range(setup.warmup):
            velocity = model(*inputs)
        fresh_peak(device)
        times = []
        for _ in range(setup.steps):
            velocity, seconds = timed(lambda: model(*inputs), device)
            times.append(seconds)
    step = sum(times) / len(times)
    row[f"{prefix}step_s"] = round(step, 4)
    row[f"{prefix}steps_{STEPS_REPORTED}_s"] = round(step * STEPS_REPORTED, 2)
    row.update({f"{prefix}forward_{k}": v for k, v in peak_gib(device).items()})
    return velocity.float().cpu()


def run(setup: Setup, out: Path, formats: tuple[str, ...], budget_s: float) -> dict:
    start = time.perf_counter()
    report = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(setup.device)
        if setup.device.type == "cuda"
        else platform.processor() or "cpu",
        torch=torch.__version__,
        shape=dict(frames=setup.frames, height=setup.height, width=setup.width, text_tokens=setup.text_tokens),
        transformer_layers=setup.configs.transformer.num_layers,
        rows=[],
        skipped=[],
        errors={},
    )
    inputs = make_inputs(setup, setup.configs.transformer)
    tensors = random_tensors(setup)
    folder = Path(tempfile.mkdtemp(prefix="quantized_checkpoints_"))
    reference = None
    try:
        for fmt in formats:
            if time.perf_counter() - start > budget_s:
                report["skipped"].append(fmt)
                continue
            try:
                reference = run_format(fmt, folder, tensors, setup, inputs, reference, report)
            except Exception as error:  # one format's failure keeps the others
                report["errors"][fmt] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
            write_report(report, out, start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def run_format(fmt, folder, tensors, setup, inputs, reference, report) -> torch.Tensor | None:
    """Write, measure and delete one format; the bf16 velocity is the reference after it."""
    written = time.perf_counter()
    print(f"{fmt}: writing ({report.get('elapsed_s', 0)} s so far)", flush=True)
    path = write_format(fmt, folder, tensors, setup.configs, setup.device, setup.with_config)
    write_s = time.perf_counter() - written
    try:
        row, velocity = measure(fmt, path, setup, inputs, reference)
    finally:
        path.unlink(missing_ok=True)
        gc.collect()
    row["write_s"] = round(write_s, 2)
    report["rows"].append(row)
    print(json.dumps(row), flush=True)
    return velocity if fmt == "bf16" else reference


def write_report(report: dict, out: Path, start: float) -> None:
    report["elapsed_s"] = round(time.perf_counter() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "quantized_checkpoints.json")
    parser.add_argument("--tiny", action="store_true", help="tiny configs and sizes (a dry run, CPU is fine)")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"among {', '.join(FORMATS)}")
    parser.add_argument("--budget-s", type=float, default=360.0, help="formats past this are skipped")
    args = parser.parse_args(argv)
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or "bf16" not in formats[:1]:
        parser.error(f"--formats {args.formats!r}: bf16 first (the reference), then any of {', '.join(FORMATS)}")
    return run(make_setup(args.tiny), args.out, formats, args.budget_s)


if __name__ == "__main__":
    main()
