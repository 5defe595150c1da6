"""The layers of the causal video VAE (paper 2.1), under Lightricks' module names:
causal 3-D convolutions, norms, the timestep embedding of the denoising decoder, resnet
blocks and the space-to-depth / depth-to-space resamplers.

The decoder's resnet blocks and upsamplers also compute a window of frames
(`forward_window`), which the time-chunked decode (`vae_stream`) runs chunk by chunk.
"""

from __future__ import annotations

import math
from math import prod

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .modulation import modulation_table
from .time_windows import time_padding

# diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)`, the input
# width of PixArt-alpha's timestep embedder that Lightricks' decoder reuses.
TIMESTEP_PROJ_DIM = 256


# ---------------------------------------------------------------------- time convolutions and chunks


class CausalConv3d(nn.Module):
    """3-D conv padded in time by repeating edge frames: causal = the first frame twice in
    front, so output frame t sees input frames <= t (Lightricks `causal_conv3d.py`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int | tuple[int, int, int] = 1,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        self.time_kernel_size = kernel_size
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(0, kernel_size // 2, kernel_size // 2),
            padding_mode=padding_mode,
        )

    def time_padding(self, causal: bool = True) -> tuple[int, int]:
        return time_padding(self.time_kernel_size, causal)

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        return self.forward_padded(x, self.time_padding(causal))

    def forward_padded(self, x: Tensor, pads: tuple[int, int]) -> Tensor:
        """The conv with `pads` edge frames repeated (front, back): a time window of the
        clip gets the repeats only where it touches the clip's ends (`time_window`)."""
        if any(pads):
            x = F.pad(x, (0, 0, 0, 0, *pads), mode="replicate")
        return self.conv(x)


# ---------------------------------------------------------------------- norms, timestep embedding, noise


class PixelNorm(nn.Module):
    """RMS over channels, no weights (the norm of every released VAE)."""

    def forward(self, x: Tensor) -> Tensor:
        return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, F, H, W); the inner `norm` is in the key."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def make_norm(norm_layer: str, channels: int) -> nn.Module:
    if norm_layer == "pixel_norm":
        return PixelNorm()
    if norm_layer == "group_norm":
        return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6)
    return LayerNorm(channels)


def sinusoidal_embedding(t: Tensor, dim: int = TIMESTEP_PROJ_DIM) -> Tensor:
    """(N,) -> (N, dim) as [cos, sin] of t * 10000^(-i / (dim/2)) (diffusers `Timesteps`
    with flip_sin_to_cos=True, downscale_freq_shift=0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEmbedder(nn.Module):
    """PixArt-alpha's combined embedder without size conditions, as the official decoder
    uses it: sinusoid -> `timestep_embedder.linear_1` -> SiLU -> `linear_2`."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepMLP(TIMESTEP_PROJ_DIM, dim)

    def forward(self, timestep: Tensor, dtype: torch.dtype) -> Tensor:
        # (B,) -> (B, dim, 1, 1, 1), ready to broadcast over (F, H, W)
        embedded = self.timestep_embedder(sinusoidal_embedding(timestep).to(dtype))
        return embedded[:, :, None, None, None]


def spatial_noise(shape: torch.Size, generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal noise drawn on the generator's device, so a CPU generator gives the
    same numbers whatever device the model runs on."""
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


# ---------------------------------------------------------------------- resnet blocks


class ResnetBlock3D(nn.Module):
    """norm -> (scale, shift) -> SiLU -> conv, twice, plus the input; from 0.9.1 on the
    decoder adds per-channel-scaled spatial noise after each conv (StyleGAN's explicit
    noise inputs) and modulates both norms by the timestep (AdaLN)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_layer: str,
        padding_mode: str,
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
    ):
        super().__init__()
        self.inject_noise = inject_noise
        self.timestep_conditioning = timestep_conditioning
        self.norm1 = make_norm(norm_layer, in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, padding_mode=padding_mode)
        self.norm2 = make_norm(norm_layer, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, padding_mode=padding_mode)
        if inject_noise:
            # Both sized by in_channels, as in the official code (only width-keeping
            # blocks inject noise).
            self.per_channel_scale1 = nn.Parameter(torch.zeros(in_channels, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.zeros(in_channels, 1, 1))
        self.norm3 = LayerNorm(in_channels) if in_channels != out_channels else None
        self.conv_shortcut = (
            nn.Conv3d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )
        if timestep_conditioning:
            self.scale_shift_table = modulation_table(4, in_channels)

    def _modulation(self, timestep_embed: Tensor | None) -> tuple[Tensor, ...] | None:
        """timestep_embed (B, 4C, 1, 1, 1) -> shift1, scale1, shift2, scale2 (B, C, 1, 1, 1)."""
        if not self.timestep_conditioning:
            return None
        ada = self.scale_shift_table[None, :, :, None, None, None] + timestep_embed.unflatten(1, (4, -1))
        return ada.unbind(dim=1)

    @staticmethod
    def _draw_noise(like: Tensor, generator: torch.Generator) -> Tensor:
        # one (H, W) draw shared by every batch item, channel and frame
        return spatial_noise(like.shape[-2:], generator, like)

    @staticmethod
    def _add_noise(h: Tensor, noise: Tensor, per_channel_scale: Tensor) -> Tensor:
        return h + (noise[None] * per_channel_scale)[None, :, None]

    # The steps between the two convs are per frame, so they run on a time window as on
    # the whole clip; only the convs need the neighbouring frames.
    def _conv1_input(self, x: Tensor, ada: tuple[Tensor, ...] | None) -> Tensor:
        h = self.norm1(x)
        if ada is not None:
            h = h * (1 + ada[1]) + ada[0]
        return F.silu(h)

    def _conv2_input(self, h: Tensor, ada: tuple[Tensor, ...] | None, noise1: Tensor | None) -> Tensor:
        if noise1 is not None:
            h = self._add_noise(h, noise1, self.per_channel_scale1)
        h = self.norm2(h)
        if ada is not None:
            h = h * (1 + ada[3]) + ada[2]
        return F.silu(h)

    def _output(self, x: Tensor, h: Tensor, noise2: Tensor | None) -> Tensor:
        if noise2 is not None:
            h = self._add_noise(h, noise2, self.per_channel_scale2)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(self.norm3(x))
        return x + h

    def forward(
        self,
        x: Tensor,
        causal: bool = True,
        timestep_embed: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        ada = self._modulation(timestep_embed)
        h = self.conv1(self._conv1_input(x, ada), causal)
        noise1 = self._draw_noise(h, generator) if self.inject_noise else None
        h = self.conv2(self._conv2_input(h, ada, noise1), causal)
        noise2 = self._draw_noise(h, generator) if self.inject_noise else None
        return self._output(x, h, noise2)

    def forward_window(
        self,
        x: Tensor,
        causal: bool,
        timestep_embed: Tensor | None,
        noise1: Tensor | None,
        noise2: Tensor | None,
        pads1: tuple[int, int],
        pads2: tuple[int, int],
    ) -> Tensor:
        """One chunk's output frames from the input window its convs reach; `pads1`,
        `pads2`: the edge repeats each conv still needs. Only small ints vary between
        chunks, so a compiled version (`compile_vae_decoder`) keeps a few graphs."""
        ada = self._modulation(timestep_embed)
        h = self.conv1.forward_padded(self._conv1_input(x, ada), pads1)
        h = self.conv2.forward_padded(self._conv2_input(h, ada, noise1), pads2)
        # the chunk's own input frames start after the frames the convs read in front
        first = sum(conv.time_padding(causal)[0] - pads[0] for conv, pads in ((self.conv1, pads1), (self.conv2, pads2)))
        return self._output(x[:, :, first : first + h.shape[2]], h, noise2)


class UNetMidBlock3D(nn.Module):
    """A `res_x` entry: `num_layers` same-width resnet blocks sharing one timestep
    embedding (`time_embedder`, only with timestep conditioning)."""

    def __init__(
        self,
        channels: int,
        num_layers: int,
        norm_layer: str,
        padding_mode: str,
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
    ):
        super().__init__()
        self.time_embedder = TimestepEmbedder(channels * 4) if timestep_conditioning else None
        self.res_blocks = nn.ModuleList(
            ResnetBlock3D(channels, channels, norm_layer, padding_mode, inject_noise, timestep_conditioning)
            for _ in range(num_layers)
        )

    def embed(self, timestep: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        return None if self.time_embedder is None else self.time_embedder(timestep, dtype)

    def forward(
        self, x: Tensor, causal: bool = True, timestep: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        embed = self.embed(timestep, x.dtype)
        for block in self.res_blocks:
            x = block(x, causal, embed, generator)
        return x


# ---------------------------------------------------------------------- resampling


def space_to_depth(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    return rearrange(x, "b c (d p1) (h p2) (w p3) -> b (c p1 p2 p3) d h w", p1=stride[0], p2=stride[1], p3=stride[2])


def depth_to_space(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    return rearrange(x, "b (c p1 p2 p3) d h w -> b c (d p1) (h p2) (w p3)", p1=stride[0], p2=stride[1], p3=stride[2])


class SpaceToDepthDownsample(nn.Module):
    """0.9.5+ encoder downsampler: conv then space-to-depth, plus a parameter-free skip
    (space-to-depth of the input, averaged over channel groups to the output width)."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int], padding_mode: str):
        super().__init__()
        self.stride = stride
        self.group_size = in_channels * prod(stride) // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // prod(stride), padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        if self.stride[0] == 2:
            # causal VAE: repeat frame 0 so 1 + 2k frames pair up into 1 + k
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = space_to_depth(x, self.stride).unflatten(1, (-1, self.group_size)).mean(dim=2)
        return space_to_depth(self.conv(x, causal), self.stride) + skip


class DepthToSpaceUpsample(nn.Module):
    """Decoder upsampler: conv to stride-product times the channels, then depth-to-space;
    `residual` (0.9.1+) adds the depth-to-space of the input, repeated to the width."""

    def __init__(
        self,
        in_channels: int,
        stride: tuple[int, int, int],
        padding_mode: str,
        residual: bool = False,
        out_channels_reduction_factor: int = 1,
    ):
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = prod(stride) // out_channels_reduction_factor
        self.conv = CausalConv3d(in_channels, in_channels * self.repeats, padding_mode=padding_mode)

    @property
    def dropped_frames(self) -> int:
        """Leading output frames dropped: latent frame 0 holds one pixel frame, not two."""
        return 1 if self.stride[0] == 2 else 0

    def _add_residual(self, out: Tensor, x: Tensor) -> Tensor:
        """out + depth_to_space(x) repeated to out's width, added in place through a
        broadcast (the same sums as `.repeat`, without its full-size copy)."""
        out.unflatten(1, (self.repeats, -1)).add_(depth_to_space(x, self.stride).unsqueeze(1))
        return out

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        out = depth_to_space(self.conv(x, causal), self.stride)
        if self.residual:
            out = self._add_residual(out, x)
        drop = self.dropped_frames
        return out[:, :, drop:] if drop else out

    def forward_window(self, x: Tensor, causal: bool, pads: tuple[int, int]) -> Tensor:
        """One chunk's upsampled frames (none dropped) from the input window its conv
        reaches; `pads`: the edge repeats the conv still needs."""
        out = depth_to_space(self.conv.forward_padded(x, pads), self.stride)
        if self.residual:
            first = self.conv.time_padding(causal)[0] - pads[0]
            out = self._add_residual(out, x[:, :, first : first + out.shape[2] // self.stride[0]])
        return out
