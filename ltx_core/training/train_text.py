"""Training of the tiny text encoder on the captions: what each caption says is known (the
generator wrote it), so the encoder learns to say it.

T5-XXL learns what words mean from a web of text before LTX-Video ever reads it (paper
2.3); the tiny world has no such corpus, but it has labels. Small heads on top of the
encoder (`AttributeHeads`: per attribute, a learned query attends over the caption's
tokens, as the DiT's cross-attention will, and a linear layer names the value) are trained
to read back the shape's color, the background's color, the shape, the motion, the speed
and the rest from the encoder's last hidden state. Paraphrases of one clip share labels, so
the encoder must map "a red ball on a navy backdrop" and "On a dark blue background, a red
circle" to the same reading, and "red" must carry whether it names the shape or the
background. The heads are dropped afterwards: only the encoder ships.

It runs first alone (`pretrain`: seconds on a GPU), then on in the DiT's training
(`JointCaptions`: the DiT's loss flows into the encoder at its own learning rate, with
these heads' loss beside it so that what the encoder learned here stays readable).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.t5 import T5EncoderModel
from ..models.t5_tokenizer import T5Tokenizer
from . import captions, data

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": tuple(data.SHAPE_COLORS),
    "background": tuple(data.BACKGROUND_COLORS),
    "shape": data.SHAPES,
    "motion": data.MOTIONS,
    "speed": ("unsaid", *data.SPEEDS),
    "style": ("unsaid", *data.BACKGROUND_STYLES),
    "second_color": ("none", *data.SHAPE_COLORS),
    "second_shape": ("none", *data.SHAPES),
    "corner": ("none", *data.CORNERS),
}
TEXT_MAX_TOKENS = 128  # the pipeline's prompt length: T5 runs unmasked, so padding matters
TEXT_KEEP_TOKENS = 48  # captions are shorter; the DiT reads this many (the rest is masked padding)


class AttributeHeads(nn.Module):
    """Per attribute, a learned query attends over the real tokens of the encoder's output
    and a linear layer names the attribute's value from what it gathered."""

    def __init__(self, width: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(len(ATTRIBUTES), width) / math.sqrt(width))
        self.classifiers = nn.ModuleList(nn.Linear(width, len(values)) for values in ATTRIBUTES.values())

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """embeds (B, L, D), mask (B, L) True on tokens -> one (B, values) logit tensor per attribute."""
        embeds = embeds.float()
        scores = torch.einsum("bld,ad->bal", embeds, self.queries.float()) / math.sqrt(embeds.shape[-1])
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        pooled = torch.einsum("bal,bld->bad", scores.softmax(-1), embeds)  # (B, A, D)
        return [classifier(pooled[:, i]) for i, classifier in enumerate(self.classifiers)]


def label_row(labels: dict[str, str]) -> list[int]:
    return [ATTRIBUTES[name].index(labels[name]) for name in ATTRIBUTES]


def encode_ids(model: T5EncoderModel, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeds, mask) of padded token ids (B, TEXT_MAX_TOKENS), kept to TEXT_KEEP_TOKENS, as
    `encode_prompt` makes them: the encoder runs unmasked over the padding (pad id 0)."""
    embeds = model(ids.long())
    return embeds[:, :TEXT_KEEP_TOKENS], ids[:, :TEXT_KEEP_TOKENS] != 0


def attribute_loss(heads: AttributeHeads, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """(mean cross-entropy over the attributes, (A,) share of rows read right per attribute)."""
    logits = heads(embeds, mask)
    loss = sum(F.cross_entropy(lg, labels[:, i]) for i, lg in enumerate(logits)) / len(logits)
    right = torch.stack([(lg.argmax(-1) == labels[:, i]).float().mean() for i, lg in enumerate(logits)])
    return loss, right


@dataclass
class CaptionBank:
    """Token ids (N, V, TEXT_MAX_TOKENS) and labels (N, V, attributes) of V wordings of each of N clips."""

    ids: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def build(
        cls, specs: list[data.ClipSpec], tokenizer: T5Tokenizer, variants: int, heldout_form: bool = False
    ) -> CaptionBank:
        texts, rows = [], []
        for spec in specs:
            for variant in range(variants):
                text, labels = captions.labeled_caption(spec, variant, heldout_form)
                texts.append(text)
                rows.append(label_row(labels))
        ids, _ = tokenizer.padded(texts, TEXT_MAX_TOKENS)
        shape = (len(specs), variants)
        return cls(ids.to(torch.int32).view(*shape, -1), torch.tensor(rows).view(*shape, -1))

    def to(self, device) -> CaptionBank:
        return CaptionBank(self.ids.to(device), self.labels.to(device))

    def draw(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, labels) of one random wording of each clip `idx`."""
        variant = torch.randint(self.ids.shape[1], idx.shape, generator=generator, device=generator.device)
        idx = idx.to(self.ids.device)
        variant = variant.to(self.ids.device)
        return self.ids[idx, variant], self.labels[idx, variant]


@dataclass(frozen=True)
class TextTrainSettings:
    learning_rate: float = 1e-3  # alone; JointCaptions takes its own
    batch_size: int = 256
    warmup_steps: int = 100
    weight_decay: float = 0.01
    steps: int = 100_000
    seed: int = 0


def text_optimizer(encoder: T5EncoderModel, heads: AttributeHeads, lr: float, weight_decay: float):
    return torch.optim.AdamW(
        [*encoder.parameters(), *heads.parameters()], lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay
    )


def _lr(step: int, progress: float, settings: TextTrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth over the run's progress in [0, 1]."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    return settings.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def pretrain(
    encoder: T5EncoderModel,
    heads: AttributeHeads,
    bank: CaptionBank,
    settings: TextTrainSettings,
    time_budget_s: float | None = None,
    log=print,
    autocast: bool = False,
) -> int:
    """Train encoder and heads on the bank's captions until the steps or the time budget
    run out; returns the steps taken."""
    encoder.train().requires_grad_(True)
    device = encoder.device
    optimizer = text_optimizer(encoder, heads, settings.learning_rate, settings.weight_decay)
    generator = torch.Generator(device).manual_seed(settings.seed)
    start, step, window = time.monotonic(), 0, []
    while step < settings.steps and (time_budget_s is None or time.monotonic() - start < time_budget_s):
        progress = max(step / settings.steps, (time.monotonic() - start) / time_budget_s if time_budget_s else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, progress, settings)
        idx = torch.randint(bank.ids.shape[0], (settings.batch_size,), generator=generator, device=device)
        ids, labels = bank.draw(idx, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, right = attribute_loss(heads, *encode_ids(encoder, ids), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*encoder.parameters(), *heads.parameters()], 1.0)
        optimizer.step()
        step += 1
        window.append(torch.cat([loss.detach()[None], right]))
        if step % 100 == 0:
            mean = torch.stack(window).mean(0).tolist()
            worst = min(mean[1:])
            log(f"text step {step} loss {mean[0]:.4f} worst attribute {worst:.3f} {time.monotonic() - start:.0f}s")
            window = []
    return step


@torch.no_grad()
def read_accuracy(encoder: T5EncoderModel, heads: AttributeHeads, bank: CaptionBank, batch: int = 512) -> dict:
    """Share of captions whose every attribute the heads read right, and each attribute's."""
    encoder.eval()
    ids, labels = bank.ids.flatten(0, 1), bank.labels.flatten(0, 1)
    hits = []
    for start in range(0, len(ids), batch):
        logits = heads(*encode_ids(encoder, ids[start : start + batch].to(encoder.device)))
        want = labels[start : start + batch].to(encoder.device)
        hits.append(torch.stack([lg.argmax(-1) == want[:, i] for i, lg in enumerate(logits)], 1))
    hit = torch.cat(hits).float()
    return {"all": float(hit.min(1).values.mean()), **{n: float(hit[:, i].mean()) for i, n in enumerate(ATTRIBUTES)}}


class JointCaptions:
    """The DiT's captions from an encoder that trains with it: each batch draws one wording
    per clip from the bank, runs the encoder (and the null prompts) and adds the heads'
    loss, weighted, to the DiT's; `update` steps the encoder after the backward pass and
    keeps its EMA, which ships beside the DiT's EMA (both average the same steps)."""

    def __init__(
        self,
        encoder: T5EncoderModel,
        heads: AttributeHeads,
        bank: CaptionBank,
        null_ids: torch.Tensor,
        learning_rate: float,
        aux_weight: float,
    ):
        self.encoder, self.heads, self.bank, self.null_ids = encoder.train().requires_grad_(True), heads, bank, null_ids
        self.ema = copy.deepcopy(encoder).eval().requires_grad_(False)
        self.learning_rate, self.aux_weight = learning_rate, aux_weight
        self.optimizer = text_optimizer(encoder, heads, learning_rate, TextTrainSettings.weight_decay)
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self, idx: torch.Tensor, generator: torch.Generator):
        """(text, mask, null_text, null_mask, extra loss) for the clips `idx`."""
        ids, labels = self.bank.draw(idx, generator)
        embeds, mask = encode_ids(self.encoder, torch.cat([ids, self.null_ids.to(ids)]))
        count = len(ids)
        loss, _ = attribute_loss(self.heads, embeds[:count], mask[:count], labels)
        return embeds[:count], mask[:count], embeds[count:], mask[count:], self.aux_weight * loss

    def update(self, lr_scale: float, ema_decay: float) -> None:
        """One optimizer step of the encoder and heads at `lr_scale` of their learning rate,
        then the EMA."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate * lr_scale
        torch.nn.utils.clip_grad_norm_([*self.encoder.parameters(), *self.heads.parameters()], 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.encoder.parameters()):
                e.lerp_(p.detach(), 1 - ema_decay)
