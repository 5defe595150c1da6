"""Bad inputs of /work/shared/BAD_INPUTS.md that no other test file pinned (the table
of which test covers which item is docs/BAD_INPUTS_COVERAGE.md): a 16-channel latent
into the sampler, a 4-channel one into the decoder (items 26), and inputs made on
another device or in another dtype than the model's (item 30)."""

from __future__ import annotations

import pytest
import torch

from ltx_core.conditioning import ConditionedLatent
from ltx_core.errors import SettingsError
from ltx_core.denoise import denoise
from ltx_core.pipeline import decode_frames
from ltx_core.scheduler import flow_sigmas
from ltx_core.text_encoder import TextEmbeddings

CAPTION_WIDTH = 32  # the tiny transformer's caption projection (tests/conftest.py)


def tiny_text(generator: torch.Generator) -> TextEmbeddings:
    """Embeddings that fp16 holds exactly, so a half-precision copy carries the same numbers."""
    embeds = torch.randn(1, 4, CAPTION_WIDTH, generator=generator).half().float()
    return TextEmbeddings(embeds, torch.ones(1, 4, dtype=torch.bool))


def test_a_16_channel_latent_of_another_model_is_refused_by_the_sampler(tiny_transformer):
    text = tiny_text(torch.Generator().manual_seed(0))
    latent = ConditionedLatent(torch.zeros(1, 16, 2, 1, 2))
    with pytest.raises(SettingsError, match="latent has 16 channels; this LTX-Video transformer takes 128"):
        denoise(tiny_transformer, latent, text, None, flow_sigmas(2, 4), 1.0, 25.0, torch.Generator())


def test_a_4_channel_latent_of_an_image_model_is_refused_by_the_decoder(tiny_vae):
    with pytest.raises(SettingsError, match=r"latent of shape \(1, 4, 2, 1, 1\) is not an LTX-Video latent"):
        decode_frames(tiny_vae, torch.zeros(1, 4, 2, 1, 1), generator=torch.Generator())


def test_inputs_made_elsewhere_are_moved_to_the_models_device_and_dtype(tiny_transformer, tiny_vae):
    """Item 30 is not an error: `denoise` and `decode_frames` put the latent (keyframes
    included) and the text on the model's device and dtype with one `.to(device=, dtype=)`
    each. The CPU test machine has no second device, so inputs in another dtype (a
    float64 latent, fp16 text, as another node or device may hand them) go through the
    same calls; the numbers must be those of inputs made in the model's own dtype."""
    text = tiny_text(torch.Generator().manual_seed(0))
    half_text = TextEmbeddings(text.embeds.half(), text.mask)
    samples = torch.randn(1, 128, 2, 1, 2, generator=torch.Generator().manual_seed(1))
    run = lambda latent, t: denoise(  # noqa: E731
        tiny_transformer, ConditionedLatent(latent), t, t, flow_sigmas(2, 4), 3.0, 25.0,
        torch.Generator().manual_seed(2), device=torch.device("cpu"),
    )  # fmt: skip
    own = run(samples, text)
    elsewhere = run(samples.double(), half_text)
    assert elsewhere.samples.dtype == torch.float32 and elsewhere.samples.device == own.samples.device
    assert torch.equal(elsewhere.samples, own.samples)

    decode = lambda latent: decode_frames(tiny_vae, latent, generator=torch.Generator().manual_seed(3))  # noqa: E731
    assert torch.equal(decode(own.samples.double()), decode(own.samples))
