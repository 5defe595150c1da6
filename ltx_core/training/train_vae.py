"""Training of the causal video VAE with the paper's choices (2.1).

- Uniform log-variance (2.1.4): the encoder predicts one log-variance shared by all
  latent channels (`latent_log_var="uniform"` in the config); a small KL term on it.
- Denoising decoder (2.1.1): the posterior sample is normalized with running per-channel
  statistics, noised to z_t = (1 - t) z + t e with t ~ U(0, 0.2), denormalized, and
  decoded with timestep t; the decoder must give back the clean video. At inference the
  same mix is made on the normalized latent (`CausalVideoVAE.decode`).
- Noise injection (2.1.3) lives in the decoder's blocks; it draws from our generator.
- Losses (2.1.6): pixel MSE + 3D DWT L1 (2.1.5) + reconstruction GAN (2.1.2) whose critic
  sees original and reconstruction together. No LPIPS: no pretrained network here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..models.vae import CausalVideoVAE
from . import data
from .losses import PairDiscriminator, discriminator_loss, dwt_l1_loss, generator_gan_loss, uniform_kl


@dataclass(frozen=True)
class VAETrainSettings:
    steps: int = 3000
    batch_size: int = 8
    num_frames: int = 25
    height: int = 256
    width: int = 256
    crop: int | None = None  # train on random crops (multiples of 32) of the rendered frames
    # Share of clips whose crop is placed to hold the shape's start: a 128-pixel crop of a
    # 256-pixel frame placed anywhere misses every shape in about three clips of ten, which
    # then teach the background alone.
    shape_crop_probability: float = 0.0
    learning_rate: float = 4e-4
    warmup_steps: int = 100
    max_decode_t: float = 0.2  # paper 2.1.1: the last denoising step, t in [0, 0.2]
    clean_decode_probability: float = 0.25  # some steps at t = 0: plain reconstruction
    mse_weight: float = 1.0
    dwt_weight: float = 0.5
    # Extra MSE on the first frame, which has a latent frame of its own: image-to-video
    # hands it to the model and expects it back (paper 2.4), so its fidelity counts twice.
    first_frame_weight: float = 0.0
    # The same for the last frame, which a first+last keyframe run hands in as an image
    # but which the VAE decodes as the 8th frame of a latent frame.
    last_frame_weight: float = 0.0
    kl_weight: float = 1e-6
    gan_weight: float = 0.002  # small: larger weights cost several dB of PSNR here
    gan_start_fraction: float = 0.75  # the critic joins once reconstructions are fair
    stats_momentum: float = 0.02
    # False: fine-tune the decoder alone. The encoder and the latent statistics stay as
    # they are, so a DiT trained on this latent space stays valid.
    train_encoder: bool = True
    data_seed: int = 1
    seed: int = 0


@dataclass
class VAEState:
    vae: CausalVideoVAE
    disc: PairDiscriminator
    optimizer: torch.optim.Optimizer
    disc_optimizer: torch.optim.Optimizer
    step: int = 0
    log: list = field(default_factory=list)


def new_state(vae: CausalVideoVAE, settings: VAETrainSettings) -> VAEState:
    device = next(vae.parameters()).device
    disc = PairDiscriminator().to(device)
    vae.encoder.requires_grad_(settings.train_encoder)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    return VAEState(
        vae,
        disc,
        torch.optim.AdamW(trainable, lr=settings.learning_rate, betas=(0.9, 0.99), weight_decay=0.0),
        torch.optim.AdamW(disc.parameters(), lr=settings.learning_rate, betas=(0.5, 0.99), weight_decay=0.0),
    )


@torch.no_grad()
def update_statistics(vae: CausalVideoVAE, mean: torch.Tensor, momentum: float) -> None:
    """Running per-channel mean and std of the posterior means (the official buffers)."""
    stats = vae.per_channel_statistics
    m = mean.float().transpose(0, 1).flatten(1)  # (C, N)
    stats.get_buffer("mean-of-means").lerp_(m.mean(1), momentum)
    stats.get_buffer("std-of-means").lerp_(m.std(1).clamp(min=1e-3), momentum)


def encode_moments(vae: CausalVideoVAE, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw posterior mean and (uniform) log-variance."""
    return vae._split_moments(vae.encoder(video))


def reconstruct(
    vae: CausalVideoVAE, video: torch.Tensor, t: torch.Tensor, generator: torch.Generator, train_encoder: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstruction, posterior mean, log-variance) through the denoising decode at t (B,)."""
    with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
        mean, logvar = encode_moments(vae, video)
    device = video.device
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, device=device)
    z_n = vae.normalize(z.float())
    noise = torch.randn(z_n.shape, generator=generator, device=device)
    s = t.view(-1, 1, 1, 1, 1)
    z_t = vae.denormalize((1 - s) * z_n + s * noise)
    return vae.decoder(z_t.to(mean.dtype), t.to(mean.dtype), generator), mean, logvar


def decode_timesteps(
    batch: int, settings: VAETrainSettings, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    t = torch.rand(batch, generator=generator, device=device) * settings.max_decode_t
    clean = torch.rand(batch, generator=generator, device=device) < settings.clean_decode_probability
    return torch.where(clean, torch.zeros_like(t), t)


def _lr(step: int, progress: float, settings: VAETrainSettings) -> float:
    """Warm-up, then cosine decay to a tenth over the run's progress (steps or time)."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _progress(step: int, elapsed: float, settings: VAETrainSettings, budget: float | None) -> float:
    """Fraction of the run done: by steps, or by time when a time budget ends it first."""
    by_steps = step / settings.steps
    return max(by_steps, elapsed / budget) if budget else by_steps


def vae_step(
    state: VAEState,
    video: torch.Tensor,
    settings: VAETrainSettings,
    generator: torch.Generator,
    autocast: bool,
    use_gan: bool,
) -> dict[str, torch.Tensor]:
    """One generator update (and one critic update once the GAN is on)."""
    vae, device = state.vae, video.device
    t = decode_timesteps(video.shape[0], settings, generator, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        recon, mean, logvar = reconstruct(vae, video, t, generator, settings.train_encoder)
        recon = recon.float()
        losses = {"mse": F.mse_loss(recon, video), "dwt": dwt_l1_loss(recon, video), "kl": uniform_kl(mean, logvar)}
        if settings.first_frame_weight:
            losses["mse0"] = F.mse_loss(recon[:, :, 0], video[:, :, 0])
        if settings.last_frame_weight:
            losses["mse_last"] = F.mse_loss(recon[:, :, -1], video[:, :, -1])
        if use_gan:
            state.disc.requires_grad_(False)
            losses["gan"] = generator_gan_loss(state.disc, video, recon)
            state.disc.requires_grad_(True)
    total = (
        settings.mse_weight * losses["mse"]
        + settings.dwt_weight * losses["dwt"]
        + settings.kl_weight * losses["kl"]
        + settings.gan_weight * losses.get("gan", 0.0)
        + settings.first_frame_weight * losses.get("mse0", 0.0)
        + settings.last_frame_weight * losses.get("mse_last", 0.0)
    )
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_([p for p in vae.parameters() if p.requires_grad], 1.0)
    state.optimizer.step()
    if settings.train_encoder:
        update_statistics(vae, mean.detach(), settings.stats_momentum)
    if use_gan:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            losses["disc"] = discriminator_loss(state.disc, video, recon.detach())
        state.disc_optimizer.zero_grad(set_to_none=True)
        losses["disc"].backward()
        state.disc_optimizer.step()
    return {k: v.detach() for k, v in losses.items()}  # no host sync per step


def training_videos(step: int, settings: VAETrainSettings, device: torch.device) -> torch.Tensor:
    specs = data.training_specs(settings.data_seed, step * settings.batch_size, settings.batch_size)
    video = data.render_batch(specs, settings.num_frames, settings.height, settings.width, device)
    if settings.crop is None:
        return video
    gen = torch.Generator().manual_seed(step)  # crops seeded by the step
    if not settings.shape_crop_probability:  # one crop for the batch, as the earlier recipes ran
        top, left = crop_corner(settings, gen)
        return video[..., top : top + settings.crop, left : left + settings.crop]
    crops = []
    for clip, spec in zip(video, specs):
        on_shape = float(torch.rand((), generator=gen)) < settings.shape_crop_probability
        top, left = crop_corner(settings, gen, spec.main if on_shape else None)
        crops.append(clip[..., top : top + settings.crop, left : left + settings.crop])
    return torch.stack(crops)


def crop_corner(settings: VAETrainSettings, gen: torch.Generator, shape: data.Shape | None = None) -> tuple[int, int]:
    """(top, left) of a crop on the 32-pixel grid the full frames use: anywhere, or among the
    crops that hold `shape`'s start center."""
    corners = []
    for size, center in (
        (settings.height, None if shape is None else shape.y),
        (settings.width, None if shape is None else shape.x),
    ):
        last = (size - settings.crop) // 32
        low, high = 0, last
        if center is not None:
            pixel = min(max(int(center * size), 0), size - 1)
            low, high = max(0, (pixel - settings.crop) // 32 + 1), min(last, pixel // 32)
        corners.append((low + int(torch.randint(high - low + 1, (1,), generator=gen))) * 32)
    return corners[0], corners[1]


def train_vae(
    state: VAEState, settings: VAETrainSettings, time_budget_s: float | None = None, log=print, autocast: bool = False
) -> VAEState:
    """Train from `state.step` to `settings.steps` or until the time budget runs out."""
    device = next(state.vae.parameters()).device
    state.vae.train()
    generator = torch.Generator(device).manual_seed(settings.seed * 104729 + state.step)
    start, window = time.monotonic(), []
    while state.step < settings.steps:
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            log(f"vae: time budget reached at step {state.step}")
            break
        progress = _progress(state.step, time.monotonic() - start, settings, time_budget_s)
        for opt in (state.optimizer, state.disc_optimizer):
            for group in opt.param_groups:
                group["lr"] = _lr(state.step, progress, settings)
        video = training_videos(state.step, settings, device)
        use_gan = progress >= settings.gan_start_fraction
        window.append(vae_step(state, video, settings, generator, autocast, use_gan))
        state.step += 1
        if state.step % 100 == 0 or state.step == settings.steps:
            mean = {k: float(sum(w.get(k, 0.0) for w in window)) / len(window) for k in window[-1]}
            psnr = -10 * math.log10(max(mean["mse"] / 4, 1e-12))  # [-1, 1] -> [0, 1] units
            line = (
                f"vae step {state.step} "
                + " ".join(f"{k} {v:.4f}" for k, v in mean.items())
                + f" psnr {psnr:.1f} {time.monotonic() - start:.0f}s"
            )
            state.log.append(line)
            log(line)
            window = []
    return state


@torch.no_grad()
def final_statistics(vae: CausalVideoVAE, videos: list[torch.Tensor]) -> None:
    """Exact per-channel mean and std of the posterior means over `videos` (each (B,3,F,H,W)),
    written to the official buffers so `encode` returns unit-scale latents."""
    means = torch.cat([encode_moments(vae, v)[0].float().transpose(0, 1).flatten(1) for v in videos], dim=1)  # (C, N)
    stats = vae.per_channel_statistics
    stats.get_buffer("mean-of-means").copy_(means.mean(1))
    stats.get_buffer("std-of-means").copy_(means.std(1).clamp(min=1e-3))
