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


def test_a_first_frame_and_a_keyframe_on_the_latent_guide_the_long_clip(pack, tiny_models, t5):
    """The graph's first-frame and keyframe conditioning reach the windows: frame 0 held at
    strength 1 is the clip's first latent frame; a keyframe changes the clip; a clip held on
    the grid after frame 0 is refused."""
    transformer, _ = tiny_models
    node = importlib.import_module(f"{PACK_NAME}.nodes.long_video").LTXVCoreLongVideoSampler()
    conditioning = importlib.import_module(f"{PACK_NAME}.ltx_core.sampling.conditioning")
    convert = importlib.import_module(f"{PACK_NAME}.nodes.convert")
    g = torch.Generator().manual_seed(5)
    image, key = (torch.randn(1, 128, 1, 1, 2, generator=g) for _ in range(2))
    empty = conditioning.ConditionedLatent(torch.zeros(1, 128, 5, 1, 2))
    first = conditioning.condition_first_frame(empty, image, 1.0)
    keyed = conditioning.add_keyframe(first, key, 24, 1.0)
    (started,) = node.sample(transformer, t5, convert.core_to_latent(first), "a red fox", "", **SETTINGS)
    (guided,) = node.sample(transformer, t5, convert.core_to_latent(keyed), "a red fox", "", **SETTINGS)
    assert torch.equal(started["samples"][:, :, :1], image)
    assert not torch.equal(guided["samples"], started["samples"])
    clip = conditioning.condition_frames(empty, torch.randn(1, 128, 2, 1, 2, generator=g), 2, 1.0)
    with pytest.raises(ValueError, match="holds frames after its first on the grid"):
        node.sample(transformer, t5, convert.core_to_latent(clip), "a red fox", "", **SETTINGS)


def test_the_stochastic_switch_samples_every_window_with_stochastic_steps(pack, tiny_models, t5, monkeypatch):
    transformer, _ = tiny_models
    module = importlib.import_module(f"{PACK_NAME}.nodes.long_video")
    (latent,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreEmptyLatentVideo"]().generate(
        width=64, height=32, frames=33, batch_size=1
    )
    (plain,) = module.LTXVCoreLongVideoSampler().sample(transformer, t5, latent, "a red fox", "", **SETTINGS)
    seen = []
    sample = module.generate_long_latent
    monkeypatch.setattr(module, "generate_long_latent", lambda *a, **k: seen.append(k["stochastic"]) or sample(*a, **k))
    node = module.LTXVCoreLongVideoSampler()
    (stochastic,) = node.sample(transformer, t5, latent, "a red fox", "", **SETTINGS, stochastic=True)
    (again,) = node.sample(transformer, t5, latent, "a red fox", "", **SETTINGS, stochastic=True)
    assert seen == [True, True] and torch.equal(stochastic["samples"], again["samples"])
    assert not torch.allclose(stochastic["samples"], plain["samples"], atol=1e-3)


def test_the_windows_are_sampled_with_the_checkpoints_schedule(pack, tiny_models, t5, monkeypatch):
    """A checkpoint whose metadata names its own schedule (the shipped demo model's fixed
    shift) is sampled with it, as the CLI's long videos are: the node hands the core the
    sigmas of that schedule, not the stock one's."""
    transformer, _ = tiny_models
    module = importlib.import_module(f"{PACK_NAME}.nodes.long_video")
    scheduler = importlib.import_module(f"{PACK_NAME}.ltx_core.sampling.scheduler")
    configs = importlib.import_module(f"{PACK_NAME}.ltx_core.models.configs")
    (latent,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreEmptyLatentVideo"]().generate(
        width=64, height=32, frames=33, batch_size=1
    )
    own = configs.SchedulerConfig(base_shift=1.4, max_shift=1.4)
    monkeypatch.setattr(transformer.model, "scheduler", own)
    seen = []
    sample = module.generate_long_latent
    monkeypatch.setattr(module, "generate_long_latent", lambda *a, **k: seen.append(a[4]) or sample(*a, **k))
    settings = {**SETTINGS, "steps": 4}  # two steps are 1, the terminal sigma and 0 on any shift
    module.LTXVCoreLongVideoSampler().sample(transformer, t5, latent, "a red fox", "", **settings)
    tokens = 3 * 1 * 2  # a window of 17 frames: 3 latent frames of 1 x 2
    assert torch.equal(seen[0], scheduler.flow_sigmas(4, tokens, own))
    assert not torch.equal(seen[0], scheduler.flow_sigmas(4, tokens))
