"""One table of candidate checkpoints beside the shipped model: per model the numbers the
targets name and whether each target is met.

Each candidate is read by the two evaluation modules with `--checkpoint`: `demo_eval`
(held-out text-to-video, image-to-video, a first + last run) -> NAME_demo.json, and
`first_last_eval --keyframe-settings` (the target's reading, 16 clips) -> NAME_fl1.json,
in one folder with `recipes.json` (how each was trained: {"vae": ..., "common": ...,
"candidates": {NAME: recipe}}). The shipped model's row comes from its committed results
(results/demo_eval.json, results/first_last_eval_keyframe.json).

    python -m ltx_core.training.evaluation.candidate_table --folder FOLDER [--out FOLDER/table.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FIRST_LAST_SETTINGS = ("guidance_scale", "decode_timestep", "decode_noise_scale")


def first_last_settings(settings: dict) -> dict:
    return {k: settings[k] for k in FIRST_LAST_SETTINGS}


def row(demo: dict, first_last: dict) -> dict:
    """The numbers the targets name, from one model's demo_eval and first_last_eval results."""
    fl = first_last["means"]
    numbers = {
        "text_to_video_color": demo["text_to_video_accuracy"]["color"],
        "text_to_video_motion": demo["text_to_video_accuracy"]["motion"],
        "i2v_first_frame_psnr_db": demo["image_to_video"]["first_frame_psnr_db"],
        "first_last_demo_eval_db": [
            demo["first_last_frame_psnr_db"]["first_db"],
            demo["first_last_frame_psnr_db"]["last_db"],
        ],
        "first_last_demo_eval_clips": demo["counts"]["first_last"],
        "first_last_demo_eval_settings": first_last_settings(demo["settings"]["first_last"]),
        "first_last_16_clips_db": [fl["first_db"], fl["last_db"]],
        "first_last_16_clips_settings": first_last_settings(first_last["settings"]),
        "vae_clip_last_frame_db": fl["vae_clip_last_db"],
        "motion_right_per_motion": demo["motion_right_per_motion"]["text_to_video"],
    }
    # demo_eval's own verdicts, but first + last from first_last_eval's clips (the same as
    # demo_eval's own when it reads as many clips with the same settings)
    meets_first_last = min(fl["first_db"], fl["last_db"]) >= demo["targets"]["first_last_frame_psnr_db"]
    numbers["meets"] = {**demo["meets_targets"], "first_last_frame_psnr_db": meets_first_last}
    return numbers


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folder", type=Path, required=True, help="recipes.json and each candidate's NAME_demo.json and NAME_fl1.json"
    )
    parser.add_argument("--out", type=Path, help="the table (default: FOLDER/table.json)")
    parser.add_argument(
        "--shipped-demo", type=Path, default=RESULTS / "demo_eval.json", help="the shipped model's demo_eval result"
    )
    parser.add_argument(
        "--shipped-first-last",
        type=Path,
        default=RESULTS / "first_last_eval_keyframe.json",
        help="the shipped model's first_last_eval result with --keyframe-settings",
    )
    args = parser.parse_args(argv)
    args.out = args.out or args.folder / "table.json"
    return args


def candidate_rows(folder: Path, recipes: dict) -> dict:
    rows = {}
    for name, recipe in recipes["candidates"].items():
        demo = load(folder / f"{name}_demo.json")
        rows[name] = {"recipe": recipe, "evaluated": demo["date"], **row(demo, load(folder / f"{name}_fl1.json"))}
    return rows


def print_table(rows: dict) -> None:
    print(f"{'model':8} {'motion':>7} {'color':>6} {'i2v dB':>7} {'f+l demo':>9} {'f+l 16':>9} {'VAE clip':>9}")
    for name, r in rows.items():
        print(
            f"{name:8} {r['text_to_video_motion']:7.1%} {r['text_to_video_color']:6.1%} "
            f"{r['i2v_first_frame_psnr_db']:7.2f} {r['first_last_demo_eval_db'][1]:9.2f} "
            f"{r['first_last_16_clips_db'][1]:9.2f} {r['vae_clip_last_frame_db']:9.2f}"
        )


def main(argv=None) -> dict:
    args = parse_args(argv)
    recipes = load(args.folder / "recipes.json")
    shipped_demo = load(args.shipped_demo)
    shipped = row(shipped_demo, load(args.shipped_first_last))
    candidates = candidate_rows(args.folder, recipes)
    first = next(iter(recipes["candidates"]))
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": "evaluations on " + load(args.folder / f"{first}_demo.json")["device"],
        "targets": shipped_demo["targets"],
        "vae": recipes["vae"],
        "common": recipes["common"],
        "shipped": shipped,
        "candidates": candidates,
        "any_meets_all": any(all(c["meets"].values()) for c in candidates.values()),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table({"shipped": shipped, **candidates})
    return result


if __name__ == "__main__":
    main()
