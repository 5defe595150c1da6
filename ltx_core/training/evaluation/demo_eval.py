"""Evaluation of the tiny demo model against its targets, by simple image analysis.

Each prompt is generated through `ltx_core.pipeline.generate` and the frames are read with
`ltx_core.training.analysis` (the background fitted and named, the shape segmented by its
distance from it, its color, fill and track): are the shape's color, the background's
color, the shape and the motion the ones asked, and were the two colors swapped (the
shape drawn in the background's asked color, or the background in the shape's)? Four sets:

- prompts: the exact prompts of the README and of the shipped workflows that run the tiny
  model (`prompts.shipped_prompts`), `--prompt-seeds` seeds each (what they ask read by
  `captions.read_prompt`);
- combos: held-out (color, background, shape, motion) combinations (`data.heldout_specs`)
  in the training captions' forms: composition of known words;
- paraphrases: trained combinations in sentence forms never trained on
  (`captions.HELDOUT_FORMS`): wording the text encoder never saw;
- examples: a few hand-written paraphrases and new words (`prompts.EXAMPLES`), `--example-seeds` seeds each.

Image-to-video: held-out clips' own first frames given, their PSNR in the output and the
motion after them. VAE: reconstruction PSNR of held-out clips. First + last frame as
`first_last_eval --keyframe-settings` reads it. Prints a table and writes JSON (date,
device, counts, each attribute's rate and the swap rate per set, targets and verdicts) to
results/demo_eval.json beside this file and benchmarks/results/demo_eval.json, and the
frames of the first held-out clips to docs/demo_strip.png.

    python -m ltx_core.training.evaluation.demo_eval [--checkpoint F] [--text-encoder DIR] [--device cuda]
        [--prompt-seeds 10] [--count 300] [--paraphrase-count 200] [--i2v-count 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from ... import cli
from ...pipeline import Models, Request, generate
from .. import analysis, captions, data
from ..demo_model import DEMO_CHECKPOINT, DEMO_SIZE, DEMO_TEXT_ENCODER
from . import first_last_eval
from .first_last_eval import ground_truth, psnr
from .prompts import ASKED, EXAMPLES, REPO, asked_of, shipped_prompts

RESULTS = Path(__file__).parent / "results" / "demo_eval.json"
BENCHMARK_RESULTS = REPO / "benchmarks" / "results" / "demo_eval.json"
STRIP = REPO / "docs" / "demo_strip.png"  # the README shows it
TARGETS = {
    "prompts_all_right_min": 0.9,  # each README / workflow prompt: every attribute right on 9 seeds of 10
    "combos_color": 0.95,
    "combos_background": 0.95,
    "combos_motion": 0.95,
    "combos_swap_max": 0.02,
    "paraphrases_all": 0.85,
    "i2v_first_frame_psnr_db": 30.0,
    "first_last_frame_psnr_db": first_last_eval.TARGET_DB,
}
STEPS, GUIDANCE = 20, 3.0  # the CLI's defaults for the shipped model; main sets STEPS from --steps
# Lightricks' stochastic steps, as the CLI samples the shipped model (cli_arguments.SHIPPED_SAMPLING);
# main sets it from --stochastic-sampling / --no-stochastic-sampling
STOCHASTIC = True
FRAMES = DEMO_SIZE["num_frames"]  # main sets it from --frames
ATTRIBUTES = (*ASKED, "all")  # all: color, background, shape and motion right at once
SWAPS = ("swap_shape_as_background", "swap_background_as_shape", "swap")
SEEN_SEED = 99  # a training-stream seed of its own: trained combinations, fresh clips
PARAPHRASE_SEED = 77  # likewise, for the held-out sentence forms


# ---------------------------------------------------------------- generating and reading


def prompt_request(prompt: str, seed: int, first_frame: torch.Tensor | None = None, guidance=GUIDANCE) -> Request:
    """A seed's request as the CLI's main command makes it: its noise drawn as the CLI draws
    it by default (Lightricks' order), so a README prompt at seed N is the video a user gets."""
    size = {key: DEMO_SIZE[key] for key in ("width", "height", "frame_rate")}
    return Request(noise_draws="lightricks", prompt=prompt, **size, num_frames=FRAMES, steps=STEPS, seed=seed,
                   guidance_scale=guidance, stochastic_sampling=STOCHASTIC, first_frame=first_frame)  # fmt: skip


def request(spec: data.ClipSpec, seed: int, first_frame: torch.Tensor | None = None, guidance=GUIDANCE) -> Request:
    """The request of a clip's training-form caption."""
    return prompt_request(captions.caption(spec), seed, first_frame, guidance)


def single_shape_specs(seed: int, count: int) -> list[data.ClipSpec]:
    """The first `count` one-shape clips of the training stream `seed`: trained
    combinations, fresh clips (a stream of its own, never trained on)."""
    return [s for s in data.training_specs(seed, 0, 4 * count) if s.second is None][:count]


def swaps(asked: dict, reading: analysis.ClipReading) -> dict[str, bool]:
    """The shape read in the background's asked color family, or the background in the
    shape's (each named among all colors); never where the two families are the same."""
    shape_family, back_family = analysis.color_family(asked["color"]), analysis.color_family(asked["background"])
    apart = shape_family != back_family
    shape = apart and reading.color_any is not None and analysis.color_family(reading.color_any) == back_family
    back = (
        apart and reading.background_any is not None and analysis.color_family(reading.background_any) == shape_family
    )
    return {"swap_shape_as_background": shape, "swap_background_as_shape": back, "swap": shape or back}


def score(asked: dict, reading: analysis.ClipReading) -> dict[str, bool | None]:
    """Each asked attribute read right; speed None where the prompt left it open or asked still."""
    right = {k: getattr(reading, k) == asked[k] for k in ("color", "background", "shape", "motion")}
    right["all"] = all(right.values())
    open_speed = asked["speed"] is None or asked["motion"] == "still"
    right["speed"] = None if open_speed else reading.speed == asked["speed"]
    return right


def accuracy(rows: list[dict], key: str) -> float | None:
    """Share of rows right on `key`, over the rows where it was asked (None if none)."""
    values = [r["correct"][key] for r in rows if r["correct"][key] is not None]
    return sum(values) / len(values) if values else None


def swap_rate(rows: list[dict], key: str = "swap") -> float | None:
    return sum(r["swaps"][key] for r in rows) / len(rows) if rows else None


def empty(row: dict) -> bool:
    """The clip drew no shape at all (the background alone): the model's commonest miss on
    the shipped prompts, decided by the noise draw more than by the prompt."""
    return row["read"]["shape"] is None


def empty_rate(rows: list[dict]) -> float | None:
    return sum(map(empty, rows)) / len(rows) if rows else None


def motion_breakdown(rows: list[dict]) -> dict[str, str]:
    """'right/asked' per asked motion: which motions hold the accuracy down."""
    asked = sorted({r["asked"]["motion"] for r in rows})
    return {
        m: f"{sum(r['correct']['motion'] for r in rows if r['asked']['motion'] == m)}/"
        f"{sum(r['asked']['motion'] == m for r in rows)}"
        for m in asked
    }


def read_prompt_row(models: Models, prompt: str, asked: dict, seed: int, label: str, keep: list | None = None) -> dict:
    """A clip longer than the trained one is right where its first and last windows both are."""
    frames = generate(models, prompt_request(prompt, seed)).cpu()
    if keep is not None:
        keep.append(frames)
    readings = analysis.read_windows(frames, DEMO_SIZE["num_frames"])
    reading, scores, swapped = readings[0], [score(asked, r) for r in readings], [swaps(asked, r) for r in readings]
    row = {"prompt": prompt, "seed": seed, "asked": asked, "read": reading.__dict__}
    correct = {k: None if scores[0][k] is None else all(s[k] for s in scores) for k in scores[0]}
    row.update(correct=correct, swaps={k: any(s[k] for s in swapped) for k in swapped[0]})
    print(
        f"{label} {'ok ' if row['correct']['all'] else 'BAD'} {prompt} (seed {seed}) -> "
        f"{reading.color} {reading.shape} {reading.motion} {reading.speed} on {reading.background}"
        + (" SWAP" if row["swaps"]["swap"] else "")
    )
    return row


def eval_text_to_video(
    models: Models, specs: list[data.ClipSpec], keep: int = 0, heldout_form: bool = False, label: str = "t2v"
) -> tuple[list[dict], list[torch.Tensor]]:
    """Rows of readings of each clip's caption (seed = its index), and the frames of the
    first `keep` clips (for the demo strip)."""
    rows, kept = [], []
    for i, spec in enumerate(specs):
        prompt, asked = asked_of(spec, heldout_form=heldout_form)
        rows.append(read_prompt_row(models, prompt, asked, i, f"{label} {i:3d}", kept if i < keep else None))
    return rows, kept


def eval_fixed_prompts(models: Models, prompts: list[tuple[str, str]], seeds: int, label: str) -> list[dict]:
    """Each prompt at seeds 0 .. seeds-1; rows carry where the prompt came from."""
    rows = []
    for prompt, where in prompts:
        asked = captions.read_prompt(prompt)
        if None in (asked["color"], asked["background"], asked["shape"], asked["motion"]):
            print(f"{label}: skipped {prompt!r} ({where}): not in the tiny model's words ({asked})")
            continue
        for seed in range(seeds):
            rows.append({**read_prompt_row(models, prompt, asked, seed, label), "where": where})
    return rows


def eval_image_to_video(models: Models, specs: list[data.ClipSpec]) -> list[dict]:
    rows = []
    for i, spec in enumerate(specs):
        truth = ground_truth(spec)
        prompt, asked = asked_of(spec)
        frames = generate(models, prompt_request(prompt, seed=1000 + i, first_frame=truth[0]))
        reading = analysis.read_clip(frames)
        rows.append(
            {
                "prompt": prompt,
                "asked": asked,
                "first_frame_psnr_db": psnr(frames[0], truth[0]),
                "read": reading.__dict__,
                "correct": score(asked, reading),
            }
        )
        print(f"i2v {i:3d} psnr {rows[-1]['first_frame_psnr_db']:.1f} {prompt} -> {reading.motion}")
    return rows


@torch.no_grad()
def eval_vae(vae, specs: list[data.ClipSpec]) -> dict[str, float]:
    """Mean reconstruction PSNR over held-out clips, plain decode and denoising decode."""
    device = next(vae.parameters()).device
    results = {}
    for name, (t, s) in {"plain_decode": (0.0, 0.0), "denoising_decode": (0.05, 0.025)}.items():
        values = []
        for i, spec in enumerate(specs):
            truth = ground_truth(spec)
            video = (truth.permute(3, 0, 1, 2)[None] * 2 - 1).to(device)
            recon = vae.decode(
                vae.encode(video), timestep=t, decode_noise_scale=s, generator=torch.Generator(device).manual_seed(i)
            )
            values.append(psnr(((recon[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).cpu(), truth))
        results[name] = sum(values) / len(values)
    return results


def eval_first_last(models: Models, specs: list[data.ClipSpec]) -> list[dict]:
    settings = first_last_eval.KEYFRAME_SETTINGS
    return [first_last_eval.evaluate(models, spec, seed=i, steps=STEPS, **settings) for i, spec in enumerate(specs)]


def load_models(
    checkpoint: Path = DEMO_CHECKPOINT, device: str = "cpu", text_encoder: Path = DEMO_TEXT_ENCODER
) -> Models:
    """The models as the CLI loads them (the checkpoint's own schedule included), in fp32."""
    return cli.load_models(checkpoint, text_encoder, None, torch.float32, torch.device(device))[0]


# ---------------------------------------------------------------- the results


def set_summary(rows: list[dict]) -> dict:
    """Count, each attribute's rate, the swap rates and the empty clips' rate of one set's rows."""
    return {
        "count": len(rows),
        **{k: accuracy(rows, k) for k in ATTRIBUTES},
        **{k: swap_rate(rows, k) for k in SWAPS},
        "empty": empty_rate(rows),
    }


def per_prompt(rows: list[dict]) -> dict[str, dict]:
    """Per prompt: where it is shipped, seeds with every attribute right, seeds read, and
    the seeds whose clip drew no shape."""
    result: dict[str, dict] = {}
    for r in rows:
        entry = result.setdefault(r["prompt"], {"where": r["where"], "all_right": 0, "seeds": 0, "empty_seeds": []})
        entry["all_right"] += int(r["correct"]["all"])
        entry["seeds"] += 1
        if empty(r):
            entry["empty_seeds"].append(r["seed"])
    return result


def verdicts(sets: dict[str, dict], prompts: dict[str, dict], i2v_psnr: float | None, first_last: dict) -> dict:
    """Each target met (None where its set was not read)."""

    def at_least(value, target):
        return None if value is None else value >= target

    worst_prompt = min((p["all_right"] / p["seeds"] for p in prompts.values()), default=None)
    combos, paraphrases = sets.get("combos", {}), sets.get("paraphrases", {})
    swap = combos.get("swap")
    return {
        "prompts_all_right_min": at_least(worst_prompt, TARGETS["prompts_all_right_min"]),
        **{f"combos_{k}": at_least(combos.get(k), TARGETS[f"combos_{k}"]) for k in ("color", "background", "motion")},
        "combos_swap_max": None if swap is None else swap <= TARGETS["combos_swap_max"],
        "paraphrases_all": at_least(paraphrases.get("all"), TARGETS["paraphrases_all"]),
        "i2v_first_frame_psnr_db": at_least(i2v_psnr, TARGETS["i2v_first_frame_psnr_db"]),
        "first_last_frame_psnr_db": first_last_eval.meets_target(first_last) if first_last else None,
    }


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def print_table(result: dict) -> None:
    """One line per set (rates in %), then each target and its verdict."""
    columns = (*ATTRIBUTES, "swap", "empty")
    print(f"{'set':12s} {'n':>5s} " + " ".join(f"{c:>10s}" for c in columns))
    for name, s in result["sets"].items():
        cells = [("-" if s[c] is None else f"{100 * s[c]:.1f}") for c in columns]
        print(f"{name:12s} {s['count']:5d} " + " ".join(f"{c:>10s}" for c in cells))
    for prompt, p in result["prompts"].items():
        print(f"  {p['all_right']}/{p['seeds']} all right, empty at seeds {p['empty_seeds']}: {prompt} ({p['where']})")
    for key, met in result["meets_targets"].items():
        print(f"  target {key} {TARGETS[key]}: {'-' if met is None else 'met' if met else 'NOT met'}")


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
            image = (frames[index].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            strip.paste(Image.fromarray(image), (col * size, top + text_height))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-seeds", type=int, default=10, help="seeds of each README / workflow prompt")
    parser.add_argument("--count", type=int, default=300, help="held-out combinations (one seed each)")
    parser.add_argument("--paraphrase-count", type=int, default=200, help="prompts in held-out sentence forms")
    parser.add_argument("--example-seeds", type=int, default=10, help="seeds of each hand-written example")
    parser.add_argument("--i2v-count", type=int, default=16)
    parser.add_argument("--vae-count", type=int, default=16)
    parser.add_argument(
        "--first-last-count",
        type=int,
        default=16,
        help="held-out clips for first + last frame conditioning, read with first_last_eval's KEYFRAME_SETTINGS",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="a candidate single file (default: the shipped model)"
    )
    parser.add_argument(
        "--text-encoder", type=Path, default=DEMO_TEXT_ENCODER, help="its T5 folder (default: the shipped one)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=STEPS, help="sampling steps (default: the CLI's)")
    parser.add_argument("--frames", type=int, default=DEMO_SIZE["num_frames"], help="text-to-video clip length (8k+1)")
    parser.add_argument(
        "--stochastic-sampling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Lightricks' stochastic steps, as the CLI samples the shipped model (default); "
        "--no-stochastic-sampling: plain Euler steps",
    )
    parser.add_argument(
        "--out",
        type=Path,
        action="append",
        help="results file, repeatable (default: results/demo_eval.json here and benchmarks/results/demo_eval.json)",
    )
    parser.add_argument("--strip", type=Path, default=STRIP, help="PNG of the first held-out clips' frames")
    parser.add_argument("--strip-count", type=int, default=4)
    args = parser.parse_args(argv)
    args.out = args.out or [RESULTS, BENCHMARK_RESULTS]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    return args


def read_sets(models: Models, args: argparse.Namespace) -> tuple[dict[str, list[dict]], list[torch.Tensor]]:
    """The rows of the four text-to-video sets, and the frames for the strip."""
    heldout = data.heldout_specs(args.count)
    combos, kept = eval_text_to_video(models, heldout, keep=args.strip_count, label="combo")
    paraphrase_specs = single_shape_specs(PARAPHRASE_SEED, args.paraphrase_count)
    paraphrases, _ = eval_text_to_video(models, paraphrase_specs, heldout_form=True, label="paraphrase")
    rows = {
        "prompts": eval_fixed_prompts(models, shipped_prompts(), args.prompt_seeds, "prompt"),
        "combos": combos,
        "paraphrases": paraphrases,
        "examples": eval_fixed_prompts(models, [(p, "example") for p in EXAMPLES], args.example_seeds, "example"),
    }
    return rows, kept


def summary(args: argparse.Namespace, rows: dict, i2v: list[dict], vae: dict, first_last: list[dict]) -> dict:
    """The results file's fields from the readings' rows."""
    sets = {name: set_summary(r) for name, r in rows.items() if r}
    prompts = per_prompt(rows["prompts"])
    i2v_psnr = sum(r["first_frame_psnr_db"] for r in i2v) / len(i2v) if i2v else None
    first_last_means = first_last_eval.mean_db(first_last)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(args.device),
        "checkpoint": args.checkpoint.name,
        "text_encoder": args.text_encoder.name,
        "settings": {
            **DEMO_SIZE,
            "num_frames": FRAMES,
            "steps": STEPS,
            "guidance_scale": GUIDANCE,
            "stochastic_sampling": STOCHASTIC,
            "first_last": first_last_eval.KEYFRAME_SETTINGS,
        },
        "counts": {
            **{name: len(r) for name, r in rows.items()},
            "image_to_video": len(i2v),
            "vae": args.vae_count,
            "first_last": len(first_last),
        },
        "sets": sets,
        "prompts": prompts,
        # the held-out combinations under the names earlier results used
        "text_to_video_accuracy": {k: v for k, v in sets.get("combos", {}).items() if k != "count"},
        "motion_right_per_motion": {
            "text_to_video": motion_breakdown(rows["combos"]),  # the name earlier results used
            **{name: motion_breakdown(r) for name, r in rows.items()},
        },
        "image_to_video": {
            "first_frame_psnr_db": i2v_psnr,
            "motion_accuracy": accuracy(i2v, "motion"),
            "color_accuracy": accuracy(i2v, "color"),
            "background_accuracy": accuracy(i2v, "background"),
        },
        "vae_reconstruction_psnr_db": vae,
        "first_last_frame_psnr_db": first_last_means,
        "targets": TARGETS,
        "meets_targets": verdicts(sets, prompts, i2v_psnr, first_last_means),
    }


def main(argv=None) -> dict:
    global STOCHASTIC, FRAMES, STEPS
    args = parse_args(argv)
    STOCHASTIC, FRAMES, STEPS = args.stochastic_sampling, args.frames, args.steps
    torch.manual_seed(0)
    start = time.monotonic()
    models = load_models(args.checkpoint, args.device, args.text_encoder)
    rows, kept = read_sets(models, args)
    if kept:
        save_strip(kept, [r["prompt"] for r in rows["combos"]], args.strip)
    heldout = data.heldout_specs(max(args.i2v_count, args.vae_count, args.first_last_count))
    i2v = eval_image_to_video(models, heldout[: args.i2v_count])
    vae = eval_vae(models.vae, heldout[: args.vae_count]) if args.vae_count else {}
    first_last = eval_first_last(models, heldout[: args.first_last_count])
    result = {
        **summary(args, rows, i2v, vae, first_last),
        "seconds": round(time.monotonic() - start, 1),
        "rows": rows,
        "image_to_video_rows": i2v,
        "first_last_rows": first_last,
    }
    for out in args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    return result


if __name__ == "__main__":
    main()
