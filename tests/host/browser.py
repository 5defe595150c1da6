"""Headless Chromium (Debian's `chromium` and `chromium-driver`) on ComfyUI's page, through
selenium, with a fresh profile and loopback only."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1920,1080",
)
PAGE_TIMEOUT_S = 60


def chromium_paths() -> tuple[str, str]:
    """(browser, driver) executables, or a clear error naming the Debian packages."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise RuntimeError("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    return browser, driver


@contextmanager
def chromium():
    from selenium import webdriver

    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager look online
    browser, driver_path = chromium_paths()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_comfy_page(driver, url: str) -> None:
    """Load the page and wait until the app has registered the node types of /object_info."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        lambda d: d.execute_script(
            "return !!(window.app && window.app.graph && window.LiteGraph"
            " && LiteGraph.registered_node_types['LTXVCoreSampler'])"
        )
    )


# Shared by the scripts below: the page's own node boxes (`getBounding`: position and
# size with the title bar), read once every Load Image node shows its image, since the
# page grows such a node to its preview as the image arrives.
_HELPERS = """
const IMAGE_TIMEOUT_MS = 20000;
const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
async function imagesShown() {
    const deadline = Date.now() + IMAGE_TIMEOUT_MS;
    const imageNodes = () => app.graph._nodes.filter((node) => node.type === "LoadImage");
    const loaded = (img) => img.complete && img.naturalWidth > 0;
    const shown = (node) => node.imgs?.length && node.imgs.every(loaded);
    while (!imageNodes().every(shown)) {
        if (Date.now() > deadline) return false;
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (let i = 0; i < 3; i++) {  // the page sizes nodes while it draws
        app.canvas.setDirty(true, true);
        app.canvas.draw(true, true);
        await nextFrame();
    }
    return true;
}
function box(node) {  // getBounding alone answers where the node was last drawn
    node.updateArea?.();
    return Array.from(node.getBounding());
}
function nodeBoxes() {
    return Object.fromEntries(app.graph._nodes.map((node) => [String(node.id), box(node)]));
}
function groupBoxes() {
    return (app.graph.groups ?? app.graph._groups ?? []).map((group) => [...group.pos, ...group.size]);
}
function graphBounds() {  // of the nodes and groups
    const boxes = [...Object.values(nodeBoxes()), ...groupBoxes()];
    const left = Math.min(...boxes.map((b) => b[0])), top = Math.min(...boxes.map((b) => b[1]));
    const right = Math.max(...boxes.map((b) => b[0] + b[2]));
    const bottom = Math.max(...boxes.map((b) => b[1] + b[3]));
    return {left, top, width: right - left, height: bottom - top};
}
function serializedGraph() {  // typed arrays (positions, sizes) as JSON lists, not {"0": x, "1": y}
    const asList = (key, value) => ArrayBuffer.isView(value) ? Array.from(value) : value;
    return JSON.stringify(app.graph.serialize(), asList);
}
"""

_LOAD_SCRIPT = (
    _HELPERS
    + """
const [graphData, done] = [arguments[0], arguments[arguments.length - 1]];
// for the screenshot: the whole graph, right of the page's side bar and below its top bar
async function fitGraphIntoView() {
    const {left, top, width: w, height: h} = graphBounds(), x0 = 90, y0 = 100, margin = 30;
    const {width, height} = app.canvas.canvas;
    const scale = Math.min((width - x0 - margin) / w, (height - y0 - margin) / h, 1);
    await app.extensionManager.setting.set("Comfy.Minimap.Visible", false);  // it would cover a corner
    app.canvas.renderInfo = () => {};  // litegraph's FPS corner: noise in a screenshot
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [x0 / scale - left, y0 / scale - top];
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
}
(async () => {
    await app.loadGraphData(graphData);
    const missing = app.graph._nodes
        .filter((node) => !LiteGraph.registered_node_types[node.type])
        .map((node) => node.type);
    const dialog = document.body.innerText.includes("node types were not found");
    const imagesLoaded = await imagesShown();
    const [boxes, bounds] = [nodeBoxes(), graphBounds()];
    await fitGraphIntoView();
    const prompt = await app.graphToPrompt();
    done({missing, dialog, imagesLoaded, boxes, bounds, output: prompt.output});
})().catch((error) => done({error: String(error && error.stack || error)}));
"""
)


def load_workflow(driver, workflow: dict) -> dict:
    """Load a UI-format workflow into the page as a user dropping the file would.
    Returns {missing: [node types not registered], dialog: bool (the page's missing-nodes
    dialog was shown), imagesLoaded: bool (every Load Image node shows its image), boxes:
    {node id: [x, y, width, height] with the title bar, once the images show}, bounds: {left,
    top, width, height} of the nodes and groups, output: the API prompt the page would queue}."""
    result = driver.execute_async_script(_LOAD_SCRIPT, workflow)
    if "error" in result:
        raise RuntimeError(f"the page failed to load the workflow: {result['error']}")
    return result


_QUEUE_SCRIPT = """
const [graphData, widgetValues, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
    await app.loadGraphData(graphData);
    for (const [id, values] of Object.entries(widgetValues)) {
        const node = app.graph.getNodeById(Number(id)) ?? app.graph.getNodeById(id);
        // set as a loaded workflow sets them: typing into a widget snaps the value to its step
        for (const [name, value] of Object.entries(values)) {
            node.widgets.find((widget) => widget.name === name).value = value;
        }
    }
    const queued = await app.queuePrompt(0, 1);
    if (queued) {  // taken: nothing to show, and nothing of it should run
        await fetch("/queue", {method: "POST", body: JSON.stringify({clear: true})});
        await fetch("/interrupt", {method: "POST"});
    }
    done({queued, nodeErrors: app.lastNodeErrors});
})().catch((error) => done({error: String(error && error.stack || error)}));
"""


def queue_in_page(driver, workflow: dict, widget_values: dict) -> dict:
    """Load a UI-format workflow, set widgets ({node id: {widget name: value}}) and press
    Run. Returns the errors by node id that the page marks on the nodes (the server's
    `node_errors`); a prompt the server took is taken off the queue and interrupted."""
    result = driver.execute_async_script(_QUEUE_SCRIPT, workflow, widget_values)
    if "error" in result:
        raise RuntimeError(f"the page failed to queue the workflow: {result['error']}")
    return result["nodeErrors"] or {}


_TEMPLATES_SCRIPT = """
const [category, done] = [arguments[0], arguments[arguments.length - 1]];
const leaves = (text) => [...document.querySelectorAll("*")]
    .filter((element) => !element.children.length && element.textContent.trim() === text);
const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
const cards = () => Object.fromEntries([...document.querySelectorAll("h3")].map((title) => {
    let card = title.parentElement;
    while (card && !card.querySelector("img")) card = card.parentElement;
    const img = card?.querySelectorAll("h3").length === 1 && card.querySelector("img");  // one title: a card
    return [title.textContent.trim(), img && {src: img.src, width: img.complete ? img.naturalWidth : 0}];
}).filter(([, image]) => image));
(async () => {
    await app.extensionManager.command.execute("Comfy.BrowseTemplates");
    const opened = Date.now() + 40000;
    while (!leaves(category).length && Date.now() < opened) await pause();
    if (!leaves(category).length) throw new Error(`no template category ${category} in the dialog`);
    leaves(category)[0].click();
    const shown = {};
    const keep = () => Object.entries(cards()).forEach(([title, image]) => {
        if (!shown[title]?.width) shown[title] = image;  // a picture once loaded stays counted
    });
    // until the cards in view stop changing and their pictures (the page's own default one
    // included) have loaded; each look has its own time, so a slow first one on a busy
    // machine does not leave the later pages a single glance
    const settle = async () => {
        let count = -1, stableSince = Date.now();
        const deadline = Date.now() + 20000;
        while (Date.now() < deadline) {
            const now = cards(), n = Object.keys(now).length;
            if (n !== count) [count, stableSince] = [n, Date.now()];
            const loading = !n || Object.values(now).some((image) => !image.width);
            if (!loading && Date.now() - stableSince > 1000) break;
            await pause();
        }
        keep();
    };
    await settle();
    // the dialog renders a card's picture once it scrolls into view: page down to the last row
    let grid = leaves(Object.keys(shown)[0] ?? "")[0];
    while (grid && !(grid.scrollHeight > grid.clientHeight + 1 && getComputedStyle(grid).overflowY !== "visible")) {
        grid = grid.parentElement;
    }
    while (grid && grid.scrollTop + grid.clientHeight < grid.scrollHeight - 1) {
        grid.scrollTop += Math.max(1, Math.floor(grid.clientHeight / 2));  // half a page: no row passes unseen
        await settle();
    }
    done(shown);
})().catch((error) => done({error: String(error && error.stack || error)}));
"""


def template_cards(driver, category: str) -> dict[str, dict]:
    """Open the page's Templates dialog on `category` (a custom node's folder name) and
    return its cards, paged through to the last row (the page loads a picture once its
    card shows): {title: {src, width} of the picture shown}."""
    driver.set_script_timeout(3 * PAGE_TIMEOUT_S)  # a look of up to 20 s per page of cards
    try:
        result = driver.execute_async_script(_TEMPLATES_SCRIPT, category)
    finally:
        driver.set_script_timeout(PAGE_TIMEOUT_S)
    if "error" in result:
        raise RuntimeError(f"the Templates dialog: {result['error']}")
    return result


_FROM_API_SCRIPT = (
    _HELPERS
    + """
const [apiData, fileName, bands, gap, view] = arguments, done = arguments[arguments.length - 1];
const byId = (id) => app.graph.getNodeById(Number(id)) ?? app.graph.getNodeById(String(id));
function layOut() {
    // columns aligned across bands: a column is as wide as its widest node in any band
    const widths = [];
    for (const {columns} of bands) columns.forEach((column, i) => {
        widths[i] = Math.max(widths[i] ?? 0, ...column.map((id) => box(byId(id))[2]));
    });
    let top = 0;
    for (const {title, columns} of bands) {
        const groupTitle = title ? LiteGraph.NODE_TITLE_HEIGHT + gap / 2 : 0;
        let left = 0, bottom = top;
        columns.forEach((column, i) => {
            let y = top + groupTitle;
            for (const id of column) {
                const node = byId(id), [bx, by, , bh] = box(node);
                node.pos = [left + node.pos[0] - bx, y + node.pos[1] - by];
                y += bh + gap;
            }
            bottom = Math.max(bottom, y - gap);
            left += widths[i] + gap;
        });
        if (title) {
            const group = new LiteGraph.LGraphGroup(title);
            group.pos = [-gap / 2, top];
            group.size = [left, bottom - top + gap / 2];
            app.graph.add(group);
        }
        top = bottom + 2 * gap;
    }
}
(async () => {
    await app.loadApiJson(apiData, fileName);  // a name of its own: the page reopens a known one
    for (const [id, data] of Object.entries(apiData)) {
        const node = byId(id);
        if (data._meta?.title) node.title = data._meta.title;
        // loadApiJson runs each widget's rounding callback, which in older pages snaps
        // 25 frames to a multiple of the step (24) and 0.95 to 0.9500000000000001
        for (const [name, value] of Object.entries(data.inputs)) {
            const widget = node.widgets?.find((w) => w.name === name);
            if (widget && !Array.isArray(value)) widget.value = value;
        }
    }
    for (const node of app.graph._nodes) {
        for (const widget of node.widgets || []) {
            if (widget.name === "control_after_generate") widget.value = "fixed";  // same graph, same video
        }
    }
    if (!(await imagesShown())) throw new Error("a Load Image node did not show its image");
    layOut();
    // the saved view shows the whole graph in a window of view.width x view.height, right
    // of the page's side bar (view.left) and below its top bar (view.top)
    const {left, top, width, height} = graphBounds();
    const scale = Math.min(
        1, (view.width - view.left - view.margin) / width, (view.height - view.top - view.margin) / height
    );
    const ds = {scale, offset: [view.left / scale - left, view.top / scale - top]};
    done(JSON.stringify({graph: JSON.parse(serializedGraph()), ds}));
})().catch((error) => done(JSON.stringify({error: String(error && error.stack || error)})));
"""
)


def ui_workflow_from_api(driver, api_workflow: dict, name: str, bands: list[dict], gap: int, view: dict) -> dict:
    """The page's own UI-format serialization of an API-format prompt (node ids kept),
    opened under the file name `name` and laid out in `bands`, top to bottom ([{"title":
    str or None, "columns": [[node id, ...], ...]}]; a titled band is a group) with `gap`
    pixels between nodes; its saved view shows all of it in a window of {width, height,
    left, top, margin} (left and top: the page's side and top bars)."""
    result = json.loads(driver.execute_async_script(_FROM_API_SCRIPT, api_workflow, name, bands, gap, view))
    if "error" in result:
        raise RuntimeError(result["error"])
    graph = result["graph"]
    graph.setdefault("extra", {})["ds"] = result["ds"]  # where the page opens a loaded workflow's view
    return graph


def screenshot(driver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
