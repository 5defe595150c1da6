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
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel

from ltx_core.checkpoint.keymaps import TRANSFORMER_PREFIX, VAE_PREFIX
from ltx_core.checkpoint.loading import inspect_checkpoint
from ltx_core.checkpoint.quantized_writing import gguf_types, transformer_only, write_gguf_checkpoint
from ltx_core.checkpoint.tensors import SafetensorsHeader
from ltx_core.checkpoint.writing import config_metadata
from ltx_core.lora import LoRAWeights, save_lora
from ltx_core.models.latent_upsampler import TINY_SPATIAL_UPSAMPLER
from ltx_core.video import write_mp4

from ..conftest import TINY_T5
from ..fixtures_checkpoints import write_official_single_file
from ..test_latent_upsampler import write_upsampler_file
from ..test_text_encoder import write_comfy_t5
from .comfy_env import REPO_ROOT, ComfyServer, comfyui_source, comfyui_version, ensure_comfyui

WORKFLOWS_DIR = REPO_ROOT / "workflows"
API_WORKFLOWS_DIR = WORKFLOWS_DIR / "api"
WORKFLOW_NAMES = ("t2v", "i2v", "first_last", "extend", "long_video")
# The UI-format workflows are ComfyUI templates: its Templates dialog lists a custom node's
# example_workflows/*.json by file name, as the title, with the same-name .jpg as picture.
TEMPLATES_DIR = REPO_ROOT / "example_workflows"
TEMPLATE_TITLES = {
    "t2v": "LTX-Video text to video",
    "i2v": "LTX-Video image to video",
    "first_last": "LTX-Video first and last frame",
    "extend": "LTX-Video extend a video",
    "long_video": "LTX-Video long video",
}
# The multi-scale release pipelines (0.9.8 distilled): they need the release's checkpoint,
# T5-XXL and spatial upsampler, which the pack does not ship, so they run on tiny models
# placed under those names, and their pictures are cards naming the models
# (make_ui_workflows.py), not frames of the demo model.
MULTISCALE_WORKFLOW_NAMES = ("multiscale_t2v", "multiscale_i2v")
MULTISCALE_TEMPLATE_TITLES = {
    "multiscale_t2v": "LTX-Video multi-scale text to video",
    "multiscale_i2v": "LTX-Video multi-scale image to video",
}
# A LoRA run and an IC-LoRA control run: their checkpoints and LoRAs are not shipped either.
LORA_WORKFLOW_NAMES = ("lora_t2v", "ic_lora")
LORA_TEMPLATE_TITLES = {
    "lora_t2v": "LTX-Video LoRA text to video",
    "ic_lora": "LTX-Video IC-LoRA depth control",
}
ALL_WORKFLOW_NAMES = WORKFLOW_NAMES + MULTISCALE_WORKFLOW_NAMES + LORA_WORKFLOW_NAMES
# The templates whose picture is a card naming the models to download (make_ui_workflows.py).
CARD_TEMPLATE_TITLES = {**MULTISCALE_TEMPLATE_TITLES, **LORA_TEMPLATE_TITLES}
ALL_TEMPLATE_TITLES = {**TEMPLATE_TITLES, **CARD_TEMPLATE_TITLES}

# The names the shipped workflows use; the test server's folders come first in ComfyUI's
# search order, so these random-weight files are the ones the workflows load.
CHECKPOINT_NAME = "ltxv-tiny.safetensors"
TEXT_ENCODER_NAME = "t5-tiny"
RELEASE = "0.9.5"  # tiny width, the layout of the current 2B release
EXAMPLE_IMAGE_NAME = "ltxv-example.png"
EXAMPLE_LAST_IMAGE_NAME = "ltxv-example-last.png"  # first_last's last frame
# The multi-scale workflows' models (tiny random ones here: the checkpoint's layout is RELEASE's).
MULTISCALE_CHECKPOINT_NAME = "ltxv-13b-0.9.8-distilled.safetensors"
MULTISCALE_TEXT_ENCODER_NAME = "t5xxl_fp16.safetensors"  # ComfyUI's single file, ComfyUI's tokenizer
UPSAMPLER_NAME = "ltxv-spatial-upscaler-0.9.8.safetensors"
T5_VOCAB_SIZE = 32128  # T5's, which ComfyUI's own tokenizer gives ids of
# The LoRA workflows' models: tiny checkpoints of RELEASE's layout, a style LoRA in the
# diffusers layout (as trainers save it) and an IC-LoRA in Lightricks' ComfyUI layout.
LORA_CHECKPOINT_NAMES = ("ltxv-13b-0.9.8-dev.safetensors", "ltxv-13b-0.9.7-dev.safetensors")
STYLE_LORA_NAME = "ltxv-13b-style-lora.safetensors"
IC_LORA_NAME = "ltxv-097-ic-lora-depth-control-comfyui.safetensors"
CONTROL_VIDEO_NAME = "ltxv-example-control.mp4"
# A GGUF transformer and the VAE file published beside it (ComfyUI-GGUF users' pair).
GGUF_NAME = "ltxv-2b-0.9.5-Q8_0.gguf"
VAE_NAME = "ltxv-2b-0.9.5-vae.safetensors"

# Small enough for 2 CPU cores: 64 x 64 pixels, 9 frames (2 latent frames of 2 x 2 tokens).
TEST_WIDTH, TEST_HEIGHT, TEST_FRAMES, TEST_STEPS = 64, 64, 9, 2
TEST_STG_BLOCKS = "1"  # the test checkpoint has 2 transformer blocks (the demo model 5)
# extend continues the last 9 frames of a first clip, so its clips need more than 9
# frames: 17 each at the test size, and its video is the first clip + 8 new frames.
# long_video keeps its 121 frames, so its windows (25 frames) and its prompt changes (at
# frames 48 and 72) all fall inside the clip: 16 latent frames of 2 x 2 tokens, 5 windows.
TEST_FRAMES_OF = {"extend": 17, "long_video": 121}
OUTPUT_FRAMES_OF = {"extend": 17 + 8}


HOST_USED = []  # (version, source) of the ComfyUI the host tests ran on, for the summary


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    root = ensure_comfyui()
    HOST_USED.append((comfyui_version(root), comfyui_source()))
    return root


def pytest_terminal_summary(terminalreporter):
    for version, source in HOST_USED[:1]:
        terminalreporter.write_line(f"host tests ran on ComfyUI {version} ({source})")


@pytest.fixture(scope="session")
def comfy_server(comfy_root, tmp_path_factory, tiny_t5_folder):
    server = ComfyServer(tmp_path_factory.mktemp("comfy"))
    write_official_single_file(server.checkpoints_dir / CHECKPOINT_NAME, RELEASE)
    shutil.copytree(tiny_t5_folder, server.text_encoders_dir / TEXT_ENCODER_NAME)
    multiscale_models(server)
    lora_models(server)
    example_images(server.input_dir)
    server.start()
    yield server
    server.stop()


def multiscale_models(server: ComfyServer) -> None:
    """Tiny models under the names the multi-scale workflows load."""
    write_official_single_file(server.checkpoints_dir / MULTISCALE_CHECKPOINT_NAME, RELEASE)
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=T5_VOCAB_SIZE, **TINY_T5)).eval()  # T5's vocabulary, a tiny width
    write_comfy_t5(server.text_encoders_dir / MULTISCALE_TEXT_ENCODER_NAME, t5, "fp16")
    write_upsampler_file(server.upscale_models_dir / UPSAMPLER_NAME, TINY_SPATIAL_UPSAMPLER)


def lora_models(server: ComfyServer) -> None:
    """Tiny checkpoints and LoRAs of their shapes under the names the LoRA workflows load."""
    for name in LORA_CHECKPOINT_NAMES:
        checkpoint = write_official_single_file(server.checkpoints_dir / name, RELEASE)
    shapes = SafetensorsHeader(checkpoint).shapes
    g = torch.Generator().manual_seed(7)
    weights = {}
    for key, shape in shapes.items():
        name = key.removeprefix(TRANSFORMER_PREFIX).removesuffix(".weight")
        if key.startswith(TRANSFORMER_PREFIX) and ".attn" in key and key.endswith(".weight") and len(shape) == 2:
            weights[name] = LoRAWeights(
                torch.randn(2, shape[1], generator=g) * 0.1, torch.randn(shape[0], 2, generator=g) * 0.1
            )
    save_lora(server.loras_dir / STYLE_LORA_NAME, weights, "diffusers")
    save_lora(server.loras_dir / IC_LORA_NAME, weights, "comfyui")
    quantized_models(server, checkpoint)


def quantized_models(server: ComfyServer, checkpoint: Path) -> None:
    """The checkpoint's transformer as GGUF (Q8_0 where its blocks fit the tiny rows, F32
    elsewhere, as converters do) and its VAE alone, with the VAE's config as metadata."""
    tensors = load_file(str(checkpoint))
    weights = transformer_only(tensors)
    configs = inspect_checkpoint(checkpoint)[0].configs
    write_gguf_checkpoint(server.diffusion_models_dir / GGUF_NAME, weights, gguf_types(weights, "Q8_0"), configs)
    vae = {k.removeprefix(VAE_PREFIX): v for k, v in tensors.items() if k.startswith(VAE_PREFIX)}
    vae_config = json.dumps({"vae": config_metadata(configs)["vae"]})
    save_file(vae, str(server.vae_dir / VAE_NAME), metadata={"config": vae_config})


def example_images(input_dir: Path) -> None:
    """The images and the control clip the shipped workflows load (the clip at the test size)."""
    example_image(input_dir / EXAMPLE_IMAGE_NAME)
    example_image(input_dir / EXAMPLE_LAST_IMAGE_NAME, flipped=True)
    clip = torch.rand(TEST_FRAMES, TEST_HEIGHT, TEST_WIDTH, 3, generator=torch.Generator().manual_seed(8))
    write_mp4(clip, input_dir / CONTROL_VIDEO_NAME, 24.0)


def example_image(path: Path, flipped: bool = False) -> Path:
    """A 96 x 80 gradient (`flipped`: running the other way): another size and aspect than
    the test video, so the encode node's center-crop and resize run too."""
    y, x = np.mgrid[0:80, 0:96]
    if flipped:
        y, x = y[::-1, ::-1], x[::-1, ::-1]
    rgb = np.stack([x * 255 // 95, y * 255 // 79, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def api_workflow(name: str) -> dict:
    return json.loads((API_WORKFLOWS_DIR / f"{name}.json").read_text())


def ui_workflow(name: str) -> dict:
    return json.loads((TEMPLATES_DIR / f"{ALL_TEMPLATE_TITLES[name]}.json").read_text())


# Inputs the page adds to a queued node once its preview has loaded, which the server ignores
# (Load Video's preview widget): not part of the graph.
PREVIEW_INPUTS = ("video-preview",)


def without_meta(prompt: dict) -> dict:
    """A prompt's graph only: ComfyUI keeps `_meta` (titles) or not depending on the path,
    and the page adds preview inputs or not depending on timing."""
    return {
        node_id: {
            "class_type": node["class_type"],
            "inputs": {k: v for k, v in node["inputs"].items() if k not in PREVIEW_INPUTS},
        }
        for node_id, node in prompt.items()
    }


def nodes_of(prompt: dict, class_type: str) -> list[dict]:
    return [node for node in prompt.values() if node["class_type"] == class_type]


def small(prompt: dict, **overrides) -> dict:
    """The workflow at the test size (64 x 64, 9 frames, 2 steps, STG on a block the test
    checkpoint has) with `overrides` applied to every node that has those inputs (e.g.
    seed=3 sets the sampler's and decoder's). A clip's last frames picked for a guide
    (extend's ImageFromBatch) stay its last frames at the new frame count."""
    prompt = copy.deepcopy(prompt)
    settings = {
        "width": TEST_WIDTH,
        "height": TEST_HEIGHT,
        "frames": TEST_FRAMES,
        "steps": TEST_STEPS,
        "stg_blocks": TEST_STG_BLOCKS,
        **overrides,
    }
    for node in prompt.values():
        for key, value in settings.items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    for guide in nodes_of(prompt, "LTXVCoreAddGuide"):
        source = prompt[guide["inputs"]["image"][0]]
        if source["class_type"] == "ImageFromBatch":
            source["inputs"]["batch_index"] = settings["frames"] - source["inputs"]["length"]
    return prompt


def small_workflow(name: str, **overrides) -> tuple[dict, int]:
    """The shipped API workflow `name` at the test size, and the frame count of its video."""
    frames = overrides.pop("frames", TEST_FRAMES_OF.get(name, TEST_FRAMES))
    return small(api_workflow(name), frames=frames, **overrides), OUTPUT_FRAMES_OF.get(name, frames)
