"""Prompt -> T5 tokens -> T5 v1.1 encoder embeddings and their attention mask.

LTX-Video conditions on the last hidden state of the T5-XXL v1.1 encoder (paper 2.3). The
encoder is the core's own (`t5`), and so is its tokenizer (`t5_tokenizer`); this file
finds the weights and the tokenizer, loads them strictly, and encodes prompts exactly as
diffusers' `LTXPipeline` (`_get_t5_prompt_embeds`) does.

Weights come from a Hugging Face folder (config.json and safetensors, sharded or not; or a
diffusers root with text_encoder/ and tokenizer/) or from one safetensors file, stored as
ComfyUI's text encoders are: fp32/fp16/bf16, plain fp8 (`t5xxl_fp8_e4m3fn`), or fp8 with
one scale per weight (`t5xxl_fp8_e4m3fn_scaled`, and ComfyUI's newer `weight_scale` +
`comfy_quant` layout); fp8 weights are dequantized once at load (value * scale) and the
encoder runs in the requested dtype.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..checkpoint.tensors import NON_FINITE_NAMED, non_finite_names
from ..errors import CheckpointError, SettingsError
from ..preflight import PICKLE_SUFFIXES
from .t5 import T5Config, T5EncoderModel
from .t5_files import dequantize, quant_formats, read_json
from .t5_tokenizer import T5Tokenizer, from_sentencepiece, from_tokenizer_json

SENTENCEPIECE_FILE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
SHARD_INDEX = "model.safetensors.index.json"

# T5 v1.1's feed-forward output projections overflow in fp16: under fp16 weights they stay
# in fp32, as transformers keeps them (`_keep_in_fp32_modules`), so fp16 numbers match its.
FP32_UNDER_FP16 = ("wo",)
EMBEDDING, TIED_EMBEDDING = "shared.weight", "encoder.embed_tokens.weight"


@dataclass
class TextEncoder:
    tokenizer: T5Tokenizer
    model: T5EncoderModel
    # the words a small encoder trained on a closed set of captions knows (its folder's
    # VOCABULARY_FILE); None for T5, which reads English at large
    vocabulary: frozenset[str] | None = None

    @property
    def width(self) -> int:
        """Embedding width (4096 for T5-XXL), which the transformer's caption
        projection must accept."""
        return self.model.config.d_model


@dataclass(frozen=True)
class TextEmbeddings:
    embeds: torch.Tensor  # (B, L, D) last hidden state of the encoder
    mask: torch.Tensor  # (B, L) bool, True on real tokens (prompt + </s>)


# ---------------------------------------------------------------- tokenizer


def load_tokenizer(path: str | Path) -> T5Tokenizer:
    """T5 tokenizer from a sentencepiece `spiece.model` file or a `tokenizer.json`, or
    from a folder holding either (a Hugging Face tokenizer folder; `tokenizer.json` first,
    as transformers reads it)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"tokenizer {path} does not exist; give T5's spiece.model or its folder")
    if path.is_file():
        return from_tokenizer_json(path) if path.suffix.lower() == ".json" else from_sentencepiece(path)
    if (path / TOKENIZER_JSON).is_file():
        return from_tokenizer_json(path / TOKENIZER_JSON)
    if (path / SENTENCEPIECE_FILE).is_file():
        return from_sentencepiece(path / SENTENCEPIECE_FILE)
    raise CheckpointError(f"tokenizer folder {path} has neither {SENTENCEPIECE_FILE} nor {TOKENIZER_JSON}")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / SENTENCEPIECE_FILE).is_file() or (folder / TOKENIZER_JSON).is_file()


def find_tokenizer_beside(path: str | Path) -> Path | None:
    """The folder holding `path` (a single weights file) when it also holds a T5 tokenizer
    (`spiece.model` or `tokenizer.json`), else None. ComfyUI keeps T5 files in
    models/text_encoders/ without one; its own copy is comfy/text_encoders/t5_tokenizer/."""
    folder = Path(path).parent
    return folder if _has_tokenizer(folder) else None


# ---------------------------------------------------------------- reading the files


def _find_model_folder(path: Path) -> tuple[Path, Path | None]:
    """(weights folder, tokenizer folder or None) for a T5 folder or a diffusers root."""
    if (path / "text_encoder").is_dir():  # the root of a diffusers LTX-Video folder
        return path / "text_encoder", path / "tokenizer" if (path / "tokenizer").is_dir() else None
    return path, path if _has_tokenizer(path) else None


def _folder_files(folder: Path) -> list[Path]:
    """The folder's weight files: the shards its index names, else its safetensors."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"text encoder folder {folder} has no config.json")
    if (folder / SHARD_INDEX).is_file():
        weight_map = read_json((folder / SHARD_INDEX).read_bytes(), SHARD_INDEX, folder).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in folder.iterdir())[:8]
        raise CheckpointError(
            f"text encoder folder {folder} has no .safetensors weights (found {found}); "
            "only safetensors are loaded, never pickle files"
        )
    return files


def _folder_config(folder: Path) -> T5Config:
    values = read_json((folder / "config.json").read_bytes(), "config.json", folder)
    if values.get("model_type") != "t5":
        raise CheckpointError(f"text encoder {folder} is a {values.get('model_type')!r} model, not T5")
    try:
        return T5Config.from_dict(values)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"text encoder {folder}: config.json: {error}") from None


@dataclass
class _Files:
    """The tensors of one or more safetensors files, their metadata, and each key's file
    (to look at a stored value again for an error message)."""

    state: dict[str, torch.Tensor]
    metadata: dict[str, str]
    where: dict[str, Path]


def _read_safetensors(paths: list[Path]) -> _Files:
    files = _Files({}, {}, {})
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as file:
                for key in file.keys():
                    files.state[key], files.where[key] = file.get_tensor(key), path
                files.metadata.update(file.metadata() or {})
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"text encoder {path} is not a readable .safetensors file: {error}") from None
    return files


# ---------------------------------------------------------------- the encoder's tensors


def _encoder_state(files: _Files, dtype: torch.dtype, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(the encoder's tensors under their module names, the key prefix of the files) from
    T5 encoder weights (also a whole T5, or files whose keys carry a prefix such as
    ComfyUI's); scaled fp8 weights come dequantized in the dtype they load in. The
    tensors move out of `files`."""
    anchor = "encoder.block.0.layer.0.SelfAttention.q.weight"
    prefix = next((key[: -len(anchor)] for key in files.state if key.endswith(anchor)), None)
    if prefix is None:
        raise CheckpointError(
            f"{path} is not a T5 encoder: no '{anchor}' among its {len(files.state)} tensors "
            f"(first keys: {sorted(files.state)[:4]})"
        )
    state = {key[len(prefix) :]: value for key, value in files.state.items() if key.startswith(prefix)}
    files.state.clear()
    # the `scaled_fp8` marker and the decoder's tensors drop out here
    state = {key: value for key, value in state.items() if key.split(".")[0] in ("shared", "encoder")}
    dequantize(state, quant_formats(state, files.metadata, prefix, path), lambda key: _load_dtype(key, dtype), path)
    # the input embedding is stored once, under either of its two tied names
    embedding = state.get(EMBEDDING, state.get(TIED_EMBEDDING))
    if embedding is None:
        raise CheckpointError(f"text encoder {path} lacks the token embedding '{EMBEDDING}'")
    state[EMBEDDING] = state[TIED_EMBEDDING] = embedding
    return state, prefix


def t5_config_from_shapes(state: dict[str, torch.Tensor]) -> T5Config:
    """A T5 encoder's config read off its tensors (T5-XXL v1.1: d_model 4096, 24 layers,
    64 heads of 64, d_ff 10240, gated-gelu)."""
    vocab_size, d_model = state[EMBEDDING].shape
    layers = {int(m.group(1)) for key in state if (m := re.match(r"encoder\.block\.(\d+)\.", key))}
    attention = "encoder.block.0.layer.0.SelfAttention."
    num_buckets, num_heads = state[attention + "relative_attention_bias.weight"].shape
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state
    d_ff = state["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=state[attention + "q.weight"].shape[0] // num_heads,
        d_ff=d_ff,
        num_layers=max(layers) + 1,
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        feed_forward_proj="gated-gelu" if gated else "relu",
    )


def _load_dtype(key: str, dtype: torch.dtype) -> torch.dtype:
    keep = dtype == torch.float16 and any(f".{name}." in key for name in FP32_UNDER_FP16)
    return torch.float32 if keep else dtype


def _check_names_and_shapes(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: Path) -> None:
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"text encoder {path} misses {len(missing)} tensors, e.g. {missing[:3]}")
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            raise CheckpointError(
                f"text encoder {path}: tensor {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"text encoder {path} has {len(unexpected)} unknown tensors, e.g. {unexpected[:3]}")


def _refuse_non_finite(
    state: dict[str, torch.Tensor], files: _Files, prefix: str, dtype: torch.dtype, path: Path
) -> None:
    """An encoder with a NaN or an infinity in a weight turns every prompt into NaN
    embeddings, and the video into black frames: refused at load, naming the tensors and
    whether the file holds those values or the conversion to `dtype` made them."""
    bad = non_finite_names({key: value for key, value in state.items() if key != TIED_EMBEDDING})
    if not bad:
        return
    named = ", ".join(
        f"{_stored_key(files, prefix, name)} ({_count_non_finite(state[name])})" for name in bad[:NON_FINITE_NAMED]
    )
    more = f" and {len(bad) - NON_FINITE_NAMED} more" if len(bad) > NON_FINITE_NAMED else ""
    why = (
        "the file is damaged (a broken download, or saved from a training run that diverged); download it again"
        if any(_stored_non_finite(files, prefix, name) for name in bad[:NON_FINITE_NAMED])
        else f"their values are finite in the file but overflow {str(dtype).removeprefix('torch.')}; "
        "load the text encoder in bf16 or fp32"
    )
    raise CheckpointError(
        f"text encoder {path}: {len(bad)} tensor(s) hold NaN or infinite values: {named}{more}; {why}"
    )


def _count_non_finite(tensor: torch.Tensor) -> str:
    nan, inf = int(tensor.isnan().sum()), int(tensor.isinf().sum())
    return f"{nan} NaN and {inf} infinite of {tensor.numel()} values"


def _stored_key(files: _Files, prefix: str, name: str) -> str:
    """The key the files store the encoder's tensor `name` under."""
    tied = prefix + TIED_EMBEDDING
    return tied if name == EMBEDDING and prefix + name not in files.where and tied in files.where else prefix + name


def _stored_non_finite(files: _Files, prefix: str, name: str) -> bool:
    """Whether the file's own values of `name` (fp8 ones before their scale) hold a NaN or
    an infinity."""
    key = _stored_key(files, prefix, name)
    with safe_open(str(files.where[key]), framework="pt") as file:
        return not bool(torch.isfinite(file.get_tensor(key).float()).all())


def _build(
    config: T5Config | None, files: _Files, dtype: torch.dtype, device: str | torch.device, path: Path
) -> T5EncoderModel:
    """The encoder holding the files' tensors, loaded strictly, in `dtype` on `device`;
    `config` None: read off the tensors' shapes."""
    state, prefix = _encoder_state(files, dtype, path)
    with torch.device("meta"):
        model = T5EncoderModel(config or t5_config_from_shapes(state))
    _check_names_and_shapes(model.state_dict(), state, path)
    del state[TIED_EMBEDDING]  # one tensor: converted once, under its first name
    for key in list(state):
        state[key] = state.pop(key).to(device=device, dtype=_load_dtype(key, dtype))
    state[TIED_EMBEDDING] = state[EMBEDDING]
    _refuse_non_finite(state, files, prefix, dtype, path)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)  # frozen, as LTX-Video uses it (paper 2.3)


def _load_single_file(path: Path, dtype: torch.dtype, device: str | torch.device) -> T5EncoderModel:
    return _build(None, _read_safetensors([path]), dtype, device, path)


def _load_folder(folder: Path, dtype: torch.dtype, device: str | torch.device) -> T5EncoderModel:
    weights = _folder_files(folder)
    config = _folder_config(folder)
    return _build(config, _read_safetensors(weights), dtype, device, folder)


def load_text_encoder(
    path: str | Path,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> TextEncoder:
    """T5 encoder + tokenizer from a Hugging Face folder (config.json, *.safetensors,
    sharded or not, tokenizer files; or a diffusers root with text_encoder/ and
    tokenizer/), or from one `.safetensors` file of encoder weights plus `tokenizer_path`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"text encoder {path} does not exist")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"text encoder {path} is a pickle file; only .safetensors are loaded")
    if path.is_dir():
        folder, found_tokenizer = _find_model_folder(path)
        model = _load_folder(folder, dtype, device)
        tokenizer_path = tokenizer_path or found_tokenizer
    else:
        model = _load_single_file(path, dtype, device)
    if tokenizer_path is None:
        raise CheckpointError(
            f"no tokenizer for text encoder {path}: give tokenizer_path, T5's spiece.model or a folder holding it"
        )
    tokenizer = load_tokenizer(tokenizer_path)
    if len(tokenizer) > model.config.vocab_size:
        raise CheckpointError(
            f"tokenizer {tokenizer_path} has {len(tokenizer)} tokens but the text encoder "
            f"{path} embeds only {model.config.vocab_size}; they are not a pair"
        )
    vocabulary = _read_vocabulary(folder) if path.is_dir() else None
    return TextEncoder(tokenizer=tokenizer, model=model, vocabulary=vocabulary)


# A closed vocabulary's file beside config.json: one word a line, lower case.
VOCABULARY_FILE = "vocabulary.txt"
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _read_vocabulary(folder: Path) -> frozenset[str] | None:
    file = folder / VOCABULARY_FILE
    if not file.is_file():
        return None
    return frozenset(line.strip().lower() for line in file.read_text(encoding="utf-8").splitlines() if line.strip())


def unknown_words(vocabulary: frozenset[str] | None, text: str) -> list[str]:
    """The words of `text` (lower-cased, each once) outside a closed `vocabulary`."""
    if vocabulary is None:
        return []
    return [word for word in dict.fromkeys(WORD.findall(text.lower())) if word not in vocabulary]


# ---------------------------------------------------------------- encoding


def _warn_on_truncation(tokenizer: T5Tokenizer, prompts: list[str], max_tokens: int) -> None:
    for index, ids in enumerate(tokenizer(prompts).input_ids):
        if len(ids) > max_tokens:
            warnings.warn(
                f"prompt {index} is {len(ids)} tokens long; {len(ids) - max_tokens} tokens past "
                f"the limit of {max_tokens} were cut",
                stacklevel=3,
            )


# Unreadable words named in full in a warning; the rest are counted.
UNREADABLE_NAMED = 10


def unreadable_words(tokenizer: T5Tokenizer, text: str) -> list[str]:
    """The words of `text` (split at white space, each once) that the tokenizer maps, in
    whole or in part, to its unknown token: T5 reads English, so other scripts and emoji
    become `<unk>` and steer nothing. Empty when the tokenizer has no unknown token."""
    unknown = tokenizer.unk_token_id
    if unknown is None or unknown not in tokenizer(text, add_special_tokens=False).input_ids:
        return []
    words = dict.fromkeys(text.split())
    return [word for word in words if unknown in tokenizer(word, add_special_tokens=False).input_ids]


def _warn_on_words(encoder: TextEncoder, prompts: list[str]) -> None:
    """One warning per prompt for words its tokenizer cannot read, one for words outside a
    closed vocabulary: neither steers the video, and nothing else would say so."""
    for index, prompt in enumerate(prompts):
        unreadable = unreadable_words(encoder.tokenizer, prompt)
        if unreadable:
            warnings.warn(
                f"prompt {index}: the text encoder's tokenizer cannot read {_named(unreadable)}; they reach the "
                "model as its unknown token and do not steer the video (T5 reads English: describe them in words)",
                stacklevel=3,
            )
        unknown = unknown_words(encoder.vocabulary, prompt)
        if unknown:
            warnings.warn(
                f"prompt {index}: this text encoder was trained on a closed vocabulary and never saw "
                f"{_named(unknown)}; such words steer the video little or wrongly (its words: {VOCABULARY_FILE} "
                "in its folder)",
                stacklevel=3,
            )


def _named(words: list[str]) -> str:
    """The first UNREADABLE_NAMED words quoted, the rest counted."""
    named = ", ".join(map(repr, words[:UNREADABLE_NAMED]))
    return named + (f" and {len(words) - UNREADABLE_NAMED} more" if len(words) > UNREADABLE_NAMED else "")


def encode_prompt(
    encoder: TextEncoder,
    prompts: list[str],
    max_tokens: int = 128,
    allow_empty: bool = False,
) -> TextEmbeddings:
    """Embeddings padded to `max_tokens`, as diffusers' LTXPipeline makes them: the
    encoder runs without an attention mask and padded positions are not zeroed; the
    mask goes to the transformer's cross-attention instead. (Lightricks' own pipeline
    masks the encoder's attention and pads to 256; ComfyUI follows neither exactly.)"""
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise SettingsError(f"max_tokens {max_tokens!r} must be a whole number of at least 1")
    if not allow_empty:
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                raise SettingsError(f"prompt {index} is empty; describe the video to generate")
    _warn_on_truncation(encoder.tokenizer, prompts, max_tokens)
    _warn_on_words(encoder, prompts)
    ids, mask = encoder.tokenizer.padded(prompts, max_tokens)
    device = encoder.model.device
    with torch.no_grad():
        embeds = encoder.model(ids.to(device))
    return TextEmbeddings(embeds=embeds, mask=mask.bool().to(device))


def check_text_width(embeds_dim: int, caption_channels: int) -> None:
    """The transformer projects T5 embeddings of exactly `caption_channels` features."""
    if embeds_dim != caption_channels:
        raise SettingsError(
            f"text embeddings are {embeds_dim} wide but the transformer's caption projection "
            f"takes {caption_channels}; use the T5 v1.1 XXL encoder (4096) or its match"
        )
