"""Rectified-flow training of the video DiT on precomputed latents (paper 2.4, 2.5).

Per step: clean tokens x0, noise e, a timestep t from the shifted logit-normal whose
shift grows with the token count (pdf clamped at its 0.5 / 99.9 percentiles, 2.5.2),
x_t = (1 - t) x0 + t e, and the model regresses the velocity e - x0. Some samples get
first-frame conditioning (2.4): the first latent frame's tokens take a small random
timestep t_c and the matching noise level, and are left out of the loss. Some captions
are replaced by an empty or the default negative prompt, so that classifier-free guidance
has an unconditional prediction to push away from.

Keyframes (first + last frame conditioning, as the 0.9.5+ models condition): some batches
also carry one encoded frame of each clip (the last frame, or another) as extra tokens
placed before the video's, at that frame's RoPE coordinates and a small timestep, out of
the loss: the layout `denoise.denoise` gives a conditioning image away from frame 0.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange

from ..models.configs import VAE_SCALE
from ..models.rope import fractional_coords, latent_coords, pixel_coords
from ..models.transformer import LTXVTransformer
from ..sampling.scheduler import token_count_shift


@dataclass(frozen=True)
class DiTTrainSettings:
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 3e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    ema_start_step: int = 200  # before it the EMA copies the model (a resumed run: 0)
    caption_dropout: float = 0.1  # paper: caption dropout for CFG
    first_frame_probability: float = 0.3  # paper 2.4: "occasionally"
    max_first_frame_t: float = 0.1  # the conditioning tokens' small random timestep
    keyframe_probability: float = 0.0  # share of batches with keyframe tokens (when given)
    # In keyframe batches: how often the first frame is given too (first + last frame runs
    # give both; None: first_frame_probability), and the loss weight of the latent frame
    # that holds the keyframe's pixel frame, the tokens that must follow it.
    keyframe_first_frame_probability: float | None = None
    keyframe_frame_weight: float = 1.0
    # Caption dropout in keyframe batches (None: caption_dropout). Higher, it makes the
    # keyframe the only word on how the clip ends in more of them, so the model must read it.
    keyframe_caption_dropout: float | None = None
    frame_rate: float = 24.0
    seed: int = 0


# ---------------------------------------------------------------- timesteps (2.5.2)


def clamped_logit_normal_pdf(mu: float, grid: int = 4096, low: float = 0.005, high: float = 0.999) -> torch.Tensor:
    """Probabilities of `grid` equal bins of t in (0, 1) for t = sigmoid(mu + N(0, 1)),
    the pdf held at least at its value at the 0.5 and 99.9 percentiles beyond them, so
    no timestep is starved (paper Fig. 10)."""
    t = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    logit = torch.log(t / (1 - t))
    pdf = torch.exp(-0.5 * (logit - mu) ** 2) / (t * (1 - t))
    cdf = torch.cumsum(pdf, 0) / pdf.sum()
    lo = int(torch.searchsorted(cdf, torch.tensor(low, dtype=torch.float64)))
    hi = int(torch.searchsorted(cdf, torch.tensor(high, dtype=torch.float64)))
    pdf[:lo] = pdf[:lo].clamp(min=float(pdf[lo]))
    pdf[hi:] = pdf[hi:].clamp(min=float(pdf[hi]))
    return pdf / pdf.sum()


class TimestepSampler:
    """Draws training timesteps for latents of `num_tokens` tokens."""

    def __init__(self, num_tokens: int):
        self.mu = token_count_shift(num_tokens)  # the same shift the inference schedule uses
        self.probs = clamped_logit_normal_pdf(self.mu).float()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) timesteps in (0, 1) on the generator's device."""
        probs = self.probs.to(generator.device)
        bins = torch.multinomial(probs, n, replacement=True, generator=generator)
        jitter = torch.rand(n, generator=generator, device=generator.device)
        return (bins + jitter) / len(probs)


# ---------------------------------------------------------------- one step


def token_coords(
    latent_shape: tuple[int, ...], causal_fix: bool, frame_rate: float, device: torch.device | str
) -> torch.Tensor:
    """RoPE coordinates of a (B, C, f, h, w) latent's tokens, as the pipeline builds them."""
    batch, _, f, h, w = latent_shape
    return fractional_coords(pixel_coords(latent_coords(f, h, w, batch, device), causal_fix=causal_fix), frame_rate)


def noised_tokens(
    latent: torch.Tensor, t: torch.Tensor, settings: DiTTrainSettings, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """(x_t, per-token t, velocity target, loss weight) for normalized latents (B, C, f, h, w).

    Random draws come from `generator`, which lives on the latent's device. Half of the
    conditioned samples get t_c = 0 exactly: image-to-video at strength 1.
    """
    batch, _, f, h, w = latent.shape
    device = latent.device

    def uniform(n: int) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device)

    x0 = rearrange(latent, "b c f h w -> b (f h w) c").float()
    noise = torch.randn(x0.shape, generator=generator, device=device)
    per_token = t.view(batch, 1).expand(batch, f * h * w).to(device)
    weight = torch.ones_like(per_token)
    conditioned = uniform(batch) < settings.first_frame_probability
    t_c = uniform(batch) * settings.max_first_frame_t
    t_c = torch.where(uniform(batch) < 0.5, torch.zeros_like(t_c), t_c)
    first = torch.arange(f * h * w, device=device) < h * w  # token order (f h w): frame 0 first
    cond_tokens = conditioned[:, None] & first[None]
    per_token = torch.where(cond_tokens, t_c[:, None].expand_as(per_token), per_token)
    weight = weight.masked_fill(cond_tokens, 0.0)  # conditioning tokens are given, not learned
    s = per_token[..., None]
    return (1 - s) * x0 + s * noise, per_token, noise - x0, weight


def keyframe_tokens(
    keyframe: torch.Tensor,
    frame_index: torch.Tensor,
    settings: DiTTrainSettings,
    causal_fix: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, ...]:
    """(tokens, per-token t, coords) of encoded frames (B, C, 1, h, w) placed at pixel
    frames `frame_index` (B,), as `denoise.keyframe_coords` places a conditioning image;
    half at t = 0 (strength 1), half at a small random t with the matching noise."""
    batch, _, f, h, w = keyframe.shape
    device = keyframe.device
    x0 = rearrange(keyframe, "b c f h w -> b (f h w) c").float()
    t_k = torch.rand(batch, generator=generator, device=device) * settings.max_first_frame_t
    t_k = torch.where(torch.rand(batch, generator=generator, device=device) < 0.5, torch.zeros_like(t_k), t_k)
    s = t_k.view(batch, 1, 1)
    tokens = (1 - s) * x0 + s * torch.randn(x0.shape, generator=generator, device=device)
    pixels = pixel_coords(latent_coords(f, h, w, batch, device), causal_fix=causal_fix)
    pixels[:, 0] += frame_index.view(batch, 1).to(pixels)
    coords = fractional_coords(pixels, settings.frame_rate)
    return tokens, t_k.view(batch, 1).expand(batch, f * h * w), coords


def keyframe_frame_weights(
    latent_shape: tuple[int, ...], frame_index: torch.Tensor, frame_weight: float
) -> torch.Tensor:
    """(B, T) loss weights: `frame_weight` for the tokens of the latent frame that holds pixel
    frame `frame_index` (B,), 1 elsewhere. The causal VAE's latent frame 0 is pixel frame 0
    and latent frame i > 0 holds pixel frames 8i-7 .. 8i (paper 2.1), so the frame is ceil(k / 8)."""
    batch, _, f, h, w = latent_shape
    stride = VAE_SCALE[0]  # pixel frames per latent frame
    holder = torch.div(frame_index.to(torch.long) + stride - 1, stride, rounding_mode="floor")
    frame_of_token = torch.arange(f, device=frame_index.device).repeat_interleave(h * w)  # (f h w) order
    hit = frame_of_token[None] == holder.view(batch, 1)
    return 1.0 + (frame_weight - 1.0) * hit.float()


def dit_loss(
    model: LTXVTransformer,
    latent: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    sampler: TimestepSampler,
    settings: DiTTrainSettings,
    generator: torch.Generator,
    keyframe: torch.Tensor | None = None,
    keyframe_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Velocity MSE over the generated (non-conditioning) tokens of one batch; with
    `keyframe` (B, C, 1, h, w) at pixel frames `keyframe_index` (B,), those frames'
    tokens go first, as conditioning."""
    causal_fix = model.cfg.causal_temporal_positioning
    t = sampler.sample(latent.shape[0], generator)
    if keyframe is not None and settings.keyframe_first_frame_probability is not None:
        settings = replace(settings, first_frame_probability=settings.keyframe_first_frame_probability)
    x_t, per_token, target, weight = noised_tokens(latent, t, settings, generator)
    coords = token_coords(latent.shape, causal_fix, settings.frame_rate, latent.device)
    if keyframe is not None:
        weight = weight * keyframe_frame_weights(latent.shape, keyframe_index, settings.keyframe_frame_weight)
        k_tokens, k_t, k_coords = keyframe_tokens(keyframe, keyframe_index, settings, causal_fix, generator)
        x_t, per_token = torch.cat([k_tokens, x_t], 1), torch.cat([k_t, per_token], 1)
        coords = torch.cat([k_coords, coords], 2)
    pred = model(x_t, per_token, text, text_mask, coords)[:, x_t.shape[1] - target.shape[1] :]
    err = F.mse_loss(pred.float(), target, reduction="none").mean(-1)  # (B, T)
    return (err * weight).sum() / weight.sum().clamp(min=1)


def drop_captions(
    text: torch.Tensor,
    mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    p: float,
    generator: torch.Generator,
):
    """Replace each caption by one of the `null` prompts (rows of null_text) with chance p."""
    batch, device = text.shape[0], text.device
    drop = torch.rand(batch, generator=generator, device=device) < p
    choice = torch.randint(null_text.shape[0], (batch,), generator=generator, device=device)
    text = torch.where(drop[:, None, None], null_text[choice].to(text.dtype), text)
    mask = torch.where(drop[:, None], null_mask[choice], mask)
    return text, mask


# ---------------------------------------------------------------- the loop


class FixedCaptions:
    """The captions' embeddings computed once by a frozen encoder, rows by clip index.
    (`train_text.JointCaptions` is the other source: an encoder that trains with the DiT.)"""

    def __init__(self, texts, masks, null_texts, null_masks):
        self.texts, self.masks, self.null_texts, self.null_masks = texts, masks, null_texts, null_masks

    def __call__(self, idx: torch.Tensor, generator: torch.Generator):
        """(text, mask, null_text, null_mask, extra loss or None) for the clips `idx`."""
        return self.texts[idx].float(), self.masks[idx], self.null_texts.float(), self.null_masks, None

    def update(self, lr_scale: float, ema_decay: float) -> None:
        """Nothing to train."""


def draw_batch(
    count: int, batch_size: int, generator: torch.Generator, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices of a batch of clips, uniform or in proportion to `weights` (with replacement)."""
    if weights is None:
        return torch.randint(count, (batch_size,), generator=generator, device=generator.device)
    return torch.multinomial(
        weights.to(generator.device, torch.float32), batch_size, replacement=True, generator=generator
    )


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1 - decay)


def learning_rate(step: int, progress: float, settings: DiTTrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth over the run's progress in [0, 1]."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@dataclass
class DiTState:
    model: LTXVTransformer
    ema: LTXVTransformer
    optimizer: torch.optim.Optimizer
    step: int = 0

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }


def new_state(model: LTXVTransformer, settings: DiTTrainSettings) -> DiTState:
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99), weight_decay=settings.weight_decay
    )
    return DiTState(model, ema, optimizer)


@dataclass
class Batch:
    idx: torch.Tensor  # the clips
    caption_dropout: float
    keyframe: torch.Tensor | None = None
    keyframe_index: torch.Tensor | None = None


def train_step(
    state: DiTState,
    latents: torch.Tensor,
    captions,
    batch: Batch,
    sampler: TimestepSampler,
    settings: DiTTrainSettings,
    generator: torch.Generator,
    lr: float,
    autocast: bool,
) -> torch.Tensor:
    """One optimizer step of the DiT (and of a text encoder that trains with it) and their
    EMA; returns
    (DiT loss, the text encoder's own loss or 0), detached."""
    device = latents.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        text, mask, null_text, null_mask, text_loss = captions(batch.idx, generator)
        text, mask = drop_captions(text, mask, null_text, null_mask, batch.caption_dropout, generator)
        clips = latents[batch.idx].float()
        loss = dit_loss(
            state.model, clips, text, mask, sampler, settings, generator, batch.keyframe, batch.keyframe_index
        )
    text_loss = torch.zeros((), device=device) if text_loss is None else text_loss
    state.optimizer.zero_grad(set_to_none=True)
    (loss + text_loss).backward()
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), 1.0)
    state.optimizer.step()
    decay = settings.ema_decay if state.step >= settings.ema_start_step else 0.0
    update_ema(state.ema, state.model, decay)
    captions.update(lr / settings.learning_rate, decay)
    return torch.stack([loss.detach(), text_loss.detach().float()])


def train_dit(
    state: DiTState,
    latents: torch.Tensor,
    captions,
    settings: DiTTrainSettings,
    time_budget_s: float | None = None,
    log=print,
    autocast: bool = False,
    keyframes: torch.Tensor | None = None,
    keyframe_indices: torch.Tensor | None = None,
    clip_weights: torch.Tensor | None = None,
) -> DiTState:
    """Train from `state.step` to `settings.steps` (or until the time budget runs out).

    latents: (N, C, f, h, w) normalized; captions: their text, `FixedCaptions` (T5
    embeddings computed once) or `train_text.JointCaptions` (an encoder trained alongside);
    keyframes (N, C, 1, h, w): one frame of each clip encoded alone, at pixel frame
    keyframe_indices (N,), used in `settings.keyframe_probability` of the batches.
    clip_weights (N,): how often each clip is drawn, relative to the others (None: uniform).
    """
    state.model.train()
    device = latents.device
    tokens = latents.shape[2] * latents.shape[3] * latents.shape[4]
    sampler = TimestepSampler(tokens)
    generator = torch.Generator(device).manual_seed(settings.seed * 7919 + state.step)
    batch_choice = random.Random(settings.seed * 7919 + state.step)  # on the host: no GPU sync
    start, losses = time.monotonic(), []
    while state.step < settings.steps:
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            log(f"dit: time budget reached at step {state.step}")
            break
        idx = draw_batch(len(latents), settings.batch_size, generator, clip_weights)
        use_keyframes = keyframes is not None and batch_choice.random() < settings.keyframe_probability
        dropout = settings.caption_dropout
        if use_keyframes and settings.keyframe_caption_dropout is not None:
            dropout = settings.keyframe_caption_dropout
        elapsed = time.monotonic() - start
        progress = max(state.step / settings.steps, elapsed / time_budget_s if time_budget_s else 0.0)
        lr = learning_rate(state.step, progress, settings)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        batch = Batch(idx, dropout)
        if use_keyframes:
            batch.keyframe, batch.keyframe_index = keyframes[idx].float(), keyframe_indices[idx]
        losses.append(train_step(state, latents, captions, batch, sampler, settings, generator, lr, autocast))
        state.step += 1
        if state.step % 100 == 0 or state.step == settings.steps:
            mean = torch.stack(losses).mean(0).tolist()
            text = f" text heads {mean[1]:.4f}" if mean[1] else ""
            log(f"dit step {state.step} loss {mean[0]:.4f}{text} lr {lr:.2e} {time.monotonic() - start:.0f}s")
            losses = []
    return state
