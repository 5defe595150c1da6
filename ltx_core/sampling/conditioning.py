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
Lightricks instead holds the token at 1 - strength until the schedule passes it; the
sampler does that on request (`strength_rule="held"`, see `sampler.STRENGTH_RULES`), the
default keeps the `sigma * noise_mask` timestep ComfyUI's LATENT carries.

Conditioning on other frames than the first (keyframes, the last frame, a clip's
continuation), as Lightricks' `prepare_conditioning` and diffusers' `LTXConditionPipeline`
do from 0.9.5 on: an item at frame 0 replaces the first latent frames' tokens; an item
elsewhere becomes extra tokens (`Keyframe`) with their own RoPE coordinates and noise
mask, placed before the video's tokens and dropped before decoding. A multi-frame item
elsewhere keeps its first two latent frames as extra tokens (the causal VAE encodes its
first frame alone, so they are not the video's latent frames there) and replaces the
video's latent frames from frame_index / 8 + 2 on with the rest.

Sizes are checked here, where pixels meet the latent grid, with the nearest valid values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from einops import rearrange
from torch import Tensor

from ..errors import SettingsError
from ..models.configs import FRAMES_PER_LATENT
from ..preflight import check_multiple, check_num_frames, nearest_valid  # one home for the size rules

# Latent frames of a multi-frame item away from frame 0 that become extra tokens
# (Lightricks' and diffusers' `num_prefix_latent_frames`).
PREFIX_LATENT_FRAMES = 2


@dataclass(frozen=True)
class Keyframe:
    """Encoded conditioning frames `(B or 1, C, n, h, w)` given to the transformer as extra
    tokens whose time coordinates start at pixel frame `frame_index`, at noise mask
    1 - strength (their timestep `sigma * (1 - strength)`, as the video's tokens)."""

    samples: Tensor
    frame_index: int
    strength: float = 1.0
    # A reference encoded at 1/s of the video's size (an IC-LoRA control on a coarser grid):
    # each of its tokens covers s x s of the video's tokens, so its pixel coordinates are
    # s times the grid's (`denoise.keyframe_coords`). 1: the video's own grid.
    spatial_scale: int = 1

    def __post_init__(self):
        scale = self.spatial_scale
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise SettingsError(f"keyframe spatial_scale {scale!r} must be a whole number of at least 1")

    @property
    def num_tokens(self) -> int:
        return math.prod(self.samples.shape[2:])


@dataclass(frozen=True)
class ConditioningItem:
    """An image `(H, W, 3)` or a clip `(F, H, W, 3)` in [0, 1], F = 8k + 1, to hold the
    video to from pixel frame `frame_index` on with `strength` (1: kept as given)."""

    frames: Tensor
    frame_index: int = 0
    strength: float = 1.0

    def __post_init__(self):
        frames = self.frames
        if not isinstance(frames, Tensor) or frames.ndim not in (3, 4) or frames.shape[-1] != 3 or not frames.numel():
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise SettingsError(
                f"conditioning item {shape} is not an image or a clip; allowed: (H, W, 3) or (F, H, W, 3) in [0, 1]"
            )
        if frames.ndim == 3:
            object.__setattr__(self, "frames", frames[None])
        check_num_frames(self.frames.shape[0], name="conditioning clip frame count")
        check_strength(self.strength)
        if isinstance(self.frame_index, bool) or not isinstance(self.frame_index, int) or self.frame_index < 0:
            raise SettingsError(f"conditioning frame index {self.frame_index!r} must be a whole number >= 0")


@dataclass(frozen=True)
class ConditionedLatent:
    """Normalized latent `(B, C, f, h, w)` and per-token noise mask `(B, 1, f, h, w)`.

    `samples` holds the clean conditioning values where the mask is below 1 (anything
    elsewhere: those tokens start from noise); a mask of any shape that broadcasts to
    `(B, 1, f, h, w)`, as ComfyUI's `(B, 1, f, 1, 1)`, is expanded on construction, and
    no mask (ComfyUI's empty latents have none) means every token is generated.
    `keyframes` are conditioning frames placed elsewhere than on the latent grid."""

    samples: Tensor
    noise_mask: Tensor | None = None
    keyframes: tuple[Keyframe, ...] = ()
    # what a run that starts below sigma 1 starts from under the conditioning (the source
    # clip, the upsampled first pass), which the official pipeline noises first and then
    # blends with the conditioning by its strength (`initial_latent`); None: `samples`
    start: Tensor | None = None

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
        """The video's tokens (the schedule's shift counts these, not the keyframes')."""
        return math.prod(self.samples.shape[2:])

    @property
    def num_keyframe_tokens(self) -> int:
        return sum(keyframe.num_tokens for keyframe in self.keyframes)


# ---------------------------------------------------------------- size checks


def check_strength(strength: float) -> None:
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise SettingsError(
            f"conditioning strength {strength!r} is outside [0, 1] (1: the frame is kept as given, 0: it is ignored)"
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


def _check_fits(frames_latent: Tensor, samples: Tensor) -> None:
    fits = frames_latent.ndim == 5 and frames_latent.shape[1] == samples.shape[1]
    if not fits or frames_latent.shape[3:] != samples.shape[3:] or frames_latent.shape[0] not in (1, samples.shape[0]):
        raise SettingsError(
            f"conditioning latent of shape {tuple(frames_latent.shape)} does not fit the latent "
            f"{tuple(samples.shape)}: channels, height and width must agree (batch 1 or the same)"
        )


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
    _check_fits(frames_latent, samples)
    total, count = samples.shape[2], frames_latent.shape[2]
    if not latent_frame_index >= 0 or latent_frame_index + count > total:
        raise SettingsError(
            f"conditioning latent frames {latent_frame_index}..{latent_frame_index + count - 1} fall "
            f"outside the clip's {total} latent frames; allowed start: 0 to {total - count}"
        )
    where = slice(latent_frame_index, latent_frame_index + count)
    samples = samples.clone()
    samples[:, :, where] = frames_latent.to(samples)
    mask = latent.noise_mask.clone()
    mask[:, :, where] = 1.0 - strength
    return ConditionedLatent(samples, mask, latent.keyframes, latent.start)


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


def pixel_to_latent_frame(frame_index: int, num_frames: int, temporal_compression: int = FRAMES_PER_LATENT) -> int:
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
        nearest = nearest_valid([below, above] if above < num_frames else [below])
        raise SettingsError(
            f"conditioning frame index {frame_index} does not start a latent frame; nearest valid: {nearest}"
        )
    return frame_index // temporal_compression


def add_keyframe(
    latent: ConditionedLatent,
    frames_latent: Tensor,
    frame_index: int,
    strength: float = 1.0,
    temporal_compression: int = FRAMES_PER_LATENT,
) -> ConditionedLatent:
    """Condition the video on encoded frames `(B or 1, C, n, h, w)` (an image: n = 1; a
    clip of 8(n - 1) + 1 frames) starting at pixel frame `frame_index`, as Lightricks'
    `prepare_conditioning`: at frame 0 they replace the first latent frames; elsewhere an
    image is extra tokens at that frame, and a clip (which must start a latent frame)
    gives its first two latent frames as extra tokens and the rest to the video's grid."""
    check_strength(strength)
    _check_fits(frames_latent, latent.samples)
    step = temporal_compression
    num_frames = (latent.samples.shape[2] - 1) * step + 1
    count = frames_latent.shape[2]
    item_frames = (count - 1) * step + 1
    whole = isinstance(frame_index, int) and not isinstance(frame_index, bool)
    if not whole or not 0 <= frame_index <= num_frames - item_frames:
        raise SettingsError(
            f"conditioning frame index {frame_index!r} with {item_frames} frame(s) reaches past the clip of "
            f"{num_frames} frames; allowed: {_allowed_starts(num_frames, item_frames)}"
        )
    if frame_index == 0:
        return condition_frames(latent, frames_latent, 0, strength)
    if count > 1 and frame_index % step:
        below = frame_index // step * step
        nearest = [c for c in (below, below + step) if 0 < c <= num_frames - item_frames] or [0]
        raise SettingsError(
            f"conditioning clip at frame {frame_index} does not start a latent frame; a clip of "
            f"{item_frames} frames may start at a multiple of {step}; nearest valid: {nearest_valid(nearest) or 0}"
        )
    if count > PREFIX_LATENT_FRAMES:
        start = frame_index // step + PREFIX_LATENT_FRAMES
        latent = condition_frames(latent, frames_latent[:, :, PREFIX_LATENT_FRAMES:], start, strength)
        frames_latent = frames_latent[:, :, :PREFIX_LATENT_FRAMES]
    keyframe = Keyframe(frames_latent.to(latent.samples), frame_index, strength)
    return replace(latent, keyframes=latent.keyframes + (keyframe,))


def _allowed_starts(num_frames: int, count: int) -> str:
    if count > num_frames:
        return f"none, the item has more frames ({count}) than the video; trim it to at most {num_frames}"
    return f"0 to {num_frames - count}"


def check_item_fits(item: ConditioningItem, num_frames: int, height: int, width: int, step: int = 8) -> None:
    """A conditioning item must have the video's size and lie inside its frames (the
    pixel-side twin of `add_keyframe`'s checks, for `Request` to fail before any model)."""
    count, item_height, item_width = item.frames.shape[:3]
    if (item_height, item_width) != (height, width):
        raise SettingsError(
            f"conditioning item of {item_width}x{item_height} pixels is not the video's {width}x{height}; "
            "resize it first (e.g. ltx_core.video.resize_center_crop)"
        )
    check_item_position(item.frame_index, count, num_frames, step)


def _noised(samples: Tensor, level: Tensor, generator: torch.Generator, token_major: bool = False) -> Tensor:
    """`level * noise + (1 - level) * samples`, noise drawn on the generator's device in the
    samples' layout (B, C, f, h, w), as diffusers does, or `token_major`: (B, f*h*w, C) and
    rearranged, as Lightricks' pipeline draws its initial noise."""
    if token_major:
        batch, channels, frames, height, width = samples.shape
        shape = (batch, frames * height * width, channels)
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=samples.dtype)
        noise = rearrange(noise, "b (f h w) c -> b c f h w", f=frames, h=height, w=width)
    else:
        noise = torch.randn(samples.shape, generator=generator, device=generator.device, dtype=samples.dtype)
    return level * noise.to(samples.device) + (1 - level) * samples


def initial_latent(
    latent: ConditionedLatent, generator: torch.Generator, start_sigma: float = 1.0, token_major: bool = False
) -> Tensor:
    """The sampler's starting point: each token at its own noise level, the schedule's
    first sigma times its mask, `level * noise + (1 - level) * samples` (for sigma 1:
    `mask * noise + (1 - mask) * clean`). A first sigma below 1 with the source clip in
    `samples` is video-to-video (diffusers' `latents` with `denoise_strength`).
    `token_major` draws the noise in Lightricks' layout (see `_noised`).

    A latent with a `start` below sigma 1 is built as the official pipeline builds it: the
    start noised to the first sigma, then each token blended towards its conditioning by
    its strength, `mask * (sigma * noise + (1 - sigma) * start) + (1 - mask) * samples`."""
    mask = latent.noise_mask
    if start_sigma == 1.0 or latent.start is None:
        return _noised(latent.samples, mask if start_sigma == 1.0 else start_sigma * mask, generator, token_major)
    noised = _noised(latent.start, torch.tensor(start_sigma), generator, token_major)
    return mask * noised + (1 - mask) * latent.samples


def initial_keyframes(latent: ConditionedLatent, generator: torch.Generator, start_sigma: float = 1.0) -> list[Tensor]:
    """Each keyframe's starting point, drawn after the video's noise, in the keyframes'
    order: noise level `start_sigma * (1 - strength)` (1 - strength at sigma 1); a latent
    with a `start` takes 1 - strength whatever the first sigma, as the official pipeline
    lerps its extra conditioning tokens from pure noise."""
    batch = latent.samples.shape[0]
    scale = 1.0 if latent.start is not None else start_sigma
    return [
        _noised(k.samples.expand(batch, -1, -1, -1, -1), torch.tensor(scale * (1.0 - k.strength)), generator)
        for k in latent.keyframes
    ]


def check_item_position(frame_index: int, count: int, num_frames: int, step: int = 8) -> None:
    """`count` conditioning frames starting at `frame_index` must lie inside the clip, and a
    clip of several frames must start a latent frame."""
    if frame_index > num_frames - count:
        raise SettingsError(
            f"conditioning frame index {frame_index} with {count} frame(s) reaches past the clip of "
            f"{num_frames} frames; allowed: {_allowed_starts(num_frames, count)}"
        )
    if count > 1 and frame_index % step:
        raise SettingsError(
            f"conditioning clip at frame {frame_index} does not start a latent frame; "
            f"a clip may start at a multiple of {step}"
        )
