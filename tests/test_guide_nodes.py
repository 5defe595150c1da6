"""The keyframe / guide node and the sampler with STG and keyframes, in-process with the
real ComfyUI modules (as tests/test_nodes.py). If these fail, first + last frame and
video-extension graphs lose their keyframes or refuse good input."""

from __future__ import annotations

import importlib

import pytest
import torch

from .test_nodes import PACK_NAME, pack, tiny_models  # noqa: F401 (fixtures)

TEXT = [
    [
        torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1)),
        {"attention_mask": torch.ones(1, 8, dtype=torch.bool)},
    ]
]
SAMPLER = dict(
    seed=3, steps=2, cfg=3.0, frame_rate=25.0, dynamic_shift=True, base_shift=0.95, max_shift=2.05, terminal=0.1
)


@pytest.fixture(scope="module")
def guide(pack):
    return importlib.import_module(f"{PACK_NAME}.nodes.guide")


KEYFRAMES_KEY = "ltxv_core_keyframes"  # the pack's key in the LATENT dict (nodes/convert.py)


@pytest.fixture
def empty(pack):
    (latent,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreEmptyLatentVideo"]().generate(
        width=64, height=32, frames=17, batch_size=1
    )
    return latent


def images(count: int, seed: int = 2, height: int = 32, width: int = 64) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def test_first_and_last_frame_guides_go_on_the_grid_and_into_keyframe_tokens(guide, tiny_models, empty):
    _, vae = tiny_models
    node = guide.LTXVCoreAddGuide()
    (first,) = node.add(vae, empty, images(1, 1), 0, 1.0)
    (both,) = node.add(vae, first, images(1, 2), -1, 0.9)
    assert (both["noise_mask"][:, :, 0] == 0).all() and (both["noise_mask"][:, :, 1:] == 1).all()
    [last] = both[KEYFRAMES_KEY]
    assert (last.frame_index, last.strength, tuple(last.samples.shape)) == (16, 0.9, (1, 128, 1, 1, 2))


def test_a_clip_at_minus_1_ends_on_the_last_frame(guide, tiny_models, empty):
    _, vae = tiny_models
    (latent,) = guide.LTXVCoreAddGuide().add(vae, empty, images(9), -1, 1.0)
    [prefix] = latent[KEYFRAMES_KEY]
    assert prefix.frame_index == 8 and prefix.samples.shape[2] == 2


def test_the_guided_sampler_uses_the_keyframes_and_returns_the_video_latent_only(pack, guide, tiny_models, empty):
    transformer, vae = tiny_models
    (guided,) = guide.LTXVCoreAddGuide().add(vae, empty, images(1), 8, 1.0)
    sampler = guide.LTXVCoreGuidedSampler()
    stg = dict(stg_scale=0.0, stg_blocks="1", stg_mode="attention_values", stg_rescale=0.7, strength_rule="scaled")
    (with_keyframe,) = sampler.sample(transformer, TEXT, TEXT, guided, **SAMPLER, **stg)
    (without,) = sampler.sample(transformer, TEXT, TEXT, empty, **SAMPLER, **stg)
    (plain,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreSampler"]().sample(transformer, TEXT, TEXT, empty, **SAMPLER)
    assert with_keyframe["samples"].shape == empty["samples"].shape and KEYFRAMES_KEY not in with_keyframe
    assert torch.equal(without["samples"], plain["samples"]), "STG scale 0 without keyframes is the plain sampler"
    assert (with_keyframe["samples"] - plain["samples"]).abs().max() > 1e-4
    (perturbed,) = sampler.sample(transformer, TEXT, TEXT, empty, **SAMPLER, **{**stg, "stg_scale": 1.0})
    assert (perturbed["samples"] - plain["samples"]).abs().max() > 1e-4


def test_the_plain_sampler_uses_the_keyframes_a_latent_carries_as_the_guided_one_at_stg_0(
    pack, guide, tiny_models, empty
):
    transformer, vae = tiny_models
    (guided,) = guide.LTXVCoreAddGuide().add(vae, empty, images(1), -1, 1.0)
    plain = pack.NODE_CLASS_MAPPINGS["LTXVCoreSampler"]()
    stg = dict(stg_scale=0.0, stg_blocks="", stg_mode="attention_values", stg_rescale=0.7, strength_rule="scaled")
    (with_keyframe,) = plain.sample(transformer, TEXT, TEXT, guided, **SAMPLER)
    (reference,) = guide.LTXVCoreGuidedSampler().sample(transformer, TEXT, TEXT, guided, **SAMPLER, **stg)
    (without,) = plain.sample(transformer, TEXT, TEXT, empty, **SAMPLER)
    assert torch.equal(with_keyframe["samples"], reference["samples"])
    assert (with_keyframe["samples"] - without["samples"]).abs().max() > 1e-4, "the keyframe was not dropped"
    assert KEYFRAMES_KEY not in with_keyframe


def test_conditioning_the_first_frame_after_a_guide_keeps_its_keyframes(pack, guide, tiny_models, empty):
    _, vae = tiny_models
    (guided,) = guide.LTXVCoreAddGuide().add(vae, empty, images(1), -1, 0.8)
    frame = {"samples": torch.randn(1, 128, 1, 1, 2, generator=torch.Generator().manual_seed(4))}
    (both,) = pack.NODE_CLASS_MAPPINGS["LTXVCoreConditionFirstFrame"]().condition(guided, frame, strength=1.0)
    [last] = both[KEYFRAMES_KEY]
    assert (last.frame_index, last.strength) == (16, 0.8)
    assert torch.equal(last.samples, guided[KEYFRAMES_KEY][0].samples)
    assert (both["noise_mask"][:, :, 0] == 0).all()


def test_frames_of_another_size_are_fitted_to_the_video(guide, tiny_models, empty):
    _, vae = tiny_models
    with pytest.warns(UserWarning, match="center-cropped"):
        (latent,) = guide.LTXVCoreAddGuide().add(vae, empty, images(1, height=48, width=48), 8, 1.0)
    assert latent[KEYFRAMES_KEY][0].samples.shape == (1, 128, 1, 1, 2)


@pytest.mark.parametrize(
    ("count", "frame_index", "strength", "message"),
    [
        (1, 17, 1.0, r"conditioning frame index 17 with 1 frame\(s\) reaches past the clip of 17 frames"),
        (4, 0, 1.0, r"conditioning clip frame count 4 is not 8k \+ 1"),
        (9, 4, 1.0, r"conditioning clip at frame 4 does not start a latent frame"),
        (1, 8, 1.5, r"conditioning strength 1.5 is outside \[0, 1\]"),
        (0, 0, 1.0, r"conditioning item \(0, 32, 64, 3\) is not an image or a clip"),
        (
            1,
            -18,
            1.0,
            r"frame_index -18 puts the 1 conditioning frame\(s\) before the first frame of the 17-frame video; .* down to -17",
        ),
        (9, -10, 1.0, r"frame_index -10 puts the 9 conditioning frame\(s\) before .* down to -9"),
    ],
)
def test_bad_guides_are_refused_with_what_is_allowed(guide, tiny_models, empty, count, frame_index, strength, message):
    _, vae = tiny_models
    with pytest.raises(ValueError, match=message):
        guide.LTXVCoreAddGuide().add(vae, empty, images(count), frame_index, strength)


@pytest.mark.parametrize("text", ["a", "1.5", "19;x"])
def test_stg_blocks_that_are_not_indices_are_refused(guide, text):
    with pytest.raises(ValueError, match="stg_blocks .* must be block indices separated by commas"):
        guide.parse_blocks(text)


def test_stg_blocks_parse_as_a_comma_separated_list(guide):
    assert guide.parse_blocks("18, 19") == (18, 19) and guide.parse_blocks("") == ()


def test_the_stochastic_switch_takes_stochastic_steps_unless_a_release_guidance_says_otherwise(
    pack, guide, tiny_models, empty
):
    """The samplers' `stochastic` switch: Lightricks' stochastic steps, seeded; the plain and
    the guided sampler agree; a release schedule's guidance input decides in its place."""
    transformer, _ = tiny_models
    sampling = importlib.import_module(f"{PACK_NAME}.nodes.sampling")
    core_guidance = importlib.import_module(f"{PACK_NAME}.ltx_core.sampling.guidance")
    plain_node, guided_node = pack.NODE_CLASS_MAPPINGS["LTXVCoreSampler"](), guide.LTXVCoreGuidedSampler()
    stg = dict(stg_scale=0.0, stg_blocks="", stg_mode="attention_values", stg_rescale=0.7, strength_rule="scaled")
    (plain,) = plain_node.sample(transformer, TEXT, TEXT, empty, **SAMPLER)
    (stochastic,) = plain_node.sample(transformer, TEXT, TEXT, empty, **SAMPLER, stochastic=True)
    (again,) = guided_node.sample(transformer, TEXT, TEXT, empty, **SAMPLER, **stg, stochastic=True)
    assert torch.equal(stochastic["samples"], again["samples"])
    assert (stochastic["samples"] - plain["samples"]).abs().max() > 1e-3
    release = sampling.PassGuidance(core_guidance.Guidance(cfg_scale=3.0), stochastic=False)
    (overridden,) = guided_node.sample(
        transformer, TEXT, TEXT, empty, **SAMPLER, **stg, guidance=release, stochastic=True
    )
    assert torch.equal(overridden["samples"], plain["samples"])
