"""Regenerate the UI-format workflows, ComfyUI templates (`example_workflows/<title>.json`),
from the API-format ones (`workflows/api/*.json`) with ComfyUI's own page, so they are
exactly what the page would save, laid out as below:
`python -m tests.host.make_ui_workflows [NAME ...]` from the repository root. Their
pictures are made by `scripts/make_template_thumbnails.py` from the shipped demo model's
videos; the multi-scale and LoRA templates, whose models the pack does not ship, get a card naming
those models instead (`card`), written here.

The browser test checks that each UI workflow queues its API workflow unchanged, that no
two nodes overlap once the page shows the images, and that each graph fits a window.
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .browser import chromium, open_comfy_page, ui_workflow_from_api
from .comfy_env import REPO_ROOT, ComfyServer, ensure_comfyui
from .conftest import (
    ALL_TEMPLATE_TITLES,
    API_WORKFLOWS_DIR,
    CARD_TEMPLATE_TITLES,
    TEMPLATES_DIR,
    lora_models,
    multiscale_models,
)

# Node ids of the API workflows in columns, left to right, each column top to bottom:
# models and inputs, prompts, latents and keyframes, sampler, decode and save. A long
# graph is cut into bands, one under the other, each a titled group, so it fits a window.
LAYOUTS = {
    "t2v": [{"title": None, "columns": [[1, 2, 5], [3, 4], [6], [7, 8]]}],
    "i2v": [{"title": None, "columns": [[1, 2, 9], [3, 4], [5, 10, 11], [6], [7, 8]]}],
    "first_last": [{"title": None, "columns": [[1, 2, 5], [3, 4], [9, 12], [10, 11], [6], [7, 8]]}],
    "extend": [
        {"title": "First clip", "columns": [[1, 2, 5], [3, 4], [6], [7], [9]]},
        {"title": "Next clip, guided by the first clip's last 9 frames, joined to it",
         "columns": [[10], [11], [12], [13], [14, 15, 8]]},
    ],
    "long_video": [{"title": None, "columns": [[1, 2, 3], [4], [5, 6]]}],
    "multiscale_t2v": [
        {"title": "First pass, at 2/3 of the final size", "columns": [[1, 2], [3, 4], [5, 6], [7]]},
        {"title": "Second pass on the latent upsampled x2; decode, final size", "columns": [[8, 9], [10, 11], [12, 13, 14]]},
    ],
    "multiscale_i2v": [
        {"title": "First pass, at 2/3 of the final size, from the first frame",
         "columns": [[1, 2], [3, 4], [15], [5, 16, 6], [7]]},
        {"title": "Second pass on the latent upsampled x2, the first frame again; decode, final size",
         "columns": [[8, 9, 17], [10, 11], [12, 13, 14]]},
    ],
    "lora_t2v": [{"title": None, "columns": [[1, 2], [9, 3, 4], [5, 6], [7, 8]]}],
    "ic_lora": [{"title": None, "columns": [[1, 2, 10], [9, 3, 4], [11, 5], [12, 6], [7, 8]]}],
}  # fmt: skip
GAP = 40  # pixels between nodes: room for the links
# The saved view shows the whole graph in the browser window of a 1920 x 1080 screen, right
# of the page's side bar and below its top bar.
VIEW = {"width": 1920, "height": 950, "left": 90, "top": 100, "margin": 30}


# The cards of the templates whose models the pack does not ship: 256 x 256, as the demo model's frames.
CARD_SIZE = 256
CARD_BACKGROUND, CARD_TITLE, CARD_TEXT = (16, 22, 40), (240, 240, 240), (150, 170, 200)
JPEG_QUALITY = 90


def card(name: str) -> Path:
    """The picture of a template whose models the pack does not ship: its title and the
    model files its loaders name, on a plain background."""
    prompt = json.loads((API_WORKFLOWS_DIR / f"{name}.json").read_text())
    models = [
        value
        for node in prompt.values()
        for key, value in node["inputs"].items()
        if key in ("ckpt_name", "text_encoder_name", "upsampler_name", "lora_name")
    ]
    image = Image.new("RGB", (CARD_SIZE, CARD_SIZE), CARD_BACKGROUND)
    draw = ImageDraw.Draw(image)
    title, text = ImageFont.load_default(size=22), ImageFont.load_default(size=13)
    y = 24
    for line in textwrap.wrap(ALL_TEMPLATE_TITLES[name].removeprefix("LTX-Video "), 18):
        draw.text((16, y), line, font=title, fill=CARD_TITLE)
        y += 28
    y += 16
    draw.text((16, y), "Models to download:", font=text, fill=CARD_TITLE)
    for model in models:
        y += 20
        draw.text((16, y), model, font=text, fill=CARD_TEXT)
    path = TEMPLATES_DIR / f"{ALL_TEMPLATE_TITLES[name]}.jpg"
    image.save(path, quality=JPEG_QUALITY)
    return path


def main(names: list[str]) -> None:
    ensure_comfyui()
    TEMPLATES_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        # the pack's shipped models, and tiny ones under the multi-scale workflows' names
        # (their dropdowns then list them); the pack copies the images the workflows load
        # into this server's input folder
        server = ComfyServer(Path(base))
        multiscale_models(server)
        lora_models(server)
        server.start()
        try:
            for name in names:
                title = ALL_TEMPLATE_TITLES[name]
                api_workflow = json.loads((API_WORKFLOWS_DIR / f"{name}.json").read_text())
                # a fresh browser each: a reloaded page reopens the last workflow, at times
                # after the new one was loaded
                with chromium() as driver:
                    open_comfy_page(driver, server.url)
                    target = TEMPLATES_DIR / f"{title}.json"
                    graph = ui_workflow_from_api(driver, api_workflow, target.name, LAYOUTS[name], GAP, VIEW)
                    target.write_text(json.dumps(graph, indent=2) + "\n")
                    print(f"wrote {target.relative_to(REPO_ROOT)}")
                if name in CARD_TEMPLATE_TITLES:
                    print(f"wrote {card(name).relative_to(REPO_ROOT)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:] or list(ALL_TEMPLATE_TITLES))
