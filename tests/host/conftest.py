"""Fixtures of the host tests: a real ComfyUI server with tiny random-weight models in
its model folders, and the shipped workflows.

The server is started once per session (marker `comfy_server`); the first run also sets
up ComfyUI under `.comfy/` (see comfy_env.py). Deselect with `-m "not comfy_server"`.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..fixtures_checkpoints import write_official_single_file
from .comfy_env import REPO_ROOT, ComfyServer, ensure_comfyui

WORKFLOWS_DIR = REPO_ROOT / "workflows"
API_WORKFLOWS_DIR = WORKFLOWS_DIR / "api"
WORKFLOW_NAMES = ("t2v", "i2v")

# The names the shipped workflows use; the test server's folders come first in ComfyUI's
# search order, so these random-weight files are the ones the workflows load.
CHECKPOINT_NAME = "ltxv-tiny.safetensors"
TEXT_ENCODER_NAME = "t5-tiny"
RELEASE = "0.9.5"  # tiny width, the layout of the current 2B release
EXAMPLE_IMAGE_NAME = "ltxv-example.png"

# Small enough for 2 CPU cores: 64 x 64 pixels, 9 frames (2 latent frames of 2 x 2 tokens).
TEST_WIDTH, TEST_HEIGHT, TEST_FRAMES, TEST_STEPS = 64, 64, 9, 2


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    return ensure_comfyui()


@pytest.fixture(scope="session")
def comfy_server(comfy_root, tmp_path_factory, tiny_t5_folder):
    server = ComfyServer(tmp_path_factory.mktemp("comfy"))
    write_official_single_file(server.checkpoints_dir / CHECKPOINT_NAME, RELEASE)
    shutil.copytree(tiny_t5_folder, server.text_encoders_dir / TEXT_ENCODER_NAME)
    example_image(server.input_dir / EXAMPLE_IMAGE_NAME)
    server.start()
    yield server
    server.stop()


def example_image(path: Path) -> Path:
    """A 96 x 80 gradient: another size and aspect than the test video, so the encode
    node's center-crop and resize run too."""
    y, x = np.mgrid[0:80, 0:96]
    rgb = np.stack([x * 255 // 95, y * 255 // 79, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def api_workflow(name: str) -> dict:
    return json.loads((API_WORKFLOWS_DIR / f"{name}.json").read_text())


def ui_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())


def nodes_of(prompt: dict, class_type: str) -> list[dict]:
    return [node for node in prompt.values() if node["class_type"] == class_type]


def small(prompt: dict, **overrides) -> dict:
    """The workflow at the test size (64 x 64, 9 frames, 2 steps) with `overrides` applied
    to every node that has those inputs (e.g. seed=3 sets the sampler's and decoder's)."""
    prompt = copy.deepcopy(prompt)
    settings = {"width": TEST_WIDTH, "height": TEST_HEIGHT, "frames": TEST_FRAMES, "steps": TEST_STEPS, **overrides}
    for node in prompt.values():
        for key, value in settings.items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    return prompt
