"""The VAE decode in spatial tiles: the latent cut into a grid of overlapping tiles, each
decoded alone, blended with linear ramps across the overlaps (ComfyUI's tiled decode and
diffusers' `LTXI2VLongMultiPromptPipeline.vae_decode_tiled` tile and blend the same way).
A decode's memory then follows the tile's size, not the frame's, so a 1216x704 or 4K decode
fits a small card; with one tile it is the whole decode exactly. Tiles see only their own
latent cells, so where a tile is smaller than the decoder's receptive field the frames
differ slightly from the whole decode inside the overlaps (measured in the tests).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# torch-free (the CLI's flags and the memory plan use them too)
from ..preflight import DEFAULT_TILE_OVERLAP as DEFAULT_TILE_OVERLAP, check_tiles as check_tiles, tile_spans


def _ramps(length: int, overlap: int, first: bool, last: bool, like: Tensor) -> Tensor:
    """A tile's weights along one side: rising over its leading overlap (unless it is the
    first tile), falling over its trailing one (unless it is the last)."""
    weights = torch.ones(length, dtype=torch.float32, device=like.device)
    if overlap > 0:
        if not first:
            weights[:overlap] *= torch.linspace(0, 1, overlap, dtype=torch.float32, device=like.device)
        if not last:
            weights[-overlap:] *= torch.linspace(1, 0, overlap, dtype=torch.float32, device=like.device)
    return weights


def decode_in_tiles(
    decode: Callable[[Tensor], Tensor], z: Tensor, tiles: tuple[int, int], overlap: int, scale: int
) -> Tensor:
    """`decode` (latent cells -> pixels, `scale` pixels a cell) of each tile of `z` (B, C, f,
    h, w), blended in fp32: the sum of each tile's pixels times its ramps over the sum of the
    ramps (the frames and channels come from the decoder)."""
    rows, columns = tile_spans(z.shape[3], tiles[0], overlap), tile_spans(z.shape[4], tiles[1], overlap)
    output = weights = None
    for row, (top, bottom) in enumerate(rows):
        for column, (left, right) in enumerate(columns):
            pixels = decode(z[:, :, :, top:bottom, left:right]).float()
            if output is None:
                batch, channels, frames = pixels.shape[:3]
                output = pixels.new_zeros(batch, channels, frames, z.shape[3] * scale, z.shape[4] * scale)
                weights = pixels.new_zeros(1, 1, 1, z.shape[3] * scale, z.shape[4] * scale)
            down = _ramps(pixels.shape[3], overlap * scale, row == 0, row == len(rows) - 1, pixels)
            across = _ramps(pixels.shape[4], overlap * scale, column == 0, column == len(columns) - 1, pixels)
            ramp = down[:, None] * across[None, :]
            window = (..., slice(top * scale, bottom * scale), slice(left * scale, right * scale))
            output[window] += pixels * ramp
            weights[window] += ramp
            del pixels  # before the next tile decodes: one tile's pixels alive at a time
    return output.div_(weights.add_(1e-8))  # in place: no second video
