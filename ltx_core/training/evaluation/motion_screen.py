"""Text-to-video readings of several checkpoints on many prompts: held-out and validation.

A few dozen held-out prompts cannot rank models that all sit near the target (the
reading's standard error is too large; docs/FINDINGS.md), and `demo_eval` reads many only
for one checkpoint at a time on the CPU. This module is the text-to-video part of that
reading for several checkpoints at once, on any device: held-out prompts `--start` ..
`--start + --count - 1` (demo_eval's, in its order) and as many validation prompts (trained
combinations, demo_eval's seen-combination stream, never trained on), with demo_eval's
settings and reading; it writes per-model accuracy and the per-motion breakdown. The noise
is drawn on the CPU, so a GPU reads the same frames as a CPU up to float rounding.

    python -m ltx_core.training.evaluation.motion_screen CKPT [CKPT ...] --count 240 --device cuda --out F.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from .. import data
from . import demo_eval


def read(models, specs) -> dict:
    rows, _ = demo_eval.eval_text_to_video(models, specs)
    return {
        "count": len(rows),
        "accuracy": {k: demo_eval.accuracy(rows, k) for k in demo_eval.ATTRIBUTES},
        "motion_right_per_motion": demo_eval.motion_breakdown(rows),
        # indices into the prompts read (the first is --start)
        "wrong_motion": [i for i, r in enumerate(rows) if not r["correct"]["motion"]],
    }


def parse_args(argv=None) -> argparse.Namespace:
    """The options; clear errors for a range or a device that cannot be read, before any work."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--count", type=int, default=240)
    parser.add_argument("--start", type=int, default=0, help="first prompt of each set read")
    parser.add_argument("--heldout-only", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--text-encoder", type=Path, default=demo_eval.DEMO_TEXT_ENCODER, help="their T5 folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.start < 0 or args.count < 1:
        parser.error(f"--start {args.start} --count {args.count}: give a start of 0 or more and a count of 1 or more")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    return args


def read_checkpoint(
    checkpoint: Path,
    device: str,
    heldout: list,
    validation: list | None,
    text_encoder: Path = demo_eval.DEMO_TEXT_ENCODER,
) -> dict:
    """`read` of one checkpoint on the held-out prompts and, unless None, the validation ones."""
    start = time.monotonic()
    models = demo_eval.load_models(checkpoint, device, text_encoder)
    readings = {"heldout": read(models, heldout)}
    if validation is not None:
        readings["validation"] = read(models, validation)
    return {**readings, "seconds": round(time.monotonic() - start, 1)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    heldout = data.heldout_specs(args.start + args.count)[args.start :]
    validation = (
        None
        if args.heldout_only
        else demo_eval.single_shape_specs(demo_eval.SEEN_SEED, args.start + args.count)[args.start :]
    )
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "settings": {
            "steps": demo_eval.STEPS,
            "guidance_scale": demo_eval.GUIDANCE,
            "start": args.start,
            "count": args.count,
        },
        "models": {
            c.stem: read_checkpoint(c, args.device, heldout, validation, args.text_encoder) for c in args.checkpoints
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, m in result["models"].items():
        print(
            name,
            {
                part: (round(m[part]["accuracy"]["color"], 3), round(m[part]["accuracy"]["motion"], 3))
                for part in ("heldout", "validation")
                if part in m
            },
        )
    return result


if __name__ == "__main__":
    main()
