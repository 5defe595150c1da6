"""Conditioning both ways between the pack and ComfyUI's own LTX-Video text path, in-process
with the real ComfyUI modules (as tests/test_nodes.py): ComfyUI's CLIPLoader (type ltxv) +
CLIPTextEncode into the pack's samplers, and the pack's T5 Encode into ComfyUI's own LTXV
model and sampler. If these fail, graphs that mix the pack's nodes with ComfyUI's break or
attend to other prompt tokens than ComfyUI's own model does.

ComfyUI's encoder runs for real: its CLIPLoader path (`load_text_encoder_state_dicts`)
builds its T5 from its fixed T5-XXL config, which its `t5xxl_model_config` model option may
override; CLIPLoader itself passes no such option, so a tiny T5 file cannot go through the
server's CLIPLoader, and the server tests cover the other direction only.
"""

from __future__ import annotations

import sys

import pytest
import torch

from .fixtures_checkpoints import write_official_single_file
from .test_nodes import PACK_NAME, pack, tiny_models  # noqa: F401 (fixtures)

# ComfyUI's T5-XXL at a tiny width: ComfyUI tells T5-XXL by block 23's `wi_1` of 10240 rows,
# so depth and d_ff stay; its T5 has 32 relative-attention buckets and T5's 32128 ids, which
# its own tokenizer (comfy/text_encoders/t5_tokenizer) gives.
COMFY_TINY_T5 = dict(d_model=32, d_kv=8, d_ff=10240, num_layers=24, num_heads=4)
LONG_PROMPT = "a red fox jumps over the lazy dog in the snow, " * 20  # past ComfyUI's 128 tokens
SAMPLER = dict(
    seed=3, steps=2, cfg=3.0, frame_rate=25.0, dynamic_shift=True, base_shift=0.95, max_shift=2.05, terminal=0.1
)
CORE_LATENT = {"samples": torch.zeros(1, 128, 2, 1, 2)}  # as ComfyUI's EmptyLTXVLatentVideo gives


@pytest.fixture(scope="module")
def comfy_t5(pack):
    """ComfyUI's own LTXV text encoder and tokenizer, as its CLIPLoader (type ltxv) makes
    them, on seeded tiny T5 weights (a transformers T5 encoder's state dict)."""
    import comfy.sd
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(
        relative_attention_num_buckets=32,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        **COMFY_TINY_T5,
    )
    state = {k: v for k, v in T5EncoderModel(config).state_dict().items() if not k.startswith("encoder.embed_tokens")}
    options = {"t5xxl_model_config": COMFY_TINY_T5}
    return comfy.sd.load_text_encoder_state_dicts([state], clip_type=comfy.sd.CLIPType.LTXV, model_options=options)


@pytest.fixture(scope="module")
def comfy_text_encode(comfy_t5):
    """What ComfyUI's CLIPTextEncode node does with a text, once per text (callers copy
    before they change anything)."""
    done = {}

    def encode(text: str) -> list:
        if text not in done:
            done[text] = comfy_t5.encode_from_tokens_scheduled(comfy_t5.tokenize(text))
        return done[text]

    return encode


@pytest.fixture(scope="module")
def comfy_ltxv(pack, tmp_path_factory):
    """ComfyUI's own LTXV model (model_base.LTXV) from a tiny official-layout checkpoint,
    as its CheckpointLoaderSimple loads it."""
    import comfy.sd

    path = write_official_single_file(tmp_path_factory.mktemp("ckpt") / "ltxv-tiny.safetensors", "0.9.5")
    model, *_ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False)
    return model


@pytest.fixture(scope="module")
def pack_t5(pack, tiny_t5_folder):
    from ltx_core.models import text_encoder as core_text_encoder

    memory = sys.modules[f"{PACK_NAME}.nodes.memory"]
    encoder = core_text_encoder.load_text_encoder(tiny_t5_folder)
    return memory.LoadedT5(encoder, memory.patcher(encoder.model, "text_encoder", "cpu"))


def pack_encode(pack, t5, text: str, max_tokens: int = 128) -> list:
    return pack.NODE_CLASS_MAPPINGS["LTXVCoreT5Encode"]().encode(t5, text, max_tokens)[0]


def pack_sample(pack, transformer, positive: list, negative: list) -> torch.Tensor:
    sampler = pack.NODE_CLASS_MAPPINGS["LTXVCoreSampler"]()
    return sampler.sample(transformer, positive, negative, CORE_LATENT, **SAMPLER)[0]["samples"]


def comfy_sample(model, positive: list, negative: list) -> torch.Tensor:
    """ComfyUI's SamplerCustom on its own model: euler over three sigmas, cfg 3."""
    import comfy.sample
    import comfy.samplers

    latent = torch.zeros(1, 128, 2, 2, 2)
    noise = comfy.sample.prepare_noise(latent, 3)
    sampler = comfy.samplers.sampler_object("euler")
    sigmas = torch.tensor([1.0, 0.6, 0.0])
    return comfy.sample.sample_custom(
        model, noise, 3.0, sampler, sigmas, positive, negative, latent, disable_pbar=True, seed=3
    )


def with_embeds(conditioning: list, embeds: torch.Tensor) -> list:
    return [[embeds, dict(conditioning[0][1])]]


def pack_form(pack, embeds: torch.Tensor, real: torch.Tensor) -> list:
    """`embeds` and their mask of real tokens as the pack's T5 Encode hands them on."""
    convert = sys.modules[f"{PACK_NAME}.nodes.convert"]
    text_encoder = sys.modules[f"{PACK_NAME}.ltx_core.models.text_encoder"]
    return convert.embeddings_to_conditioning(text_encoder.TextEmbeddings(embeds=embeds, mask=real.bool()))


# ---------------------------------------------------------------- one form


def test_the_pack_t5_encode_gives_the_form_of_comfyuis_own_t5_encode(pack, comfy_text_encode, pack_t5):
    """ComfyUI's: embeddings (1, 128, D) float32, {"pooled_output": None, "attention_mask":
    (1, 128) long}, 1 on the prompt's tokens and </s>. The pack's T5 Encode gives the same
    (with its own flag for an empty prompt on top)."""
    convert = sys.modules[f"{PACK_NAME}.nodes.convert"]
    for text in ("a red fox", ""):
        [[comfy_embeds, comfy_extras]] = comfy_text_encode(text)
        [[embeds, extras]] = pack_encode(pack, pack_t5, text)
        assert set(comfy_extras) == {"pooled_output", "attention_mask"}
        assert set(extras) == {"pooled_output", "attention_mask", convert.PROMPT_IS_EMPTY}
        assert extras["pooled_output"] is comfy_extras["pooled_output"] is None
        for ours, theirs in ((embeds, comfy_embeds), (extras["attention_mask"], comfy_extras["attention_mask"])):
            assert (ours.dtype, ours.shape[:2], ours.device) == (theirs.dtype, theirs.shape[:2], theirs.device)
        for mask in (extras["attention_mask"], comfy_extras["attention_mask"]):
            real = int(mask.sum())
            assert mask[0, :real].eq(1).all() and mask[0, real:].eq(0).all(), "prompt and </s>, then padding"
        assert extras[convert.PROMPT_IS_EMPTY] == (text == "")
    assert comfy_text_encode("")[0][1]["attention_mask"].sum() == 1, "an empty prompt is </s> alone"


# ---------------------------------------------------------------- ComfyUI's encoder -> the pack's samplers


def test_comfyuis_t5_conditioning_samples_as_the_pack_own_of_the_same_embeddings(
    pack,
    tiny_models,
    comfy_text_encode,
):
    """A positive prompt past 128 tokens keeps all its tokens in ComfyUI (here 300 and more)
    while the negative has 128: the sampler takes both, and gives the latent of the pack's
    own form of the same embeddings and masks, both padded to one length."""
    transformer, _ = tiny_models
    positive, negative = comfy_text_encode(LONG_PROMPT), comfy_text_encode("blurry")
    long, short = positive[0][0].shape[1], negative[0][0].shape[1]
    assert long > 300 and short == 128
    padded = []
    for conditioning in (positive, negative):
        embeds, mask = conditioning[0][0], conditioning[0][1]["attention_mask"]
        missing = long - embeds.shape[1]
        padded.append(
            pack_form(
                pack,
                torch.cat([embeds, torch.zeros(1, missing, embeds.shape[2])], dim=1),
                torch.cat([mask, torch.zeros(1, missing, dtype=mask.dtype)], dim=1),
            )
        )
    from_comfy = pack_sample(pack, transformer, positive, negative)
    assert torch.equal(from_comfy, pack_sample(pack, transformer, *padded))
    assert not torch.equal(from_comfy, pack_sample(pack, transformer, negative, negative)), "the prompt counts"


def test_the_sampler_attends_to_the_prompt_tokens_comfyuis_own_ltxv_model_attends_to(
    pack,
    tiny_models,
    comfy_text_encode,
    comfy_ltxv,
):
    """ComfyUI's LTXV model never attends to the padding of ComfyUI's T5 conditioning but
    attends to </s>; so does the pack's sampler. Without a mask (which ComfyUI's LTXV model
    refuses) the pack's sampler attends to every token."""
    transformer, _ = tiny_models
    positive, negative = comfy_text_encode("a red fox"), comfy_text_encode("blurry")
    embeds, mask = positive[0][0], positive[0][1]["attention_mask"][0]
    end = int(mask.sum()) - 1  # </s>
    noise = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(5)) * 10
    at_padding = with_embeds(positive, torch.where(mask[None, :, None] == 0, noise, embeds))
    at_end = embeds.clone()
    at_end[:, end] = noise[:, end]
    samplers = {
        "the pack's sampler": lambda conditioning: pack_sample(pack, transformer, conditioning, negative),
        "ComfyUI's sampler": lambda conditioning: comfy_sample(comfy_ltxv, conditioning, negative),
    }
    for name, run in samplers.items():
        base = run(positive)
        assert torch.equal(run(at_padding), base), f"{name} attends to padding"
        assert not torch.equal(run(with_embeds(positive, at_end)), base), f"{name} skips </s>"
    unmasked = [[embeds, {"pooled_output": None}]]
    unmasked_at_padding = [[at_padding[0][0], {"pooled_output": None}]]
    pack_run = samplers["the pack's sampler"]
    assert not torch.equal(pack_run(unmasked_at_padding), pack_run(unmasked)), "no mask: every token is attended"


def test_a_float_attention_mask_is_refused_with_a_message(pack, tiny_models):
    """ComfyUI's LTXV model takes a float mask for an additive bias, not for 0/1 flags."""
    transformer, _ = tiny_models
    text = [[torch.zeros(1, 8, 32), {"attention_mask": torch.ones(1, 8)}]]
    with pytest.raises(ValueError, match="float attention_mask, .* additive attention bias"):
        pack_sample(pack, transformer, text, text)


# ---------------------------------------------------------------- the pack's encoder -> ComfyUI's sampler


def test_the_pack_t5_conditioning_samples_in_comfyuis_own_ltxv_model(pack, pack_t5, comfy_ltxv):
    """ComfyUI's SamplerCustom on its own LTXV model takes the pack's T5 Encode output and
    samples as from ComfyUI's own form of the same embeddings and masks."""
    positive, negative = pack_encode(pack, pack_t5, "a red fox"), pack_encode(pack, pack_t5, "")
    sampled = comfy_sample(comfy_ltxv, positive, negative)
    comfy_form = [
        [[c[0][0], {"pooled_output": None, "attention_mask": c[0][1]["attention_mask"].long()}]]
        for c in (positive, negative)
    ]
    assert sampled.shape == (1, 128, 2, 2, 2) and torch.isfinite(sampled).all()
    assert torch.equal(sampled, comfy_sample(comfy_ltxv, *comfy_form))
