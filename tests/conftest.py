"""Shared fixtures: tiny seeded models and files, CPU and fp32, small enough for 2 cores.

Every fixture builds its object from a fixed seed, so any test may use it and get the
same numbers; file fixtures are session-scoped and must not be modified by tests.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sentencepiece
import torch
from transformers import T5Config, T5EncoderModel

SEED = 0

# A few sentences are enough for sentencepiece to learn a small unigram vocabulary.
TOKENIZER_SENTENCES = [
    "a red fox jumps over the lazy dog",
    "the camera pans slowly across a misty forest at dawn",
    "a woman with long brown hair smiles at the camera",
    "waves crash on a rocky shore under a grey sky",
    "a cat sleeps on a warm windowsill in the afternoon sun",
]

# T5 v1.1 in miniature: gated-gelu, untied relative attention in layer 0 only.
TINY_T5 = dict(
    d_model=32,
    d_kv=8,
    d_ff=48,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
    dropout_rate=0.0,
)


def train_sentencepiece(path: Path) -> Path:
    """A real sentencepiece model with T5's special ids: <pad> 0, </s> 1, <unk> 2."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TOKENIZER_SENTENCES * 4),
        model_writer=model,
        vocab_size=48,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


@pytest.fixture(scope="session")
def spiece_model(tmp_path_factory) -> Path:
    """Path of a tiny sentencepiece tokenizer file named like T5's."""
    return train_sentencepiece(tmp_path_factory.mktemp("tokenizer") / "spiece.model")


@pytest.fixture(scope="session")
def tiny_t5_folder(tmp_path_factory, spiece_model) -> Path:
    """A Hugging Face T5 encoder folder: config.json, model.safetensors, spiece.model."""
    folder = tmp_path_factory.mktemp("t5")
    torch.manual_seed(SEED)
    model = T5EncoderModel(T5Config(vocab_size=160, **TINY_T5)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "spiece.model").write_bytes(spiece_model.read_bytes())
    return folder


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator at the shared seed; every random draw in the core takes one."""
    return torch.Generator().manual_seed(SEED)


@pytest.fixture(scope="session")
def tiny_transformer():
    """`LTXVTransformer(TINY_TRANSFORMER)` with seeded random weights (caption width 32,
    as `tiny_t5_folder`'s encoder). Shared: do not modify."""
    from ltx_core.models.configs import TINY_TRANSFORMER
    from ltx_core.models.transformer import LTXVTransformer

    torch.manual_seed(SEED)
    return LTXVTransformer(TINY_TRANSFORMER).eval()


@pytest.fixture(scope="session")
def tiny_vae():
    """`CausalVideoVAE(TINY_VAE)` (0.9.5 layout, timestep-conditioned decoder) with seeded
    random weights. Shared: do not modify."""
    from ltx_core.models.configs import TINY_VAE
    from ltx_core.models.vae import CausalVideoVAE

    torch.manual_seed(SEED)
    return CausalVideoVAE(TINY_VAE).eval()
