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


_LOAD_SCRIPT = """
const [graphData, done] = [arguments[0], arguments[arguments.length - 1]];
function fitGraphIntoView() {  // the whole graph left of the page's menu, for the screenshot
    const nodes = app.graph._nodes, margin = 30, menuWidth = 260;
    const left = Math.min(...nodes.map((n) => n.pos[0])), top = Math.min(...nodes.map((n) => n.pos[1]));
    const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
    const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
    const {width, height} = app.canvas.canvas;
    const scale = Math.min((width - menuWidth - 2 * margin) / (right - left), (height - 2 * margin - 40) / (bottom - top), 1);
    app.canvas.renderInfo = () => {};  // litegraph's FPS corner: noise in a screenshot
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [margin / scale - left, (margin + 40) / scale - top];
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
}
(async () => {
    await app.loadGraphData(graphData);
    const missing = app.graph._nodes
        .filter((node) => !LiteGraph.registered_node_types[node.type])
        .map((node) => node.type);
    const dialog = document.body.innerText.includes("node types were not found");
    fitGraphIntoView();
    const prompt = await app.graphToPrompt();
    done({missing, dialog, output: prompt.output});
})().catch((error) => done({error: String(error && error.stack || error)}));
"""


def load_workflow(driver, workflow: dict) -> dict:
    """Load a UI-format workflow into the page as a user dropping the file would.
    Returns {missing: [node types not registered], dialog: bool (the page's missing-nodes
    dialog was shown), output: the API prompt the page would queue}."""
    result = driver.execute_async_script(_LOAD_SCRIPT, workflow)
    if "error" in result:
        raise RuntimeError(f"the page failed to load the workflow: {result['error']}")
    return result


_FROM_API_SCRIPT = """
const [apiData, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
    app.loadApiJson(apiData);
    for (const [id, data] of Object.entries(apiData)) {
        const node = app.graph.getNodeById(id);
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
    app.graph.arrange(60);
    app.canvas.ds.offset = [20, 20];
    app.canvas.ds.scale = 0.75;
    app.canvas.draw(true, true);
    done(JSON.stringify(app.graph.serialize()));
})().catch((error) => done(JSON.stringify({error: String(error)})));
"""


def ui_workflow_from_api(driver, api_workflow: dict) -> dict:
    """The page's own UI-format serialization of an API-format prompt (node ids kept)."""
    graph = json.loads(driver.execute_async_script(_FROM_API_SCRIPT, api_workflow))
    if "error" in graph:
        raise RuntimeError(graph["error"])
    graph.setdefault("extra", {})["ds"] = {"offset": [20, 20], "scale": 0.75}
    return graph


def screenshot(driver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
