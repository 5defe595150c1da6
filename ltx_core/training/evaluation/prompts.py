"""The prompts `demo_eval` reads beside its generated sets, and what each asks for: the
exact prompts of the README's commands and of the shipped workflows that run the tiny
model (a long-video sampler's segment prompts included), and a few hand-written ones in
new words and forms.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import captions, data

REPO = Path(__file__).resolve().parents[3]
TINY_CHECKPOINT_NAME = "ltxv-tiny.safetensors"  # workflows naming it run the tiny model
ASKED = ("color", "background", "shape", "motion", "speed")
EXAMPLES = (
    "green box drifting right, black backdrop",
    "a yellow ball rising slowly against navy blue",
    "A pink triangle bounces on a white background.",
    "A black square moves down quickly over a light grey backdrop.",
)


def asked_of(spec: data.ClipSpec, variant: int = 0, heldout_form: bool = False) -> tuple[str, dict]:
    """(the clip's caption, what it asks: color, background, shape, motion, speed or None)."""
    text, labels = captions.labeled_caption(spec, variant, heldout_form)
    asked = {k: labels[k] for k in ASKED}
    asked["speed"] = None if asked["speed"] == "unsaid" else asked["speed"]
    return text, asked


def node_prompts(node: dict) -> list[str]:
    """A positive prompt node's text, or a long-video sampler's segment prompts (lines
    "FRAME: prompt" after the first, whose frame is 0)."""
    inputs = node.get("inputs", {})
    if node.get("_meta", {}).get("title", "").startswith("Positive") and inputs.get("text"):
        return [inputs["text"]]
    if isinstance(inputs.get("prompts"), str):
        return [re.sub(r"^\s*\d+\s*:\s*", "", line).strip() for line in inputs["prompts"].splitlines() if line.strip()]
    return []


def workflow_prompts(folder: Path) -> list[tuple[str, str]]:
    """(prompt, file) of the positive prompts of the API workflows that load the tiny model."""
    found = []
    for path in sorted(folder.glob("*.json")):
        nodes = list(json.loads(path.read_text()).values())
        if any(n.get("inputs", {}).get("ckpt_name") == TINY_CHECKPOINT_NAME for n in nodes):
            found += [(prompt, f"workflows/api/{path.name}") for n in nodes for prompt in node_prompts(n)]
    return found


def shipped_prompts(repo: Path = REPO) -> list[tuple[str, str]]:
    """(prompt, where) of each distinct prompt of the README's commands and the tiny-model workflows."""
    readme = (repo / "README.md").read_text() if (repo / "README.md").is_file() else ""
    found = [(p, "README.md") for p in re.findall(r'--prompt "([^"]+)"', readme) if p != "..."]
    found += workflow_prompts(repo / "workflows" / "api")
    unique: dict[str, str] = {}
    for prompt, where in found:
        unique[prompt] = f"{unique[prompt]}, {where}" if prompt in unique else where
    return list(unique.items())
