"""Rotary positions for video tokens (paper 2.2.1): latent grid -> pixels and seconds ->
fractions of a maximum -> exponentially spaced frequencies -> cos/sin.

The chain, for a latent of f x h x w tokens at `frame_rate`:

    coords = fractional_coords(pixel_coords(latent_coords(f, h, w, batch), causal_fix=...),
                               frame_rate)          # (B, 3, T): seconds, pixels, pixels
    cos, sin = rope_cos_sin(coords, dim, theta, max_pos)   # each (B, T, dim), fp32

The math and the layout are Lightricks' (`Transformer3DModel.precompute_freqs_cis`,
`latent_to_pixel_coords`), which diffusers' `LTXVideoRotaryPosEmbed` repeats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import SettingsError
from .configs import VAE_SCALE


def latent_coords(
    num_frames: int, height: int, width: int, batch_size: int, device: torch.device | str | None = None
) -> Tensor:
    """Integer (frame, row, column) of every token, in the token order `(f h w)`. (B, 3, T)"""
    grid = torch.meshgrid(
        torch.arange(num_frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    coords = torch.stack(grid).flatten(1)  # (3, f*h*w)
    return coords.repeat(batch_size, 1, 1)


def pixel_coords(latents: Tensor, scale: tuple[int, int, int] = VAE_SCALE, causal_fix: bool = False) -> Tensor:
    """Latent coordinates -> the first pixel frame, row and column each token covers. (B, 3, T)

    With `causal_fix` (the config's `causal_temporal_positioning`): the causal VAE's latent
    frame 0 holds pixel frame 0 alone, so latent frame k starts at max(8k - 7, 0).
    """
    pixels = latents * torch.tensor(scale, device=latents.device)[None, :, None]
    if causal_fix:
        frames = (pixels[:, 0] + 1 - scale[0]).clamp(min=0)
        pixels = torch.cat([frames[:, None], pixels[:, 1:]], dim=1)
    return pixels


def fractional_coords(pixels: Tensor, frame_rate: float) -> Tensor:
    """Pixel coordinates with time in seconds, fp32 (2.2.1: the frame rate enters RoPE). (B, 3, T)"""
    if not frame_rate > 0:
        raise SettingsError(f"frame_rate is {frame_rate!r}; allowed: a positive number of frames per second")
    coords = pixels.to(torch.float32)
    # Multiplying by 1 / frame_rate, not dividing, rounds as Lightricks' pipeline does.
    seconds = coords[:, 0] * (1.0 / frame_rate)
    return torch.cat([seconds[:, None], coords[:, 1:]], dim=1)


def rope_pair_cos_sin(
    coords: Tensor, dim: int, theta: float, max_pos: tuple[float, float, float]
) -> tuple[Tensor, Tensor]:
    """cos and sin of the angle of each channel pair (2i, 2i+1) of a `dim`-wide query or key,
    each (B, T, dim // 2) in fp32: `rope_cos_sin` before each angle is repeated for its
    pair, half the bytes for kernels that rotate pairs (`fused_qk_rope`). `dim` must be even.

    Each axis's position is a fraction of `max_pos`, mapped to [-1, 1]; the dim // 6
    frequencies per axis grow exponentially from pi/2 to theta * pi/2 (2.2.1, Fig. 8).
    Layout: frequency-major, axes interleaved (t, h, w, t, h, w, ...); the (dim % 6) / 2
    leading pairs get cos 1, sin 0 (no rotation).
    """
    if dim % 2:
        raise SettingsError(f"RoPE width {dim} is odd; allowed: an even width (channels rotate in pairs)")
    coords = coords.to(torch.float32)
    fractions = torch.stack([coords[:, axis] / max_pos[axis] for axis in range(3)], dim=-1)  # (B, T, 3)
    exponents = torch.linspace(
        math.log(1, theta), math.log(theta, theta), dim // 6, device=coords.device, dtype=torch.float32
    )
    frequencies = theta**exponents * math.pi / 2  # (dim // 6,)
    angles = frequencies * (fractions.unsqueeze(-1) * 2 - 1)  # (B, T, 3, dim // 6)
    angles = angles.transpose(-1, -2).flatten(2)  # (B, T, 3 * (dim // 6))
    cos, sin = angles.cos(), angles.sin()
    padding = (dim % 6) // 2
    if padding:
        unrotated = cos.new_zeros((*cos.shape[:-1], padding))
        cos = torch.cat([unrotated + 1, cos], dim=-1)
        sin = torch.cat([unrotated, sin], dim=-1)
    return cos, sin


def rope_cos_sin(coords: Tensor, dim: int, theta: float, max_pos: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    """cos and sin for rotating `dim`-wide queries and keys, each (B, T, dim) in fp32: the
    pair angles of `rope_pair_cos_sin`, each repeated for the two channels it rotates
    (Lightricks' layout, which `apply_rope` takes)."""
    cos, sin = rope_pair_cos_sin(coords, dim, theta, max_pos)
    return cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each channel pair (x0, x1) of x (B, T, dim) by its angle: x*cos + (-x1, x0)*sin."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin
