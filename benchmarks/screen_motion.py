"""Text-to-video readings of several checkpoints on many prompts: held-out and validation.

48 held-out prompts read a model near the 90% target only to about +-4 points (one
standard error), too coarse to rank models that all sit there; `eval_demo.py` now reads
720. This script is the text-to-video part of that reading for several checkpoints at once,
on any device: held-out prompts `--start` .. `--start + --count - 1` (eval_demo's, in its
order) and as many validation prompts (trained combinations, eval_demo's seen-combination
stream, never trained on), with eval_demo's settings and reading; it writes per-model
accuracy and the per-motion breakdown. The noise is drawn on the CPU, so a GPU reads the
same frames as a CPU up to float rounding.

    python benchmarks/screen_motion.py CKPT [CKPT ...] --count 240 --device cuda --out F.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from ltx_core.training import data

import eval_demo  # beside this script


def read(models, specs) -> dict:
    rows, _ = eval_demo.eval_text_to_video(models, specs)
    return {"count": len(rows),
            "accuracy": {k: eval_demo.accuracy(rows, k) for k in eval_demo.ATTRIBUTES},
            "motion_right_per_motion": eval_demo.motion_breakdown(rows),
            # indices into the prompts read (the first is --start)
            "wrong_motion": [i for i, r in enumerate(rows) if not r["correct"]["motion"]]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--count", type=int, default=240)
    parser.add_argument("--start", type=int, default=0, help="first prompt of each set read")
    parser.add_argument("--heldout-only", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.start < 0 or args.count < 1:
        parser.error(f"--start {args.start} --count {args.count}: give a start of 0 or more and a count of 1 or more")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    heldout = data.heldout_specs(args.start + args.count)[args.start:]
    validation = eval_demo.single_shape_specs(eval_demo.SEEN_SEED, args.start + args.count)[args.start:]
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "settings": {"steps": eval_demo.STEPS, "guidance_scale": eval_demo.GUIDANCE,
                           "start": args.start, "count": args.count}, "models": {}}
    for checkpoint in args.checkpoints:
        start = time.monotonic()
        models = eval_demo.load_models(checkpoint, args.device)
        readings = {"heldout": read(models, heldout)}
        if not args.heldout_only:
            readings["validation"] = read(models, validation)
        result["models"][checkpoint.stem] = {**readings, "seconds": round(time.monotonic() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, m in result["models"].items():
        print(name, {part: (round(m[part]["accuracy"]["color"], 3), round(m[part]["accuracy"]["motion"], 3))
                     for part in ("heldout", "validation") if part in m})
    return result


if __name__ == "__main__":
    main()
