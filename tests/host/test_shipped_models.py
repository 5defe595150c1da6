"""The shipped workflows with the shipped tiny demo model (`ltx_core/assets/`), on a
server whose model folders are empty: the pack's own assets folder is all it has.

If this fails, a user who installs the pack and opens a shipped workflow gets
"not in the model folders" or a model that does not fit its text encoder.
"""

from __future__ import annotations

import pytest

from ltx_core import video as core_video
from .comfy_env import REPO_ROOT, ComfyServer, assert_succeeded
from .conftest import (
    CHECKPOINT_NAME,
    TEST_HEIGHT,
    TEST_WIDTH,
    WORKFLOW_NAMES,
    example_images,
    small_workflow,
)

pytestmark = pytest.mark.comfy_server

ASSETS = REPO_ROOT / "ltx_core" / "assets"


@pytest.fixture(scope="module")
def bare_server(comfy_root, tmp_path_factory):
    if not (ASSETS / CHECKPOINT_NAME).is_file():
        pytest.skip(f"the demo checkpoint {CHECKPOINT_NAME} is not in ltx_core/assets yet")
    server = ComfyServer(tmp_path_factory.mktemp("comfy_bare"))
    example_images(server.input_dir)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_shipped_workflow_runs_on_the_shipped_demo_model(bare_server, name):
    prompt, expected_frames = small_workflow(name)
    entry = bare_server.wait_for_history(bare_server.queue_prompt(prompt))
    assert_succeeded(entry)
    [video] = bare_server.output_files(entry)
    assert core_video.read_video_frames(video).shape == (expected_frames, TEST_HEIGHT, TEST_WIDTH, 3)
