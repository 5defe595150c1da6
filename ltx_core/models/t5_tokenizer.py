"""T5's tokenizer, read from the same files as transformers' T5Tokenizer and giving the
same ids: a sentencepiece `spiece.model` (T5's own file) or a `tokenizer.json` (Hugging
Face's, such as the one ComfyUI ships in comfy/text_encoders/t5_tokenizer/).

T5 tokenizes with a sentencepiece unigram model (Kudo 2018) over NFKC-normalized text:
white space is collapsed, every word starts with "▁" and no piece spans two words; ids 0,
1, 2 are <pad>, </s>, <unk>, and 100 sentinels <extra_id_N> end the vocabulary (T5 paper
3.1.4, span corruption). A sequence is its pieces then </s>. The `tokenizers` package
runs the unigram model, built from the file's pieces, scores and normalization table.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import Unigram

from ..errors import CheckpointError

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_PIECES = (PAD, EOS, UNK)  # at ids 0, 1, 2 in every T5 vocabulary
EXTRA_IDS = 100
WORD_START = "\u2581"  # "▁", sentencepiece's mark of a space before a word
CONTROL_PIECE = 3  # sentencepiece's ModelProto.SentencePiece.Type.CONTROL
UNIGRAM_MODEL = 1  # sentencepiece's TrainerSpec.ModelType.UNIGRAM


@dataclass(frozen=True)
class Tokens:
    """Ids and mask (1 on tokens, 0 on padding): lists for one text, lists of lists for several."""

    input_ids: list
    attention_mask: list


class T5Tokenizer:
    """Text -> T5 token ids. `tokenizer(text)` gives the ids with </s> appended (as
    transformers' tokenizers do); `padded(texts, length)` gives the (B, length) batch the
    encoder reads."""

    def __init__(self, backend: Tokenizer, source: Path):
        self.backend = backend
        self.source = source
        self.pad_token_id, self.eos_token_id, self.unk_token_id = (backend.token_to_id(t) for t in SPECIAL_PIECES)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return f"T5Tokenizer({str(self.source)!r}, {len(self)} tokens)"

    def ids(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        # one text at a time: a batch call would start the backend's thread pool, which a
        # later fork (a data loader, a compile worker) warns about, for no gain on a prompt
        pieces = [self.backend.encode(text, add_special_tokens=False).ids for text in texts]
        return [ids + [self.eos_token_id] for ids in pieces] if add_special_tokens else pieces

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> Tokens:
        ids = self.ids([text] if isinstance(text, str) else list(text), add_special_tokens)
        masks = [[1] * len(row) for row in ids]
        return Tokens(ids[0], masks[0]) if isinstance(text, str) else Tokens(ids, masks)

    def padded(self, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask), both (B, length) int64: each text cut to length - 1 pieces, then
        </s>, then <pad> to `length`."""
        ids = torch.full((len(texts), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.long)
        for row, pieces in enumerate(self.ids(texts, add_special_tokens=False)):
            kept = pieces[: length - 1] + [self.eos_token_id]
            ids[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
            mask[row, : len(kept)] = 1
        return ids, mask


def _backend(vocab: list[tuple[str, float]], charsmap: bytes | None, specials: list[str], source: Path) -> Tokenizer:
    """The unigram tokenizer over `vocab` (piece, log probability) as transformers' T5
    tokenizer builds it: sentencepiece's normalization table where the file has one,
    words split at white space with "▁" before each, special tokens matched whole."""
    layout = tuple(piece for piece, _ in vocab[: len(SPECIAL_PIECES)])
    if layout != SPECIAL_PIECES:
        raise CheckpointError(
            f"tokenizer {source} starts with {list(layout)}, not T5's {list(SPECIAL_PIECES)}; it is not a T5 tokenizer"
        )
    backend = Tokenizer(Unigram(vocab, unk_id=SPECIAL_PIECES.index(UNK), byte_fallback=False))
    if charsmap:
        backend.normalizer = normalizers.Precompiled(charsmap)
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always", split=True),
    ])  # fmt: skip
    sentinels = [f"<extra_id_{index}>" for index in range(EXTRA_IDS)]
    names = dict.fromkeys([*SPECIAL_PIECES, *specials, *sentinels])
    backend.add_special_tokens([AddedToken(name, normalized=False, special=True) for name in names])
    return backend


def from_sentencepiece(file: Path) -> T5Tokenizer:
    """T5's tokenizer from a sentencepiece model file (`spiece.model`)."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(file))
    except (RuntimeError, OSError) as error:
        raise CheckpointError(
            f"tokenizer {file} is not a sentencepiece model ({error}); expected T5's spiece.model"
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(processor.serialized_model_proto())
    if proto.trainer_spec.model_type != UNIGRAM_MODEL:
        raise CheckpointError(f"tokenizer {file} is not a unigram sentencepiece model, as T5's is")
    # the sentinels follow the file's pieces, the last one first (T5's published ids)
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    vocab += [(f"<extra_id_{index}>", 0.0) for index in reversed(range(EXTRA_IDS))]
    control = [piece.piece for piece in proto.pieces if piece.type == CONTROL_PIECE]
    charsmap = proto.normalizer_spec.precompiled_charsmap or None
    return T5Tokenizer(_backend(vocab, charsmap, control, file), file)


def _precompiled_charsmap(normalizer: dict | None) -> bytes | None:
    """sentencepiece's normalization table that tokenizer.json copies from spiece.model."""
    if not normalizer:
        return None
    for entry in normalizer.get("normalizers", [normalizer]):
        if entry.get("type") == "Precompiled" and entry.get("precompiled_charsmap"):
            return base64.b64decode(entry["precompiled_charsmap"])
    return None


def from_tokenizer_json(file: Path) -> T5Tokenizer:
    """T5's tokenizer from a Hugging Face `tokenizer.json` of a unigram model."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        model = data["model"]
        vocab = [(str(piece), float(score)) for piece, score in model["vocab"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"tokenizer {file} is not a readable tokenizer.json ({error!r})") from None
    if model.get("type") != "Unigram":
        raise CheckpointError(
            f"tokenizer {file} holds a {model.get('type')} model; T5's tokenizer is a unigram (sentencepiece) one"
        )
    specials = [token["content"] for token in data.get("added_tokens") or [] if token.get("special")]
    return T5Tokenizer(_backend(vocab, _precompiled_charsmap(data.get("normalizer")), specials, file), file)
