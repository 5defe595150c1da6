"""The core's T5 (`ltx_core.models.t5`), its tokenizer (`ltx_core.models.t5_tokenizer`) and
`encode_prompt` against transformers' T5EncoderModel and T5Tokenizer and diffusers'
LTXPipeline prompt encoding; if this fails, the transformer sees other text embeddings
than the reference pipelines give it."""

import dataclasses
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import sentencepiece
import torch
from diffusers import LTXPipeline
from transformers import T5Config as ReferenceConfig, T5EncoderModel as ReferenceT5, T5Tokenizer, T5TokenizerFast
from transformers.models.t5.modeling_t5 import T5Attention

from ltx_core.models.t5 import T5Config, T5EncoderModel, relative_position_bucket
from ltx_core.models.text_encoder import encode_prompt, load_text_encoder, load_tokenizer, unreadable_words

from ..test_text_encoder import COMFY_T5_TOKENIZER

pytestmark = pytest.mark.parity

ATOL = 1e-6  # fp32 embeddings through the whole prompt path
T5_ATOL = 1e-5  # fp32 encoder outputs
# Half precision: on the CPU both sides run the same kernels in the same order and agree
# bit for bit; the tolerance leaves room for other kernels while staying far below the
# dtype's own error against fp32 (about 1e-2 for fp16, 5e-2 for bf16 on these models).
HALF_TOLERANCE = {torch.float16: {"atol": 1e-3, "rtol": 1e-3}, torch.bfloat16: {"atol": 1e-2, "rtol": 1e-2}}

PROMPTS = ["a red fox jumps over the lazy dog", "waves crash on a rocky shore", ""]
REPO = Path(__file__).resolve().parents[2]
SHIPPED_T5 = REPO / "ltx_core" / "assets" / "t5-tiny"


def diffusers_prompt_embeds(folder, prompts, max_tokens):
    """LTXPipeline._get_t5_prompt_embeds on transformers' own T5 loaded from `folder`."""
    pipe = SimpleNamespace(
        tokenizer=T5Tokenizer.from_pretrained(folder),
        text_encoder=ReferenceT5.from_pretrained(folder).eval(),
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


def test_the_shipped_encoder_matches_transformers_loading_it():
    """The demo's own T5 folder, loaded by both, on the demo prompt."""
    prompt = ["A red circle slides slowly to the left over a dark blue background."]
    theirs, their_mask = diffusers_prompt_embeds(SHIPPED_T5, prompt, 128)
    ours = encode_prompt(load_text_encoder(SHIPPED_T5), prompt, 128)
    assert torch.equal(ours.mask, their_mask)
    torch.testing.assert_close(ours.embeds, theirs, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- the encoder alone

# Small T5s: v1.1 (gated-gelu) and the original (relu), d_kv apart from d_model / heads,
# bucket counts and distances that put offsets in the exact, log-spaced and last buckets.
CONFIGS = {
    "v1.1": T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                     relative_attention_num_buckets=8, relative_attention_max_distance=12,
                     feed_forward_proj="gated-gelu"),
    "v1.1 wide heads": T5Config(vocab_size=64, d_model=24, d_kv=10, d_ff=40, num_layers=3, num_heads=3,
                                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-5),
    "original relu": T5Config(vocab_size=80, d_model=16, d_kv=4, d_ff=64, num_layers=1, num_heads=4,
                              relative_attention_num_buckets=16, relative_attention_max_distance=20,
                              feed_forward_proj="relu"),
}  # fmt: skip


def reference_pair(config: T5Config, seed: int = 0) -> tuple[ReferenceT5, T5EncoderModel]:
    """transformers' T5 encoder with seeded random weights (norm scales around 1), and ours
    holding the same weights, strictly."""
    torch.manual_seed(seed)
    reference = ReferenceT5(
        ReferenceConfig(**dataclasses.asdict(config), is_encoder_decoder=False, use_cache=False, dropout_rate=0.0)
    ).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if "layer_norm" in name:
                parameter.uniform_(0.5, 1.5)
    ours = T5EncoderModel(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def ids_and_mask(config: T5Config, batch: int = 3, length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids, and a mask with a full row, a half row and a row of 5 tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length // 2 :] = 0
    mask[2, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("masked", [False, True])
def test_our_t5_matches_transformers_in_fp32(name, masked):
    reference, ours = reference_pair(CONFIGS[name])
    ids, mask = ids_and_mask(CONFIGS[name])
    mask = mask if masked else None
    with torch.no_grad():
        theirs = reference(ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask), theirs, atol=T5_ATOL, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_our_t5_matches_transformers_in_half_precision(name, dtype):
    reference, ours = reference_pair(CONFIGS[name])
    reference.to(dtype)
    ours.to(dtype)
    ids, mask = ids_and_mask(CONFIGS[name])
    with torch.no_grad():
        theirs = reference(ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask), theirs, **HALF_TOLERANCE[dtype])


def test_fp16_overflow_is_clamped_as_transformers_clamps_it():
    """Feed-forward outputs beyond fp16's range: both clamp the residual stream to it
    (a little inside once it held an infinity) instead of carrying inf into NaN."""
    reference, ours = reference_pair(CONFIGS["v1.1"])
    with torch.no_grad():
        for model in (reference, ours):
            model.encoder.block[0].layer[1].DenseReluDense.wo.weight.mul_(3e4)
            model.to(torch.float16)
        ids, mask = ids_and_mask(CONFIGS["v1.1"])
        theirs = reference(ids, attention_mask=mask).last_hidden_state
        mine = ours(ids, mask)
    assert torch.isfinite(mine).all()
    torch.testing.assert_close(mine, theirs, **HALF_TOLERANCE[torch.float16])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_folder_loaded_in_half_precision_matches_transformers_loading_it(tiny_t5_folder, dtype):
    """fp16 keeps `wo` in fp32 on both sides, and the residual stream follows it."""
    reference = ReferenceT5.from_pretrained(tiny_t5_folder, dtype=dtype).eval()
    ours = load_text_encoder(tiny_t5_folder, dtype=dtype).model
    ids, mask = ids_and_mask(ours.config)
    with torch.no_grad():
        theirs = reference(ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask), theirs, **HALF_TOLERANCE[dtype])


@pytest.mark.parametrize("buckets, distance", [(32, 128), (8, 12), (16, 20), (32, 64), (6, 9)])
def test_relative_position_buckets_match_transformers(buckets, distance):
    offsets = torch.arange(-300, 301)[None, :] - torch.arange(0, 40)[:, None]
    theirs = T5Attention._relative_position_bucket(offsets, bidirectional=True, num_buckets=buckets,
                                                   max_distance=distance)  # fmt: skip
    assert torch.equal(relative_position_bucket(offsets, buckets, distance), theirs)


# ---------------------------------------------------------------- the tokenizer

TOKENIZER_PROMPTS = [
    "A red circle slides slowly to the left over a dark blue background.",
    "",
    "   ",
    "Hello, world! (Quotes: \"double\" and 'single'); semi;colon -- dash... ?!",
    "1234567890 3.14159 1,000,000 $42.50 50% #7 @home 2nd 3rd",
    "  two  spaces,\ttabs\tand\nnew\r\nlines  ",
    "ünïcödé café naïve Ångström façade — “curly quotes” ‘single’ … ellipsis",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ligatures ﬁ ﬂ, superscripts x² and ½",
    "emoji 🦊🐱‍👤 👍🏽 ❤️ and 🇫🇷 flags",
    "猫が走る قطة تجري Кошка бежит γάτα",
    "literal special tokens: </s> <pad> <unk> <extra_id_0> <extra_id_99>x",
    " ".join(["a long prompt about a red fox that jumps over the lazy dog"] * 20),
]
LENGTHS = (1, 2, 8, 32, 128)

# A corpus for a sentencepiece model of our own: words, digits and some accented letters.
CORPUS = [
    "a red fox jumps over the lazy dog in 2024",
    "the camera pans slowly across a misty forest at dawn, 35mm film",
    "a woman with long brown hair smiles at the camera; café scene",
    "waves crash on a rocky shore under a grey sky! 1080p",
    "a cat sleeps on a warm windowsill in the afternoon sun (slow motion)",
    "naïve façade, Ångström units and 3.5 seconds of footage",
]


def train_t5_style_sentencepiece(path: Path, normalization: str) -> Path:
    """A unigram sentencepiece model with T5's special ids, trained here in-process."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 8), model_writer=model, vocab_size=120, model_type="unigram",
        normalization_rule_name=normalization, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


def tokenizer_folders(tmp_path: Path) -> dict[str, Path]:
    folders = {"shipped t5-tiny": SHIPPED_T5}
    for normalization in ("nmt_nfkc", "identity"):
        folder = tmp_path / normalization
        train_t5_style_sentencepiece(folder / "spiece.model", normalization)
        folders[f"trained here ({normalization})"] = folder
    if COMFY_T5_TOKENIZER.is_dir():
        folders["ComfyUI's t5_tokenizer"] = COMFY_T5_TOKENIZER
        only_json = tmp_path / "tokenizer.json only"
        only_json.mkdir()
        shutil.copy(COMFY_T5_TOKENIZER / "tokenizer.json", only_json / "tokenizer.json")
        folders["ComfyUI's tokenizer.json alone"] = only_json
    return folders


@pytest.fixture(scope="module")
def tokenizer_pairs(tmp_path_factory):
    """Per tokenizer folder: (ours, transformers' T5Tokenizer, transformers' T5TokenizerFast)."""
    folders = tokenizer_folders(tmp_path_factory.mktemp("tokenizers"))
    return {name: (load_tokenizer(folder), T5Tokenizer.from_pretrained(folder), T5TokenizerFast.from_pretrained(folder))
            for name, folder in folders.items()}  # fmt: skip


def test_the_tokenizers_under_test_include_comfyuis_where_it_is_at_hand(tokenizer_pairs):
    expected = 5 if COMFY_T5_TOKENIZER.is_dir() else 3
    assert len(tokenizer_pairs) == expected


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_our_tokenizer_gives_transformers_ids(tokenizer_pairs, add_special_tokens):
    for name, (ours, *references) in tokenizer_pairs.items():
        for reference in references:
            assert (len(ours), ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (
                len(reference),
                reference.pad_token_id,
                reference.eos_token_id,
                reference.unk_token_id,
            ), name
            for prompt in TOKENIZER_PROMPTS:
                theirs = reference(prompt, add_special_tokens=add_special_tokens).input_ids
                assert ours(prompt, add_special_tokens=add_special_tokens).input_ids == theirs, (name, prompt)
            batch = reference(TOKENIZER_PROMPTS, add_special_tokens=add_special_tokens)
            assert ours(TOKENIZER_PROMPTS, add_special_tokens=add_special_tokens).input_ids == batch.input_ids
            assert ours(TOKENIZER_PROMPTS, add_special_tokens=add_special_tokens).attention_mask == batch.attention_mask


@pytest.mark.parametrize("length", LENGTHS)
def test_padded_and_truncated_batches_match_transformers(tokenizer_pairs, length):
    """What encode_prompt hands the encoder: ids cut to `length` with </s> kept last,
    padded with <pad> (id 0), and the mask of the real tokens."""
    for name, (ours, *references) in tokenizer_pairs.items():
        ids, mask = ours.padded(TOKENIZER_PROMPTS, length)
        for reference in references:
            theirs = reference(TOKENIZER_PROMPTS, padding="max_length", max_length=length, truncation=True,
                               add_special_tokens=True, return_tensors="pt")  # fmt: skip
            assert torch.equal(ids, theirs.input_ids), name
            assert torch.equal(mask, theirs.attention_mask), name


def test_unreadable_words_are_the_same_through_either_tokenizer(tokenizer_pairs):
    for name, (ours, reference, _) in tokenizer_pairs.items():
        for prompt in TOKENIZER_PROMPTS:
            assert unreadable_words(ours, prompt) == unreadable_words(reference, prompt), (name, prompt)


def test_a_comfyui_tokenizer_config_does_not_change_the_ids(tmp_path):
    """tokenizer_config.json (model_max_length, added_tokens_decoder) beside tokenizer.json
    is read by transformers; the ids must not depend on it."""
    if not COMFY_T5_TOKENIZER.is_dir():
        pytest.skip("no ComfyUI checkout with comfy/text_encoders/t5_tokenizer")
    config = json.loads((COMFY_T5_TOKENIZER / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "T5Tokenizer" and config["extra_ids"] == 100
    ours = load_tokenizer(COMFY_T5_TOKENIZER / "tokenizer.json")
    theirs = T5Tokenizer.from_pretrained(COMFY_T5_TOKENIZER)
    assert ours(TOKENIZER_PROMPTS).input_ids == theirs(TOKENIZER_PROMPTS).input_ids
