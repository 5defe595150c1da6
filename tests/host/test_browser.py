"""ComfyUI's own page, in headless Chromium, as a user meets the pack: its Templates dialog
lists each shipped workflow under a readable title with its picture; each template loads
with every node type known, would queue exactly the shipped API workflow, has no two
nodes overlapping once its images show, and fits a window; a size out of a widget's range
is one error, on that widget.

If this fails, a user opening a template sees red "missing node" boxes, nodes on top of
each other, a graph to scroll along, or a graph that runs something else than the API
workflow we test.
"""

from __future__ import annotations

import itertools
import os

import pytest

from .browser import chromium, load_workflow, open_comfy_page, queue_in_page, screenshot, template_cards
from .comfy_env import PACK_LINK_NAME, REPO_ROOT
from .conftest import ALL_TEMPLATE_TITLES, ALL_WORKFLOW_NAMES, api_workflow, ui_workflow, without_meta
from .make_ui_workflows import VIEW

pytestmark = [pytest.mark.comfy_server, pytest.mark.browser]

ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"  # git-ignored; CI keeps it
README_SCREENSHOT = REPO_ROOT / "docs" / "comfyui-graph.png"
README_WORKFLOW = "i2v"
# The README's picture is tracked: it is written where missing, or renewed on request
# (LTXV_UPDATE_SCREENSHOT=1), so a test run does not leave the work tree changed.
UPDATE_README_SCREENSHOT = os.environ.get("LTXV_UPDATE_SCREENSHOT") == "1"
# Every shipped graph fits a 1920 x 1080 window at this zoom or closer (text stays readable).
WINDOW = (1920, 1080)
MIN_ZOOM = 0.75
THUMBNAIL_WIDTH = 256  # the workflows' video width: the picture is one of its frames


@pytest.fixture(scope="module")
def page(comfy_server):
    with chromium() as driver:
        open_comfy_page(driver, comfy_server.url)
        yield driver


@pytest.fixture(scope="module")
def loaded(page):
    """Each template loaded into the page once: `load_workflow`'s answer by workflow name."""
    results = {}

    def load(name: str) -> dict:
        if name not in results:
            results[name] = load_workflow(page, ui_workflow(name))
            screenshot(page, ARTIFACTS_DIR / f"comfyui-{name}.png")
            if name == README_WORKFLOW and (UPDATE_README_SCREENSHOT or not README_SCREENSHOT.exists()):
                screenshot(page, README_SCREENSHOT)
        return results[name]

    return load


@pytest.mark.parametrize("name", ALL_WORKFLOW_NAMES)
def test_page_loads_the_ui_workflow_with_no_missing_node_type(loaded, name):
    result = loaded(name)
    assert result["missing"] == [] and not result["dialog"]
    assert without_meta(result["output"]) == without_meta(api_workflow(name)), (
        "the UI workflow queues the same graph as workflows/api/"
    )


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.parametrize("name", ALL_WORKFLOW_NAMES)
def test_no_two_nodes_overlap_once_the_images_show(loaded, name):
    result = loaded(name)
    assert result["imagesLoaded"], "every Load Image node shows its image"
    boxes = result["boxes"]
    pairs = itertools.combinations(sorted(boxes), 2)
    overlapping = [(a, b) for a, b in pairs if _overlap(boxes[a], boxes[b])]
    assert overlapping == [], {node: boxes[node] for pair in overlapping for node in pair}


@pytest.mark.parametrize("name", ALL_WORKFLOW_NAMES)
def test_the_graph_fits_a_window_and_opens_showing_all_of_it(loaded, name):
    bounds = loaded(name)["bounds"]
    zoom = min(WINDOW[0] / bounds["width"], WINDOW[1] / bounds["height"])
    size = f"{bounds['width']:.0f} x {bounds['height']:.0f}"
    assert zoom >= MIN_ZOOM, f"the graph's {size} fits a {WINDOW} window at zoom {zoom:.2f} only"
    # the view saved with the workflow, where the page opens it: canvas = (graph + offset) * scale
    ds = ui_workflow(name)["extra"]["ds"]
    left, top = ((bounds[side] + ds["offset"][i]) * ds["scale"] for i, side in enumerate(("left", "top")))
    right, bottom = left + bounds["width"] * ds["scale"], top + bounds["height"] * ds["scale"]
    shown = left >= 0 and right <= VIEW["width"] and top >= 0 and bottom <= VIEW["height"]
    assert shown, f"the saved view shows {left:.0f}..{right:.0f} x {top:.0f}..{bottom:.0f} of the page"


def test_the_templates_dialog_lists_each_workflow_by_title_with_its_picture(comfy_server):
    cards = {}
    for _ in range(2):  # the dialog renders its cards lazily: a card missed on a busy machine gets one more look
        with chromium() as driver:
            open_comfy_page(driver, comfy_server.url)
            cards = template_cards(driver, PACK_LINK_NAME)
        if sorted(cards) == sorted(ALL_TEMPLATE_TITLES.values()):
            break
    assert sorted(cards) == sorted(ALL_TEMPLATE_TITLES.values()), cards
    for title, image in cards.items():
        # the page fetches the picture and shows it from a blob: URL, or shows its default one
        assert image["src"].startswith("blob:") and image["width"] == THUMBNAIL_WIDTH, (title, image)


@pytest.mark.parametrize(
    "widget, value, message",
    [
        ("width", 16, "Value 16 smaller than min of 32"),
        ("frames", 2049, "Value 2049 bigger than max of 1025"),
    ],
)
def test_a_size_out_of_range_is_one_error_on_its_widget_in_the_page(comfy_server, widget, value, message):
    prompt = api_workflow("t2v")
    [latent_id] = [key for key, node in prompt.items() if node["class_type"] == "LTXVCoreEmptyLatentVideo"]
    with chromium() as driver:
        open_comfy_page(driver, comfy_server.url)
        errors = queue_in_page(driver, ui_workflow("t2v"), {latent_id: {widget: value}})
    assert list(errors) == [latent_id], errors
    [error] = errors[latent_id]["errors"]
    assert error["extra_info"]["input_name"] == widget and error["message"] == message, error
