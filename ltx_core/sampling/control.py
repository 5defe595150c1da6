"""IC-LoRA control conditioning (paper 2.4's conditioning tokens, used in context): a
reference video (depth, pose, canny...) encoded by the VAE and given to the transformer as
extra tokens beside the video's, with their own RoPE coordinates and noise mask
1 - strength. An IC-LoRA is trained to read them; without one the model sees only another
clip. Its tokens never replace the video's (unlike a `ConditioningItem` at frame 0), they
are dropped before decoding, and the whole clip is given (no prefix split).

A reference may be encoded at 1/s of the video's width and height (the LoRA's
`reference_downscale_factor`), which makes s^2 times fewer tokens; its coordinates are
then scaled by s so they cover the video's field of view (`Keyframe.spatial_scale`,
`denoise.keyframe_coords`), as ComfyUI's LTXVAddGuide places a downscaled guide.

    ControlVideo(frames, strength, downscale)          what a request carries
    -> fit_control_frames at control_size(H, W, s)     center crop, bilinear resize
    -> VAE encode (pipeline.encode_control)            posterior mean
    -> add_control(latent, encoded, s, strength)       a Keyframe with spatial_scale s
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import Tensor

from ..errors import SettingsError, is_int
from ..models.configs import FRAMES_PER_LATENT, PIXELS_PER_LATENT
from ..preflight import check_num_frames, nearest_valid
from ..video import center_crop_offsets  # the crop resize_center_crop makes, for a whole clip
from .conditioning import ConditionedLatent, Keyframe, check_item_position


@dataclass(frozen=True)
class ControlVideo:
    """A control (reference) video `(F, H, W, 3)` in [0, 1], F = 8k + 1 (an image `(H, W, 3)`
    is one frame), for an IC-LoRA: encoded at 1/`downscale` of the video's width and height
    (any size given is center-cropped to the video's aspect and resized), its tokens at
    noise mask 1 - `strength`, starting at pixel frame `frame_index`."""

    frames: Tensor
    strength: float = 1.0
    downscale: int = 1
    frame_index: int = 0

    def __post_init__(self):
        frames = self.frames
        if not isinstance(frames, Tensor) or frames.ndim not in (3, 4) or frames.shape[-1] != 3 or not frames.numel():
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise SettingsError(
                f"control video {shape} is not a clip; allowed: (F, H, W, 3) with F = 8k + 1, "
                "or an image (H, W, 3), in [0, 1]"
            )
        if frames.ndim == 3:
            object.__setattr__(self, "frames", frames[None])
        check_num_frames(self.frames.shape[0], name="control video frame count")
        check_control_strength(self.strength)
        check_downscale(self.downscale)
        if not is_int(self.frame_index) or self.frame_index < 0:
            raise SettingsError(f"control frame index {self.frame_index!r} must be a whole number >= 0")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def check_control_strength(strength) -> None:
    ok = isinstance(strength, (int, float)) and not isinstance(strength, bool) and math.isfinite(strength)
    if not ok or not 0.0 <= strength <= 1.0:
        raise SettingsError(
            f"control strength {strength!r} is outside [0, 1] (1: the control's tokens are kept clean, "
            "0: they start from noise like the video's)"
        )


def check_downscale(downscale) -> None:
    if not is_int(downscale) or downscale < 1:
        raise SettingsError(
            f"control downscale {downscale!r} must be a whole number of at least 1 "
            "(1: the video's size, 2: half its width and height; an IC-LoRA's reference_downscale_factor)"
        )


def control_size(height: int, width: int, downscale: int, grid: int = PIXELS_PER_LATENT) -> tuple[int, int]:
    """(height, width) in pixels of a control encoded at 1/`downscale` of a video of
    `height` x `width`; both must stay whole multiples of the VAE's `grid` pixels."""
    check_downscale(downscale)
    for name, value in (("height", height), ("width", width)):
        if value % (grid * downscale):
            step = grid * downscale
            below = value // step * step
            raise SettingsError(
                f"the video's {name} {value} at control downscale {downscale} gives a control {name} "
                f"of {value / downscale:g} pixels, not a multiple of {grid}; allowed: a {name} that is a "
                f"multiple of {step} (nearest valid: {nearest_valid([below, below + step])}), or downscale "
                f"{_allowed_downscales(height, width, grid)}"
            )
    return height // downscale, width // downscale


def _allowed_downscales(height: int, width: int, grid: int) -> str:
    cells = math.gcd(height // grid, width // grid) if height % grid == 0 and width % grid == 0 else 1
    return " or ".join(str(d) for d in range(1, cells + 1) if cells % d == 0)


def check_control_fits(
    control: ControlVideo,
    num_frames: int,
    height: int,
    width: int,
    step: int = FRAMES_PER_LATENT,
    grid: int = PIXELS_PER_LATENT,
) -> None:
    """The control must lie inside the video's frames (a clip starting a latent frame) and
    its downscaled size stay on the VAE's grid: checked before any model runs."""
    if not isinstance(control, ControlVideo):
        raise SettingsError(f"control is a {type(control).__name__}; allowed: ControlVideo or None")
    if control.num_frames > num_frames:
        raise SettingsError(
            f"control video has {control.num_frames} frames, more than the video's {num_frames}; "
            f"allowed: at most {num_frames} frames (8k + 1), trim it"
        )
    check_item_position(control.frame_index, control.num_frames, num_frames, step)
    control_size(height, width, control.downscale, grid)


def fit_control_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Frames `(F, H, W, 3)` center-cropped to the aspect of `width` x `height` and resized
    bilinearly to it (as ComfyUI's LTXVAddGuide fits a guide, `common_upscale` bilinear,
    center), in [0, 1]; frames of that size are returned as they are."""
    old_height, old_width = frames.shape[1:3]
    if (old_height, old_width) == (height, width):
        return frames
    left, top = center_crop_offsets(old_width, old_height, width, height)
    cropped = frames[:, top : old_height - top, left : old_width - left]
    resized = F.interpolate(
        cropped.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear", align_corners=False
    )
    return resized.permute(0, 2, 3, 1).clamp(0.0, 1.0)


def add_control(
    latent: ConditionedLatent,
    control_latent: Tensor,
    downscale: int = 1,
    strength: float = 1.0,
    frame_index: int = 0,
    temporal_compression: int = FRAMES_PER_LATENT,
) -> ConditionedLatent:
    """Append an encoded control `(B or 1, C, n, h / downscale, w / downscale)` to the
    latent's conditioning tokens (a `Keyframe` at `frame_index`, `spatial_scale` =
    `downscale`); the video's own tokens are left as they are."""
    check_downscale(downscale)
    check_control_strength(strength)
    samples = latent.samples
    batch, channels, frames, height, width = samples.shape
    if height % downscale or width % downscale:
        raise SettingsError(
            f"latent of {height}x{width} tokens is not divisible by control downscale {downscale}; "
            f"allowed: downscale {_allowed_downscales(height, width, 1)}"
        )
    expected = (channels, height // downscale, width // downscale)
    fits = control_latent.ndim == 5 and control_latent.shape[0] in (1, batch)
    if not fits or tuple(control_latent.shape[1:2]) + tuple(control_latent.shape[3:]) != expected:
        raise SettingsError(
            f"control latent of shape {tuple(control_latent.shape)} does not fit the latent "
            f"{tuple(samples.shape)} at downscale {downscale}: expected (1 or {batch}, {expected[0]}, n, "
            f"{expected[1]}, {expected[2]})"
        )
    if not is_int(frame_index) or frame_index < 0:
        raise SettingsError(f"control frame index {frame_index!r} must be a whole number >= 0")
    step = temporal_compression
    check_item_position(frame_index, (control_latent.shape[2] - 1) * step + 1, (frames - 1) * step + 1, step)
    keyframe = Keyframe(control_latent.to(samples), frame_index, strength, spatial_scale=downscale)
    return replace(latent, keyframes=latent.keyframes + (keyframe,))


def control_at(control: ControlVideo, height: int, width: int) -> Tensor:
    """The control's pixels `(F, h, w, 3)` for a video (or a pass) of `height` x `width`:
    fitted to 1/downscale of that size."""
    return fit_control_frames(control.frames, *control_size(height, width, control.downscale))
