"""Conditioning on any frames against diffusers' `LTXConditionPipeline`, fp32 on CPU: a
keyframe in the middle, first + last frame, multi-frame clips (at frame 0: video
extension; in the middle: prefix tokens + grid frames), and video-to-video with a
denoise strength, from the same noise and embeddings.

Tiny diffusers models with seeded random weights, mapped into ours through
`ltx_core.checkpoint.keymaps`; the causal time fix (`TINY_TRANSFORMER`, the 0.9.5+ setting), which
this pipeline always applies. diffusers draws the video's noise first, then each
item's posterior (and, away from frame 0, the noise its extra tokens start from, which
strength 1 discards); our `prepare_latent` draws the posteriors, `denoise` the noise, so
the two stages get generators at those positions. No re-noising of the conditioning
tokens (`image_cond_noise_scale=0`), latents only (decoding is parity-tested apart).
If this fails, keyframe tokens, their RoPE coordinates, their placement on the latent
grid or the video-to-video start differ from the reference.
"""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.pipeline import condition_on_items, prepare_latent
from ltx_core.sampling.conditioning import ConditionedLatent, ConditioningItem
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.scheduler import denoise_sigmas, explicit_sigmas

from .conftest import diffusers_transformer, ours_from_diffusers_transformer

pytestmark = [
    pytest.mark.parity,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # numpy 2 copy= inside diffusers' scheduler
]

ATOL = 1e-4
WIDTH, HEIGHT, FRAMES, FRAME_RATE, STEPS, SEED, GUIDANCE = 64, 96, 25, 2, 3, 7, 3.0
LATENT_SHAPE = (1, 128, (FRAMES - 1) // 8 + 1, HEIGHT // 32, WIDTH // 32)


@pytest.fixture(scope="module")
def models(vae_pair):
    """(diffusers LTXConditionPipeline, our transformer, our VAE), the same weights."""
    reference = diffusers_transformer(TINY_TRANSFORMER)
    pipe = LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False),
        vae=vae_pair[0],
        text_encoder=None,
        tokenizer=None,
        transformer=reference,
    )
    return pipe, ours_from_diffusers_transformer(reference, TINY_TRANSFORMER), vae_pair[1]


def frames(count: int, seed: int) -> torch.Tensor:
    """A clip (count, 3, H, W) in [0, 1], diffusers' layout."""
    return torch.rand(count, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def reference_latent(pipe, texts, conditions, **kwargs) -> torch.Tensor:
    prompt, negative = texts
    return pipe(
        conditions=conditions,
        prompt_embeds=prompt.embeds,
        prompt_attention_mask=prompt.mask,
        negative_prompt_embeds=negative.embeds,
        negative_prompt_attention_mask=negative.mask,
        width=WIDTH,
        height=HEIGHT,
        num_frames=FRAMES,
        frame_rate=FRAME_RATE,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        image_cond_noise_scale=0.0,
        generator=torch.Generator().manual_seed(SEED),
        output_type="latent",
        return_dict=False,
        **kwargs,
    )[0]


def our_items(conditions) -> list[ConditioningItem]:
    items = []
    for c in conditions:
        clip = c.image[None] if c.image is not None else c.video  # (F, 3, H, W)
        items.append(ConditioningItem(clip.permute(0, 2, 3, 1), c.frame_index, c.strength))
    return items


def our_latent(models, texts, conditions, source_latent=None, denoise_strength=1.0) -> torch.Tensor:
    """Our stages; `strength_rule="held"` is the reference's rule for fractional strengths."""
    pipe, transformer, vae = models
    posteriors = torch.Generator().manual_seed(SEED)
    torch.randn(LATENT_SHAPE, generator=posteriors)  # where diffusers draws the video's noise
    if source_latent is None:
        latent = prepare_latent(vae, FRAMES, HEIGHT, WIDTH, generator=posteriors, conditions=our_items(conditions))
    else:
        start = ConditionedLatent(source_latent, start=source_latent)  # what the video starts from
        latent = condition_on_items(vae, start, our_items(conditions), posteriors)
    sigmas = denoise_sigmas(explicit_sigmas(pipe.scheduler.sigmas.tolist()), denoise_strength)
    prompt, negative = texts
    result = denoise(
        transformer,
        latent,
        prompt,
        negative,
        sigmas,
        GUIDANCE,
        FRAME_RATE,
        torch.Generator().manual_seed(SEED),
        start_sigma=float(sigmas[0]),
        strength_rule="held",
    )
    return result.samples


def assert_matches(ours, theirs):
    assert theirs.shape == LATENT_SHAPE
    assert theirs.abs().max() > 0.1, "a vacuous run would match anything"
    assert (ours - theirs).abs().max() <= ATOL


CASES = {
    "keyframe in the middle (frame 12, not a latent frame's start)": [
        LTXVideoCondition(image=frames(1, 1)[0], frame_index=12)
    ],
    "first and last frame": [
        LTXVideoCondition(image=frames(1, 1)[0], frame_index=0),
        LTXVideoCondition(image=frames(1, 2)[0], frame_index=FRAMES - 1),
    ],
    "video extension: a 17-frame clip at frame 0": [LTXVideoCondition(video=frames(17, 3), frame_index=0)],
    "a 17-frame clip at frame 8: two prefix latent frames as tokens, one on the grid": [
        LTXVideoCondition(video=frames(17, 3), frame_index=8)
    ],
    "a first frame at strength 0.5 and a 9-frame clip at the end": [
        LTXVideoCondition(image=frames(1, 1)[0], frame_index=0, strength=0.5),
        LTXVideoCondition(video=frames(9, 4), frame_index=16),
    ],
}


@pytest.mark.parametrize("conditions", CASES.values(), ids=CASES.keys())
@torch.no_grad()
def test_conditioned_generation_matches_ltx_condition_pipeline(models, texts, conditions):
    """Fractional strengths: held until the schedule passes them, as diffusers does
    (`strength_rule="held"`); only at frame 0, where both start from the same noise."""
    theirs = reference_latent(models[0], texts, conditions)
    assert_matches(our_latent(models, texts, conditions), theirs)


@pytest.mark.parametrize("denoise_strength", [0.7, 0.4])
@torch.no_grad()
def test_video_to_video_with_a_denoise_strength_matches_ltx_condition_pipeline(models, texts, denoise_strength):
    """The source clip's latent noised to the first kept sigma (diffusers' `latents` +
    `denoise_strength`), with a clean first frame on top."""
    source = torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(21))
    conditions = [LTXVideoCondition(image=frames(1, 1)[0], frame_index=0)]
    theirs = reference_latent(models[0], texts, conditions, latents=source, denoise_strength=denoise_strength)
    ours = our_latent(models, texts, conditions, source_latent=source, denoise_strength=denoise_strength)
    assert_matches(ours, theirs)
    full = reference_latent(models[0], texts, conditions)
    generated = slice(1, None)  # latent frame 0 is the clean first frame in both
    distance = lambda latent: (latent - source)[:, :, generated].abs().mean()
    assert distance(theirs) < distance(full), "a partial denoise stays nearer the source than a full one"


@torch.no_grad()
def test_video_to_video_with_fractional_conditioning_matches_ltx_condition_pipeline(models, texts):
    """Below sigma 1 the reference noises the source first and then blends each conditioned
    token towards its condition by the strength, and lerps the extra tokens from pure noise
    (what the official second pass of a multi-scale run does too): a first frame at 0.6 takes
    0.6 of its clean value over the noised source, not the first sigma times 0.4 of noise over
    its clean value. (The extra tokens' level, 1 - strength whatever the sigma, is checked in
    test_conditioning: here their noise would come from another draw than the reference's.)"""
    source = torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(22))
    conditions = [
        LTXVideoCondition(image=frames(1, 1)[0], frame_index=0, strength=0.6),
        LTXVideoCondition(image=frames(1, 2)[0], frame_index=12),
    ]
    theirs = reference_latent(models[0], texts, conditions, latents=source, denoise_strength=0.7)
    ours = our_latent(models, texts, conditions, source_latent=source, denoise_strength=0.7)
    assert_matches(ours, theirs)
