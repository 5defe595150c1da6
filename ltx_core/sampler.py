"""Euler steps on the rectified-flow velocity, with per-token timesteps (paper 2.4, 2.5).

k-diffusion style: the model is a callable `velocity_fn(x, timesteps) -> velocity` on
tokens `(B, T, C)` with per-token sigmas `(B, T)`, the schedule is a sigma tensor, and
previews, progress and interrupt are one `callback`. Classifier-free guidance and
spatiotemporal skip guidance (STG) are a wrapper that makes such a callable from the
transformer (`guided_velocity`).

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
# How a token of noise mask m in (0, 1) (a conditioning strength 1 - m) moves:
# "scaled": timestep sigma * m, every step scaled by m (ComfyUI's LATENT noise_mask);
# "held": timestep min(sigma, m), frozen until the schedule passes m, then plain Euler
# (Lightricks' pipeline and diffusers' LTXConditionPipeline). Masks 0 and 1 agree.
STRENGTH_RULES = ("scaled", "held")
# diffusers' and Lightricks' tolerance when comparing a sigma with a token's level
HELD_EPS = 1e-6
# callback(step_index, total_steps, x, denoised); raising in it stops sampling
Callback = Callable[[int, int, Tensor, Tensor], None]


def guided_velocity(
    model_fn: Callable[..., Tensor],
    text: Tensor,
    text_mask: Tensor,
    negative_text: Tensor | None,
    negative_mask: Tensor | None,
    guidance_scale: float,
    stg_scale: float = 0.0,
    stg_rescale: float = 0.7,
) -> VelocityFn:
    """Classifier-free guidance over `model_fn(x, timesteps, text, text_mask)`: one batched
    forward on (uncond, cond), v = v_u + scale * (v_c - v_u), as diffusers' LTX pipelines.
    Scale 1 is the conditional velocity alone, so the unconditional half is skipped.

    `stg_scale` > 0 adds Lightricks' spatiotemporal skip guidance: a third item in the
    same batch, the prompt again with `model_fn(..., perturbed)` told which items to
    perturb, and v += stg_scale * (v_c - v_perturbed); see `_stg`."""
    if guidance_scale != 1.0 and (negative_text is None or negative_mask is None):
        raise SettingsError(f"guidance scale {guidance_scale} needs negative text embeddings and mask")
    if stg_scale > 0:
        return _stg(model_fn, text, text_mask, negative_text, negative_mask, guidance_scale, stg_scale, stg_rescale)
    if guidance_scale == 1.0:
        return lambda x, timesteps: model_fn(x, timesteps, text, text_mask)
    both_text = torch.cat([negative_text, text])
    both_mask = torch.cat([negative_mask, text_mask])

    def velocity(x: Tensor, timesteps: Tensor) -> Tensor:
        both_x, both_timesteps = torch.cat([x, x]), torch.cat([timesteps, timesteps])
        v_uncond, v_cond = model_fn(both_x, both_timesteps, both_text, both_mask).chunk(2)
        return v_uncond + guidance_scale * (v_cond - v_uncond)

    return velocity


def _stg(model_fn, text, text_mask, negative_text, negative_mask, guidance_scale, stg_scale, rescale) -> VelocityFn:
    """Lightricks' `LTXVideoPipeline.__call__` guidance: batch (uncond, cond, perturbed),
    v = v_u + g (v_c - v_u) (v_c without CFG), v += s (v_c - v_p), then, unless the
    rescale is 1 (Lightricks skips it there), v *= r std(v_c) / std(v) + 1 - r, the
    standard deviations over each video's velocity."""
    with_cfg = guidance_scale != 1.0
    texts = [negative_text, text, text] if with_cfg else [text, text]
    masks = [negative_mask, text_mask, text_mask] if with_cfg else [text_mask, text_mask]
    all_text, all_mask = torch.cat(texts), torch.cat(masks)
    copies = len(texts)

    def velocity(x: Tensor, timesteps: Tensor) -> Tensor:
        batch = x.shape[0]
        perturbed = torch.arange(copies * batch, device=x.device) >= (copies - 1) * batch
        out = model_fn(torch.cat([x] * copies), torch.cat([timesteps] * copies), all_text, all_mask, perturbed)
        *rest, v_cond, v_perturbed = out.chunk(copies)
        v = rest[0] + guidance_scale * (v_cond - rest[0]) if with_cfg else v_cond
        v = v + stg_scale * (v_cond - v_perturbed)
        if rescale != 1.0:
            factor = v_cond.reshape(batch, -1).std(dim=1) / v.reshape(batch, -1).std(dim=1)
            v = v * (rescale * factor + (1 - rescale)).view(batch, 1, 1)
        return v

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
    strength_rule: str = "scaled",
) -> Tensor:
    """Integrate tokens `x_init (B, T, C)` from sigmas[0] to sigmas[-1].

    Token k carries timestep `sigma * noise_mask[k]` and moves by
    `(sigma_next - sigma) * noise_mask[k] * v`: mask 1 is the plain Euler step, mask 0
    (a clean conditioning token) is never changed, exactly as diffusers'
    LTXImageToVideoPipeline steps only the unconditioned frames. With
    `cond_noise_scale` > 0, mask-0 tokens are re-noised from `clean_latent` first.
    `strength_rule` "held" treats masks between 0 and 1 as the references do (see
    `STRENGTH_RULES`)."""
    _check_sigmas(sigmas)
    if strength_rule not in STRENGTH_RULES:
        raise SettingsError(f"strength_rule {strength_rule!r} is not known; allowed: {', '.join(STRENGTH_RULES)}")
    sigmas = sigmas.to(device=x_init.device, dtype=torch.float32)
    mask = noise_mask.to(device=x_init.device, dtype=torch.float32)  # (B, T)
    keep = (mask == 0)[..., None]
    x = x_init.to(torch.float32)
    total = len(sigmas) - 1
    for step in range(total):
        sigma, sigma_next = sigmas[step], sigmas[step + 1]
        if cond_noise_scale > 0 and clean_latent is not None:
            x = _renoise_clean_tokens(x, clean_latent.to(x), keep, sigma, cond_noise_scale, generator)
        if strength_rule == "held":
            timesteps = torch.minimum(sigma, mask)  # (B, T)
            move = (sigma_next - timesteps) * (sigma - HELD_EPS < mask)
        else:
            timesteps = sigma * mask  # (B, T)
            move = (sigma_next - sigma) * mask
        velocity = velocity_fn(x, timesteps).float()
        denoised = x - timesteps[..., None] * velocity
        x = x + move[..., None] * velocity
        if callback is not None:
            callback(step, total, x, denoised)
    return x
