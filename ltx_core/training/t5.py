"""The tiny T5 text encoder of the demo model: T5-v1.1 layout (gated GELU, as T5-XXL), few
layers, a vocabulary trained on the captions, saved as a HF-style folder (config.json,
model.safetensors, spiece.model) that `ltx_core.models.text_encoder.load_text_encoder` reads
exactly as it reads T5-XXL.

The model is the core's own `T5EncoderModel`, so building, training and saving it needs no
transformers. It starts from T5's initialization (`init_t5_weights`) at a seed and is then
trained on the captions (`train_text.py`): LTX-Video keeps T5-XXL frozen (paper 2.3), but
T5-XXL comes pre-trained on a web of text; a tiny encoder frozen at random weights only
maps each word to a fixed vector and cannot learn that "red" in "a red circle on a dark
blue background" belongs to the circle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..models.t5 import T5Config, T5EncoderModel
from ..models.text_encoder import VOCABULARY_FILE
from .tokenizer import caption_vocabulary, train_tokenizer

TINY_T5 = dict(
    vocab_size=320,  # the tokenizer's pieces (about 160) and T5's 100 sentinels, rounded up
    d_model=256,
    d_kv=32,
    d_ff=512,
    num_layers=4,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
)
# The rest of a T5EncoderModel config.json, as transformers writes it, so other readers take the folder too.
CONFIG_EXTRAS = dict(
    architectures=["T5EncoderModel"],
    model_type="t5",
    dense_act_fn="gelu_new",
    is_gated_act=True,
    dropout_rate=0.0,
    layer_norm_epsilon=1e-6,
    initializer_factor=1.0,
    is_encoder_decoder=False,
    tie_word_embeddings=True,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
    use_cache=False,
)
TIED_KEY = "encoder.embed_tokens.weight"  # the same tensor as `shared.weight`, stored once


def tiny_t5_config(**changes) -> T5Config:
    return T5Config(**{**TINY_T5, **changes})


@torch.no_grad()
def init_t5_weights(model: T5EncoderModel, generator: torch.Generator) -> T5EncoderModel:
    """T5's initialization (Mesh TensorFlow's, as transformers' `T5PreTrainedModel` draws
    it): normal weights whose std keeps activations at unit scale without the 1/sqrt(d)
    score scaling T5 leaves out; the query takes that factor instead (T5 paper 2.1)."""
    c = model.config
    model.shared.weight.normal_(0.0, 1.0, generator=generator)
    for block in model.encoder.block:
        attention = block.layer[0].SelfAttention
        attention.q.weight.normal_(0.0, (c.d_model * c.d_kv) ** -0.5, generator=generator)
        for linear in (attention.k, attention.v):
            linear.weight.normal_(0.0, c.d_model**-0.5, generator=generator)
        attention.o.weight.normal_(0.0, (c.num_heads * c.d_kv) ** -0.5, generator=generator)
        if hasattr(attention, "relative_attention_bias"):
            attention.relative_attention_bias.weight.normal_(0.0, c.d_model**-0.5, generator=generator)
        ff = block.layer[1].DenseReluDense
        for linear in (ff.wi_0, ff.wi_1) if c.is_gated else (ff.wi,):
            linear.weight.normal_(0.0, c.d_model**-0.5, generator=generator)
        ff.wo.weight.normal_(0.0, c.d_ff**-0.5, generator=generator)
    return model


def new_text_encoder(seed: int = 0, **changes) -> T5EncoderModel:
    """The tiny encoder at T5's initialization, the same weights for the same seed anywhere."""
    model = T5EncoderModel(tiny_t5_config(**changes))
    return init_t5_weights(model, torch.Generator().manual_seed(seed))


def config_json(config: T5Config) -> dict:
    fields = {k: getattr(config, k) for k in (*TINY_T5, "layer_norm_epsilon")}
    return {**CONFIG_EXTRAS, **fields, "num_decoder_layers": config.num_layers}


def save_text_encoder(model: T5EncoderModel, folder: Path | str, tokenizer: Path | str) -> Path:
    """Write config.json, model.safetensors (fp32, transformers' key names), the
    tokenizer's file (spiece.model) and the captions' words (vocabulary.txt) to `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_KEY}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config_json(model.config), indent=2, sort_keys=True) + "\n")
    target = folder / Path(tokenizer).name  # spiece.model (or a tokenizer.json)
    if Path(tokenizer).resolve() != target.resolve():
        shutil.copyfile(tokenizer, target)
    (folder / VOCABULARY_FILE).write_text("\n".join(caption_vocabulary()) + "\n")
    return folder


def write_text_encoder(folder: Path | str, seed: int = 0) -> Path:
    """A fresh (untrained) encoder and the caption tokenizer, written as the folder."""
    folder = Path(folder)
    tokenizer = train_tokenizer(folder / "spiece.model", seed=seed)
    return save_text_encoder(new_text_encoder(seed), folder, tokenizer)
