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
config's block list, one module per entry. The layers they are made of are in
`vae_layers`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import SettingsError
from .configs import VAE_DECODER_STRIDES, VAE_ENCODER_STRIDES, VAEConfig
from .modulation import modulation_table
from .vae_layers import (
    CausalConv3d,
    DepthToSpaceUpsample,
    ResnetBlock3D,
    SpaceToDepthDownsample,
    TimestepEmbedder,
    UNetMidBlock3D,
    make_norm,
    spatial_noise,
)
from .vae_stream import FinishStage, ResnetStage, UpsampleStage, stream
from .vae_tiles import DEFAULT_TILE_OVERLAP, check_tiles, decode_in_tiles

# The decode time chunk the CLI and the decode node use unless told otherwise: depth-first,
# 16 frames a layer at a time makes less than whole layers, and than 32 at a time, as each
# layer keeps about a chunk (benchmarks/results/vae_decode_memory.json).
DEFAULT_DECODE_TIME_CHUNK = 16


def check_time_chunk(time_chunk, name: str = "time_chunk") -> None:
    """None (every decoder layer on the whole clip at once) or a whole number >= 1."""
    if time_chunk is not None and (not isinstance(time_chunk, int) or isinstance(time_chunk, bool) or time_chunk < 1):
        raise SettingsError(
            f"{name} {time_chunk!r} is not allowed; allowed: a whole number of "
            "frames >= 1 (None: each decoder layer on the whole clip at once)"
        )


# ---------------------------------------------------------------------- encoder, decoder


def _encoder_block(name: str, params: dict, channels: int, cfg: VAEConfig) -> tuple[nn.Module, int]:
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
        self.conv_in = CausalConv3d(
            cfg.in_channels * cfg.patch_size**2, channels, padding_mode=cfg.spatial_padding_mode
        )
        self.down_blocks = nn.ModuleList()
        for name, params in cfg.encoder_block_list:
            block, channels = _encoder_block(name, dict(params), channels, cfg)
            self.down_blocks.append(block)
        self.conv_norm_out = make_norm(cfg.norm_layer, channels)
        # mean channels, then the log-variance: one shared channel ("uniform",
        # "constant") or one per latent channel ("per_channel")
        extra = cfg.latent_channels if cfg.latent_log_var == "per_channel" else 1
        self.conv_out = CausalConv3d(channels, cfg.latent_channels + extra, padding_mode=cfg.spatial_padding_mode)

    def forward(self, video: Tensor) -> Tensor:
        """(B, C, F, H, W) -> moments (B, latent + extra, f, h, w); always causal."""
        p = self.patch_size
        x = rearrange(video, "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def _decoder_block(name: str, params: dict, channels: int, cfg: VAEConfig) -> tuple[nn.Module, int]:
    """One decoder entry (walked in reverse) -> (module, output channels)."""
    pad = cfg.spatial_padding_mode
    noise = params.get("inject_noise", False)
    if name == "res_x":
        return UNetMidBlock3D(
            channels, params["num_layers"], cfg.norm_layer, pad, noise, cfg.timestep_conditioning
        ), channels
    if name == "res_x_y":
        out = channels // params.get("multiplier", 2)
        return ResnetBlock3D(channels, out, cfg.norm_layer, pad, noise), out
    stride = VAE_DECODER_STRIDES[name]
    if name != "compress_all":
        return DepthToSpaceUpsample(channels, stride, pad), channels
    factor = params.get("multiplier", 1)
    return DepthToSpaceUpsample(channels, stride, pad, params.get("residual", False), factor), channels // factor


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
        self.conv_out = CausalConv3d(channels, cfg.out_channels * cfg.patch_size**2, padding_mode=pad)
        if cfg.timestep_conditioning:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.last_time_embedder = TimestepEmbedder(channels * 2)
            self.last_scale_shift_table = modulation_table(2, channels)

    def forward(
        self,
        z: Tensor,
        timestep: Tensor | None = None,
        generator: torch.Generator | None = None,
        time_chunk: int | None = None,
    ) -> Tensor:
        """Raw latent (B, C, f, h, w) and timestep (B,) sigmas -> (B, 3, F, H, W).

        time_chunk: run every resnet block, upsampler and the output stage this many
        frames (at that layer's frame rate) at a time, depth-first (`vae_stream`): each
        chunk reads the few neighbouring frames its time convs reach, so the frames are the
        same, with a chunk's window per layer alive instead of whole layers. None: each
        layer on the whole clip."""
        check_time_chunk(time_chunk)
        if self.timestep_conditioning:
            timestep = timestep * self.timestep_scale_multiplier
        if time_chunk is not None:
            self._check_chunkable()
            return self._streamed(z, timestep, generator, time_chunk)
        x = self.conv_in(z, self.causal)
        for block, embed in self._layers(timestep, x.dtype):
            x = block(x, self.causal, embed, generator) if isinstance(block, ResnetBlock3D) else block(x, self.causal)
        return self._finish(x, self._last_modulation(timestep, x.dtype))

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
            raise SettingsError(
                "time_chunk needs a pixel- or layer-norm decoder (every released "
                "VAE); this one uses group norm, whose statistics span all frames"
            )

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

    def _streamed(self, z: Tensor, timestep: Tensor | None, generator: torch.Generator, time_chunk: int) -> Tensor:
        """The layers after conv_in depth-first in time (`vae_stream`), into one video. The
        injected noise is drawn first, in the whole decode's order (each block's two draws,
        block after block), at each block's frame size. Nothing here holds conv_in's output
        or the video beyond the stream's own buffers, so one chunk as long as the clip
        keeps what the whole decode keeps."""
        stages, frames, size = [], z.shape[2], z.shape[3:]
        for block, embed in self._layers(timestep, z.dtype):
            if isinstance(block, ResnetBlock3D):
                like = z.new_empty(1, 1, 1, *size)
                draws = 2 if block.inject_noise else 0
                noises = tuple(block._draw_noise(like, generator) for _ in range(draws)) or (None, None)
                stages.append(ResnetStage(block, frames, self.causal, embed, noises))
            else:
                stages.append(UpsampleStage(block, frames, self.causal))
                size = (size[0] * block.stride[1], size[1] * block.stride[2])
            frames = stages[-1].span.frames_out
        modulation = self._last_modulation(timestep, z.dtype)
        finish = lambda window, pads: self._finish(window, modulation, pads)
        stages.append(FinishStage(finish, self.conv_out, frames, self.causal))
        out = []  # the video, made at the first chunk: one chunk as long as the clip is kept as it is

        def keep(start: int, video: Tensor) -> None:
            if not out:
                whole = start == 0 and video.shape[2] == frames
                out.append(video if whole else video.new_empty(*video.shape[:2], frames, *video.shape[3:]))
            if out[0] is not video:
                out[0][:, :, start : start + video.shape[2]] = video

        stream(stages, self.conv_in(z, self.causal), time_chunk, keep)
        return out[0]

    def _last_modulation(self, timestep: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        """(shift, scale) of the output stage, each (B, C, 1, 1, 1); None without timestep
        conditioning."""
        if not self.timestep_conditioning:
            return None
        embed = self.last_time_embedder(timestep, dtype).unflatten(1, (2, -1))
        return (self.last_scale_shift_table[None, :, :, None, None, None] + embed).unbind(dim=1)

    def _finish(
        self, x: Tensor, modulation: tuple[Tensor, Tensor] | None, pads: tuple[int, int] | None = None
    ) -> Tensor:
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
        # from a list, not torch.arange: built on the meta device (every load), arange runs
        # torch's Python reference, whose first call imports sympy (about a second)
        self.register_buffer("channel", torch.tensor(range(channels), dtype=torch.float32))

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

    def encode(self, video: Tensor, generator: torch.Generator | None = None, sample: bool = False) -> Tensor:
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

    def decode(
        self,
        latent: Tensor,
        timestep: float | Tensor = 0.05,
        decode_noise_scale: float = 0.025,
        generator: torch.Generator | None = None,
        *,
        mix_noise_denormalized: bool = False,
        time_chunk: int | None = None,
        tiles: tuple[int, int] | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
    ) -> Tensor:
        """Normalized latent (B, 128, f, h, w) -> video (B, 3, 8(f-1) + 1, 32h, 32w).

        A timestep-conditioned decoder (0.9.1+) first takes the latent to
        `(1 - s) z + s noise` with s = decode_noise_scale, then denoises it at `timestep`
        while decoding. The mix is made on the normalized latent, as Lightricks'
        pipeline and ComfyUI do; diffusers' LTXPipeline mixes after denormalizing
        (`mix_noise_denormalized=True`). 0.9.0's decoder ignores both. All noise (the mix,
        then the decoder's injected noise in block order) comes from `generator`.

        time_chunk: compute each decoder layer that many frames at a time (see
        `Decoder.forward`): the same frames with a much lower activation peak
        (benchmarks/vae_decode_memory.py); None: each layer on the whole clip.

        tiles: (rows, columns) of overlapping spatial tiles decoded one at a time and blended
        (`vae_tiles`), `tile_overlap` latent cells deep; None or (1, 1): the whole frame."""
        self._check_latent(latent)
        _check_unit_range("decode timestep", timestep)
        _check_unit_range("decode_noise_scale", decode_noise_scale)
        check_time_chunk(time_chunk)
        if tiles is not None:
            check_tiles(tuple(tiles), tile_overlap, *latent.shape[3:])
        generator = _fresh_generator(generator)
        if not self.cfg.timestep_conditioning:
            z, timestep = self.denormalize(latent), None
        else:
            if mix_noise_denormalized:
                z = _mix(self.denormalize(latent), spatial_noise(latent.shape, generator, latent), decode_noise_scale)
            else:
                z = self.denormalize(self.mix_decode_noise(latent, decode_noise_scale, generator))
            # the timestep stays fp32, as in Lightricks' pipeline (diffusers casts it)
            timestep = torch.as_tensor(timestep, dtype=torch.float32, device=latent.device).expand(latent.shape[0])
        if tiles is None or tuple(tiles) == (1, 1):
            return self._decode_raw(z, timestep, generator, time_chunk)
        decode = lambda tile: self._decode_raw(tile, timestep, generator, time_chunk)
        return decode_in_tiles(decode, z, tuple(tiles), tile_overlap, self.spatial_compression).to(z.dtype)

    def mix_decode_noise(self, latent: Tensor, decode_noise_scale: float, generator: torch.Generator | None) -> Tensor:
        """The normalized latent as the denoising decoder takes it, `(1 - s) z + s noise`
        (one draw from `generator`); a decoder without timestep conditioning mixes nothing.
        Callers that change the latent between the mix and the decode (tone mapping) mix
        here and decode at scale 0."""
        if not self.cfg.timestep_conditioning:
            return latent
        return _mix(latent, spatial_noise(latent.shape, _fresh_generator(generator), latent), decode_noise_scale)

    def _decode_raw(
        self, z: Tensor, timestep: Tensor | None, generator: torch.Generator, time_chunk: int | None = None
    ) -> Tensor:
        if self.cfg.use_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z, timestep, generator, time_chunk=time_chunk)

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5:
            raise SettingsError(f"video must be 5-D (B, C, F, H, W); got shape {tuple(video.shape)}")
        _, channels, frames, height, width = video.shape
        if channels != self.cfg.in_channels:
            raise SettingsError(f"video has {channels} channels; the VAE takes {self.cfg.in_channels} (RGB)")
        t, s = self.temporal_compression, self.spatial_compression
        if frames < 1 or (frames - 1) % t:
            raise SettingsError(f"frame count {frames} is not {t}k+1; nearest valid: {_nearest_valid(frames, t, 1)}")
        for name, size in (("height", height), ("width", width)):
            if size < 1 or size % s:
                raise SettingsError(
                    f"{name} {size} is not a multiple of {s}; nearest valid: {_nearest_valid(size, s, 0)}"
                )

    def _check_latent(self, latent: Tensor) -> None:
        if latent.ndim != 5 or latent.shape[1] != self.latent_channels:
            raise SettingsError(
                f"latent of shape {tuple(latent.shape)} is not an LTX-Video latent; this "
                f"VAE takes (B, {self.latent_channels}, frames, height, width)"
            )


def _mix(z: Tensor, noise: Tensor, scale: float) -> Tensor:
    return z * (1 - scale) + noise * scale


def _check_unit_range(name: str, value: float | Tensor) -> None:
    values = torch.as_tensor(value, dtype=torch.float64)
    if not bool(((values >= 0) & (values <= 1)).all()):
        raise SettingsError(f"{name} {value} is outside [0, 1]")
