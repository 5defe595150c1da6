"""The demo text encoder's tokenizer (`ltx_core.training.tokenizer`)."""

from __future__ import annotations

from pathlib import Path

import sentencepiece

from ltx_core.models.text_encoder import load_tokenizer
from ltx_core.training.tokenizer import DEFAULT_NEGATIVE_PROMPT, train_tokenizer

SHIPPED = Path(__file__).resolve().parents[2] / "ltx_core" / "assets" / "t5-tiny" / "spiece.model"


def test_the_tokenizer_keeps_caption_words_whole_and_has_t5_special_ids(tmp_path):
    """T5's loader expects pad 0, eos 1, unk 2; whole words make the text encoder's job easy."""
    path = train_tokenizer(tmp_path / "spiece.model")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.encode("A red circle slides to the left", out_type=str) == [
        "▁A",
        "▁red",
        "▁circle",
        "▁slides",
        "▁to",
        "▁the",
        "▁left",
    ]
    assert path.read_bytes() == train_tokenizer(tmp_path / "again.model").read_bytes()
    assert path.read_bytes() == SHIPPED.read_bytes()  # the shipped file is this recipe's


def test_the_cores_t5_tokenizer_reads_it_as_sentencepiece_does():
    """The pipeline's tokenizer: sentencepiece's pieces of each caption, then </s>."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SHIPPED))
    tokenizer = load_tokenizer(SHIPPED)
    for text in ("A red circle slides slowly to the left over a dark blue background.", DEFAULT_NEGATIVE_PROMPT):
        assert tokenizer(text).input_ids == sp.encode(text) + [1]
        assert 2 not in tokenizer(text).input_ids  # no <unk>
