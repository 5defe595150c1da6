"""A fresh ComfyUI with the pack installed by the README's commands, run as written (see
`install_as_the_readme_says`), and another `ltx_core` first on its Python path (Lightricks'
LTX-2 core has that name): the shipped workflows with the shipped tiny demo model
(`ltx_core/assets/`), on a server whose model folders are empty.

If this fails, a user who follows the README gets a pack that does not load, runs another
package's `ltx_core`, or a shipped workflow that says "not in the model folders".
"""

from __future__ import annotations

import pytest

from ltx_core import video as core_video

from ..test_nodes import NODE_IDS
from .comfy_env import (
    REPO_ROOT,
    ComfyServer,
    assert_succeeded,
    comfyui_source,
    install_as_the_readme_says,
    unpack_comfyui,
)
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
# An `ltx_core` that leaves a mark and fails when imported: any absolute import of the core
# from the pack would pick it up first.
FOREIGN_CORE = (
    "import pathlib\npathlib.Path(__file__).with_name('imported').touch()\nraise ImportError('foreign ltx_core')\n"
)


@pytest.fixture(scope="module")
def foreign_core(tmp_path_factory):
    folder = tmp_path_factory.mktemp("foreign") / "ltx_core"
    folder.mkdir()
    (folder / "__init__.py").write_text(FOREIGN_CORE)
    return folder


@pytest.fixture(scope="module")
def bare_server(comfy_root, tmp_path_factory, foreign_core):
    if not (ASSETS / CHECKPOINT_NAME).is_file():
        pytest.skip(f"the demo checkpoint {CHECKPOINT_NAME} is not in ltx_core/assets yet")
    base = tmp_path_factory.mktemp("comfy_bare")
    unpack_comfyui(comfyui_source(), base / "ComfyUI")
    install_as_the_readme_says(base / "ComfyUI")
    server = ComfyServer(base, root=base / "ComfyUI", python_path=(foreign_core.parent,))
    example_images(server.input_dir)
    server.start()
    yield server
    server.stop()


def test_the_readme_install_gives_the_packs_nodes(bare_server):
    assert (bare_server.root / "custom_nodes" / "comfyui-ltxv-core" / "requirements.txt").is_file()
    nodes = bare_server.get("/object_info")
    assert {name for name in nodes if name.startswith("LTXVCore")} == set(NODE_IDS)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_shipped_workflow_runs_on_the_shipped_demo_model(bare_server, name):
    prompt, expected_frames = small_workflow(name)
    entry = bare_server.wait_for_history(bare_server.queue_prompt(prompt))
    assert_succeeded(entry)
    [video] = bare_server.output_files(entry)
    assert core_video.read_video_frames(video).shape == (expected_frames, TEST_HEIGHT, TEST_WIDTH, 3)


def test_the_foreign_ltx_core_first_on_the_path_was_never_imported(bare_server, foreign_core):
    """After every shipped workflow ran: the pack used its own core only."""
    assert str(foreign_core.parent) in bare_server.python_path[0].as_posix()
    assert not (foreign_core / "imported").exists()
