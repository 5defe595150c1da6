"""Long videos in windows against diffusers' `LTXI2VLongMultiPromptPipeline`, fp32 on CPU:
three windows with an overlap, one prompt per segment of windows, the previous window's
tail injected at a fractional strength, AdaIN against the first window and the
crossfade at each seam, with and without CFG, from the same weights, embeddings, seed
and sigmas.

Both sides draw each window's noise from a CPU generator seeded `seed + window start`,
so the seed alone gives the same noise. diffusers encodes each window's prompt itself
(it takes no prompt embeddings); its `encode_prompt` is replaced by a lookup of fixed
embeddings, the ones ours gets. Its FlowMatchEulerDiscreteScheduler with explicit
sigmas ending at 0 takes plain Euler steps, which is what ours takes. If this fails, the
windows, the tail's tokens (their values, noise mask, RoPE times), the per-step
blending of those tokens, AdaIN or the crossfade differ from the reference.
"""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, LTXI2VLongMultiPromptPipeline

from ltx_core.long_video import FirstFrame, PromptSegment, generate_long_latent
from ltx_core.models.configs import TINY_TRANSFORMER
from ltx_core.models.text_encoder import TextEmbeddings

from .conftest import diffusers_transformer, ours_from_diffusers_transformer

pytestmark = [
    pytest.mark.parity,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

ATOL = 1e-4
HEIGHT, WIDTH, FRAME_RATE, SEED = 2, 3, 2, 5  # latent rows, columns; a low rate: RoPE tells times apart
SIGMAS = [1.0, 0.7, 0.4, 0.0]


@pytest.fixture(scope="module")
def models():
    """(diffusers pipeline, our transformer) with the same weights (causal time positions,
    which the reference always uses)."""
    reference = diffusers_transformer(TINY_TRANSFORMER)
    pipe = LTXI2VLongMultiPromptPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        transformer=reference,
    )
    return pipe, ours_from_diffusers_transformer(reference, TINY_TRANSFORMER)


@pytest.fixture(scope="module")
def prompts(texts):
    """{"a", "b", "neg"} -> embeddings: the two window prompts and the negative."""
    g = torch.Generator().manual_seed(12)
    other = TextEmbeddings(torch.randn(1, 8, 32, generator=g), torch.tensor([[1] * 7 + [0]]).bool())
    return {"a": texts[0], "b": other, "neg": texts[1]}


def reference_latent(pipe, prompts, frames, window, overlap, guidance, monkeypatch, **kwargs):
    def encode_prompt(prompt, negative_prompt=None, **_):
        text, negative = prompts[prompt[0]], prompts[negative_prompt]
        return text.embeds, text.mask, negative.embeds, negative.mask

    monkeypatch.setattr(pipe, "encode_prompt", encode_prompt)
    return pipe(
        prompt="a",
        negative_prompt="neg",
        prompt_segments=[
            {"start_window": 0, "end_window": 0, "text": "a"},
            {"start_window": 1, "end_window": 2, "text": "b"},
        ],
        height=HEIGHT * 32,
        width=WIDTH * 32,
        num_frames=(frames - 1) * 8 + 1,
        frame_rate=FRAME_RATE,
        guidance_scale=guidance,
        sigmas=SIGMAS,
        seed=SEED,
        temporal_tile_size=window * 8,
        temporal_overlap=overlap * 8,
        temporal_overlap_cond_strength=0.6,
        adain_factor=0.3,
        output_type="latent",
        return_dict=False,
        **kwargs,
    )[0]


@pytest.mark.parametrize(
    "frames, window, overlap, guidance",
    [(7, 3, 1, 1.0), (9, 5, 3, 1.0), (8, 5, 3, 3.0), (10, 6, 4, 1.0)],
    ids=["overlap-1", "overlap-3", "short-last-window-cfg", "overlap-4"],
)
def test_long_latent_matches_diffusers(models, prompts, frames, window, overlap, guidance, monkeypatch):
    pipe, ours = models
    with torch.no_grad():
        expected = reference_latent(pipe, prompts, frames, window, overlap, guidance, monkeypatch)
    segments = [PromptSegment(0, 0, prompts["a"]), PromptSegment(1, 2, prompts["b"])]
    got = generate_long_latent(
        ours,
        (1, 128, frames, HEIGHT, WIDTH),
        segments,
        prompts["neg"],
        torch.tensor(SIGMAS),
        guidance,
        FRAME_RATE,
        window=window,
        overlap=overlap,
        overlap_strength=0.6,
        adain_factor=0.3,
        seed=SEED,
    )
    assert got.shape == expected.shape == (1, 128, frames, HEIGHT, WIDTH)
    print(f"max abs error {(got - expected).abs().max().item():.2e}")
    torch.testing.assert_close(got, expected.float(), atol=ATOL, rtol=0)


def test_overlap_of_two_blends_the_seam_frame_the_reference_keeps_twice(models, prompts, monkeypatch):
    """At overlap 2 the reference crossfades over max(2 - 1, 1) = 1 frame, which its
    `linear_overlap_fuse` takes as "append": both versions of each seam's frame stay and
    its latent is a frame per seam longer than the clip. Ours blends the two half and
    half; everything else (the next window's tail, AdaIN) is the same, so ours is the
    reference with each seam's pair averaged."""
    pipe, ours = models
    frames, window, overlap = 8, 4, 2  # windows [0, 4), [2, 6), [4, 8)
    with torch.no_grad():
        expected = reference_latent(pipe, prompts, frames, window, overlap, 1.0, monkeypatch)
    assert expected.shape[2] == frames + 2  # the reference's two duplicated seam frames
    seams = [3, 6]  # the reference's layout: 0-3 | 3'-5 | 5'-7 (primes: the new window's version)
    merged = [expected[:, :, :3]]
    for seam, following in zip(seams, seams[1:] + [None]):
        merged.append(0.5 * expected[:, :, seam : seam + 1] + 0.5 * expected[:, :, seam + 1 : seam + 2])
        merged.append(expected[:, :, seam + 2 : following])
    segments = [PromptSegment(0, 0, prompts["a"]), PromptSegment(1, 2, prompts["b"])]
    got = generate_long_latent(
        ours,
        (1, 128, frames, HEIGHT, WIDTH),
        segments,
        prompts["neg"],
        torch.tensor(SIGMAS),
        1.0,
        FRAME_RATE,
        window=window,
        overlap=overlap,
        overlap_strength=0.6,
        adain_factor=0.3,
        seed=SEED,
    )
    torch.testing.assert_close(got, torch.cat(merged, dim=2).float(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("strength, guide_strength", [(0.8, 1.0), (1.0, 0.7), (0.6, 0.0)])
def test_a_first_frame_image_conditions_the_clip_as_in_diffusers(
    models, vae_pair, prompts, strength, guide_strength, monkeypatch
):
    """`cond_image`: the reference encodes the image with its VAE (the mode) and
    normalizes it; that latent (caught on its way out of `_normalize_latents`, so the
    VAE's own parity, tested apart, is not mixed in) is our `FirstFrame`. It is the first
    window's frame 0 at `cond_strength` and a guide token block of every window at
    `negative_index_strength` (0: none)."""
    reference = LTXI2VLongMultiPromptPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False),
        vae=vae_pair[0],
        text_encoder=None,
        tokenizer=None,
        transformer=models[0].transformer,
    )
    caught = []
    normalize = reference._normalize_latents
    monkeypatch.setattr(
        reference, "_normalize_latents", lambda *a, **k: caught.append(normalize(*a, **k)) or caught[-1]
    )
    image = torch.rand(1, 3, HEIGHT * 32, WIDTH * 32, generator=torch.Generator().manual_seed(4))
    frames, window, overlap = 9, 5, 3
    with torch.no_grad():
        expected = reference_latent(
            reference,
            prompts,
            frames,
            window,
            overlap,
            1.0,
            monkeypatch,
            cond_image=image,
            cond_strength=strength,
            negative_index_strength=guide_strength,
        )
    (image_latent,) = caught
    segments = [PromptSegment(0, 0, prompts["a"]), PromptSegment(1, 2, prompts["b"])]
    got = generate_long_latent(
        models[1],
        (1, 128, frames, HEIGHT, WIDTH),
        segments,
        prompts["neg"],
        torch.tensor(SIGMAS),
        1.0,
        FRAME_RATE,
        window=window,
        overlap=overlap,
        overlap_strength=0.6,
        adain_factor=0.3,
        seed=SEED,
        first_frame=FirstFrame(image_latent, strength, guide_strength),
    )
    print(f"max abs error {(got - expected).abs().max().item():.2e}")
    torch.testing.assert_close(got, expected.float(), atol=ATOL, rtol=0)
