"""Choose the shipped model's sampling defaults (guidance scale, STG) on validation prompts.

The held-out combinations of `demo_eval` are the test set: a setting chosen on them would
flatter the reported accuracy. This sweep reads clips of *trained* (color, shape, motion)
combinations drawn from a stream of their own (`VALIDATION_SEED`, never used in training
nor by `demo_eval`), so the default picked here is picked without looking at the test
set. For each setting it prints and writes the color / shape / motion / speed accuracy.

    python -m ltx_core.training.evaluation.sampling_sweep [--count 64] [--setting 3.0 ...] [--out FILE]

A setting is `GUIDANCE[:STG_SCALE@BLOCK][sSHIFT][xSTEPS]` (STG in 'attention_values' mode;
SHIFT a fixed time shift of the sigmas in place of the model's own schedule, which a setting
without it samples with (the shipped file's, else paper 2.5.2's token-count shift); steps
default to the CLI's 20 for the shipped model), e.g. `3.0`, `3.0x30`, `3.0:1.0@3`, `3.0s4`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from ...pipeline import generate
from ...sampling.scheduler import flow_sigmas
from .. import analysis, data
from . import demo_eval

VALIDATION_SEED = 4242  # a training-stream seed of its own: trained combinations, fresh clips
RESULTS = Path(__file__).parent / "results" / "sampling_sweep.json"
DEFAULT_SETTINGS = ("3.0", "4.5", "6.0", "3.0:1.0@3")


def parse_setting(text: str) -> dict:
    text, _, steps = text.partition("x")
    text, _, shift = text.partition("s")
    guidance, _, stg = text.partition(":")
    setting = {
        "guidance_scale": float(guidance),
        "stg_scale": 0.0,
        "stg_blocks": (),
        "steps": int(steps) if steps else demo_eval.STEPS,
        "shift": float(shift) if shift else None,
    }
    if stg:
        scale, _, block = stg.partition("@")
        setting.update(stg_scale=float(scale), stg_blocks=(int(block),))
    return setting


def validation_specs(count: int) -> list[data.ClipSpec]:
    return demo_eval.single_shape_specs(VALIDATION_SEED, count)


def fixed_shift_sigmas(models, steps: int, shift: float) -> tuple[float, ...]:
    """The model's schedule of `steps` with a fixed time shift instead of the token-count one."""
    scheduler = replace(models.scheduler, use_dynamic_shifting=False, shift=shift)
    return tuple(flow_sigmas(steps, 1, scheduler).tolist())  # tokens: unused without dynamic shifting


def evaluate(models, specs: list[data.ClipSpec], setting: dict) -> dict:
    rows = []
    schedule = {"steps": setting["steps"]}
    if setting.get("shift") is not None:
        schedule = {"steps": None, "sigmas": fixed_shift_sigmas(models, setting["steps"], setting["shift"])}
    for i, spec in enumerate(specs):
        req = replace(
            demo_eval.request(spec, seed=i, guidance=setting["guidance_scale"]),
            stg_scale=setting["stg_scale"],
            stg_blocks=setting["stg_blocks"],
            **schedule,
        )
        reading = analysis.read_clip(generate(models, req))
        rows.append({"correct": demo_eval.score(demo_eval.asked_of(spec)[1], reading)})
    return {k: demo_eval.accuracy(rows, k) for k in demo_eval.ATTRIBUTES}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64, help="validation prompts per setting")
    parser.add_argument("--setting", action="append", help="GUIDANCE[:STG@BLOCK][sSHIFT][xSTEPS]")
    parser.add_argument("--checkpoint", type=Path, default=demo_eval.DEMO_CHECKPOINT)
    parser.add_argument("--text-encoder", type=Path, default=demo_eval.DEMO_TEXT_ENCODER, help="its T5 folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def sweep(models, specs: list[data.ClipSpec], settings: list[str]) -> list[dict]:
    """`evaluate` of each setting, printed as it is read."""
    results = []
    for text in settings:
        start, setting = time.monotonic(), parse_setting(text)
        acc = evaluate(models, specs, setting)
        results.append({"setting": text, **setting, "accuracy": acc, "seconds": round(time.monotonic() - start, 1)})
        print(
            f"{text:>12}: "
            + " ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in acc.items())
            + f"  ({results[-1]['seconds']} s)",
            flush=True,
        )
    return results


def best_on_validation(results: list[dict]) -> dict:
    """The most motion + color right; ties go to the lower guidance, then the fewer steps."""
    return max(
        results, key=lambda r: (r["accuracy"]["motion"] + r["accuracy"]["color"], -r["guidance_scale"], -r["steps"])
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    models = demo_eval.load_models(args.checkpoint, text_encoder=args.text_encoder)
    specs = validation_specs(args.count)
    results = sweep(models, specs, args.setting or DEFAULT_SETTINGS)
    best = best_on_validation(results)
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "checkpoint": args.checkpoint.name,
        "validation_seed": VALIDATION_SEED,
        "count": len(specs),
        "results": results,
        "best_on_validation": best["setting"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"best on validation (motion + color): {best['setting']}")
    return out


if __name__ == "__main__":
    main()
