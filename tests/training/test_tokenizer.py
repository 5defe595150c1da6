"""The demo text encoder's tokenizer (`ltx_core.training.tokenizer`)."""

from __future__ import annotations

import sentencepiece

from ltx_core.training.tokenizer import train_tokenizer



def test_the_tokenizer_keeps_caption_words_whole_and_has_t5_special_ids(tmp_path):
    """T5's loader expects pad 0, eos 1, unk 2; whole words make the text encoder's job easy."""
    path = train_tokenizer(tmp_path / "spiece.model")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.encode("A red circle slides to the left", out_type=str) == [
        "▁A", "▁red", "▁circle", "▁slides", "▁to", "▁the", "▁left"]
    assert path.read_bytes() == train_tokenizer(tmp_path / "again.model").read_bytes()
