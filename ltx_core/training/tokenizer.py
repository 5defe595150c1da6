"""A sentencepiece tokenizer trained on the synthetic captions, with T5's special ids.

T5 expects pad = 0, eos = 1, unk = 2 and no bos, so the core's T5 tokenizer
(`models.t5_tokenizer`, the same ids as transformers' T5Tokenizer) reads the file exactly
as it reads T5-XXL's `spiece.model` (the same loading path, paper 2.3). Its normalization
is sentencepiece's `nmt_nfkc_cf` (T5's NFKC plus case folding, in the file's own table):
"Red", "RED" and "red" are one piece, so a prompt's capitals need no training of their own.
"""

from __future__ import annotations

import collections
import io
import re
import tempfile
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from ..models.text_encoder import WORD  # the words the unknown-word warning reads
from . import captions, data

# The official pipelines' default negative prompt: trained on so its words are not <unk>.
DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"
VOCAB_PIECES = 256  # a soft limit: every caption word is kept whole, the rest fall to letters


def caption_corpus(seed: int = 0, count: int = 4000) -> list[str]:
    """Training captions (two wordings of each clip) plus every word the captions can
    use and the negative prompt."""
    specs = data.training_specs(seed, 0, count)
    texts = [captions.caption(s, variant) for s in specs for variant in range(2)]
    texts += [" ".join(" ".join(p) for p in phrases) for phrases in captions.MOTION_PHRASES.values()]
    texts += [" ".join(p) for p in captions.SPEED_WORDS.values()]
    texts += [" ".join(captions.color_words(name)) for name in data.COLORS]
    texts += [" ".join(p) for p in captions.SHAPE_WORDS.values()]
    texts += [DEFAULT_NEGATIVE_PROMPT] * 50
    return texts


def caption_vocabulary(seed: int = 0) -> list[str]:
    """Every word of the caption corpus, lower case and sorted: what the encoder trained on
    it knows, written beside it for the core's unknown-word warning."""
    return sorted({word for text in caption_corpus(seed) for word in WORD.findall(text.lower())})


def _write_word_seeds(texts: list[str], path: Path) -> None:
    """Every caption word as a seed piece: the unigram trainer's own seed search (0.2.x)
    keeps too few of them on so small and repetitive a corpus, and splits 'circle'."""
    counts = collections.Counter(w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t))
    path.write_text("".join(f"\u2581{w}\t{n}\n" for w, n in sorted(counts.items())))


def _check_trainer_options() -> None:
    """The word seeds need a trainer that takes a seed file; an older sentencepiece fails
    with a protobuf message that names neither the version nor a way out."""
    if "seed_sentencepieces_file" not in sentencepiece_model_pb2.TrainerSpec.DESCRIPTOR.fields_by_name:
        raise RuntimeError(
            f"sentencepiece {spm.__version__} cannot train the captions' tokenizer: its trainer has no "
            "seed_sentencepieces_file option (0.2.3 has it); install a newer sentencepiece, or make the "
            "text encoder where one is installed and pass its folder as --text-encoder"
        )


def train_tokenizer(path: Path | str, vocab_size: int = VOCAB_PIECES, seed: int = 0) -> Path:
    """Train a unigram sentencepiece model on the caption corpus and write it to `path`.

    Words outside the captions fall back to single characters (never `<unk>` for ASCII).
    """
    _check_trainer_options()
    texts = caption_corpus(seed)
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        seeds = Path(tmp) / "seeds.tsv"
        _write_word_seeds(texts, seeds)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=buffer,
            seed_sentencepieces_file=str(seeds),
            vocab_size=vocab_size,
            model_type="unigram",
            normalization_rule_name="nmt_nfkc_cf",
            character_coverage=1.0,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            hard_vocab_limit=False,
            num_threads=1,
            minloglevel=2,
        )
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(buffer.getvalue())
    model.trainer_spec.ClearField("seed_sentencepieces_file")  # a temp path: keep the file reproducible
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path
