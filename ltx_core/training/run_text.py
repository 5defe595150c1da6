"""The text encoder's part of one training call (`run_tiny`): its options, where it comes
from (a T5 folder, or new: T5's initialization and a tokenizer trained on the captions),
its training alone on the captions (`train_text.pretrain`) before it goes on beside the
DiT (`train_text.JointCaptions`), the log of how it reads held-out captions, and its
export as a T5 folder (OUT/t5-tiny) that the core loads as it loads T5-XXL.
"""

from __future__ import annotations

import argparse
import math

import torch

from ..models.text_encoder import TextEncoder, encode_prompt, load_text_encoder, load_tokenizer
from . import data, train_dit, train_text
from .t5 import new_text_encoder, save_text_encoder, write_text_encoder
from .tokenizer import DEFAULT_NEGATIVE_PROMPT, train_tokenizer
from .train_text import TEXT_KEEP_TOKENS, TEXT_MAX_TOKENS

TEXT_FOLDER = "t5-tiny"  # OUT/t5-tiny: the text encoder a call trained
TEXT_CHECK_SEED = 99  # fresh training-combination clips for the text encoder's held-out-form check


def add_text_arguments(p: argparse.ArgumentParser) -> None:
    """The text encoder's options (`train_text.py`)."""
    p.add_argument(
        "--train-text-encoder",
        action="store_true",
        help="train the text encoder: alone on the captions, then with the DiT; written to OUT/t5-tiny",
    )
    p.add_argument(
        "--new-text-encoder",
        action="store_true",
        help="start from T5's initialization and a tokenizer trained here, not from --text-encoder",
    )
    p.add_argument("--text-pretrain-seconds", type=float, default=40)
    p.add_argument("--text-pretrain-lr", type=float, default=1e-3)
    p.add_argument("--text-pretrain-batch", type=int, default=512)
    p.add_argument("--text-lr", type=float, default=1e-4, help="the encoder's learning rate beside the DiT")
    p.add_argument(
        "--text-aux-weight",
        type=float,
        default=0.1,
        help="weight of the attribute heads' loss beside the DiT's (keeps the words readable)",
    )
    p.add_argument("--caption-variants", type=int, default=4, help="wordings per training clip")
    p.add_argument(
        "--text-check-count", type=int, default=256, help="clips per set of the encoder's held-out reading in the log"
    )


def check_text_settings(args) -> None:
    """Clear errors for the text encoder's settings out of range, before any GPU work."""
    if args.caption_variants < 1:
        raise SystemExit(f"--caption-variants {args.caption_variants}: give 1 or more")
    for name in ("text_lr", "text_pretrain_lr", "text_aux_weight", "text_pretrain_seconds"):
        if not 0 <= getattr(args, name) < math.inf:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: give 0 or more")


def load_or_new_text_encoder(args, device: torch.device, log) -> TextEncoder:
    """`--new-text-encoder`: T5's initialization at seed 0 and a tokenizer trained on the
    captions (OUT/t5-tiny/spiece.model); else the `--text-encoder` folder."""
    if args.new_text_encoder:
        spiece = train_tokenizer(args.out / TEXT_FOLDER / "spiece.model")
        encoder = TextEncoder(load_tokenizer(spiece), new_text_encoder().to(device))
        log(f"text encoder new: {len(encoder.tokenizer)} tokens, {encoder.model.config.num_layers} layers")
        return encoder
    if not (args.text_encoder / "model.safetensors").is_file():
        write_text_encoder(args.text_encoder)  # seeded: the same files on every machine
    return load_text_encoder(args.text_encoder, device=device)


def check_text_encoder(
    encoder: TextEncoder, heads: train_text.AttributeHeads, log, when: str, count: int = 256
) -> None:
    """Log how well the attribute heads read captions the encoder never trained on:
    held-out combinations in the training forms, and held-out forms."""
    sets = {
        "held-out combinations": (data.heldout_specs(count), False),
        "held-out forms": (data.training_specs(TEXT_CHECK_SEED, 0, count), True),
        "both": (data.heldout_specs(count), True),
    }
    for name, (specs, heldout_form) in sets.items():
        bank = train_text.CaptionBank.build(specs, encoder.tokenizer, 2, heldout_form)
        read = train_text.read_accuracy(encoder.model, heads, bank)
        worst = min((k for k in read if k != "all"), key=read.get)
        log(f"text encoder {when}, {name}: all read right {read['all']:.3f} (worst {worst} {read[worst]:.3f})")


def text_captions(args, encoder: TextEncoder, specs: list[data.ClipSpec], log) -> train_text.JointCaptions:
    """Train the encoder alone on the clips' captions, then hand it to the DiT's loop."""
    device = encoder.model.device
    bank = train_text.CaptionBank.build(specs, encoder.tokenizer, args.caption_variants).to(device)
    torch.manual_seed(0)
    heads = train_text.AttributeHeads(encoder.width).to(device)
    settings = train_text.TextTrainSettings(learning_rate=args.text_pretrain_lr, batch_size=args.text_pretrain_batch)
    steps = train_text.pretrain(
        encoder.model, heads, bank, settings, args.text_pretrain_seconds, log, autocast=device.type == "cuda"
    )
    log(f"text encoder trained alone {steps} steps of batch {settings.batch_size} on {tuple(bank.ids.shape)} ids")
    check_text_encoder(encoder, heads, log, "alone", args.text_check_count)
    null_ids, _ = encoder.tokenizer.padded(["", DEFAULT_NEGATIVE_PROMPT], TEXT_MAX_TOKENS)
    return train_text.JointCaptions(encoder.model, heads, bank, null_ids.to(device), args.text_lr, args.text_aux_weight)


def export_text_encoder(args, encoder: TextEncoder, trained, log) -> None:
    """OUT/t5-tiny from the encoder's EMA (or the encoder itself, untrained), read back
    through the core's loader as T5-XXL is; the heads' reading of held-out captions logged."""
    if trained is not None:
        encoder = TextEncoder(encoder.tokenizer, trained.ema)
        check_text_encoder(encoder, trained.heads, log, "after the DiT (EMA)", args.text_check_count)
    folder = save_text_encoder(encoder.model, args.out / TEXT_FOLDER, encoder.tokenizer.source)
    loaded = load_text_encoder(folder)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.2f} MiB" for p in sorted(folder.iterdir()))
    log(f"saved {TEXT_FOLDER}: {sizes}; loads as T5 ({len(loaded.tokenizer)} tokens)")


@torch.no_grad()
def embed_captions(encoder, prompts: list[str], batch: int = 256):
    texts, masks = [], []
    for start in range(0, len(prompts), batch):
        emb = encode_prompt(encoder, prompts[start : start + batch], max_tokens=TEXT_MAX_TOKENS, allow_empty=True)
        texts.append(emb.embeds[:, :TEXT_KEEP_TOKENS].to(torch.bfloat16))
        masks.append(emb.mask[:, :TEXT_KEEP_TOKENS])
    return torch.cat(texts), torch.cat(masks)


def dit_captions(args, encoder: TextEncoder, texts: list[str], specs: list[data.ClipSpec] | None, log):
    """The DiT's captions: `texts` embedded once by the frozen encoder, or the captions of
    the clips `specs` from one that trains along."""
    if not args.train_text_encoder:
        embedded = embed_captions(encoder, texts)
        log(f"dit texts {tuple(embedded[0].shape)}")
        return train_dit.FixedCaptions(*embedded, *embed_captions(encoder, ["", DEFAULT_NEGATIVE_PROMPT]))
    return text_captions(args, encoder, specs, log)
