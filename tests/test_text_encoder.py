"""Text encoder loading (folder, diffusers root, single file + tokenizer), prompt
encoding and every refusal; the numbers themselves are checked in parity/."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.text_encoder import (
    check_text_width,
    encode_prompt,
    load_text_encoder,
    load_tokenizer,
    t5_config_from_shapes,
)

PROMPT = "a red fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def encoder(tiny_t5_folder):
    return load_text_encoder(tiny_t5_folder)


def test_embeddings_are_padded_to_max_tokens_with_a_mask_of_the_real_tokens(encoder):
    """The transformer reads (B, L, D) embeddings and masks cross-attention with (B, L)."""
    text = encode_prompt(encoder, [PROMPT, "a cat"], max_tokens=40)
    assert text.embeds.shape == (2, 40, encoder.width) and text.mask.dtype == torch.bool
    real_tokens = [len(ids) for ids in encoder.tokenizer([PROMPT, "a cat"]).input_ids]
    assert text.mask.sum(dim=1).tolist() == real_tokens
    assert (text.mask[:, : min(real_tokens)]).all()


def test_padded_positions_are_not_zeroed(encoder):
    """diffusers' LTXPipeline leaves the encoder's output at padding as it is."""
    text = encode_prompt(encoder, ["a cat"], max_tokens=12)
    assert text.embeds[0, ~text.mask[0]].abs().sum() > 0


def test_a_single_safetensors_file_with_a_tokenizer_loads_the_same_encoder(encoder, tiny_t5_folder):
    single = load_text_encoder(tiny_t5_folder / "model.safetensors", tiny_t5_folder / "spiece.model")
    assert single.model.config.d_model == encoder.model.config.d_model
    torch.testing.assert_close(
        encode_prompt(single, [PROMPT]).embeds, encode_prompt(encoder, [PROMPT]).embeds, atol=0, rtol=0
    )


def test_single_file_with_a_key_prefix_and_only_the_tied_embedding_name_loads(tmp_path, tiny_t5_folder, encoder):
    """ComfyUI-style files keep the embedding once and may prefix every key."""
    state = {f"text_encoders.t5xxl.transformer.{key}": value for key, value in encoder.model.state_dict().items()
             if key != "encoder.embed_tokens.weight"}
    save_file({k: v.clone() for k, v in state.items()}, tmp_path / "t5.safetensors")
    single = load_text_encoder(tmp_path / "t5.safetensors", tiny_t5_folder)
    assert single.model.encoder.embed_tokens.weight is single.model.shared.weight
    torch.testing.assert_close(encode_prompt(single, [PROMPT]).embeds, encode_prompt(encoder, [PROMPT]).embeds)


def test_a_diffusers_root_folder_finds_text_encoder_and_tokenizer_subfolders(tmp_path, tiny_t5_folder):
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "text_encoder" / name).write_bytes((tiny_t5_folder / name).read_bytes())
    (tmp_path / "tokenizer" / "spiece.model").write_bytes((tiny_t5_folder / "spiece.model").read_bytes())
    assert load_text_encoder(tmp_path).width == 32


def test_t5_xxl_config_is_read_off_its_tensor_shapes():
    """The published T5-XXL v1.1 file has no config; its shapes must give the right model."""
    meta = lambda *shape: torch.empty(shape, device="meta")  # noqa: E731
    state = {"shared.weight": meta(32128, 4096)}
    for layer in range(24):
        block = f"encoder.block.{layer}.layer."
        state[block + "0.SelfAttention.q.weight"] = meta(4096, 4096)
        state[block + "1.DenseReluDense.wi_0.weight"] = meta(10240, 4096)
    state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = meta(32, 64)
    config = t5_config_from_shapes(state)
    assert (config.d_model, config.num_layers, config.num_heads, config.d_kv, config.d_ff) == (4096, 24, 64, 64, 10240)
    assert (config.vocab_size, config.relative_attention_num_buckets) == (32128, 32)
    assert config.is_gated_act and config.dense_act_fn == "gelu_new"


def test_a_long_prompt_is_cut_with_a_warning_that_counts_the_cut_tokens(encoder):
    prompt = " ".join(["a red fox jumps over the lazy dog"] * 3)
    length = len(encoder.tokenizer(prompt).input_ids)
    with pytest.warns(UserWarning, match=f"{length - 8} tokens past the limit of 8 were cut"):
        text = encode_prompt(encoder, [prompt], max_tokens=8)
    assert text.mask.all()


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_an_empty_prompt_is_refused_unless_allowed(encoder, prompt):
    with pytest.raises(SettingsError, match="prompt 0 is empty"):
        encode_prompt(encoder, [prompt])
    assert encode_prompt(encoder, [prompt], allow_empty=True).mask.sum() == 1  # just </s>


def test_max_tokens_below_one_is_refused(encoder):
    with pytest.raises(SettingsError, match="max_tokens 0"):
        encode_prompt(encoder, [PROMPT], max_tokens=0)


def test_missing_paths_are_named(tmp_path, tiny_t5_folder):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_text_encoder(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="tokenizer .*nothing.model does not exist"):
        load_text_encoder(tiny_t5_folder, tmp_path / "nothing.model")


def test_a_single_file_without_a_tokenizer_is_refused(tiny_t5_folder):
    with pytest.raises(CheckpointError, match="no tokenizer .* give tokenizer_path"):
        load_text_encoder(tiny_t5_folder / "model.safetensors")


def test_a_tokenizer_that_is_not_sentencepiece_is_refused(tmp_path, tiny_t5_folder):
    fake = tmp_path / "spiece.model"
    fake.write_text("not a sentencepiece model")
    with pytest.raises(CheckpointError, match="not a sentencepiece model"):
        load_tokenizer(fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither spiece.model nor tokenizer.json"):
        load_tokenizer(tmp_path / "empty")


def test_pickle_files_are_refused_without_being_read(tmp_path):
    pickle = tmp_path / "t5.bin"
    pickle.write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="pickle .* only .safetensors"):
        load_text_encoder(pickle)


def test_a_folder_with_only_pickle_weights_is_refused(tmp_path, tiny_t5_folder):
    (tmp_path / "config.json").write_bytes((tiny_t5_folder / "config.json").read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="no .safetensors weights .*pytorch_model.bin"):
        load_text_encoder(tmp_path, tiny_t5_folder)


def test_another_models_file_is_not_a_t5_encoder(tmp_path, tiny_t5_folder):
    save_file({"patchify_proj.weight": torch.zeros(4, 4)}, tmp_path / "dit.safetensors")
    with pytest.raises(CheckpointError, match="not a T5 encoder.*patchify_proj.weight"):
        load_text_encoder(tmp_path / "dit.safetensors", tiny_t5_folder)


def test_a_truncated_file_is_refused(tmp_path, tiny_t5_folder):
    data = (tiny_t5_folder / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable .safetensors file"):
        load_text_encoder(tmp_path / "cut.safetensors", tiny_t5_folder)


def test_a_file_missing_a_layer_tensor_names_it(tmp_path, tiny_t5_folder, encoder):
    state = {k: v.clone() for k, v in encoder.model.state_dict().items() if "final_layer_norm" not in k}
    save_file(state, tmp_path / "t5.safetensors")
    with pytest.raises(CheckpointError, match=r"misses 1 tensors, e.g. \['encoder.final_layer_norm.weight'\]"):
        load_text_encoder(tmp_path / "t5.safetensors", tiny_t5_folder)


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, tiny_t5_folder, encoder):
    state = {k: v[:100].clone() if "shared" in k or "embed_tokens" in k else v.clone()
             for k, v in encoder.model.state_dict().items()}
    save_file(state, tmp_path / "t5.safetensors")
    with pytest.raises(CheckpointError, match="148 tokens but the text encoder .* embeds only 100"):
        load_text_encoder(tmp_path / "t5.safetensors", tiny_t5_folder)


def test_text_width_must_match_the_caption_projection():
    check_text_width(4096, 4096)
    with pytest.raises(SettingsError, match="text embeddings are 768 wide .* takes 4096"):
        check_text_width(768, 4096)


@pytest.mark.parametrize("source", ["folder", "single file"])
def test_fp16_keeps_the_feed_forward_output_in_fp32_as_transformers_does(tiny_t5_folder, source):
    """T5's `wo` overflows in fp16; both loading paths must keep it in fp32."""
    path = tiny_t5_folder if source == "folder" else tiny_t5_folder / "model.safetensors"
    encoder = load_text_encoder(path, tiny_t5_folder, dtype=torch.float16)
    dtypes = {name: p.dtype for name, p in encoder.model.named_parameters()}
    assert dtypes["encoder.block.0.layer.1.DenseReluDense.wo.weight"] == torch.float32
    assert dtypes["encoder.block.0.layer.0.SelfAttention.q.weight"] == torch.float16
    assert torch.isfinite(encode_prompt(encoder, [PROMPT], max_tokens=32).embeds).all()
