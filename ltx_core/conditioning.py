"""Conditioning tokens and their timesteps (paper 2.4): a latent with a per-token noise
mask, in ComfyUI's convention for LTX-Video latents.

A token's timestep is `sigma * noise_mask`:
- mask 1: generated from noise, it follows the schedule (sigma, then the next sigma...);
- mask 0: a clean conditioning token (strength 1, t_c = 0), never changed;
- mask 1 - strength in between: it starts at noise level 1 - strength and is denoised
  along the schedule scaled by its mask, reaching 0 with the others.

For masks 0 and 1, which is what image-to-video uses, this is exactly diffusers'
`LTXImageToVideoPipeline` (timestep * (1 - conditioning_mask), the first frame kept) and
Lightricks' pipeline (strength 1 tokens are never denoised). For a fractional strength
Lightricks instead holds the token at 1 - strength until the schedule passes it; that
would break the `sigma * noise_mask` timestep ComfyUI's LATENT carries, so we do not.

Sizes are checked here, where pixels meet the latent grid, with the nearest valid values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import SettingsError


@dataclass(frozen=True)
class ConditionedLatent:
    """Normalized latent `(B, C, f, h, w)` and per-token noise mask `(B, 1, f, h, w)`.

    `samples` holds the clean conditioning values where the mask is below 1 (anything
    elsewhere: those tokens start from noise); a mask of any shape that broadcasts to
    `(B, 1, f, h, w)`, as ComfyUI's `(B, 1, f, 1, 1)`, is expanded on construction, and
    no mask (ComfyUI's empty latents have none) means every token is generated."""

    samples: Tensor
    noise_mask: Tensor | None = None

    def __post_init__(self):
        if self.samples.ndim != 5:
            raise SettingsError(
                f"latent has shape {tuple(self.samples.shape)}; LTX-Video latents are 5-D (B, C, f, h, w)"
            )
        batch, _, frames, height, width = self.samples.shape
        if self.noise_mask is None:
            object.__setattr__(self, "noise_mask", torch.ones_like(self.samples[:, :1]))
        try:
            mask = self.noise_mask.to(self.samples).expand(batch, 1, frames, height, width)
        except RuntimeError:
            raise SettingsError(
                f"noise_mask of shape {tuple(self.noise_mask.shape)} does not fit a latent of shape "
                f"{tuple(self.samples.shape)}; expected (B, 1, f, h, w) or broadcastable to it"
            ) from None
        if mask.numel() and (mask.min() < 0 or mask.max() > 1):
            raise SettingsError("noise_mask values must lie in [0, 1] (1: generate, 0: keep)")
        object.__setattr__(self, "noise_mask", mask.contiguous())

    @property
    def num_tokens(self) -> int:
        return math.prod(self.samples.shape[2:])


# ---------------------------------------------------------------- size checks


def _nearest(candidates: list[int]) -> str:
    valid = sorted({c for c in candidates if c > 0})
    return " or ".join(str(c) for c in valid)


def check_multiple(name: str, value: int, multiple: int) -> None:
    """`value` must be a positive multiple (the VAE compresses `multiple` pixels per token)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} {value!r} must be a whole number of pixels, a multiple of {multiple}")
    if value < multiple or value % multiple:
        below = value // multiple * multiple
        raise SettingsError(
            f"{name} {value} is not a positive multiple of {multiple}; "
            f"nearest valid: {_nearest([below, below + multiple] if value > 0 else [multiple])}"
        )


def check_num_frames(value: int, temporal_compression: int = 8, name: str = "num_frames") -> None:
    """Frame counts are 8k + 1: the causal VAE keeps frame 0 alone, then 8 per latent."""
    step = temporal_compression
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{name} {value!r} must be a whole number of frames, {step}k + 1")
    if value < 1 or (value - 1) % step:
        below = max((value - 1) // step * step + 1, 1)
        nearest = [below, below + step] if value > 1 else [1]
        raise SettingsError(
            f"{name} {value} is not {step}k + 1 (1, {1 + step}, {1 + 2 * step}, ...); "
            f"nearest valid: {_nearest(nearest)}"
        )


def check_strength(strength: float) -> None:
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise SettingsError(
            f"conditioning strength {strength!r} is outside [0, 1] "
            "(1: the frame is kept as given, 0: it is ignored)"
        )


# ---------------------------------------------------------------- latents


def latent_size(num_frames: int, height: int, width: int, vae) -> tuple[int, int, int]:
    """(f, h, w) of the latent for a video of the given size; `vae` gives the geometry
    (`temporal_compression`, `spatial_compression`), sizes are checked first."""
    check_num_frames(num_frames, vae.temporal_compression)
    check_multiple("height", height, vae.spatial_compression)
    check_multiple("width", width, vae.spatial_compression)
    return (
        (num_frames - 1) // vae.temporal_compression + 1,
        height // vae.spatial_compression,
        width // vae.spatial_compression,
    )


def empty_latent(
    batch: int,
    num_frames: int,
    height: int,
    width: int,
    vae,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> ConditionedLatent:
    """A latent to generate entirely from noise: zeros, mask 1 everywhere."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SettingsError(f"batch {batch!r} must be a whole number of at least 1")
    size = latent_size(num_frames, height, width, vae)
    samples = torch.zeros(batch, vae.latent_channels, *size, dtype=dtype, device=device)
    return ConditionedLatent(samples, torch.ones(batch, 1, *size, dtype=dtype, device=device))


def condition_frames(
    latent: ConditionedLatent,
    frames_latent: Tensor,
    latent_frame_index: int = 0,
    strength: float = 1.0,
) -> ConditionedLatent:
    """Put encoded conditioning frames `(B or 1, C, n, h, w)` into the latent from
    `latent_frame_index` on, with noise mask `1 - strength` there (paper 2.4)."""
    check_strength(strength)
    samples = latent.samples
    fits = frames_latent.ndim == 5 and frames_latent.shape[1] == samples.shape[1]
    if not fits or frames_latent.shape[3:] != samples.shape[3:]:
        raise SettingsError(
            f"conditioning latent of shape {tuple(frames_latent.shape)} does not fit the latent "
            f"{tuple(samples.shape)}: channels, height and width must agree"
        )
    total, count = samples.shape[2], frames_latent.shape[2]
    if not 0 <= latent_frame_index or latent_frame_index + count > total:
        raise SettingsError(
            f"conditioning latent frames {latent_frame_index}..{latent_frame_index + count - 1} fall "
            f"outside the clip's {total} latent frames; allowed start: 0 to {total - count}"
        )
    where = slice(latent_frame_index, latent_frame_index + count)
    samples = samples.clone()
    samples[:, :, where] = frames_latent.to(samples)
    mask = latent.noise_mask.clone()
    mask[:, :, where] = 1.0 - strength
    return ConditionedLatent(samples, mask)


def condition_first_frame(
    latent: ConditionedLatent, first_frame_latent: Tensor, strength: float = 1.0
) -> ConditionedLatent:
    """Image-to-video: the encoded first frame `(B or 1, C, 1, h, w)` becomes latent frame 0
    (the causal VAE encodes pixel frame 0 alone into latent frame 0)."""
    if first_frame_latent.ndim == 5 and first_frame_latent.shape[2] != 1:
        raise SettingsError(
            f"first-frame latent has {first_frame_latent.shape[2]} latent frames; expected 1 (one image)"
        )
    return condition_frames(latent, first_frame_latent, 0, strength)


def pixel_to_latent_frame(frame_index: int, num_frames: int, temporal_compression: int = 8) -> int:
    """Latent frame that starts at pixel frame `frame_index`: 0, or a multiple of 8 (the
    causal VAE's latent frame k covers pixel frames 8k - 7 .. 8k, so only its start and
    frame 0 begin a latent frame)."""
    if isinstance(frame_index, bool) or not isinstance(frame_index, int) or not 0 <= frame_index < num_frames:
        raise SettingsError(
            f"conditioning frame index {frame_index!r} is outside the clip of {num_frames} frames; "
            f"allowed: 0 to {num_frames - 1}"
        )
    if frame_index % temporal_compression:
        below = frame_index // temporal_compression * temporal_compression
        above = below + temporal_compression
        nearest = _nearest([below, above] if above < num_frames else [below])
        raise SettingsError(
            f"conditioning frame index {frame_index} does not start a latent frame; nearest valid: {nearest}"
        )
    return frame_index // temporal_compression


def initial_latent(latent: ConditionedLatent, generator: torch.Generator) -> Tensor:
    """The sampler's starting point: each token at its own noise level `noise_mask`
    (sigma 1 times the mask), `mask * noise + (1 - mask) * clean`. Noise is drawn in
    the latent's (B, C, f, h, w) layout on the generator's device, as diffusers does."""
    noise = torch.randn(
        latent.samples.shape, generator=generator, device=generator.device, dtype=latent.samples.dtype
    ).to(latent.samples.device)
    mask = latent.noise_mask
    return mask * noise + (1 - mask) * latent.samples
