"""One table of the keyframe candidates (issue 7) beside the shipped model.

Each candidate checkpoint was read by the two evaluation scripts with `--checkpoint`:
`eval_demo.py` (issue 5's held-out text-to-video reading, image-to-video, and a first +
last run) -> NAME_demo.json, and `eval_first_last.py` (16 clips) without CFG ->
NAME_fl1.json, in one folder with `recipes.json` (how each was trained). Session 6's
candidates were read with `--guidance-scale 1` and the default decode, later ones with
`--keyframe-settings` (no CFG, plain decode); each row names its settings. This script
reads them, and the shipped model's committed results, and writes a table: per model, the
numbers both issues' targets are about and whether each target is met.

    python benchmarks/summarize_candidates.py [--folder benchmarks/results/keyframe_candidates]
        [--out benchmarks/results/keyframe_candidates.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# what eval_first_last ran with before it wrote these settings down: the pipeline's defaults
DEFAULT_DECODE = {"decode_timestep": 0.05, "decode_noise_scale": 0.025}


def first_last_settings(settings: dict) -> dict:
    return {"guidance_scale": settings["guidance_scale"],
            **{k: settings.get(k, v) for k, v in DEFAULT_DECODE.items()}}


def row(demo: dict, first_last_g1: dict) -> dict:
    """The numbers the targets name, from one model's eval_demo and eval_first_last (CFG 1) results."""
    fl = first_last_g1["means"]
    demo_settings = demo["settings"].get("first_last", {"guidance_scale": demo["settings"]["guidance_scale"]})
    numbers = {
        "text_to_video_color": demo["text_to_video_accuracy"]["color"],
        "text_to_video_motion": demo["text_to_video_accuracy"]["motion"],
        "i2v_first_frame_psnr_db": demo["image_to_video"]["first_frame_psnr_db"],
        "first_last_demo_eval_db": [demo["first_last_frame_psnr_db"]["first_db"],
                                    demo["first_last_frame_psnr_db"]["last_db"]],
        "first_last_demo_eval_clips": demo["counts"]["first_last"],
        "first_last_demo_eval_settings": first_last_settings(demo_settings),
        "first_last_16_clips_db": [fl["first_db"], fl["last_db"]],
        "first_last_16_clips_settings": first_last_settings(first_last_g1["settings"]),
        "vae_clip_last_frame_db": fl["vae_clip_last_db"],
        "motion_right_per_motion": demo["motion_right_per_motion"]["text_to_video"],
    }
    # eval_demo's own verdicts, but first + last from the 16 clips without CFG (the same as
    # eval_demo's own once it reads 16 clips with the keyframe settings)
    first_last = min(fl["first_db"], fl["last_db"]) >= demo["targets"]["first_last_frame_psnr_db"]
    numbers["meets"] = {**demo["meets_targets"], "first_last_frame_psnr_db": first_last}
    return numbers


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=RESULTS / "keyframe_candidates")
    parser.add_argument("--out", type=Path, default=RESULTS / "keyframe_candidates.json")
    parser.add_argument("--shipped-first-last", type=Path, default=RESULTS / "first_last_eval_keyframe.json",
                        help="the shipped model's eval_first_last result without CFG")
    args = parser.parse_args(argv)
    recipes = load(args.folder / "recipes.json")
    shipped = row(load(RESULTS / "demo_eval.json"), load(args.shipped_first_last))
    candidates = {}
    for name, recipe in recipes["candidates"].items():
        demo = load(args.folder / f"{name}_demo.json")
        candidates[name] = {"recipe": recipe, "evaluated": demo["date"], **row(demo, load(args.folder / f"{name}_fl1.json"))}
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": "evaluations on " + load(args.folder / f"{next(iter(candidates))}_demo.json")["device"]
                  + "; training on one H100",
        "targets": load(RESULTS / "demo_eval.json")["targets"],
        "vae": recipes["vae"],
        "common": recipes["common"],
        "shipped": shipped,
        "candidates": candidates,
        "any_meets_all": any(all(c["meets"].values()) for c in candidates.values()),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'model':8} {'motion':>7} {'color':>6} {'i2v dB':>7} {'f+l demo':>9} {'f+l 16':>9} {'VAE clip':>9}")
    for name, r in {"shipped": shipped, **candidates}.items():
        print(f"{name:8} {r['text_to_video_motion']:7.1%} {r['text_to_video_color']:6.1%} "
              f"{r['i2v_first_frame_psnr_db']:7.2f} {r['first_last_demo_eval_db'][1]:9.2f} "
              f"{r['first_last_16_clips_db'][1]:9.2f} {r['vae_clip_last_frame_db']:9.2f}")
    return result


if __name__ == "__main__":
    main()
