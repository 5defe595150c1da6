"""Text-to-video readings of several checkpoints on many prompts: held-out and validation.

`eval_demo.py` reads 48 held-out prompts, a standard error of about 4 points at 90%: too
coarse to rank models that all sit near the 90% target. This script reads each checkpoint
on the first `--count` held-out prompts (the first 48 are eval_demo's) and on `--count`
validation prompts (trained combinations, eval_demo's seen-combination stream, never
trained on), with eval_demo's settings and reading, and writes per-model accuracy and the
per-motion breakdown. The noise is drawn on the CPU, so a GPU reads the same frames as a
CPU up to float rounding.

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
