"""Regenerate the UI-format workflows (`workflows/*.json`) from the API-format ones
(`workflows/api/*.json`) with ComfyUI's own page, so they are exactly what the page
would save: `python -m tests.host.make_ui_workflows` from the repository root.

The browser test checks that each UI workflow queues its API workflow unchanged.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .browser import chromium, open_comfy_page, ui_workflow_from_api
from .comfy_env import REPO_ROOT, ComfyServer, ensure_comfyui

WORKFLOWS_DIR = REPO_ROOT / "workflows"


def main() -> None:
    ensure_comfyui()
    with tempfile.TemporaryDirectory() as base:
        server = ComfyServer(Path(base)).start()
        try:
            with chromium() as driver:
                open_comfy_page(driver, server.url)
                for api_path in sorted((WORKFLOWS_DIR / "api").glob("*.json")):
                    graph = ui_workflow_from_api(driver, json.loads(api_path.read_text()))
                    target = WORKFLOWS_DIR / api_path.name
                    target.write_text(json.dumps(graph, indent=2) + "\n")
                    print(f"wrote {target.relative_to(REPO_ROOT)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
