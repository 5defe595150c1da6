"""Our loader + `encode_prompt` against transformers' own T5 and diffusers' LTXPipeline
prompt encoding; if this fails, the transformer sees other text embeddings than the
reference pipelines give it."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import LTXPipeline
from transformers import T5EncoderModel, T5Tokenizer

from ltx_core.models.text_encoder import encode_prompt, load_text_encoder

pytestmark = pytest.mark.parity

ATOL = 1e-6

PROMPTS = ["a red fox jumps over the lazy dog", "waves crash on a rocky shore", ""]


def diffusers_prompt_embeds(folder, prompts, max_tokens):
    """LTXPipeline._get_t5_prompt_embeds on transformers' own T5 loaded from `folder`."""
    pipe = SimpleNamespace(
        tokenizer=T5Tokenizer.from_pretrained(folder),
        text_encoder=T5EncoderModel.from_pretrained(folder).eval(),
    )
    with torch.no_grad():
        return LTXPipeline._get_t5_prompt_embeds(
            pipe, prompts, max_sequence_length=max_tokens, device=torch.device("cpu"), dtype=torch.float32
        )


@pytest.mark.parametrize("max_tokens", [32, 128])
def test_folder_loaded_encoder_matches_diffusers_prompt_embeds(tiny_t5_folder, max_tokens):
    theirs, their_mask = diffusers_prompt_embeds(tiny_t5_folder, PROMPTS, max_tokens)
    ours = encode_prompt(load_text_encoder(tiny_t5_folder), PROMPTS, max_tokens, allow_empty=True)
    assert torch.equal(ours.mask, their_mask)
    torch.testing.assert_close(ours.embeds, theirs, atol=ATOL, rtol=0)


def test_single_file_encoder_with_tokenizer_file_matches_diffusers_prompt_embeds(tiny_t5_folder):
    """The published T5-XXL single file has no config: ours comes from tensor shapes."""
    theirs, their_mask = diffusers_prompt_embeds(tiny_t5_folder, PROMPTS, 64)
    encoder = load_text_encoder(tiny_t5_folder / "model.safetensors", tiny_t5_folder / "spiece.model")
    ours = encode_prompt(encoder, PROMPTS, 64, allow_empty=True)
    assert torch.equal(ours.mask, their_mask)
    torch.testing.assert_close(ours.embeds, theirs, atol=ATOL, rtol=0)


def test_truncated_prompt_matches_diffusers_truncation(tiny_t5_folder):
    long_prompt = " ".join(PROMPTS[:2] * 4)
    theirs, their_mask = diffusers_prompt_embeds(tiny_t5_folder, [long_prompt], 16)
    with pytest.warns(UserWarning, match="were cut"):
        ours = encode_prompt(load_text_encoder(tiny_t5_folder), [long_prompt], 16)
    assert torch.equal(ours.mask, their_mask)
    torch.testing.assert_close(ours.embeds, theirs, atol=ATOL, rtol=0)
