"""The tiny T5 text encoder of the demo model: T5-v1.1 layout (gated GELU, as T5-XXL), few
layers, a vocabulary trained on the captions, saved as a HF-style folder (config.json,
model.safetensors, spiece.model) that `ltx_core.models.text_encoder.load_text_encoder` reads
exactly as it reads T5-XXL.

It is kept frozen at its seeded random initialization: the DiT's trained caption
projection and cross-attention learn to read it (a random T5 still maps each word to a
distinct, stable vector; paper 2.3 keeps its encoder frozen too).

The shipped weights are transformers' T5 initialization at the seed, so building them
again takes transformers (a test dependency); reading them takes only the core's `t5`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .tokenizer import train_tokenizer

TINY_T5 = dict(
    vocab_size=256,
    d_model=256,
    d_kv=32,
    d_ff=512,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)


def build_tiny_t5(seed: int = 0):
    """The seeded random encoder (the same weights for the same seed on any machine), as
    transformers' T5EncoderModel, whose `save_pretrained` writes the shipped folder."""
    try:
        from transformers import T5Config, T5EncoderModel
    except ImportError:
        raise ImportError(
            "building the tiny T5 again needs transformers (pip install transformers, or the "
            "package's [test] extra); loading the shipped one does not"
        ) from None
    torch.manual_seed(seed)  # transformers' initializers draw from the global RNG
    return T5EncoderModel(T5Config(**TINY_T5)).eval().requires_grad_(False)


def write_text_encoder(folder: Path | str, seed: int = 0) -> Path:
    """Write config.json, model.safetensors and spiece.model (with T5 special ids) to `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_t5(seed).save_pretrained(folder, safe_serialization=True)
    train_tokenizer(folder / "spiece.model", seed=seed)
    for leftover in ("generation_config.json",):
        (folder / leftover).unlink(missing_ok=True)
    return folder


def copy_text_encoder(source: Path | str, folder: Path | str) -> None:
    shutil.copytree(source, folder, dirs_exist_ok=True)
