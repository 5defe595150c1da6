"""The demo text encoder's tokenizer (`ltx_core.training.tokenizer`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece
from sentencepiece import sentencepiece_model_pb2

from ltx_core.models.text_encoder import load_tokenizer
from ltx_core.training.tokenizer import DEFAULT_NEGATIVE_PROMPT, train_tokenizer

SHIPPED = Path(__file__).resolve().parents[2] / "ltx_core" / "assets" / "t5-tiny" / "spiece.model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer") / "spiece.model")


def pieces(path: Path) -> list[tuple[str, int]]:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return [(p.piece, p.type) for p in proto.pieces]


def test_the_tokenizer_keeps_caption_words_whole_folds_case_and_has_t5_special_ids(trained, tmp_path):
    """T5's loader expects pad 0, eos 1, unk 2; whole words make the text encoder's job easy;
    "Red" and "red" are one piece."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(trained))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.encode("A Red BALL drifts to the left", out_type=str) == [
        "▁a",
        "▁red",
        "▁ball",
        "▁drifts",
        "▁to",
        "▁the",
        "▁left",
    ]
    for word in ("backdrop", "navy", "grey", "pink", "beige", "cube", "disc"):
        assert sp.encode(word, out_type=str) == [f"▁{word}"]
    assert trained.read_bytes() == train_tokenizer(tmp_path / "again.model").read_bytes()


def test_the_shipped_tokenizer_is_this_recipes(trained):
    """The shipped file comes from `train_tokenizer` (in the training call, on another machine
    and perhaps another sentencepiece: its pieces, in their order, are compared)."""
    if sentencepiece_model_pb2.ModelProto.FromString(SHIPPED.read_bytes()).normalizer_spec.name != "nmt_nfkc_cf":
        pytest.skip("the shipped text encoder predates the caption vocabulary; the next trained one replaces it")
    assert pieces(SHIPPED) == pieces(trained)


def test_the_cores_t5_tokenizer_reads_it_as_sentencepiece_does(trained):
    """The pipeline's tokenizer: sentencepiece's pieces of each caption (case folding
    included, from the file's own normalization table), then </s>."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(trained))
    tokenizer = load_tokenizer(trained)
    for text in ("A RED circle slides slowly to the left over a Dark Blue background.", DEFAULT_NEGATIVE_PROMPT):
        assert tokenizer(text).input_ids == sp.encode(text) + [1]
        assert 2 not in tokenizer(text).input_ids  # no <unk>


def test_a_sentencepiece_without_seed_files_is_named_before_training(monkeypatch, tmp_path):
    """An older sentencepiece's trainer lacks the seed option the recipe needs: the error
    names the version and the way out, and no file is written."""
    from types import SimpleNamespace

    from ltx_core.training import tokenizer

    spec = SimpleNamespace(DESCRIPTOR=SimpleNamespace(fields_by_name={"vocab_size": None}))
    monkeypatch.setattr(tokenizer, "sentencepiece_model_pb2", SimpleNamespace(TrainerSpec=spec))
    with pytest.raises(RuntimeError, match=rf"sentencepiece {sentencepiece.__version__} .*--text-encoder"):
        train_tokenizer(tmp_path / "spiece.model")
    assert not (tmp_path / "spiece.model").exists()
