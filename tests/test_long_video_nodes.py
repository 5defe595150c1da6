"""The long-video sampler node in-process with the real ComfyUI modules (as
tests/test_nodes.py): the whole clip's latent from windows, the prompt lines reaching the
windows they start, a bad prompt line refused naming it."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from .test_nodes import PACK_NAME, pack, tiny_models  # noqa: F401 (fixtures)

SETTINGS = dict(seed=3, steps=2, cfg=3.0, frame_rate=24.0, window_frames=17, window_overlap=8,
                overlap_strength=0.5, adain_factor=0.25)  # fmt: skip


@pytest.fixture(scope="module")
def t5(pack, tiny_t5_folder):
    core_text = importlib.import_module(f"{PACK_NAME}.ltx_core.models.text_encoder")
    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    encoder = core_text.load_text_encoder(tiny_t5_folder)
    return memory.LoadedT5(encoder, memory.patcher(encoder.model, "text_encoder", "cpu"))


def test_the_long_sampler_makes_the_whole_clip_and_its_prompt_lines_reach_their_windows(pack, tiny_models, t5):
    transformer, _ = tiny_models
    node = importlib.import_module(f"{PACK_NAME}.nodes.long_video").LTXVCoreLongVideoSampler()
    (latent,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreEmptyLatentVideo"]().generate(
        width=64, height=32, frames=33, batch_size=1
    )
    (one,) = node.sample(transformer, t5, latent, "a red fox", "", **SETTINGS)
    (two,) = node.sample(transformer, t5, latent, "a red fox\n16: a blue whale", "", **SETTINGS)
    assert one["samples"].shape == latent["samples"].shape == (1, 128, 5, 1, 2)
    assert torch.isfinite(one["samples"]).all() and not torch.equal(one["samples"], two["samples"])
    with pytest.raises(ValueError, match="prompt line 'a blue whale' is not FRAME: prompt"):
        node.sample(transformer, t5, latent, "a red fox\na blue whale", "", **SETTINGS)
