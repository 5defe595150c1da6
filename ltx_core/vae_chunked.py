"""Decode a long latent in windows along time, so decode memory depends on the window,
not on the clip's length, with the same frames as one whole decode.

Why it is exact: every decoder convolution is 3 frames wide in time, so an output frame
depends only on latent frames within a fixed radius (`time_radius`): one frame per conv
at the latent rate, half a frame per conv after the first 2x temporal upsampling, and so
on. A window that reaches that radius past its chunk on both sides (or the clip's real
end, where the replicate padding is the same as in the whole decode) computes the chunk's
frames from exactly the inputs the whole decode uses. The decoder's injected noise is
one (H, W) draw per conv, shared by all frames, so each window replays the same draws
from a copy of the generator.

    frames = decode_in_chunks(vae, latent, timestep, noise_scale, generator, chunk_frames=4)

The latent's frame k covers pixel frames 8k - 7 .. 8k (frame 0 covers frame 0 alone), and
a window starting at latent frame s yields pixel frames from 8s on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .errors import SettingsError
from .models.vae import CausalConv3d, CausalVideoVAE, DepthToSpaceUpsample


def time_radius(decoder: nn.Module) -> int:
    """Latent frames on each side that one decoded frame depends on (rounded up)."""
    rate, radius, counted = 1, 0.0, set()
    for module in decoder.modules():
        if isinstance(module, DepthToSpaceUpsample):
            radius += (module.conv.time_kernel_size - 1) / rate  # its conv runs before the upsampling
            counted.add(id(module.conv))
            rate *= module.stride[0]
        elif isinstance(module, CausalConv3d) and id(module) not in counted:
            radius += (module.time_kernel_size - 1) / rate
        elif isinstance(module, nn.Conv3d) and module.kernel_size[0] > 1 and not _inside_causal(decoder, module):
            raise SettingsError("the decoder has a plain temporal convolution; chunked decode cannot bound it")
    # a non-causal conv of k frames sees (k - 1) / 2 on each side; causal ones see k - 1
    # behind and none ahead, so the sum of (k - 1) bounds both cases
    if not getattr(decoder, "causal", False):
        radius /= 2
    return math.ceil(radius - 1e-9)


def _inside_causal(decoder: nn.Module, conv: nn.Conv3d) -> bool:
    return any(isinstance(m, CausalConv3d) and m.conv is conv for m in decoder.modules())


def plan_windows(frames: int, chunk_frames: int, radius: int) -> list[tuple[int, int, int, int]]:
    """(window start, window end, chunk start, chunk end) in latent frames, chunks tiling
    [0, frames); each window is its chunk plus `radius` frames each side, within the clip."""
    if chunk_frames < 1:
        raise SettingsError(f"chunk_frames {chunk_frames} must be at least 1 latent frame")
    plan = []
    for start in range(0, frames, chunk_frames):
        end = min(start + chunk_frames, frames)
        plan.append((max(0, start - radius), min(frames, end + radius), start, end))
    return plan


def _pixel_range(start: int, end: int, time_scale: int) -> tuple[int, int]:
    """Pixel frames [first, last + 1) that latent frames [start, end) decode to."""
    first = 0 if start == 0 else time_scale * start - (time_scale - 1)
    return first, time_scale * (end - 1) + 1


class _ChunkedDecoder(nn.Module):
    """Stands in for `vae.decoder` during one decode: same call, windows inside."""

    def __init__(self, decoder: nn.Module, chunk_frames: int, time_scale: int):
        super().__init__()
        self.inner = decoder
        self.chunk_frames, self.time_scale = chunk_frames, time_scale
        self.radius = time_radius(decoder)

    def forward(self, z: Tensor, timestep: Tensor | None = None, generator: torch.Generator | None = None,
                time_chunk: int | None = None) -> Tensor:
        state = generator.get_state() if generator is not None else None
        pieces, replay = [], generator
        for w_start, w_end, start, end in plan_windows(z.shape[2], self.chunk_frames, self.radius):
            if generator is not None:  # every window draws the same noise the whole decode draws
                replay = torch.Generator(device=generator.device)
                replay.set_state(state)
            video = self.inner(z[:, :, w_start:w_end], timestep, replay, time_chunk=time_chunk)
            first, last = _pixel_range(start, end, self.time_scale)
            offset = self.time_scale * w_start
            pieces.append(video[:, :, first - offset:last - offset])
        if generator is not None:
            generator.set_state(replay.get_state())  # the caller's generator ends where a whole decode leaves it
        return torch.cat(pieces, dim=2)


def decode_in_chunks(vae: CausalVideoVAE, latent: Tensor, timestep: float | Tensor = 0.05,
                     decode_noise_scale: float = 0.025, generator: torch.Generator | None = None, *,
                     mix_noise_denormalized: bool = False, chunk_frames: int = 4,
                     time_chunk: int | None = None) -> Tensor:
    """`vae.decode` with the decoder run on windows of `chunk_frames` latent frames plus
    the decoder's time radius each side; same arguments, same frames (B, 3, F, H, W).
    Memory follows `chunk_frames + 2 * radius` latent frames; the radius frames are the
    compute paid on top (for 0.9.1, see `time_radius(vae.decoder)`). `time_chunk` chunks
    each layer within a window as well (`CausalVideoVAE.decode`)."""
    if generator is None:  # the whole decode would draw from a fresh generator; make it explicit
        generator = torch.Generator()
        generator.seed()
    original = vae.decoder
    vae.decoder = _ChunkedDecoder(original, chunk_frames, vae.temporal_compression)
    try:
        return vae.decode(latent, timestep, decode_noise_scale, generator,
                          mix_noise_denormalized=mix_noise_denormalized, time_chunk=time_chunk)
    finally:
        vae.decoder = original
