"""Regenerate the UI-format workflows, ComfyUI templates (`example_workflows/<title>.json`),
from the API-format ones (`workflows/api/*.json`) with ComfyUI's own page, so they are
exactly what the page would save, laid out as below:
`python -m tests.host.make_ui_workflows` from the repository root. Their pictures are
made by `scripts/make_template_thumbnails.py`.

The browser test checks that each UI workflow queues its API workflow unchanged, that no
two nodes overlap once the page shows the images, and that each graph fits a window.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .browser import chromium, open_comfy_page, ui_workflow_from_api
from .comfy_env import REPO_ROOT, ComfyServer, ensure_comfyui
from .conftest import API_WORKFLOWS_DIR, TEMPLATE_TITLES, TEMPLATES_DIR

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
}  # fmt: skip
GAP = 40  # pixels between nodes: room for the links
# The saved view shows the whole graph in the browser window of a 1920 x 1080 screen, right
# of the page's side bar and below its top bar.
VIEW = {"width": 1920, "height": 950, "left": 90, "top": 100, "margin": 30}


def main() -> None:
    ensure_comfyui()
    TEMPLATES_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        # empty model folders: the workflows' models are the pack's shipped ones, and the
        # pack copies the images they load into this server's input folder
        server = ComfyServer(Path(base)).start()
        try:
            for name, title in TEMPLATE_TITLES.items():
                api_workflow = json.loads((API_WORKFLOWS_DIR / f"{name}.json").read_text())
                # a fresh browser each: a reloaded page reopens the last workflow, at times
                # after the new one was loaded
                with chromium() as driver:
                    open_comfy_page(driver, server.url)
                    target = TEMPLATES_DIR / f"{title}.json"
                    graph = ui_workflow_from_api(driver, api_workflow, target.name, LAYOUTS[name], GAP, VIEW)
                    target.write_text(json.dumps(graph, indent=2) + "\n")
                    print(f"wrote {target.relative_to(REPO_ROOT)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
