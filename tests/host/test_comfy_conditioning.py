"""The pack's T5 Encode feeding ComfyUI's own LTX-Video model and samplers, in a real ComfyUI
server: CheckpointLoaderSimple on the tiny official-layout checkpoint (ComfyUI reads its
sizes from the file's config metadata), LTXVConditioning, EmptyLTXVLatentVideo,
LTXVScheduler, SamplerCustom or KSampler and VAEDecode. If these fail, users who mix the
pack's text encoder with ComfyUI's own LTXV nodes get a tensor-size error.

The other way, ComfyUI's CLIPLoader + CLIPTextEncode into the pack's samplers, is tested
in-process (tests/test_comfy_conditioning.py): ComfyUI's CLIPLoader builds T5-XXL from its
fixed config (4096 wide, 24 blocks, about 4.7 billion weights) whatever the file holds, so
no tiny T5 file loads through it on a server.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .comfy_env import assert_succeeded
from .conftest import CHECKPOINT_NAME, TEST_FRAMES, TEST_HEIGHT, TEST_STEPS, TEST_WIDTH, TEXT_ENCODER_NAME

pytestmark = pytest.mark.comfy_server

SAMPLER_NODES = {
    "SamplerCustom": lambda seed: {
        "class_type": "SamplerCustom",
        "inputs": {"model": ["ckpt", 0], "add_noise": True, "noise_seed": seed, "cfg": 3.0,
                   "positive": ["conditioning", 0], "negative": ["conditioning", 1], "sampler": ["euler", 0],
                   "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]},
    },
    "KSampler": lambda seed: {
        "class_type": "KSampler",
        "inputs": {"model": ["ckpt", 0], "seed": seed, "steps": TEST_STEPS, "cfg": 3.0, "sampler_name": "euler",
                   "scheduler": "simple", "positive": ["conditioning", 0], "negative": ["conditioning", 1],
                   "latent_image": ["latent", 0], "denoise": 1.0},
    },
}  # fmt: skip


def comfy_ltxv_graph(sampler: str, positive: str, negative: str, prefix: str, seed: int = 5) -> dict:
    """ComfyUI's own LTXV text-to-video graph with the pack's T5 loader and encoders."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "t5": {"class_type": "LTXVCoreT5Loader",
               "inputs": {"text_encoder_name": TEXT_ENCODER_NAME, "dtype": "float32", "device": "default"}},
        "positive": {"class_type": "LTXVCoreT5Encode",
                     "inputs": {"t5": ["t5", 0], "text": positive, "max_tokens": 128}},
        "negative": {"class_type": "LTXVCoreT5Encode",
                     "inputs": {"t5": ["t5", 0], "text": negative, "max_tokens": 128}},
        "conditioning": {"class_type": "LTXVConditioning",
                         "inputs": {"positive": ["positive", 0], "negative": ["negative", 0], "frame_rate": 25.0}},
        "latent": {"class_type": "EmptyLTXVLatentVideo",
                   "inputs": {"width": TEST_WIDTH, "height": TEST_HEIGHT, "length": TEST_FRAMES, "batch_size": 1}},
        "sigmas": {"class_type": "LTXVScheduler",
                   "inputs": {"steps": TEST_STEPS, "max_shift": 2.05, "base_shift": 0.95, "stretch": True,
                              "terminal": 0.1, "latent": ["latent", 0]}},
        "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sample": SAMPLER_NODES[sampler](seed),
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }  # fmt: skip


def frames_of(comfy_server, prompt: dict) -> np.ndarray:
    entry = comfy_server.wait_for_history(comfy_server.queue_prompt(prompt))
    assert_succeeded(entry)
    pngs = sorted(path for path in comfy_server.output_files(entry) if path.suffix == ".png")
    return np.stack([np.asarray(Image.open(path), dtype=np.int16) for path in pngs])


@pytest.mark.parametrize("sampler", sorted(SAMPLER_NODES))
def test_the_pack_t5_encode_drives_comfyuis_own_ltxv_model_and_sampler(comfy_server, sampler):
    """An empty negative prompt too: the pack's own key in the conditioning's dict rides along."""
    prompt = comfy_ltxv_graph(sampler, "A red circle slides to the right.", "", f"LTXV/comfy_{sampler}")
    frames = frames_of(comfy_server, prompt)
    assert frames.shape == (TEST_FRAMES, TEST_HEIGHT, TEST_WIDTH, 3)


def test_comfyuis_own_sampler_follows_the_pack_t5_prompt(comfy_server):
    """Another prompt, the same seed: other frames, so the text reaches the model."""
    first, other = (
        frames_of(comfy_server, comfy_ltxv_graph("SamplerCustom", text, "blurry", f"LTXV/comfy_prompt_{index}"))
        for index, text in enumerate(("A red circle slides to the right.", "Waves crash on a rocky shore."))
    )
    assert np.abs(first - other).max() > 0
