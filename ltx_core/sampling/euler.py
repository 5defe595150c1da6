"""Euler steps on the rectified-flow velocity, with per-token timesteps (paper 2.4, 2.5).

k-diffusion style: the model is a callable `velocity_fn(x, timesteps, sigma) -> velocity`
on tokens `(B, T, C)` with per-token sigmas `(B, T)` and the step's sigma of the schedule
(a float; guidance may change with it), the schedule is a sigma tensor, and previews,
progress and interrupt are one `callback`. Guidance (CFG, STG) makes such a callable from
the transformer (`guidance.guided_velocity`).

Flow convention (Lightricks, diffusers): x_sigma = (1 - sigma) * x0 + sigma * noise, the
model predicts v = noise - x0, so x0 = x - sigma * v and an Euler step is
x <- x + (sigma_next - sigma) * v. The stochastic step (Lightricks' `stochastic_sampling`)
instead noises x0 afresh to sigma_next: x <- (1 - sigma_next) * x0 + sigma_next * noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import SettingsError

VelocityFn = Callable[[Tensor, Tensor, float], Tensor]
# How a token of noise mask m in (0, 1) (a conditioning strength 1 - m) moves:
# "scaled": timestep sigma * m, every step scaled by m (ComfyUI's LATENT noise_mask);
# "held": timestep min(sigma, m), frozen until the schedule passes m, then plain Euler
# (Lightricks' pipeline and diffusers' LTXConditionPipeline). Masks 0 and 1 agree.
STRENGTH_RULES = ("scaled", "held")
# diffusers' and Lightricks' tolerance when comparing a sigma with a token's level
HELD_EPS = 1e-6
# callback(step_index, total_steps, x, denoised); raising in it stops sampling
Callback = Callable[[int, int, Tensor, Tensor], None]


def _renoise_clean_tokens(
    x: Tensor, clean: Tensor, keep: Tensor, sigma: Tensor, scale: float, generator: torch.Generator | None
) -> Tensor:
    """Lightricks' `image_cond_noise_scale`: hard-conditioning tokens get fresh noise of
    scale * sigma^2 each step, which helps motion continuity from a single frame."""
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return torch.where(keep, clean + scale * noise * sigma**2, x)


def _token_step(strength_rule: str, sigma: Tensor, sigma_next: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each token's (timestep, move to its next timestep, whether it moves), (B, T) each,
    as `STRENGTH_RULES` say."""
    if strength_rule == "held":
        timesteps = torch.minimum(sigma, mask)
        moving = sigma - HELD_EPS < mask
        return timesteps, (sigma_next - timesteps) * moving, moving
    return sigma * mask, (sigma_next - sigma) * mask, mask > 0


def stochastic_step(
    x: Tensor, denoised: Tensor, next_timesteps: Tensor, moving: Tensor, generator: torch.Generator
) -> Tensor:
    """Lightricks' `RectifiedFlowScheduler.step(stochastic_sampling=True)`: each moving
    token's estimate x0 noised afresh to its next timestep (fresh noise from `generator`,
    not the velocity's own), the others kept; the last step (to 0) is x0 itself."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    level = next_timesteps[..., None]
    return torch.where(moving[..., None], (1 - level) * denoised + level * noise, x)


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
    strength_rule: str = "scaled",
    stochastic: bool = False,
) -> Tensor:
    """Integrate tokens `x_init (B, T, C)` from sigmas[0] to sigmas[-1].

    Token k carries timestep `sigma * noise_mask[k]` and moves by
    `(sigma_next - sigma) * noise_mask[k] * v`: mask 1 is the plain Euler step, mask 0
    (a clean conditioning token) is never changed, exactly as diffusers'
    LTXImageToVideoPipeline steps only the unconditioned frames. With
    `cond_noise_scale` > 0, mask-0 tokens are re-noised from `clean_latent` first.
    `strength_rule` "held" treats masks between 0 and 1 as the references do (see
    `STRENGTH_RULES`). `stochastic` takes Lightricks' stochastic steps (`stochastic_step`),
    their noise drawn from `generator`."""
    _check_sigmas(sigmas)
    if strength_rule not in STRENGTH_RULES:
        raise SettingsError(f"strength_rule {strength_rule!r} is not known; allowed: {', '.join(STRENGTH_RULES)}")
    if stochastic and generator is None:
        raise SettingsError("stochastic sampling needs a generator to draw its noise from")
    sigmas = sigmas.to(device=x_init.device, dtype=torch.float32)
    levels = sigmas.tolist()  # each step's sigma for velocity_fn, read once
    mask = noise_mask.to(device=x_init.device, dtype=torch.float32)  # (B, T)
    keep = (mask == 0)[..., None]
    x = x_init.to(torch.float32)
    total = len(sigmas) - 1
    for step in range(total):
        sigma, sigma_next = sigmas[step], sigmas[step + 1]
        if cond_noise_scale > 0 and clean_latent is not None:
            x = _renoise_clean_tokens(x, clean_latent.to(x), keep, sigma, cond_noise_scale, generator)
        timesteps, move, moving = _token_step(strength_rule, sigma, sigma_next, mask)
        velocity = velocity_fn(x, timesteps, levels[step]).float()
        denoised = x - timesteps[..., None] * velocity
        if stochastic:  # timesteps + move: each token's next timestep (0 on the last step)
            x = stochastic_step(x, denoised, timesteps + move, moving, generator)
        else:
            x = x + move[..., None] * velocity
        if callback is not None:
            callback(step, total, x, denoised)
    return x
