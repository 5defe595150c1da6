"""The causal video VAE of LTX-Video (paper 2.1): video <-> normalized latent.

Pixels are patchified 4x4, then a stack of causal 3-D conv blocks compresses 32x32x8
into 128 latent channels; the first frame is a latent frame of its own, so F = 8k + 1
pixel frames give k + 1 latent frames. The decoder (from 0.9.1 on) is conditioned on a
timestep and performs the last denoising step while decoding (paper 2.1, "shared
diffusion objective"), which is why `decode` takes a timestep and mixes in a little
noise first.

Modules and their names follow Lightricks' `ltx_video/models/autoencoders/
causal_video_autoencoder.py`, so the official state dict (prefix `vae.` stripped) loads
strictly: `encoder.down_blocks.N` / `decoder.up_blocks.N` are flat lists built from the
config's block list, one module per entry.
"""

from __future__ import annotations

import math
from math import prod

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .configs import VAE_DECODER_STRIDES, VAE_ENCODER_STRIDES, VAEConfig
from ..errors import SettingsError

# diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)`, the input
# width of PixArt-alpha's timestep embedder that Lightricks' decoder reuses.
TIMESTEP_PROJ_DIM = 256


# ---------------------------------------------------------------------- building blocks


class CausalConv3d(nn.Module):
    """3-D conv padded in time by repeating edge frames: causal = the first frame twice in
    front, so output frame t sees input frames <= t (Lightricks `causal_conv3d.py`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int | tuple[int, int, int] = 1, padding_mode: str = "zeros"):
        super().__init__()
        self.time_kernel_size = kernel_size
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(0, kernel_size // 2, kernel_size // 2),
                              padding_mode=padding_mode)

    def time_padding(self, causal: bool = True) -> tuple[int, int]:
        """Frames repeated (in front, behind) of the clip: what one output frame reads
        of the input on each side."""
        pad = self.time_kernel_size - 1
        return (pad, 0) if causal else (pad // 2, pad // 2)

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        return self.forward_padded(x, self.time_padding(causal))

    def forward_padded(self, x: Tensor, pads: tuple[int, int]) -> Tensor:
        """The conv with `pads` edge frames repeated (front, back): a time window of the
        clip gets the repeats only where it touches the clip's ends (`time_window`)."""
        if any(pads):
            x = F.pad(x, (0, 0, 0, 0, *pads), mode="replicate")
        return self.conv(x)


# The decode time chunk the CLI and the decode node use unless told otherwise (see
# `pipeline.default_decode_time_chunk`): each decoder layer 32 frames at a time gives the
# frames of the whole decode with half its memory at 768x512x121 on an H100, for 4% more
# time uncompiled and about the same compiled (benchmarks/results/decode_time_chunks.json,
# gpu_speed.json). Clips of up to 32 frames per layer decode whole anyway.
DEFAULT_DECODE_TIME_CHUNK = 32


def check_time_chunk(time_chunk, name: str = "time_chunk") -> None:
    """None (every decoder layer on the whole clip at once) or a whole number >= 1."""
    if time_chunk is not None and (not isinstance(time_chunk, int) or isinstance(time_chunk, bool)
                                   or time_chunk < 1):
        raise SettingsError(f"{name} {time_chunk!r} is not allowed; allowed: a whole number of "
                            "frames >= 1 (None: each decoder layer on the whole clip at once)")


def time_chunks(frames: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of consecutive chunks of `size` frames tiling [0, frames)."""
    return [(start, min(start + size, frames)) for start in range(0, frames, size)]


def time_window(start: int, end: int, frames: int, pads: tuple[int, int]
                ) -> tuple[int, int, tuple[int, int]]:
    """For output frames [start, end) of a time conv padded by `pads` (front, back) on a
    clip of `frames`: the input frames [lo, hi) it reads, clamped to the clip, and the
    edge repeats that window still needs. Those are nonzero only where the window meets
    the clip's real ends, so the window's output equals the whole conv's frames."""
    front, back = pads
    lo, hi = max(0, start - front), min(frames, end + back)
    return lo, hi, (front - (start - lo), back - (hi - end))


def empty_in_layout(like: Tensor, *shape: int) -> Tensor:
    """An empty tensor of `shape` in `like`'s dtype, device and memory layout (channels-last
    when `like` is), for a chunked layer's output."""
    channels_last = not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last_3d)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=layout)


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
    noise = torch.randn(shape, generator=generator, device=generator.device,
                        dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class ResnetBlock3D(nn.Module):
    """norm -> (scale, shift) -> SiLU -> conv, twice, plus the input; from 0.9.1 on the
    decoder adds per-channel-scaled spatial noise after each conv (StyleGAN's explicit
    noise inputs) and modulates both norms by the timestep (AdaLN)."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: str,
                 padding_mode: str, inject_noise: bool = False,
                 timestep_conditioning: bool = False):
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
        self.conv_shortcut = (nn.Conv3d(in_channels, out_channels, kernel_size=1)
                              if in_channels != out_channels else None)
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.randn(4, in_channels) / in_channels**0.5)

    def _modulation(self, timestep_embed: Tensor | None) -> tuple[Tensor, ...] | None:
        """timestep_embed (B, 4C, 1, 1, 1) -> shift1, scale1, shift2, scale2 (B, C, 1, 1, 1)."""
        if not self.timestep_conditioning:
            return None
        ada = (self.scale_shift_table[None, :, :, None, None, None]
               + timestep_embed.unflatten(1, (4, -1)))
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

    def _conv2_input(self, h: Tensor, ada: tuple[Tensor, ...] | None,
                     noise1: Tensor | None) -> Tensor:
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

    def forward(self, x: Tensor, causal: bool = True, timestep_embed: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        ada = self._modulation(timestep_embed)
        h = self.conv1(self._conv1_input(x, ada), causal)
        noise1 = self._draw_noise(h, generator) if self.inject_noise else None
        h = self.conv2(self._conv2_input(h, ada, noise1), causal)
        noise2 = self._draw_noise(h, generator) if self.inject_noise else None
        return self._output(x, h, noise2)

    def forward_chunked(self, x: Tensor, causal: bool, timestep_embed: Tensor | None,
                        generator: torch.Generator | None, time_chunk: int) -> Tensor:
        """`forward`, `time_chunk` output frames at a time, written into one preallocated
        output: alive at once are the input, the output and one chunk's temporaries. Each
        chunk reads the input frames its two convs reach (`time_window`); the noise is
        drawn once, before the chunks, in `forward`'s order."""
        frames = x.shape[2]
        if time_chunk >= frames:  # one chunk: a preallocated output would only add a copy
            return self(x, causal, timestep_embed, generator)
        noises = ((self._draw_noise(x, generator), self._draw_noise(x, generator))
                  if self.inject_noise else (None, None))
        out = empty_in_layout(x, x.shape[0], self.conv2.conv.out_channels, *x.shape[2:])
        for start, end in time_chunks(frames, time_chunk):
            mid_lo, mid_hi, pads2 = time_window(start, end, frames, self.conv2.time_padding(causal))
            lo, hi, pads1 = time_window(mid_lo, mid_hi, frames, self.conv1.time_padding(causal))
            out[:, :, start:end] = self.forward_window(x[:, :, lo:hi], causal, timestep_embed,
                                                       *noises, pads1, pads2)
        return out

    def forward_window(self, x: Tensor, causal: bool, timestep_embed: Tensor | None,
                       noise1: Tensor | None, noise2: Tensor | None,
                       pads1: tuple[int, int], pads2: tuple[int, int]) -> Tensor:
        """One chunk's output frames from the input window its convs reach; `pads1`,
        `pads2`: the edge repeats each conv still needs. Only small ints vary between
        chunks, so a compiled version (`compile_vae_decoder`) keeps a few graphs."""
        ada = self._modulation(timestep_embed)
        h = self.conv1.forward_padded(self._conv1_input(x, ada), pads1)
        h = self.conv2.forward_padded(self._conv2_input(h, ada, noise1), pads2)
        # the chunk's own input frames start after the frames the convs read in front
        first = sum(conv.time_padding(causal)[0] - pads[0]
                    for conv, pads in ((self.conv1, pads1), (self.conv2, pads2)))
        return self._output(x[:, :, first:first + h.shape[2]], h, noise2)


class UNetMidBlock3D(nn.Module):
    """A `res_x` entry: `num_layers` same-width resnet blocks sharing one timestep
    embedding (`time_embedder`, only with timestep conditioning)."""

    def __init__(self, channels: int, num_layers: int, norm_layer: str, padding_mode: str,
                 inject_noise: bool = False, timestep_conditioning: bool = False):
        super().__init__()
        self.time_embedder = TimestepEmbedder(channels * 4) if timestep_conditioning else None
        self.res_blocks = nn.ModuleList(
            ResnetBlock3D(channels, channels, norm_layer, padding_mode, inject_noise,
                          timestep_conditioning)
            for _ in range(num_layers))

    def embed(self, timestep: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        return None if self.time_embedder is None else self.time_embedder(timestep, dtype)

    def forward(self, x: Tensor, causal: bool = True, timestep: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        embed = self.embed(timestep, x.dtype)
        for block in self.res_blocks:
            x = block(x, causal, embed, generator)
        return x


def space_to_depth(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    return rearrange(x, "b c (d p1) (h p2) (w p3) -> b (c p1 p2 p3) d h w",
                     p1=stride[0], p2=stride[1], p3=stride[2])


def depth_to_space(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    return rearrange(x, "b (c p1 p2 p3) d h w -> b c (d p1) (h p2) (w p3)",
                     p1=stride[0], p2=stride[1], p3=stride[2])


class SpaceToDepthDownsample(nn.Module):
    """0.9.5+ encoder downsampler: conv then space-to-depth, plus a parameter-free skip
    (space-to-depth of the input, averaged over channel groups to the output width)."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int],
                 padding_mode: str):
        super().__init__()
        self.stride = stride
        self.group_size = in_channels * prod(stride) // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // prod(stride),
                                 padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        if self.stride[0] == 2:
            # causal VAE: repeat frame 0 so 1 + 2k frames pair up into 1 + k
            x = torch.cat([x[:, :, :1], x], dim=2)
        skip = space_to_depth(x, self.stride).unflatten(1, (-1, self.group_size)).mean(dim=2)
        return space_to_depth(self.conv(x, causal), self.stride) + skip


class DepthToSpaceUpsample(nn.Module):
    """Decoder upsampler: conv to stride-product times the channels, then depth-to-space;
    `residual` (0.9.1+) adds the depth-to-space of the input, repeated to the width."""

    def __init__(self, in_channels: int, stride: tuple[int, int, int], padding_mode: str,
                 residual: bool = False, out_channels_reduction_factor: int = 1):
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = prod(stride) // out_channels_reduction_factor
        self.conv = CausalConv3d(in_channels, in_channels * self.repeats,
                                 padding_mode=padding_mode)

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

    def forward_chunked(self, x: Tensor, causal: bool, time_chunk: int) -> Tensor:
        """`forward`, `time_chunk` input frames at a time, into one preallocated output."""
        frames, (st, sh, sw), drop = x.shape[2], self.stride, self.dropped_frames
        if time_chunk >= frames:
            return self(x, causal)
        out = empty_in_layout(x, x.shape[0], self.conv.conv.out_channels // prod(self.stride),
                              frames * st - drop, x.shape[3] * sh, x.shape[4] * sw)
        for start, end in time_chunks(frames, time_chunk):
            lo, hi, pads = time_window(start, end, frames, self.conv.time_padding(causal))
            piece = self.forward_window(x[:, :, lo:hi], causal, pads)
            skip = drop if start == 0 else 0
            out[:, :, start * st - drop + skip:end * st - drop] = piece[:, :, skip:]
        return out

    def forward_window(self, x: Tensor, causal: bool, pads: tuple[int, int]) -> Tensor:
        """One chunk's upsampled frames (none dropped) from the input window its conv
        reaches; `pads`: the edge repeats the conv still needs."""
        out = depth_to_space(self.conv.forward_padded(x, pads), self.stride)
        if self.residual:
            first = self.conv.time_padding(causal)[0] - pads[0]
            out = self._add_residual(out, x[:, :, first:first + out.shape[2] // self.stride[0]])
        return out


# ---------------------------------------------------------------------- encoder, decoder


def _encoder_block(name: str, params: dict, channels: int, cfg: VAEConfig
                   ) -> tuple[nn.Module, int]:
    """One encoder entry of the block list -> (module, output channels)."""
    pad = cfg.spatial_padding_mode
    stride = VAE_ENCODER_STRIDES[name]
    if name == "res_x":
        return UNetMidBlock3D(channels, params["num_layers"], cfg.norm_layer, pad), channels
    if name in ("compress_time", "compress_space", "compress_all"):  # strided conv, same width
        return CausalConv3d(channels, channels, stride=stride, padding_mode=pad), channels
    out = channels * params.get("multiplier", 2)  # the rest widen
    if name == "res_x_y":
        return ResnetBlock3D(channels, out, cfg.norm_layer, pad), out
    if name == "compress_all_x_y":
        return CausalConv3d(channels, out, stride=stride, padding_mode=pad), out
    return SpaceToDepthDownsample(channels, out, stride, pad), out  # compress_*_res (0.9.5+)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        channels = cfg.encoder_base_channels
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, channels,
                                    padding_mode=cfg.spatial_padding_mode)
        self.down_blocks = nn.ModuleList()
        for name, params in cfg.encoder_block_list:
            block, channels = _encoder_block(name, dict(params), channels, cfg)
            self.down_blocks.append(block)
        self.conv_norm_out = make_norm(cfg.norm_layer, channels)
        # mean channels, then the log-variance: one shared channel ("uniform",
        # "constant") or one per latent channel ("per_channel")
        extra = cfg.latent_channels if cfg.latent_log_var == "per_channel" else 1
        self.conv_out = CausalConv3d(channels, cfg.latent_channels + extra,
                                     padding_mode=cfg.spatial_padding_mode)

    def forward(self, video: Tensor) -> Tensor:
        """(B, C, F, H, W) -> moments (B, latent + extra, f, h, w); always causal."""
        p = self.patch_size
        x = rearrange(video, "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def _decoder_block(name: str, params: dict, channels: int, cfg: VAEConfig
                   ) -> tuple[nn.Module, int]:
    """One decoder entry (walked in reverse) -> (module, output channels)."""
    pad = cfg.spatial_padding_mode
    noise = params.get("inject_noise", False)
    if name == "res_x":
        return UNetMidBlock3D(channels, params["num_layers"], cfg.norm_layer, pad, noise,
                              cfg.timestep_conditioning), channels
    if name == "res_x_y":
        out = channels // params.get("multiplier", 2)
        return ResnetBlock3D(channels, out, cfg.norm_layer, pad, noise), out
    stride = VAE_DECODER_STRIDES[name]
    if name != "compress_all":
        return DepthToSpaceUpsample(channels, stride, pad), channels
    factor = params.get("multiplier", 1)
    return DepthToSpaceUpsample(channels, stride, pad, params.get("residual", False),
                                factor), channels // factor


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.causal = cfg.causal_decoder
        self.timestep_conditioning = cfg.timestep_conditioning
        pad = cfg.spatial_padding_mode
        channels = cfg.decoder_width
        self.conv_in = CausalConv3d(cfg.latent_channels, channels, padding_mode=pad)
        self.up_blocks = nn.ModuleList()
        for name, params in reversed(cfg.decoder_block_list):
            block, channels = _decoder_block(name, dict(params), channels, cfg)
            self.up_blocks.append(block)
        self.conv_norm_out = make_norm(cfg.norm_layer, channels)
        self.conv_out = CausalConv3d(channels, cfg.out_channels * cfg.patch_size**2,
                                     padding_mode=pad)
        if cfg.timestep_conditioning:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.last_time_embedder = TimestepEmbedder(channels * 2)
            self.last_scale_shift_table = nn.Parameter(torch.randn(2, channels) / channels**0.5)

    def forward(self, z: Tensor, timestep: Tensor | None = None,
                generator: torch.Generator | None = None, time_chunk: int | None = None) -> Tensor:
        """Raw latent (B, C, f, h, w) and timestep (B,) sigmas -> (B, 3, F, H, W).

        time_chunk: run every resnet block, upsampler and the output stage this many
        frames (at that layer's frame rate) at a time into a preallocated output, each
        chunk reading the few neighbouring frames its time convs reach: the same frames,
        with the input and output of one layer plus a chunk's temporaries alive instead
        of several full-size temporaries. None: each layer on the whole clip."""
        check_time_chunk(time_chunk)
        if time_chunk is not None:
            self._check_chunkable()
        x = self.conv_in(z, self.causal)
        if self.timestep_conditioning:
            timestep = timestep * self.timestep_scale_multiplier
        for block, embed in self._layers(timestep, x.dtype):
            x = self._run_layer(block, x, embed, generator, time_chunk)
        modulation = self._last_modulation(timestep, x.dtype)
        if time_chunk is None:
            return self._finish(x, modulation)
        return self._finish_chunked(x, modulation, time_chunk)

    def compile_layers(self, backend: str = "inductor") -> None:
        """torch.compile every resnet block and upsampler, static shapes. The injected noise
        comes from a CPU generator, which Dynamo leaves to eager code (a graph break, not an
        error). The time-chunked decode runs a layer's `forward_window` per chunk instead of
        its forward, so that is compiled too, noise-free (the noise is drawn before the
        chunks): the chunks of a layer differ only in the edge repeats at the clip's ends and
        the last chunk's length, so each layer shape costs a few graphs."""
        for module in self.modules():
            if isinstance(module, (ResnetBlock3D, DepthToSpaceUpsample)):
                module.compile(dynamic=False, backend=backend)
                module.forward_window = torch.compile(module.forward_window, dynamic=False, backend=backend)

    @property
    def can_chunk_time(self) -> bool:
        """Whether `time_chunk` is allowed: per-frame norms only (group norm's statistics span
        every frame, so a chunk would normalize differently)."""
        return not any(isinstance(m, nn.GroupNorm) for m in self.modules())

    def _check_chunkable(self) -> None:
        if not self.can_chunk_time:
            raise SettingsError("time_chunk needs a pixel- or layer-norm decoder (every released "
                                "VAE); this one uses group norm, whose statistics span all frames")

    def _layers(self, timestep: Tensor | None, dtype: torch.dtype):
        """(resnet block or upsampler, its timestep embedding) in order. A mid block's
        resnet blocks come one by one, run from `forward`'s loop rather than the mid
        block's: that way nothing holds the mid block's input while they run, and a layer
        keeps only its own input and output alive."""
        for block in self.up_blocks:
            if isinstance(block, UNetMidBlock3D):
                embed = block.embed(timestep, dtype)
                yield from ((res_block, embed) for res_block in block.res_blocks)
            else:
                yield block, None

    def _run_layer(self, block: nn.Module, x: Tensor, embed: Tensor | None,
                   generator: torch.Generator | None, time_chunk: int | None) -> Tensor:
        if isinstance(block, ResnetBlock3D):
            if time_chunk is None:
                return block(x, self.causal, embed, generator)
            return block.forward_chunked(x, self.causal, embed, generator, time_chunk)
        if time_chunk is None:
            return block(x, self.causal)
        return block.forward_chunked(x, self.causal, time_chunk)

    def _last_modulation(self, timestep: Tensor | None, dtype: torch.dtype
                         ) -> tuple[Tensor, Tensor] | None:
        """(shift, scale) of the output stage, each (B, C, 1, 1, 1); None without timestep
        conditioning."""
        if not self.timestep_conditioning:
            return None
        embed = self.last_time_embedder(timestep, dtype).unflatten(1, (2, -1))
        return (self.last_scale_shift_table[None, :, :, None, None, None] + embed).unbind(dim=1)

    def _finish(self, x: Tensor, modulation: tuple[Tensor, Tensor] | None,
                pads: tuple[int, int] | None = None) -> Tensor:
        """norm -> last modulation -> SiLU -> conv_out -> unpatchify; `pads`: a chunk's
        edge repeats (None: the whole clip, through conv_out's own forward, which the
        time-split decode replaces)."""
        x = self.conv_norm_out(x)
        if modulation is not None:
            shift, scale = modulation
            x = x * (1 + scale) + shift
        x = F.silu(x)
        x = self.conv_out(x, self.causal) if pads is None else self.conv_out.forward_padded(x, pads)
        p = self.patch_size
        return rearrange(x, "b (c r q) f h w -> b c f (h q) (w r)", q=p, r=p)

    def _finish_chunked(self, x: Tensor, modulation: tuple[Tensor, Tensor] | None,
                        time_chunk: int) -> Tensor:
        frames, p = x.shape[2], self.patch_size
        if time_chunk >= frames:
            return self._finish(x, modulation)
        out = x.new_empty(x.shape[0], self.conv_out.conv.out_channels // p**2, frames,
                          x.shape[3] * p, x.shape[4] * p)  # the video: unpatchified, so contiguous
        for start, end in time_chunks(frames, time_chunk):
            lo, hi, pads = time_window(start, end, frames, self.conv_out.time_padding(self.causal))
            out[:, :, start:end] = self._finish(x[:, :, lo:hi], modulation, pads)
        return out


# ---------------------------------------------------------------------- the VAE


class PerChannelStatistics(nn.Module):
    """Dataset statistics of the latent means, under the official buffer names. Only
    `mean-of-means` and `std-of-means` are used; the official file also carries the
    other three, which load when present (diffusers folders lack them)."""

    OPTIONAL = ("mean-of-stds", "mean-of-stds_over_std-of-means", "channel")

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("std-of-means", torch.ones(channels))
        self.register_buffer("mean-of-means", torch.zeros(channels))
        self.register_buffer("mean-of-stds", torch.ones(channels))
        self.register_buffer("mean-of-stds_over_std-of-means", torch.ones(channels))
        self.register_buffer("channel", torch.arange(channels, dtype=torch.float32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # an absent unused statistic keeps its value instead of failing a strict load
        for name in self.OPTIONAL:
            state_dict.setdefault(prefix + name, self.get_buffer(name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _stat(self, name: str, like: Tensor) -> Tensor:
        return self.get_buffer(name).view(1, -1, 1, 1, 1).to(like)

    def normalize(self, z: Tensor) -> Tensor:
        return (z - self._stat("mean-of-means", z)) / self._stat("std-of-means", z)

    def denormalize(self, z: Tensor) -> Tensor:
        return z * self._stat("std-of-means", z) + self._stat("mean-of-means", z)


def _nearest_valid(value: int, step: int, offset: int) -> str:
    lower = offset + (value - offset) // step * step
    upper = lower + step
    return f"{lower} or {upper}" if lower >= max(offset, 1) else f"{upper}"


def _fresh_generator(generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator, or a newly seeded CPU one (never the global RNG)."""
    if generator is not None:
        return generator
    fresh = torch.Generator()
    fresh.seed()
    return fresh


class CausalVideoVAE(nn.Module):
    """`encode`: video in [-1, 1] -> normalized latent; `decode`: the reverse, with the
    denoising decode of timestep-conditioned decoders (0.9.1+)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.per_channel_statistics = PerChannelStatistics(cfg.latent_channels)
        if cfg.use_quant_conv:  # no released LTX-Video VAE has these
            self.quant_conv = nn.Conv3d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
            self.post_quant_conv = nn.Conv3d(cfg.latent_channels, cfg.latent_channels, 1)

    @property
    def spatial_compression(self) -> int:
        return self.cfg.spatial_compression

    @property
    def temporal_compression(self) -> int:
        return self.cfg.temporal_compression

    @property
    def latent_channels(self) -> int:
        return self.cfg.latent_channels

    def normalize(self, z: Tensor) -> Tensor:
        """Raw encoder mean -> the latent the transformer sees: (z - mean) / std."""
        return self.per_channel_statistics.normalize(z)

    def denormalize(self, z: Tensor) -> Tensor:
        return self.per_channel_statistics.denormalize(z)

    def encode(self, video: Tensor, generator: torch.Generator | None = None,
               sample: bool = False) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalized latent (B, 128, (F-1)/8 + 1, H/32, W/32):
        the posterior mean, or a draw from it with `sample=True`."""
        self._check_video(video)
        moments = self.encoder(video)
        if self.cfg.use_quant_conv:
            moments = self.quant_conv(moments)
        mean, logvar = self._split_moments(moments)
        if sample:
            # diffusers / Lightricks DiagonalGaussianDistribution: logvar clamped to [-30, 20]
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            mean = mean + std * spatial_noise(mean.shape, _fresh_generator(generator), mean)
        return self.normalize(mean)

    def _split_moments(self, moments: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cfg.latent_channels
        mean = moments[:, :c]
        if self.cfg.latent_log_var == "per_channel":
            return mean, moments[:, c:]
        if self.cfg.latent_log_var == "uniform":
            return mean, moments[:, c:].expand_as(mean)
        return mean, torch.full_like(mean, -30.0)  # "constant": a near-zero variance

    def decode(self, latent: Tensor, timestep: float | Tensor = 0.05,
               decode_noise_scale: float = 0.025, generator: torch.Generator | None = None,
               *, mix_noise_denormalized: bool = False, time_chunk: int | None = None) -> Tensor:
        """Normalized latent (B, 128, f, h, w) -> video (B, 3, 8(f-1) + 1, 32h, 32w).

        A timestep-conditioned decoder (0.9.1+) first takes the latent to
        `(1 - s) z + s noise` with s = decode_noise_scale, then denoises it at `timestep`
        while decoding. The mix is made on the normalized latent, as Lightricks'
        pipeline and ComfyUI do; diffusers' LTXPipeline mixes after denormalizing
        (`mix_noise_denormalized=True`). 0.9.0's decoder ignores both. All noise (the mix,
        then the decoder's injected noise in block order) comes from `generator`.

        time_chunk: compute each decoder layer that many frames at a time (see
        `Decoder.forward`): the same frames with a much lower activation peak (0.9.1 at
        768x512x121 in bf16: 1.66 GiB of tensors with 8, 3.57 GiB without,
        benchmarks/vae_decode_memory.py); None: each layer on the whole clip."""
        self._check_latent(latent)
        _check_unit_range("decode timestep", timestep)
        _check_unit_range("decode_noise_scale", decode_noise_scale)
        check_time_chunk(time_chunk)
        generator = _fresh_generator(generator)
        if not self.cfg.timestep_conditioning:
            return self._decode_raw(self.denormalize(latent), None, generator, time_chunk)
        noise = spatial_noise(latent.shape, generator, latent)
        if mix_noise_denormalized:
            z = _mix(self.denormalize(latent), noise, decode_noise_scale)
        else:
            z = self.denormalize(_mix(latent, noise, decode_noise_scale))
        # the timestep stays fp32, as in Lightricks' pipeline (diffusers casts it)
        timestep = torch.as_tensor(timestep, dtype=torch.float32, device=latent.device)
        return self._decode_raw(z, timestep.expand(latent.shape[0]), generator, time_chunk)

    def _decode_raw(self, z: Tensor, timestep: Tensor | None, generator: torch.Generator,
                    time_chunk: int | None = None) -> Tensor:
        if self.cfg.use_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z, timestep, generator, time_chunk=time_chunk)

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5:
            raise SettingsError(
                f"video must be 5-D (B, C, F, H, W); got shape {tuple(video.shape)}")
        _, channels, frames, height, width = video.shape
        if channels != self.cfg.in_channels:
            raise SettingsError(f"video has {channels} channels; the VAE takes "
                                f"{self.cfg.in_channels} (RGB)")
        t, s = self.temporal_compression, self.spatial_compression
        if frames < 1 or (frames - 1) % t:
            raise SettingsError(f"frame count {frames} is not {t}k+1; nearest valid: "
                                f"{_nearest_valid(frames, t, 1)}")
        for name, size in (("height", height), ("width", width)):
            if size < 1 or size % s:
                raise SettingsError(f"{name} {size} is not a multiple of {s}; nearest "
                                    f"valid: {_nearest_valid(size, s, 0)}")

    def _check_latent(self, latent: Tensor) -> None:
        if latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            raise SettingsError(
                f"latent of shape {tuple(latent.shape)} is not an LTX-Video latent; this "
                f"VAE takes (B, {self.latent_channels}, frames, height, width)")


def _mix(z: Tensor, noise: Tensor, scale: float) -> Tensor:
    return z * (1 - scale) + noise * scale


def _check_unit_range(name: str, value: float | Tensor) -> None:
    values = torch.as_tensor(value, dtype=torch.float64)
    if not bool(((values >= 0) & (values <= 1)).all()):
        raise SettingsError(f"{name} {value} is outside [0, 1]")

