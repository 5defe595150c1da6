"""What a ComfyUI user meets of the pack through the real server, beside the page itself
(test_browser.py): the Templates dialog's list and its files, which dropdowns offer the
shipped demo files, how a bad size is reported, and node defaults that agree with the
shipped workflows, the CLI and the README.

If these fail, a user finds no templates or blank pictures, the demo T5 offered as a
checkpoint (or in ComfyUI's own loaders, which cannot load it), a size error repeated on
every size widget, a size past a widget's maximum taken and run, or a node added by hand
that generates differently from the shipped workflow.
"""

from __future__ import annotations

import json
import re
import urllib.request
from io import BytesIO
from urllib.parse import quote

import pytest
from PIL import Image

from ltx_core import cli as core_cli

from .comfy_env import (
    PACK_LINK_NAME,
    REPO_ROOT,
    ComfyServer,
    PromptRejected,
    assert_succeeded,
    status_messages,
)
from .conftest import (
    ALL_TEMPLATE_TITLES,
    ALL_WORKFLOW_NAMES,
    TEMPLATES_DIR,
    TEST_WIDTH,
    api_workflow,
    small,
    small_workflow,
)

pytestmark = pytest.mark.comfy_server

ASSETS_DIR = REPO_ROOT / "ltx_core" / "assets"
THUMBNAIL_SIZE = (256, 256)  # a frame of the workflows' video
SAMPLER_SETTINGS = ("steps", "cfg", "frame_rate")
# The schedule a sampler node sets: its checkpoint's (the shipped demo model's is its own).
SHIFT_SETTINGS = ("dynamic_shift", "base_shift", "max_shift", "terminal")
# Settings of the shipped workflows that users keep as they are (not the prompt, seed, size
# or STG, which they choose): a node added by hand has the same ones.
KEPT_SETTINGS = {
    "LTXVCoreCheckpointLoader": ("dtype", "device", "optimization"),
    "LTXVCoreT5Loader": ("dtype", "device"),
    "LTXVCoreLoraLoader": ("strength",),
    "LTXVCoreAddControl": ("strength", "downscale"),
    "LTXVCoreUpsamplerLoader": ("dtype", "device"),
    "LTXVCoreLatentUpsample": ("adain_factor", "tone_map_compression"),
    "LTXVCoreT5Encode": ("max_tokens",),
    "LTXVCoreEmptyLatentVideo": ("batch_size",),
    "LTXVCoreConditionFirstFrame": ("strength",),
    "LTXVCoreAddGuide": ("strength",),
    "LTXVCoreSampler": SAMPLER_SETTINGS,
    "LTXVCoreGuidedSampler": SAMPLER_SETTINGS + ("stg_mode", "stg_rescale", "strength_rule"),
    "LTXVCoreLongVideoSampler": ("steps", "cfg", "frame_rate", "overlap_strength", "adain_factor"),
    "LTXVCoreDenoisingDecode": ("timestep", "decode_noise_scale", "time_chunk"),
    "LTXVCoreSaveVideo": ("frame_rate",),
}  # fmt: skip


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def empty_server(comfy_root, tmp_path_factory):
    """A server with empty model folders: the only LTX-Video files are the pack's shipped ones."""
    server = ComfyServer(tmp_path_factory.mktemp("comfy_empty")).start()
    yield server
    server.stop()


def _get_bytes(server, path: str) -> bytes:
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        return response.read()


def _inputs(info: dict) -> dict:
    return {**info["input"]["required"], **info["input"].get("optional", {})}


def _choices(spec: list) -> list:
    """A COMBO input's choices: a list in place of the type, or (newer nodes) in `options`."""
    if isinstance(spec[0], list):
        return spec[0]
    return spec[1].get("options", []) if len(spec) > 1 and isinstance(spec[1], dict) else []


def _node_id(prompt: dict, class_type: str = "LTXVCoreEmptyLatentVideo") -> str:
    [node_id] = [key for key, node in prompt.items() if node["class_type"] == class_type]
    return node_id


# ---------------------------------------------------------------- templates


def test_the_templates_are_listed_by_title_and_served_with_their_pictures(comfy_server):
    listed = comfy_server.get("/workflow_templates")[PACK_LINK_NAME]
    assert sorted(listed) == sorted(ALL_TEMPLATE_TITLES.values()), "the templates, and nothing of workflows/api/"
    for title in listed:
        served = f"/api/workflow_templates/{PACK_LINK_NAME}/{quote(title)}"
        assert json.loads(_get_bytes(comfy_server, served + ".json")) == json.loads(
            (TEMPLATES_DIR / f"{title}.json").read_text()
        )
        picture = Image.open(BytesIO(_get_bytes(comfy_server, served + ".jpg")))
        assert picture.format == "JPEG" and picture.size == THUMBNAIL_SIZE, title


# ---------------------------------------------------------------- dropdowns


def test_the_shipped_files_are_offered_only_by_the_pack_loader_of_their_kind(empty_server):
    info = empty_server.get("/object_info")
    assert _choices(_inputs(info["LTXVCoreCheckpointLoader"])["ckpt_name"]) == ["ltxv-tiny.safetensors"]
    assert _choices(_inputs(info["LTXVCoreT5Loader"])["text_encoder_name"]) == ["t5-tiny"]
    shipped = {path.name for path in ASSETS_DIR.iterdir()}

    def is_shipped(choice) -> bool:  # the file, or a file inside the folder
        return isinstance(choice, str) and choice.replace("\\", "/").split("/")[0] in shipped

    elsewhere = {
        f"{node}.{name}": found
        for node, node_info in info.items() if not node.startswith("LTXVCore")
        for name, spec in _inputs(node_info).items()
        if (found := [choice for choice in _choices(spec) if is_shipped(choice)])
    }  # fmt: skip
    assert elsewhere == {}, "ComfyUI's own loaders cannot load the pack's demo files"


def test_a_shipped_workflow_runs_on_the_shipped_files_alone(empty_server):
    prompt, _ = small_workflow("t2v", filename_prefix="LTXV/shipped_files")
    entry = empty_server.wait_for_history(empty_server.queue_prompt(prompt))
    assert_succeeded(entry)


# ---------------------------------------------------------------- bad sizes


def _refused(server, prompt: dict) -> dict:
    """The server's validation answer; a prompt it took instead is cancelled, and fails the test."""
    try:
        prompt_id = server.queue_prompt(prompt)
    except PromptRejected as rejected:
        return rejected.body
    server.post("/queue", {"delete": [prompt_id]})
    server.interrupt()
    pytest.fail("the server took the prompt")


@pytest.mark.parametrize(
    "widget, value, kind, message",
    [
        ("width", 16, "value_smaller_than_min", "Value 16 smaller than min of 32"),
        ("height", 8224, "value_bigger_than_max", "Value 8224 bigger than max of 8192"),
        ("frames", 0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
        ("frames", 2049, "value_bigger_than_max", "Value 2049 bigger than max of 1025"),
    ],
)
def test_a_size_out_of_range_is_refused_by_comfyuis_own_check_once_on_its_widget(
    comfy_server, widget, value, kind, message
):
    prompt = small(api_workflow("t2v"))
    latent_id = _node_id(prompt)
    prompt[latent_id]["inputs"][widget] = value
    node_errors = _refused(comfy_server, prompt)["node_errors"]
    assert list(node_errors) == [latent_id]
    [error] = node_errors[latent_id]["errors"]
    assert (error["type"], error["message"], error["extra_info"]["input_name"]) == (kind, message, widget)


@pytest.mark.parametrize(
    "workflow, class_type, widget, value, message",
    [
        (
            "t2v",
            "LTXVCoreEmptyLatentVideo",
            "width",
            100,
            r"^width 100 is not a positive multiple of 32; nearest valid: 96 or 128",
        ),
        ("t2v", "LTXVCoreEmptyLatentVideo", "frames", 100, r"^frames 100 is not 8k \+ 1 .*; nearest valid: 97 or 105"),
        (
            "i2v",
            "LTXVCoreVAEEncodeFirstFrame",
            "height",
            500,
            r"^height 500 is not a positive multiple of 32; nearest valid: 480 or 512",
        ),
    ],
    ids=["width", "frames", "encode-height"],
)
def test_a_size_off_the_vae_grid_fails_in_its_node_with_one_message_naming_the_widget(
    comfy_server, workflow, class_type, widget, value, message
):
    """Within ComfyUI's min and max the prompt is taken (the page only offers sizes on the
    grid, by each widget's step); the node refuses the size before any work of its own."""
    prompt = small(api_workflow(workflow), filename_prefix=f"LTXV/off_grid_{widget}")
    prompt[_node_id(prompt, class_type)]["inputs"][widget] = value
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    error = status_messages(entry)["execution_error"]
    assert error["node_type"] == class_type
    assert re.search(message, error["exception_message"]), error["exception_message"]


def test_a_size_wired_from_another_node_is_taken_and_runs(comfy_server):
    prompt = small(api_workflow("t2v"), filename_prefix="LTXV/wired_width")
    prompt["width"] = {"class_type": "PrimitiveInt", "inputs": {"value": TEST_WIDTH}}
    prompt[_node_id(prompt)]["inputs"]["width"] = ["width", 0]
    assert_succeeded(comfy_server.wait_for_history(comfy_server.queue_prompt(prompt)))


# ---------------------------------------------------------------- defaults and names


def test_node_defaults_are_the_settings_the_shipped_workflows_keep(object_info):
    differing = []
    for name in ALL_WORKFLOW_NAMES:
        for node_id, node in api_workflow(name).items():
            for setting in KEPT_SETTINGS.get(node["class_type"], ()):
                default = _inputs(object_info[node["class_type"]])[setting][1]["default"]
                if node["inputs"][setting] != default:
                    differing.append(
                        f"{name} {node_id} {node['class_type']}.{setting}: "
                        f"{node['inputs'][setting]!r}, default {default!r}"
                    )
    assert differing == []


def test_each_shipped_workflow_samples_with_its_checkpoints_schedule(object_info):
    """The samplers' shift widgets of a workflow are the schedule in its checkpoint's metadata,
    which the CLI samples with: the shipped demo model's own, the stock one (the widgets'
    defaults) for the official files."""
    from ltx_core.models.configs import LTXV_SCHEDULER
    from ltx_core.training.demo_model import DEMO_CHECKPOINT, DEMO_SCHEDULER

    def widgets(scheduler):
        return (scheduler.use_dynamic_shifting, scheduler.base_shift, scheduler.max_shift, scheduler.shift_terminal)

    stock = tuple(_inputs(object_info["LTXVCoreSampler"])[name][1]["default"] for name in SHIFT_SETTINGS)
    assert stock == widgets(LTXV_SCHEDULER)
    checked = 0
    for name in ALL_WORKFLOW_NAMES:
        prompt = api_workflow(name)
        files = {n["inputs"]["ckpt_name"] for n in prompt.values() if "ckpt_name" in n["inputs"]}
        expected = widgets(DEMO_SCHEDULER if files == {DEMO_CHECKPOINT.name} else LTXV_SCHEDULER)
        for node_id, node in prompt.items():
            if "base_shift" in node["inputs"]:
                assert tuple(node["inputs"][k] for k in SHIFT_SETTINGS) == expected, f"{name} {node_id}"
                checked += 1
    assert checked >= len(ALL_WORKFLOW_NAMES) - 1  # the long-video sampler takes its checkpoint's itself


def test_the_sampling_defaults_are_the_clis_and_the_readmes(object_info):
    cli = core_cli.build_parser().parse_args(["generate", "--prompt", "a red circle"])
    sampler = _inputs(object_info["LTXVCoreSampler"])
    decode = _inputs(object_info["LTXVCoreDenoisingDecode"])
    defaults = {name: spec[1].get("default") for name, spec in {**sampler, **decode}.items() if len(spec) > 1}
    assert (defaults["steps"], defaults["cfg"], defaults["frame_rate"]) == (cli.steps, cli.cfg, cli.fps)
    decode_defaults = (defaults["timestep"], defaults["decode_noise_scale"])
    assert decode_defaults == (cli.decode_timestep, cli.decode_noise_scale)
    readme = (REPO_ROOT / "README.md").read_text()
    cfg, steps = re.search(r"The sampling defaults \(CFG (\S+), (\d+) steps, no STG\)", readme).groups()
    assert (float(cfg), int(steps)) == (defaults["cfg"], defaults["steps"])
    assert _inputs(object_info["LTXVCoreGuidedSampler"])["stg_scale"][1]["default"] == 0.0


def test_the_readme_node_table_names_each_node_by_its_display_name(object_info):
    readme = (REPO_ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| `(LTXVCore\w+)` \| ([^|]+?) \|", readme, re.MULTILINE))
    shown = {node: info["display_name"] for node, info in object_info.items() if node.startswith("LTXVCore")}
    assert table == shown
