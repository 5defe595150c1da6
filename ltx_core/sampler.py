"""Euler steps on the rectified-flow velocity, with per-token timesteps (paper 2.4, 2.5).

k-diffusion style: the model is a callable `velocity_fn(x, timesteps) -> velocity` on
tokens `(B, T, C)` with per-token sigmas `(B, T)`, the schedule is a sigma tensor, and
previews, progress and interrupt are one `callback`. Classifier-free guidance is a
wrapper that makes such a callable from the transformer (`guided_velocity`).

Flow convention (Lightricks, diffusers): x_sigma = (1 - sigma) * x0 + sigma * noise, the
model predicts v = noise - x0, so x0 = x - sigma * v and an Euler step is
x <- x + (sigma_next - sigma) * v.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .errors import SettingsError

VelocityFn = Callable[[Tensor, Tensor], Tensor]
# callback(step_index, total_steps, x, denoised); raising in it stops sampling
Callback = Callable[[int, int, Tensor, Tensor], None]


def guided_velocity(
    model_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
    text: Tensor,
    text_mask: Tensor,
    negative_text: Tensor | None,
    negative_mask: Tensor | None,
    guidance_scale: float,
) -> VelocityFn:
    """Classifier-free guidance over `model_fn(x, timesteps, text, text_mask)`: one batched
    forward on (uncond, cond), v = v_u + scale * (v_c - v_u), as diffusers' LTX pipelines.
    Scale 1 is the conditional velocity alone, so the unconditional half is skipped."""
    if guidance_scale == 1.0:
        return lambda x, timesteps: model_fn(x, timesteps, text, text_mask)
    if negative_text is None or negative_mask is None:
        raise SettingsError(f"guidance scale {guidance_scale} needs negative text embeddings and mask")
    both_text = torch.cat([negative_text, text])
    both_mask = torch.cat([negative_mask, text_mask])

    def velocity(x: Tensor, timesteps: Tensor) -> Tensor:
        both_x, both_timesteps = torch.cat([x, x]), torch.cat([timesteps, timesteps])
        v_uncond, v_cond = model_fn(both_x, both_timesteps, both_text, both_mask).chunk(2)
        return v_uncond + guidance_scale * (v_cond - v_uncond)

    return velocity


def _renoise_clean_tokens(
    x: Tensor, clean: Tensor, keep: Tensor, sigma: Tensor, scale: float, generator: torch.Generator | None
) -> Tensor:
    """Lightricks' `image_cond_noise_scale`: hard-conditioning tokens get fresh noise of
    scale * sigma^2 each step, which helps motion continuity from a single frame."""
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return torch.where(keep, clean + scale * noise * sigma**2, x)


def _check_sigmas(sigmas: Tensor) -> None:
    """Flow sigmas run down within [0, 1]; a schedule may stop above 0 (partial sampling)."""
    values = torch.as_tensor(sigmas, dtype=torch.float64)
    if values.ndim != 1 or values.numel() < 2:
        raise SettingsError(f"sigmas of shape {tuple(values.shape)}: give at least two, one per step boundary")
    if not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise SettingsError(f"sigmas {values.tolist()} must be finite and in [0, 1] (rectified flow)")
    if (values[1:] > values[:-1]).any():
        raise SettingsError(f"sigmas {values.tolist()} must not increase")


@torch.no_grad()
def sample(
    velocity_fn: VelocityFn,
    x_init: Tensor,
    sigmas: Tensor,
    noise_mask: Tensor,
    clean_latent: Tensor | None = None,
    callback: Callback | None = None,
    cond_noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Integrate tokens `x_init (B, T, C)` from sigmas[0] to sigmas[-1].

    Token k carries timestep `sigma * noise_mask[k]` and moves by
    `(sigma_next - sigma) * noise_mask[k] * v`: mask 1 is the plain Euler step, mask 0
    (a clean conditioning token) is never changed, exactly as diffusers'
    LTXImageToVideoPipeline steps only the unconditioned frames. With
    `cond_noise_scale` > 0, mask-0 tokens are re-noised from `clean_latent` first."""
    _check_sigmas(sigmas)
    sigmas = sigmas.to(device=x_init.device, dtype=torch.float32)
    mask = noise_mask.to(device=x_init.device, dtype=torch.float32)  # (B, T)
    keep = (mask == 0)[..., None]
    x = x_init.to(torch.float32)
    total = len(sigmas) - 1
    for step in range(total):
        sigma, sigma_next = sigmas[step], sigmas[step + 1]
        if cond_noise_scale > 0 and clean_latent is not None:
            x = _renoise_clean_tokens(x, clean_latent.to(x), keep, sigma, cond_noise_scale, generator)
        timesteps = sigma * mask  # (B, T)
        velocity = velocity_fn(x, timesteps).float()
        denoised = x - timesteps[..., None] * velocity
        x = x + ((sigma_next - sigma) * mask)[..., None] * velocity
        if callback is not None:
            callback(step, total, x, denoised)
    return x
