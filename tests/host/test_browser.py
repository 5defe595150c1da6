"""ComfyUI's own page, in headless Chromium, loads each shipped UI workflow with every
node type known, and would queue exactly the shipped API workflow.

If this fails, a user dragging `workflows/*.json` into ComfyUI sees red "missing node"
boxes or a graph that runs something else than the API workflow we test.
"""

from __future__ import annotations

import os

import pytest

from .browser import chromium, load_workflow, open_comfy_page, screenshot
from .comfy_env import REPO_ROOT
from .conftest import WORKFLOW_NAMES, api_workflow, ui_workflow, without_meta

pytestmark = [pytest.mark.comfy_server, pytest.mark.browser]

ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"  # git-ignored; CI keeps it
README_SCREENSHOT = REPO_ROOT / "docs" / "comfyui-graph.png"
README_WORKFLOW = "i2v"
# The README's picture is tracked: it is written where missing, or renewed on request
# (LTXV_UPDATE_SCREENSHOT=1), so a test run does not leave the work tree changed.
UPDATE_README_SCREENSHOT = os.environ.get("LTXV_UPDATE_SCREENSHOT") == "1"


@pytest.fixture(scope="module")
def page(comfy_server):
    with chromium() as driver:
        open_comfy_page(driver, comfy_server.url)
        yield driver


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_page_loads_the_ui_workflow_with_no_missing_node_type(page, name):
    result = load_workflow(page, ui_workflow(name))
    screenshot(page, ARTIFACTS_DIR / f"comfyui-{name}.png")
    if name == README_WORKFLOW and (UPDATE_README_SCREENSHOT or not README_SCREENSHOT.exists()):
        screenshot(page, README_SCREENSHOT)
    assert result["missing"] == [] and not result["dialog"]
    assert without_meta(result["output"]) == without_meta(api_workflow(name)), (
        "the UI workflow queues the same graph as workflows/api/"
    )
