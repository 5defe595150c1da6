"""Text encoder loading (folder, diffusers root, single file + tokenizer), prompt
encoding and every refusal; the numbers themselves are checked in parity/."""

import base64
import dataclasses
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece
import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

from ltx_core.errors import CheckpointError, SettingsError
from ltx_core.models.t5 import T5_V1_1_XXL
from ltx_core.models.text_encoder import (
    TextEncoder,
    check_text_width,
    encode_prompt,
    find_tokenizer_beside,
    load_text_encoder,
    load_tokenizer,
    t5_config_from_shapes,
)
from tests.conftest import TINY_T5
from tests.fixtures_checkpoints import header_of

PROMPT = "a red fox jumps over the lazy dog"
SHIPPED_T5 = Path(__file__).parents[1] / "ltx_core" / "assets" / "t5-tiny"


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
    state = {
        f"text_encoders.t5xxl.transformer.{key}": value
        for key, value in encoder.model.state_dict().items()
        if key != "encoder.embed_tokens.weight"
    }
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
    meta = lambda *shape: torch.empty(shape, device="meta")
    state = {"shared.weight": meta(32128, 4096)}
    for layer in range(24):
        block = f"encoder.block.{layer}.layer."
        state[block + "0.SelfAttention.q.weight"] = meta(4096, 4096)
        state[block + "1.DenseReluDense.wi_0.weight"] = meta(10240, 4096)
    state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = meta(32, 64)
    assert t5_config_from_shapes(state) == T5_V1_1_XXL


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


def test_a_sentencepiece_model_without_t5s_special_ids_is_refused(tmp_path):
    """T5 reads <pad> 0, </s> 1, <unk> 2; sentencepiece's defaults are <unk> 0, <s> 1, </s> 2."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter([PROMPT] * 20), model_writer=model,
                                             vocab_size=30, hard_vocab_limit=False, minloglevel=2)  # fmt: skip
    (tmp_path / "spiece.model").write_bytes(model.getvalue())
    with pytest.raises(CheckpointError, match=r"starts with \['<unk>', '<s>', '</s>'\], not T5's"):
        load_tokenizer(tmp_path / "spiece.model")


def test_a_tokenizer_json_file_loads_as_its_folder_does(tmp_path, tiny_t5_folder):
    """A folder's tokenizer.json comes before its spiece.model, as transformers reads them."""
    tokenizer = load_tokenizer(tiny_t5_folder)
    tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
    from_file = load_tokenizer(tmp_path / "tokenizer.json")
    assert from_file(PROMPT).input_ids == tokenizer(PROMPT).input_ids and len(from_file) == len(tokenizer)
    (tmp_path / "spiece.model").write_text("not read: tokenizer.json is there")
    assert load_tokenizer(tmp_path)(PROMPT).input_ids == tokenizer(PROMPT).input_ids


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
    state = {
        k: v[:100].clone() if "shared" in k or "embed_tokens" in k else v.clone()
        for k, v in encoder.model.state_dict().items()
    }
    save_file(state, tmp_path / "t5.safetensors")
    with pytest.raises(CheckpointError, match="148 tokens but the text encoder .* embeds only 100"):
        load_text_encoder(tmp_path / "t5.safetensors", tiny_t5_folder)


def test_text_width_must_match_the_caption_projection():
    check_text_width(4096, 4096)
    with pytest.raises(SettingsError, match="text embeddings are 768 wide .* takes 4096"):
        check_text_width(768, 4096)


def _copy_folder(source: Path, folder: Path, **config_changes) -> Path:
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


@pytest.mark.parametrize("change, message", [
    ({"feed_forward_proj": "gated-silu"},
     "feed_forward_proj 'gated-silu' is not supported; supported: relu, gated-gelu"),
    ({"model_type": "mt5"}, "is a 'mt5' model, not T5"),
    ({"num_heads": 2}, "tensor encoder.block.0.layer.0.SelfAttention.k.weight has shape (32, 32), expected (16, 32)"),
])  # fmt: skip
def test_a_folder_whose_config_is_not_a_supported_t5_encoder_is_refused(tmp_path, tiny_t5_folder, change, message):
    folder = _copy_folder(tiny_t5_folder, tmp_path / "t5", **change)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_text_encoder(folder)


def test_sharded_and_whole_t5_folders_load_the_same_encoder(tmp_path, tiny_t5_folder, encoder):
    """A sharded folder (model.safetensors.index.json) and a whole encoder-decoder T5's
    folder (its decoder left out) hold the same encoder."""
    reference = T5EncoderModel.from_pretrained(tiny_t5_folder)
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    whole = T5ForConditionalGeneration(T5Config(vocab_size=160, **{**TINY_T5, "is_encoder_decoder": True}))
    whole.encoder.load_state_dict(reference.encoder.state_dict())
    whole.save_pretrained(tmp_path / "whole")
    for folder in ("sharded", "whole"):
        loaded = load_text_encoder(tmp_path / folder, tiny_t5_folder)
        torch.testing.assert_close(encode_prompt(loaded, [PROMPT]).embeds, encode_prompt(encoder, [PROMPT]).embeds,
                                   atol=0, rtol=0)  # fmt: skip


# ---------------------------------------------------------------- NaN and infinite weights


def _spoiled(tmp_path: Path, encoder, key: str, value: float) -> Path:
    state = {name: tensor.clone() for name, tensor in encoder.model.state_dict().items()}
    state[key][0, :2] = value
    if key == "shared.weight":
        del state["encoder.embed_tokens.weight"]
    save_file(state, tmp_path / "t5.safetensors")
    return tmp_path / "t5.safetensors"


@pytest.mark.parametrize("key", [Q_WEIGHT := "encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_holding_nan_or_infinity_are_refused_by_name(tmp_path, tiny_t5_folder, encoder, key, value):
    """A NaN weight makes every prompt's embeddings NaN and every video black."""
    path = _spoiled(tmp_path, encoder, key, value)
    kind = "2 NaN and 0 infinite" if math.isnan(value) else "0 NaN and 2 infinite"
    with pytest.raises(
        CheckpointError,
        match=rf"1 tensor\(s\) hold NaN or infinite values: {re.escape(key)} "
        rf"\({kind} of \d+ values\); the file is damaged",
    ):
        load_text_encoder(path, tiny_t5_folder)


def test_weights_that_overflow_fp16_are_refused_with_the_dtype_to_use(tmp_path, tiny_t5_folder, encoder):
    path = _spoiled(tmp_path, encoder, Q_WEIGHT, 1e6)
    with pytest.raises(
        CheckpointError,
        match=rf"{Q_WEIGHT} \(0 NaN and 2 infinite .*finite in the file but "
        "overflow float16; load the text encoder in bf16 or fp32",
    ):
        load_text_encoder(path, tiny_t5_folder, dtype=torch.float16)
    assert load_text_encoder(path, tiny_t5_folder, dtype=torch.bfloat16).width == 32


def test_a_nan_in_a_folder_or_an_fp8_file_is_refused_by_its_stored_name(tmp_path, tiny_t5_folder, encoder):
    folder = _copy_folder(tiny_t5_folder, tmp_path / "folder")
    _spoiled(folder.parent, encoder, Q_WEIGHT, float("nan")).replace(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"text encoder {re.escape(str(folder))}: 1 tensor.*{Q_WEIGHT}"):
        load_text_encoder(folder)
    path = _rewrite(
        tmp_path, encoder, "scaled_fp8", lambda t: t[Q + "weight"].view(torch.uint8)[0, 0].fill_(0x7F)
    )  # e4m3fn's NaN
    with pytest.raises(CheckpointError, match=rf"{Q}weight \(1 NaN and 0 infinite.*the file is damaged"):
        load_text_encoder(path, tiny_t5_folder)


# ---------------------------------------------------------------- imports


def test_encoding_a_prompt_and_the_cli_import_neither_transformers_nor_diffusers():
    """transformers takes seconds to import; the core's own T5 and tokenizer need none of it."""
    code = (
        "import sys\n"
        "import ltx_core.cli, ltx_core.pipeline, ltx_core.checkpoint.loading\n"
        "from ltx_core.models import text_encoder\n"
        f"encoder = text_encoder.load_text_encoder({str(SHIPPED_T5)!r})\n"
        "text_encoder.encode_prompt(encoder, ['a red circle slides to the left'])\n"
        "print(sorted(name for name in ('transformers', 'diffusers') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "Loading weights" not in done.stderr  # transformers' progress bar


@pytest.mark.parametrize("source", ["folder", "single file"])
def test_fp16_keeps_the_feed_forward_output_in_fp32_as_transformers_does(tiny_t5_folder, source):
    """T5's `wo` overflows in fp16; both loading paths must keep it in fp32."""
    path = tiny_t5_folder if source == "folder" else tiny_t5_folder / "model.safetensors"
    encoder = load_text_encoder(path, tiny_t5_folder, dtype=torch.float16)
    dtypes = {name: p.dtype for name, p in encoder.model.named_parameters()}
    assert dtypes["encoder.block.0.layer.1.DenseReluDense.wo.weight"] == torch.float32
    assert dtypes["encoder.block.0.layer.0.SelfAttention.q.weight"] == torch.float16
    assert torch.isfinite(encode_prompt(encoder, [PROMPT], max_tokens=32).embeds).all()


# ---------------------------------------------------------------- ComfyUI's T5-XXL single files

COMFY_PREFIX = "text_encoders.t5xxl.transformer."
LINEAR_WEIGHT = re.compile(r"\.(q|k|v|o|wi_0|wi_1|wo)\.weight$")
FP8_MAX = 448.0  # float8_e4m3fn's largest value; ComfyUI scales each weight's amax onto it
Q = "encoder.block.0.layer.0.SelfAttention.q."  # the layer the refusal tests spoil
LAYOUTS = ("fp16", "fp8_e4m3fn", "fp8_e5m2", "scaled_fp8", "comfy_quant", "quantization_metadata")


def _quantize(name: str, weight: torch.Tensor, layout: str) -> dict[str, torch.Tensor]:
    """One linear weight's tensors in `layout` (ComfyUI's key names)."""
    layer = name[: -len(".weight")]
    if layout in ("fp8_e4m3fn", "fp8_e5m2"):
        return {name: weight.to(getattr(torch, "float8_" + layout[4:]))}
    scale = weight.abs().amax().float() / FP8_MAX  # a different, non-trivial scale per tensor
    tensors = {name: (weight / scale).to(torch.float8_e4m3fn)}
    if layout == "scaled_fp8":
        return {**tensors, f"{layer}.scale_weight": scale, f"{layer}.scale_input": torch.tensor(1.0)}
    tensors[f"{layer}.weight_scale"] = scale
    if layout == "comfy_quant":
        tensors[f"{layer}.comfy_quant"] = json_bytes({"format": "float8_e4m3fn"})
    return tensors


def json_bytes(value) -> torch.Tensor:
    """JSON as ComfyUI stores it in a tensor (`comfy_quant`): its utf-8 bytes as uint8."""
    return torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8)


def write_comfy_t5(path: Path, model, layout: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """`model` written as ComfyUI's T5-XXL files are (`shared.weight` only, norms and the
    relative attention bias in fp16, linear weights per `layout`); returns the float32
    weights the file holds exactly (fp8 values upcast, times their scale)."""
    tensors, exact = {}, {}
    for name, value in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue
        quantized = layout != "fp16" and LINEAR_WEIGHT.search(name)
        stored = _quantize(name, value, layout) if quantized else {name: value.half()}
        layer = name[: -len(".weight")]
        scale = stored.get(f"{layer}.scale_weight", stored.get(f"{layer}.weight_scale", 1.0))
        exact[name] = stored[name].float() * scale
        tensors.update(stored)
    if layout == "scaled_fp8":
        tensors["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    metadata = None
    if layout == "quantization_metadata":
        layers = [prefix + key[: -len(".weight_scale")] for key in tensors if key.endswith(".weight_scale")]
        formats = {layer: {"format": "float8_e4m3fn"} for layer in layers}
        metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": formats})}
    save_file({prefix + key: value.contiguous() for key, value in tensors.items()}, path, metadata=metadata)
    exact["encoder.embed_tokens.weight"] = exact["shared.weight"]
    return exact


def transformers_config(config) -> T5Config:
    """transformers' T5Config of our encoder's config (the same field names)."""
    return T5Config(**dataclasses.asdict(config), is_encoder_decoder=False, use_cache=False, dropout_rate=0.0)


class LastHiddenState(torch.nn.Module):
    """transformers' T5EncoderModel called as the core's encoder is: ids -> last hidden state."""

    def __init__(self, model: T5EncoderModel):
        super().__init__()
        self.reference, self.config = model, model.config

    @property
    def device(self) -> torch.device:
        return self.reference.device

    def forward(self, input_ids, attention_mask=None):
        return self.reference(input_ids, attention_mask=attention_mask).last_hidden_state


def reference_encoder(encoder, weights: dict[str, torch.Tensor]) -> TextEncoder:
    """transformers' T5EncoderModel holding `weights`, with `encoder`'s tokenizer."""
    model = T5EncoderModel(transformers_config(encoder.model.config)).eval()
    model.load_state_dict(weights, strict=True)
    return TextEncoder(tokenizer=encoder.tokenizer, model=LastHiddenState(model))


def max_error(a: TextEncoder, b: TextEncoder) -> float:
    """Largest difference of the two encoders' embeddings of the same prompts."""
    prompts = [PROMPT, "a cat"]
    return (encode_prompt(a, prompts).embeds - encode_prompt(b, prompts).embeds).abs().max().item()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("prefix", ["", COMFY_PREFIX])
def test_comfyui_t5_files_load_their_exact_dequantized_weights(tmp_path, tiny_t5_folder, encoder, layout, prefix):
    """t5xxl_fp16, t5xxl_fp8_e4m3fn, t5xxl_fp8_e4m3fn_scaled and ComfyUI's newer scaled layout:
    the loaded fp32 encoder matches transformers' own holding upcast values times scales
    (max abs error 0; allowed 1e-5)."""
    exact = write_comfy_t5(tmp_path / "t5xxl.safetensors", encoder.model, layout, prefix)
    loaded = load_text_encoder(tmp_path / "t5xxl.safetensors", tiny_t5_folder)
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, exact[name], atol=0, rtol=0, msg=name)
    assert max_error(loaded, reference_encoder(encoder, exact)) <= 1e-5


def test_a_scaled_file_read_without_its_scales_gives_another_encoder(tmp_path, tiny_t5_folder, encoder):
    """Upcasting the fp8 values and ignoring `scale_weight` (the known bug) loads noise;
    the exact-weights test above would see it."""
    exact = write_comfy_t5(tmp_path / "scaled.safetensors", encoder.model, "scaled_fp8")
    tensors, _ = header_of(tmp_path / "scaled.safetensors")
    unscaled = {key: value for key, value in tensors.items() if "scale" not in key}
    save_file(unscaled, tmp_path / "unscaled.safetensors")
    wrong = load_text_encoder(tmp_path / "unscaled.safetensors", tiny_t5_folder)
    right = reference_encoder(encoder, exact)
    assert max_error(wrong, right) > 0.5
    assert max_error(load_text_encoder(tmp_path / "scaled.safetensors", tiny_t5_folder), right) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scaled_weights_are_dequantized_into_the_dtype_they_load_in(tmp_path, tiny_t5_folder, encoder, dtype):
    """fp16 keeps `wo` in fp32, and its dequantized values must not pass through fp16 first."""
    exact = write_comfy_t5(tmp_path / "t5.safetensors", encoder.model, "scaled_fp8")
    loaded = load_text_encoder(tmp_path / "t5.safetensors", tiny_t5_folder, dtype=dtype).model.state_dict()
    for name in (Q + "weight", "encoder.block.1.layer.1.DenseReluDense.wo.weight"):
        wanted = torch.float32 if dtype == torch.float16 and ".wo." in name else dtype
        torch.testing.assert_close(loaded[name], exact[name].to(wanted), atol=0, rtol=0)


def _rewrite(tmp_path, encoder, layout, change) -> Path:
    """A `layout` file with `change(tensors)` applied."""
    write_comfy_t5(tmp_path / "t5.safetensors", encoder.model, layout)
    tensors, metadata = header_of(tmp_path / "t5.safetensors")
    change(tensors)
    save_file(tensors, tmp_path / "t5.safetensors", metadata=metadata or None)
    return tmp_path / "t5.safetensors"


def _nvfp4(tensors):
    """q as ComfyUI writes NVFP4: packed uint8 values, fp8 block scales and a global scale."""
    tensors[Q + "weight"] = torch.zeros(32, 16, dtype=torch.uint8)
    tensors[Q + "weight_scale"] = torch.ones(32, 2).to(torch.float8_e4m3fn)
    tensors[Q + "weight_scale_2"] = torch.tensor(1.0)
    tensors[Q + "comfy_quant"] = json_bytes({"format": "nvfp4"})


@pytest.mark.parametrize("layout, change, message", [
    ("comfy_quant", _nvfp4,
     rf"tensor {Q}weight \(torch.uint8\) is quantized as 'nvfp4', which is not supported"),
    ("fp16", lambda t: t.update({Q + "weight": torch.ones(32, 32, dtype=torch.int8)}),
     rf"tensor {Q}weight is stored as torch.int8, a quantized type that is not supported"),
    ("scaled_fp8", lambda t: t.update({Q + "scale_weight": torch.tensor(float("nan"))}),
     rf"{Q}scale_weight is nan, not a finite scale"),
    ("comfy_quant", lambda t: t.update({Q + "weight_scale": torch.tensor(float("inf"))}),
     rf"{Q}weight_scale is inf, not a finite scale"),
    ("scaled_fp8", lambda t: t.update({Q + "scale_weight": torch.ones(32, 1)}),
     rf"{Q}scale_weight is a torch.float32 tensor of shape \(32, 1\); only one float scale per weight"),
    ("scaled_fp8", lambda t: t.update({Q + "weight": torch.ones(32, 32, dtype=torch.float16)}),
     rf"tensor {Q}weight is stored as torch.float16 but is declared scaled fp8"),
    ("comfy_quant", lambda t: t.pop(Q + "weight_scale"),
     rf"tensor {Q}weight is declared float8_e4m3fn but has no weight_scale"),
    ("comfy_quant", lambda t: t.update({Q + "comfy_quant": torch.tensor(list(b"{form"), dtype=torch.uint8)}),
     rf"tensor {Q}comfy_quant is not valid JSON"),
])  # fmt: skip
def test_unsupported_or_damaged_quantization_is_refused_by_name(
    tmp_path, tiny_t5_folder, encoder, layout, change, message
):
    path = _rewrite(tmp_path, encoder, layout, change)
    with pytest.raises(CheckpointError, match=message):
        load_text_encoder(path, tiny_t5_folder)


# ---------------------------------------------------------------- ComfyUI's T5 tokenizer folder

# ComfyUI's own T5 tokenizer, where a ComfyUI checkout is at hand (the host tests' or an unpacked one)
COMFY_T5_TOKENIZER = next(
    (
        root / "ComfyUI/comfy/text_encoders/t5_tokenizer"
        for root in (Path(__file__).parents[1] / ".comfy",)
        if (root / "ComfyUI/comfy/text_encoders/t5_tokenizer/tokenizer.json").is_file()
    ),
    Path("/nonexistent/t5_tokenizer"),
)
needs_comfy_tokenizer = pytest.mark.skipif(
    not COMFY_T5_TOKENIZER.is_dir(), reason="no ComfyUI checkout with comfy/text_encoders/t5_tokenizer"
)
TOKENIZER_PROMPTS = [
    PROMPT,
    "A woman with long brown hair smiles at the camera, golden hour, 4K.",
    "  two  spaces, ünïcödé — “quotes”, café naïve 123,456.78 %$#@!",
    "The camera pans across a misty forest at dawn;\nbirds fly\toverhead.",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ and an emoji 🦊",
]


def sentencepiece_from_tokenizer_json(file: Path):
    """A sentencepiece processor rebuilt from T5's pieces, scores and normalizer (the
    precompiled nmt_nfkc map tokenizer.json copies from spiece.model): the reference the
    sentencepiece tokenizer gives, as ComfyUI ships no spiece.model."""
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    data = json.loads(file.read_text())
    proto = model_pb2.ModelProto()
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    proto.trainer_spec.pad_id, proto.trainer_spec.eos_id, proto.trainer_spec.unk_id = 0, 1, 2
    proto.trainer_spec.bos_id = -1
    charsmap = data["normalizer"]["normalizers"][0]["precompiled_charsmap"]
    proto.normalizer_spec.name = "nmt_nfkc"
    proto.normalizer_spec.precompiled_charsmap = base64.b64decode(charsmap)
    piece_type = model_pb2.ModelProto.SentencePiece
    for index, (text, score) in enumerate(data["model"]["vocab"][:32000]):  # the rest are <extra_id_*>
        piece = proto.pieces.add(piece=text, score=score)
        special = {0: piece_type.CONTROL, 1: piece_type.CONTROL, 2: piece_type.UNKNOWN}
        piece.type = special.get(index, piece_type.NORMAL)
    return sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())


@needs_comfy_tokenizer
@pytest.mark.parametrize("files", ["the whole folder", "tokenizer.json only"])
def test_comfyuis_t5_tokenizer_folder_gives_sentencepiece_t5_ids(tmp_path, files):
    folder = COMFY_T5_TOKENIZER
    if files == "tokenizer.json only":
        shutil.copy(COMFY_T5_TOKENIZER / "tokenizer.json", tmp_path / "tokenizer.json")
        folder = tmp_path
    tokenizer = load_tokenizer(folder)
    reference = sentencepiece_from_tokenizer_json(COMFY_T5_TOKENIZER / "tokenizer.json")
    assert tokenizer("Hello world").input_ids == [8774, 296, 1]  # as the published T5 tokenizer gives
    assert tokenizer(TOKENIZER_PROMPTS).input_ids == [reference.encode(p) + [1] for p in TOKENIZER_PROMPTS]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, len(tokenizer)) == (0, 1, 32100)


@needs_comfy_tokenizer
def test_a_lone_comfyui_file_loads_with_comfyuis_tokenizer_folder(tmp_path):
    """models/text_encoders/ holds no tokenizer: the node falls back to ComfyUI's folder."""
    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=32128, **TINY_T5)).eval()
    write_comfy_t5(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", model, "scaled_fp8", COMFY_PREFIX)
    assert find_tokenizer_beside(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors") is None
    encoder = load_text_encoder(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", COMFY_T5_TOKENIZER)
    text = encode_prompt(encoder, ["Hello world"], max_tokens=8)
    assert text.mask.sum().item() == 3 and torch.isfinite(text.embeds).all()


@pytest.mark.parametrize("tokenizer_file", ["spiece.model", "tokenizer.json", None])
def test_find_tokenizer_beside_names_the_files_folder_only_if_it_holds_a_tokenizer(tmp_path, tokenizer_file):
    (tmp_path / "t5xxl_fp16.safetensors").write_bytes(b"")
    if tokenizer_file:
        (tmp_path / tokenizer_file).write_bytes(b"")
    found = find_tokenizer_beside(tmp_path / "t5xxl_fp16.safetensors")
    assert found == (tmp_path if tokenizer_file else None)


def test_a_closed_vocabulary_names_the_prompt_words_it_never_saw(tmp_path, tiny_t5_folder):
    """A folder's vocabulary.txt (the shipped demo encoder's caption words) makes the
    encoding warn with the words outside it; a folder without one (T5) never warns."""
    import warnings

    from ltx_core.models.text_encoder import VOCABULARY_FILE, encode_prompt, load_text_encoder

    closed = tmp_path / "closed"
    shutil.copytree(tiny_t5_folder, closed)
    (closed / VOCABULARY_FILE).write_text("a\nred\ncircle\nslides\nleft\nover\nblue\nbackground\n")
    with pytest.warns(UserWarning, match=r"prompt 0: .*never saw 'magenta', 'star'; "):
        encode_prompt(load_text_encoder(closed), "a magenta star slides left over a blue background")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_prompt(load_text_encoder(closed), "a red circle slides left over a blue background")
        encode_prompt(load_text_encoder(tiny_t5_folder), "a magenta star slides left")


def test_the_shipped_encoder_knows_every_word_of_the_readme_and_workflow_prompts():
    from ltx_core.models.text_encoder import load_text_encoder, unknown_words
    from ltx_core.training.evaluation.prompts import shipped_prompts

    vocabulary = load_text_encoder(SHIPPED_T5).vocabulary
    assert vocabulary is not None and {"navy", "backdrop", "pink", "beige"} <= vocabulary
    assert {prompt: unknown_words(vocabulary, prompt) for prompt, _ in shipped_prompts()} == {
        prompt: [] for prompt, _ in shipped_prompts()
    }
    assert unknown_words(vocabulary, "A magenta star spins.") == ["magenta", "star", "spins"]
