"""The 13B multi-scale distilled release pipeline on one GPU: the official
`ltxv-13b-0.9.8-distilled` preset (first pass at two thirds of the size, 7 steps, the spatial
x2 latent upsampler with AdaIN, second pass of 3 steps, tone mapping, denoising decode) on
random weights of the real 13B transformer, the 0.9.5-family VAE and the spatial upsampler,
bf16, as `generate_multiscale` runs it (the CLI's `--preset`).

The text encoder is a one-layer T5 of T5-XXL's width (4096): the benchmark times the
pipeline after the text encoder, whose own time is reported apart. Each row is the mean of
`--repeats` runs after one warm-up; peak GPU memory is `torch.cuda.max_memory_allocated`.

    PYTHONUNBUFFERED=1 python -m benchmarks.bench_multiscale --out $OUT/multiscale.json
    python -m benchmarks.bench_multiscale --tiny --out /tmp/multiscale.json     # CPU dry run
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from ltx_core.models import configs as C
from ltx_core.models.latent_upsampler import (
    LTXV_SPATIAL_UPSCALER_0_9_8,
    TINY_SPATIAL_UPSAMPLER,
    LatentUpsampler,
)
from ltx_core.models.t5 import T5Config, T5EncoderModel
from ltx_core.models.text_encoder import TextEncoder, load_tokenizer
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.multiscale import generate_multiscale
from ltx_core.pipeline import Models, encode_text
from ltx_core.preflight import shipped_model_paths
from ltx_core.release_config import load_preset
from ltx_core.request import Request

from .gpu_speed_pipelines import randomize_

RESULTS = Path(__file__).parent / "results" / "multiscale.json"
PRESET = "ltxv-13b-0.9.8-distilled"
PROMPT = "A red fox runs across a snowy field at dawn, the camera tracking it from the side."


def build_models(tiny: bool, device: torch.device, dtype: torch.dtype) -> tuple[Models, LatentUpsampler]:
    """Seeded random weights of the real configs (the tiny ones with `tiny`), built on the
    device in the run's dtype."""
    transformer_cfg = C.TINY_TRANSFORMER if tiny else C.LTXV_13B
    vae_cfg = C.TINY_VAE if tiny else C.LTXV_VAE_0_9_5
    upsampler_cfg = TINY_SPATIAL_UPSAMPLER if tiny else LTXV_SPATIAL_UPSCALER_0_9_8
    width = transformer_cfg.caption_channels
    t5_cfg = T5Config(d_model=width, d_kv=64, d_ff=2 * width, num_layers=1, num_heads=8, feed_forward_proj="gated-gelu")
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.device(device):
        transformer, vae = LTXVTransformer(transformer_cfg), CausalVideoVAE(vae_cfg)
        upsampler, t5 = LatentUpsampler(upsampler_cfg), T5EncoderModel(t5_cfg)
    for module in (transformer, vae, upsampler):
        randomize_(module, generator)
    tokenizer = load_tokenizer(shipped_model_paths()[1])
    modules = [m.to(dtype).eval().requires_grad_(False) for m in (transformer, vae, upsampler, t5)]
    transformer, vae, upsampler, t5 = modules
    return Models(transformer, vae, TextEncoder(tokenizer, t5)), upsampler


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[object, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def run(tiny: bool, repeats: int, device: torch.device) -> dict:
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    size = dict(width=256, height=160, num_frames=17) if tiny else dict(width=768, height=512, num_frames=121)
    release = load_preset(PRESET)
    models, upsampler = build_models(tiny, device, dtype)
    request = Request(prompt=PROMPT, seed=0, **size)
    steps = sum(p.steps for p in release.multi_scale().passes)
    _, first_s = timed(lambda: generate_multiscale(models, upsampler, request, release), device)
    # after the warm-up, as every run encodes the prompt again
    text_s = (
        sum(
            timed(lambda: encode_text(models.text_encoder, PROMPT, None, request.max_tokens), device)[1]
            for _ in range(3)
        )
        / 3
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [timed(lambda: generate_multiscale(models, upsampler, request, release), device) for _ in range(repeats)]
    frames = runs[-1][0]
    whole_s = sum(s for _, s in runs) / len(runs)
    return {
        "preset": PRESET,
        "transformer": "tiny" if tiny else "13B (LTXV_13B, random weights)",
        "dtype": str(dtype).removeprefix("torch."),
        "size": f"{size['width']}x{size['height']}x{size['num_frames']}",
        "pass_sizes": [list(s) for s in release.pass_sizes(size["height"], size["width"])],
        "steps": steps,
        "frames_shape": list(frames.shape),
        "frames_finite": bool(torch.isfinite(frames).all()),
        "first_run_s": round(first_s, 3),
        "whole_s": round(whole_s, 3),
        "text_encoder_s": round(text_s, 4),
        "whole_after_text_s": round(whole_s - text_s, 3),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
        "weights_gib": round(
            sum(p.nbytes for m in (models.transformer, models.vae, upsampler) for p in m.parameters()) / 2**30, 3
        ),
        "repeats": repeats,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a CPU dry run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": name,
        "torch": torch.__version__,
        **run(args.tiny, args.repeats, device),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
