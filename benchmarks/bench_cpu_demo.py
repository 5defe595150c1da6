"""Time of the demo clip (prompt -> mp4) with the shipped tiny model on CPU, by stage.

The README's demo (256x256, 25 frames, 20 steps with CFG) against its target on 2 CPU
cores (`TARGET_S`). Runs each stage through the pipeline's own stage functions, repeats
the whole clip, and writes the median of each stage to benchmarks/results/cpu_demo.json.

    python -m benchmarks.bench_cpu_demo [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ltx_core.checkpoint.loading import load_checkpoint
from ltx_core.models.text_encoder import load_text_encoder
from ltx_core.pipeline import decode_frames, encode_text, prepare_latent, seeded_generator
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.scheduler import flow_sigmas
from ltx_core.training.demo_model import DEMO_CHECKPOINT, DEMO_SIZE, DEMO_TEXT_ENCODER
from ltx_core.video import write_mp4

RESULTS = Path(__file__).parent / "results" / "cpu_demo.json"
PROMPT = "A red circle slides to the left slowly over a plain dark blue background."
STEPS, GUIDANCE, TARGET_S = 20, 3.0, 20.0


def timed(stages: dict, name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    stages[name] = time.perf_counter() - start
    return out


def one_clip(out_dir: Path, repeat: int) -> dict[str, float]:
    stages: dict[str, float] = {}
    transformer, vae, _ = timed(stages, "load_checkpoint", load_checkpoint, DEMO_CHECKPOINT)
    encoder = timed(stages, "load_text_encoder", load_text_encoder, DEMO_TEXT_ENCODER)
    generator = seeded_generator(0)
    text, negative = timed(stages, "encode_text", encode_text, encoder, PROMPT, "")
    latent = timed(
        stages,
        "prepare_latent",
        prepare_latent,
        vae,
        DEMO_SIZE["num_frames"],
        DEMO_SIZE["height"],
        DEMO_SIZE["width"],
        generator=generator,
    )
    sigmas = flow_sigmas(STEPS, latent.num_tokens)
    latent = timed(
        stages,
        "denoise",
        denoise,
        transformer,
        latent,
        text,
        negative,
        sigmas,
        GUIDANCE,
        DEMO_SIZE["frame_rate"],
        generator,
    )
    frames = timed(stages, "decode", decode_frames, vae, latent.samples, 0.05, 0.025, generator)
    timed(stages, "write_mp4", write_mp4, frames[0], out_dir / f"demo_{repeat}.mp4", DEMO_SIZE["frame_rate"])
    stages["total"] = sum(stages.values())
    return stages


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_clip(Path(tmp), i) for i in range(args.repeats)]
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu ({platform.processor() or platform.machine()}), torch threads {args.threads}",
        "torch": torch.__version__,
        "settings": {**DEMO_SIZE, "steps": STEPS, "guidance_scale": GUIDANCE, "prompt": PROMPT},
        "repeats": args.repeats,
        "median_seconds_by_stage": {k: round(v, 3) for k, v in median.items()},
        "target_seconds": TARGET_S,
        "meets_target": median["total"] <= TARGET_S,
        "all_runs": [{k: round(v, 3) for k, v in run.items()} for run in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, seconds in median.items():
        print(f"{name:18s} {seconds:7.3f} s")
    return result


if __name__ == "__main__":
    main()
