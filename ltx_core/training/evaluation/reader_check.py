"""How often the evaluation's reader (`training.analysis`) agrees with a person's eye.

`reader_labels.json` holds held-out combination clips of the shipped demo model, each named
by its prompt and seed (demo_eval's, sampled as the CLI samples it) and labeled by eye: the
shape's color, the shape and the motion the frames show. This generates each clip again,
reads it with the current analysis and counts, per attribute, the clips where the reading
agrees with the eye (colors by family; a label left open is not counted), and beside it how
often the clip shows what its prompt asked, by eye: the first says how far demo_eval's
figures can be trusted, the second what they should read. Set A is the one the reader was
tuned on, set B was labeled before any reader saw it.

    python -m ltx_core.training.evaluation.reader_check [--out results/reader_check.json]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
from pathlib import Path

from ...pipeline import generate
from .. import analysis
from ..demo_model import DEMO_CHECKPOINT
from . import demo_eval

LABELS = Path(__file__).parent / "reader_labels.json"
RESULTS = Path(__file__).parent / "results" / "reader_check.json"
ATTRIBUTES = ("color", "shape", "motion")


def same(attribute: str, a: str | None, b: str | None) -> bool:
    if attribute == "color":
        return a is not None and b is not None and analysis.color_family(a) == analysis.color_family(b)
    return a == b


def check_checkpoint(labels: dict, checkpoint: Path) -> None:
    """The labels describe one model's clips: refuse another model's before generating."""
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    if digest != labels["checkpoint_sha256"]:
        raise SystemExit(
            f"{checkpoint} is not the model these labels were made on (sha256 {labels['checkpoint_sha256'][:12]}..., "
            f"this file {digest[:12]}...): its clips differ, so label the new model's clips first."
        )


def agreement(clips: list[dict], key: str) -> dict[str, str]:
    """'agreeing/labeled' per attribute, of `key` ('read' or 'asked') against the eye."""
    counts = {}
    for attribute in ATTRIBUTES:
        labeled = [c for c in clips if c["eye"][attribute] is not None]
        agree = sum(same(attribute, c[key][attribute], c["eye"][attribute]) for c in labeled)
        counts[attribute] = f"{agree}/{len(labeled)}"
    return counts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    labels = json.loads(args.labels.read_text())
    check_checkpoint(labels, DEMO_CHECKPOINT)
    models = demo_eval.load_models()
    clips = []
    for clip in labels["clips"]:
        reading = analysis.read_clip(generate(models, demo_eval.prompt_request(clip["prompt"], clip["seed"])))
        clips.append({**clip, "read": {a: getattr(reading, a) for a in ATTRIBUTES}})
        print(f"{clip['set']} {clip['prompt']} (seed {clip['seed']}): eye {clip['eye']}, read {clips[-1]['read']}")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": demo_eval.device_name("cpu"), "checkpoint": labels["checkpoint"]}  # fmt: skip
    for name in labels["sets"]:
        rows = [c for c in clips if c["set"] == name]
        result[name] = {"clips": len(rows), "reader_agrees_with_eye": agreement(rows, "read"),
                        "reader_before_agreed_with_eye": agreement(rows, "read_before"),
                        "clip_shows_what_was_asked": agreement(rows, "asked")}  # fmt: skip
        print(name, labels["sets"][name], json.dumps(result[name]))
    result["clips"] = clips
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
