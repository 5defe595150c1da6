"""The latent upsamplers of the multi-scale pipeline: a small convolutional network that
doubles a latent in space (h, w) or in time (f) without decoding it.

Lightricks' `LatentUpsampler` (`ltx_video/models/autoencoders/latent_upsampler.py`): a
conv stem, residual blocks, one convolution whose extra channels a pixel shuffle turns into
resolution, residual blocks at the new size, a conv back to the latent channels. It works
on raw VAE latents; `sampling.latent_ops.upsample_latent` handles the normalization.

Config field names are the `config` metadata entry of the official single file, module
names its tensor names, so that file loads strictly without renames (diffusers'
`LTXLatentUpsamplerModel` has the same names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SettingsError, is_int

# GroupNorm with 32 groups in every block, as in the official network: widths must divide.
NORM_GROUPS = 32
# Class names a config may carry: the official one and diffusers'.
CLASS_NAMES = ("LatentUpsampler", "LTXLatentUpsamplerModel")


@dataclass(frozen=True)
class LatentUpsamplerConfig:
    """Named as the official file's `config` metadata (the dict `LatentUpsampler.config()`
    writes). Defaults are the published spatial upsampler's."""

    in_channels: int = 128  # the VAE's latent channels
    mid_channels: int = 512
    num_blocks_per_stage: int = 4  # residual blocks before and again after the upsampling
    dims: int = 3  # 3: Conv3d blocks across frames; 2: each frame on its own
    spatial_upsample: bool = True  # h, w -> 2h, 2w
    temporal_upsample: bool = False  # f -> 2f - 1

    def __post_init__(self):
        for name in ("in_channels", "mid_channels", "num_blocks_per_stage"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise SettingsError(f"latent upsampler config: {name} is {value!r}; allowed: a positive integer")
        if self.mid_channels % NORM_GROUPS:
            raise SettingsError(
                f"latent upsampler config: mid_channels {self.mid_channels} is not a multiple "
                f"of {NORM_GROUPS} (its GroupNorm has {NORM_GROUPS} groups)"
            )
        if self.dims not in (2, 3):
            raise SettingsError(f"latent upsampler config: dims {self.dims!r} is not allowed; allowed: 2 or 3")
        for name in ("spatial_upsample", "temporal_upsample"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(
                    f"latent upsampler config: {name} is {getattr(self, name)!r}; allowed: true or false"
                )
        if not (self.spatial_upsample or self.temporal_upsample):
            raise SettingsError(
                "latent upsampler config: neither spatial_upsample nor temporal_upsample is set; allowed: one or both"
            )
        if self.temporal_upsample and self.dims == 2:
            # per-frame (2D) blocks see no time axis to upsample; the official code breaks too
            raise SettingsError("latent upsampler config: temporal_upsample needs dims 3, not 2")

    @property
    def factors(self) -> tuple[int, int, int]:
        """How many times (f, h, w) each grow; f as `upsampled_size` counts it."""
        space = 2 if self.spatial_upsample else 1
        return (2 if self.temporal_upsample else 1, space, space)

    def upsampled_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(f, h, w) of the output for an input latent of (frames, height, width)."""
        time, space, _ = self.factors
        # causal latent: frame 0 holds one pixel frame, the rest 8 each, so doubling the
        # frame rate keeps frame 0 single: 2f - 1 frames (the network drops one of frame 0's pair)
        return (time * (frames - 1) + 1, space * height, space * width)

    @classmethod
    def from_metadata(cls, config: Mapping[str, Any]) -> LatentUpsamplerConfig:
        """`json.loads(metadata["config"])` of an official file, or a diffusers
        `latent_upsampler/config.json`. All six fields are required: the official writer
        stores them all, and its reader's defaults (dims 2, 4 input channels) describe
        no published model."""
        if not isinstance(config, Mapping):
            raise SettingsError(f"latent upsampler config is a {type(config).__name__}; allowed: a JSON object")
        class_name = config.get("_class_name", CLASS_NAMES[0])
        if class_name not in CLASS_NAMES:
            raise SettingsError(
                f"latent upsampler config: _class_name {class_name!r} is not {' or '.join(map(repr, CLASS_NAMES))}"
            )
        if config.get("rational_resampler") or config.get("spatial_scale", 2.0) != 2.0:
            # LTX-2's upsamplers add these (ComfyUI reads them); no LTX-Video one has them
            raise SettingsError(
                f"latent upsampler config: spatial_scale {config.get('spatial_scale')!r} with a "
                "rational resampler is an LTX-2 upsampler; allowed: the LTX-Video x2 upsamplers"
            )
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in config]
        if missing:
            raise SettingsError(f"latent upsampler config lacks {', '.join(missing)}")
        return cls(**{name: config[name] for name in names})

    def to_metadata(self) -> dict[str, Any]:
        """The inverse of `from_metadata`: what the official writer stores."""
        return {"_class_name": CLASS_NAMES[0], **{f.name: getattr(self, f.name) for f in fields(self)}}


# The published upsamplers (the `config` metadata of their single files; each is also a
# diffusers folder `latent_upsampler/` with the same values). The 0.9.8 spatial upsampler
# is retrained weights of the 0.9.7 architecture.
LTXV_SPATIAL_UPSCALER_0_9_7 = LatentUpsamplerConfig()
LTXV_SPATIAL_UPSCALER_0_9_8 = LTXV_SPATIAL_UPSCALER_0_9_7
LTXV_TEMPORAL_UPSCALER_0_9_7 = replace(LTXV_SPATIAL_UPSCALER_0_9_7, spatial_upsample=False, temporal_upsample=True)

# Tiny ones for tests: one block per stage, the narrowest width 32 groups allow.
TINY_SPATIAL_UPSAMPLER = replace(LTXV_SPATIAL_UPSCALER_0_9_7, mid_channels=NORM_GROUPS, num_blocks_per_stage=1)
TINY_TEMPORAL_UPSAMPLER = replace(TINY_SPATIAL_UPSAMPLER, spatial_upsample=False, temporal_upsample=True)


def _conv(dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """3x3(x3) convolution keeping the size."""
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(in_channels, out_channels, kernel_size=3, padding=1)


class ResBlock(nn.Module):
    """conv-norm-SiLU-conv-norm, added to the input, then SiLU (the official order: the
    activation comes after the residual sum)."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        self.conv1 = _conv(dims, channels, channels)
        self.norm1 = nn.GroupNorm(NORM_GROUPS, channels)
        self.conv2 = _conv(dims, channels, channels)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, channels)

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + x)


class PixelShuffle(nn.Module):
    """Channels -> resolution: `b (c p...) ... -> b c (... p)` over `axes`, factor 2 each."""

    def __init__(self, axes: str):
        super().__init__()
        self.axes = axes  # "hw" (4D input), "f" or "fhw" (5D input)

    def forward(self, x: Tensor) -> Tensor:
        if self.axes == "hw":
            return F.pixel_shuffle(x, 2)  # (N, 4C, H, W) -> (N, C, 2H, 2W)
        n = len(self.axes)
        b, c, *size = x.shape
        x = x.reshape(b, c // 2**n, *(2,) * n, *size)  # (B, C, p..., F, H, W), p-major as the official
        # interleave each factor after its axis: (B, C, F, p1, H, p2, W, p3)
        order = [0, 1] + [i for a in range(n) for i in (2 + n + a, 2 + a)] + list(range(2 + 2 * n, x.dim()))
        x = x.permute(order)
        return x.reshape(b, c // 2**n, *(s * 2 if i < n else s for i, s in enumerate(size)))


def _upsampling_layer(cfg: LatentUpsamplerConfig) -> nn.Sequential:
    """One convolution widening the channels by the output's growth, then the pixel shuffle;
    `upsampler.0` / `upsampler.1` as in the official file."""
    mid = cfg.mid_channels
    if cfg.spatial_upsample and cfg.temporal_upsample:
        return nn.Sequential(nn.Conv3d(mid, 8 * mid, 3, padding=1), PixelShuffle("fhw"))
    if cfg.spatial_upsample:  # per frame, whatever `dims` is
        return nn.Sequential(nn.Conv2d(mid, 4 * mid, 3, padding=1), PixelShuffle("hw"))
    return nn.Sequential(nn.Conv3d(mid, 2 * mid, 3, padding=1), PixelShuffle("f"))


class LatentUpsampler(nn.Module):
    """Raw (un-normalized) latent (B, C, f, h, w) -> (B, C, f', h', w') of
    `cfg.upsampled_size(f, h, w)`."""

    def __init__(self, cfg: LatentUpsamplerConfig):
        super().__init__()
        self.cfg = cfg
        mid = cfg.mid_channels
        self.initial_conv = _conv(cfg.dims, cfg.in_channels, mid)
        self.initial_norm = nn.GroupNorm(NORM_GROUPS, mid)
        self.res_blocks = nn.ModuleList(ResBlock(mid, cfg.dims) for _ in range(cfg.num_blocks_per_stage))
        self.upsampler = _upsampling_layer(cfg)
        self.post_upsample_res_blocks = nn.ModuleList(ResBlock(mid, cfg.dims) for _ in range(cfg.num_blocks_per_stage))
        self.final_conv = _conv(cfg.dims, mid, cfg.in_channels)

    def forward(self, latent: Tensor) -> Tensor:
        b = latent.shape[0]
        x = _per_frame(latent) if self.cfg.dims == 2 else latent  # dims 2: (B f, C, h, w) throughout
        x = F.silu(self.initial_norm(self.initial_conv(x)))
        for block in self.res_blocks:
            x = block(x)
        x = self._upsample(x, b)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        x = self.final_conv(x)
        return _from_frames(x, b) if self.cfg.dims == 2 else x

    def _upsample(self, x: Tensor, b: int) -> Tensor:
        if self.cfg.temporal_upsample:  # a Conv3d on (B, C, f, h, w)
            # the pair frame 0 became holds its one pixel frame twice; keep one: 2f - 1 frames
            return self.upsampler(x)[:, :, 1:]
        if self.cfg.dims == 2:  # already per frame
            return self.upsampler(x)
        return _from_frames(self.upsampler(_per_frame(x)), b)  # a Conv2d on each frame


def _per_frame(x: Tensor) -> Tensor:
    """(B, C, f, h, w) -> (B f, C, h, w)."""
    return x.transpose(1, 2).flatten(0, 1)


def _from_frames(x: Tensor, b: int) -> Tensor:
    """(B f, C, h, w) -> (B, C, f, h, w)."""
    return x.unflatten(0, (b, -1)).transpose(1, 2)
