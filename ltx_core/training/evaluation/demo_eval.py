"""Held-out evaluation of the shipped tiny model, by simple image analysis.

Renders prompts whose (color, shape, motion) combination was never trained on
(`ltx_core.training.data.heldout_specs`), generates each with the shipped model through
`ltx_core.pipeline.generate`, and reads the frames with `ltx_core.training.analysis`
(brightness segmentation, centroid track, area): is the shape of the asked color, shape
and motion? Image-to-video: the held-out clip's own first frame is given; its PSNR in the
output and the motion after it are measured. VAE: reconstruction PSNR of held-out clips
with and without the denoising decode. For comparison (no target), the same reading on
fresh clips of trained combinations. First + last frame conditioning is measured as
`first_last_eval --keyframe-settings` does (no CFG, plain decode). Writes
results/demo_eval.json beside this file and the frames of the first clips to
docs/demo_strip.png.

    python -m ltx_core.training.evaluation.demo_eval [--count 720] [--i2v-count 16] [--seen-count 24]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from ...checkpoint.loading import load_checkpoint
from ...models.text_encoder import load_text_encoder
from ...pipeline import Models, Request, generate
from .. import analysis, data
from ..demo_model import DEMO_CHECKPOINT, DEMO_SIZE, DEMO_TEXT_ENCODER
from . import first_last_eval
from .first_last_eval import ground_truth, psnr

RESULTS = Path(__file__).parent / "results" / "demo_eval.json"
STRIP = Path(__file__).resolve().parents[3] / "docs" / "demo_strip.png"  # the README shows it
TARGETS = {
    "color": 0.9,
    "motion": 0.9,
    "i2v_first_frame_psnr_db": 30.0,
    "first_last_frame_psnr_db": first_last_eval.TARGET_DB,
}
STEPS, GUIDANCE = 20, 3.0  # the CLI's defaults for the shipped model
ATTRIBUTES = ("color", "shape", "motion", "speed")
SEEN_SEED = 99  # a training-stream seed of its own: trained combinations, fresh clips


def request(
    spec: data.ClipSpec, seed: int, first_frame: torch.Tensor | None = None, guidance: float = GUIDANCE
) -> Request:
    return Request(
        prompt=data.caption(spec),
        width=DEMO_SIZE["width"],
        height=DEMO_SIZE["height"],
        num_frames=DEMO_SIZE["num_frames"],
        frame_rate=DEMO_SIZE["frame_rate"],
        steps=STEPS,
        guidance_scale=guidance,
        seed=seed,
        first_frame=first_frame,
    )


def single_shape_specs(seed: int, count: int) -> list[data.ClipSpec]:
    """The first `count` one-shape clips of the training stream `seed`: trained
    combinations, fresh clips (a stream of its own, never trained on)."""
    return [s for s in data.training_specs(seed, 0, 4 * count) if s.second is None][:count]


def score(spec: data.ClipSpec, reading: analysis.ClipReading) -> dict[str, bool]:
    want = spec.main
    return {
        "color": reading.color == want.color,
        "shape": reading.shape == want.shape,
        "motion": reading.motion == want.motion,
        "speed": want.motion == "still" or reading.speed == want.speed,
    }


def accuracy(rows: list[dict], key: str) -> float:
    return sum(r["correct"][key] for r in rows) / max(1, len(rows))


def motion_breakdown(rows: list[dict]) -> dict[str, str]:
    """'right/asked' per asked motion: which motions hold the accuracy down."""
    asked = sorted({r["asked"]["motion"] for r in rows})
    return {
        m: f"{sum(r['correct']['motion'] for r in rows if r['asked']['motion'] == m)}/"
        f"{sum(r['asked']['motion'] == m for r in rows)}"
        for m in asked
    }


def eval_text_to_video(
    models: Models, specs: list[data.ClipSpec], keep: int = 0
) -> tuple[list[dict], list[torch.Tensor]]:
    """Rows of readings, and the frames of the first `keep` clips (for the demo strip)."""
    rows, kept = [], []
    for i, spec in enumerate(specs):
        frames = generate(models, request(spec, seed=i))
        if i < keep:
            kept.append(frames)
        reading = analysis.read_clip(frames)
        asked = {k: getattr(spec.main, k) for k in ATTRIBUTES}
        rows.append(
            {"prompt": data.caption(spec), "asked": asked, "read": reading.__dict__, "correct": score(spec, reading)}
        )
        print(
            f"t2v {i:3d} {'ok ' if all(rows[-1]['correct'].values()) else 'BAD'} "
            f"{rows[-1]['prompt']} -> {reading.color} {reading.shape} {reading.motion} "
            f"{reading.speed}"
        )
    return rows, kept


def save_strip(clips: list[torch.Tensor], captions: list[str], path: Path, frame_indices=(0, 8, 16, 24)) -> None:
    """One row per clip: its caption above frames `frame_indices` side by side."""
    from PIL import Image, ImageDraw

    size, text_height = clips[0].shape[1], 18
    strip = Image.new("RGB", (size * len(frame_indices), (size + text_height) * len(clips)), "white")
    draw = ImageDraw.Draw(strip)
    for row, (frames, text) in enumerate(zip(clips, captions)):
        top = row * (size + text_height)
        draw.text((4, top + 3), text, fill="black")
        for col, index in enumerate(frame_indices):
            image = (frames[index].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            strip.paste(Image.fromarray(image), (col * size, top + text_height))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)


def eval_image_to_video(models: Models, specs: list[data.ClipSpec]) -> list[dict]:
    rows = []
    for i, spec in enumerate(specs):
        truth = ground_truth(spec)
        frames = generate(models, request(spec, seed=1000 + i, first_frame=truth[0]))
        reading = analysis.read_clip(frames)
        rows.append(
            {
                "prompt": data.caption(spec),
                "first_frame_psnr_db": psnr(frames[0], truth[0]),
                "read": reading.__dict__,
                "correct": score(spec, reading),
            }
        )
        print(f"i2v {i:3d} psnr {rows[-1]['first_frame_psnr_db']:.1f} {rows[-1]['prompt']} -> {reading.motion}")
    return rows


@torch.no_grad()
def eval_vae(vae, specs: list[data.ClipSpec]) -> dict[str, float]:
    """Mean reconstruction PSNR over held-out clips, plain decode and denoising decode."""
    results = {}
    for name, (t, s) in {"plain_decode": (0.0, 0.0), "denoising_decode": (0.05, 0.025)}.items():
        values = []
        for i, spec in enumerate(specs):
            truth = ground_truth(spec)
            video = truth.permute(3, 0, 1, 2)[None] * 2 - 1
            recon = vae.decode(
                vae.encode(video), timestep=t, decode_noise_scale=s, generator=torch.Generator().manual_seed(i)
            )
            values.append(psnr(((recon[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0), truth))
        results[name] = sum(values) / len(values)
    return results


def load_models(checkpoint: Path = DEMO_CHECKPOINT, device: str = "cpu") -> Models:
    transformer, vae, _ = load_checkpoint(checkpoint, dtype=torch.float32, device=device)
    encoder = load_text_encoder(DEMO_TEXT_ENCODER, dtype=torch.float32, device=device)
    return Models(transformer=transformer, vae=vae, text_encoder=encoder)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count",
        type=int,
        default=720,
        help="held-out text-to-video prompts (a few dozen cannot tell models near the target apart: docs/FINDINGS.md)",
    )
    parser.add_argument("--i2v-count", type=int, default=16)
    parser.add_argument("--vae-count", type=int, default=16)
    parser.add_argument(
        "--seen-count", type=int, default=24, help="prompts of trained combinations, for comparison (not a target)"
    )
    parser.add_argument(
        "--first-last-count",
        type=int,
        default=16,
        help="held-out clips for first + last frame conditioning, read with first_last_eval's KEYFRAME_SETTINGS",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="a candidate single file (default: the shipped model)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--strip", type=Path, default=STRIP, help="PNG of the first clips' frames")
    parser.add_argument("--strip-count", type=int, default=4)
    return parser.parse_args(argv)


def eval_first_last(models: Models, specs: list[data.ClipSpec]) -> list[dict]:
    settings = first_last_eval.KEYFRAME_SETTINGS
    return [first_last_eval.evaluate(models, spec, seed=i, steps=STEPS, **settings) for i, spec in enumerate(specs)]


def verdicts(t2v: list[dict], i2v_psnr: float, first_last_means: dict) -> dict[str, bool]:
    return {
        "color": accuracy(t2v, "color") >= TARGETS["color"],
        "motion": accuracy(t2v, "motion") >= TARGETS["motion"],
        "i2v_first_frame_psnr_db": i2v_psnr >= TARGETS["i2v_first_frame_psnr_db"],
        "first_last_frame_psnr_db": first_last_eval.meets_target(first_last_means),
    }


def summary(args: argparse.Namespace, rows: dict, vae: dict) -> dict:
    """The results file's fields from the readings' rows (t2v, seen, i2v, first_last)."""
    t2v, seen, i2v, first_last = rows["t2v"], rows["seen"], rows["i2v"], rows["first_last"]
    i2v_psnr = sum(r["first_frame_psnr_db"] for r in i2v) / max(1, len(i2v))
    first_last_means = first_last_eval.mean_db(first_last)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "checkpoint": args.checkpoint.name,
        "settings": {
            **DEMO_SIZE,
            "steps": STEPS,
            "guidance_scale": GUIDANCE,
            "first_last": first_last_eval.KEYFRAME_SETTINGS,
        },
        "counts": {
            "text_to_video": len(t2v),
            "seen_combinations": len(seen),
            "image_to_video": len(i2v),
            "vae": args.vae_count,
            "first_last": len(first_last),
        },
        "text_to_video_accuracy": {k: accuracy(t2v, k) for k in ATTRIBUTES},
        "seen_combinations_accuracy": {k: accuracy(seen, k) for k in ATTRIBUTES},
        "motion_right_per_motion": {
            "text_to_video": motion_breakdown(t2v),
            "seen_combinations": motion_breakdown(seen),
        },
        "image_to_video": {
            "first_frame_psnr_db": i2v_psnr,
            "motion_accuracy": accuracy(i2v, "motion"),
            "color_accuracy": accuracy(i2v, "color"),
        },
        "vae_reconstruction_psnr_db": vae,
        "first_last_frame_psnr_db": first_last_means,
        "targets": TARGETS,
        "meets_targets": verdicts(t2v, i2v_psnr, first_last_means),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    start = time.monotonic()
    models = load_models(args.checkpoint)
    specs = data.heldout_specs(max(args.count, args.i2v_count, args.vae_count))
    t2v, kept = eval_text_to_video(models, specs[: args.count], keep=args.strip_count)
    if kept:
        save_strip(kept, [r["prompt"] for r in t2v], args.strip)
    rows = {
        "t2v": t2v,
        "seen": eval_text_to_video(models, single_shape_specs(SEEN_SEED, args.seen_count))[0],
        "i2v": eval_image_to_video(models, specs[: args.i2v_count]),
    }
    vae = eval_vae(models.vae, specs[: args.vae_count])
    rows["first_last"] = eval_first_last(models, specs[: args.first_last_count])
    result = {
        **summary(args, rows, vae),
        "seconds": round(time.monotonic() - start, 1),
        "text_to_video": t2v,
        "image_to_video_rows": rows["i2v"],
        "first_last_rows": rows["first_last"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "counts",
                    "text_to_video_accuracy",
                    "seen_combinations_accuracy",
                    "motion_right_per_motion",
                    "image_to_video",
                    "vae_reconstruction_psnr_db",
                    "first_last_frame_psnr_db",
                    "meets_targets",
                )
            },
            indent=1,
        )
    )
    return result


if __name__ == "__main__":
    main()
