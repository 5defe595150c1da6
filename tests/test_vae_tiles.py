"""The spatially tiled VAE decode (`models.vae_tiles`): the tile arithmetic, one tile is the
whole decode exactly, tiles stay close to it (the tiny decoder's receptive field passes the
overlap), and bad tilings are refused with what is allowed."""

from __future__ import annotations

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.models.vae_tiles import check_tiles, tile_spans
from ltx_core.pipeline import Request, decode_frames

# (cells, tiles, overlap) -> spans, as ComfyUI's and diffusers' tiled decodes cut them
SPANS = [
    (8, 1, 2, [(0, 8)]),
    (8, 2, 2, [(0, 5), (3, 8)]),
    (8, 2, 0, [(0, 4), (4, 8)]),
    (10, 3, 1, [(0, 4), (3, 7), (6, 10)]),
    (22, 4, 3, [(0, 7), (4, 11), (8, 15), (12, 22)]),
]


@pytest.mark.parametrize(("size", "tiles", "overlap", "spans"), SPANS)
def test_tile_spans(size, tiles, overlap, spans):
    assert tile_spans(size, tiles, overlap) == spans


def latent(seed: int = 2) -> torch.Tensor:
    return torch.randn(1, 128, 2, 4, 6, generator=torch.Generator().manual_seed(seed))


def test_one_tile_is_the_whole_decode_exactly(tiny_vae):
    whole = tiny_vae.decode(latent(), 0.05, 0.025, torch.Generator().manual_seed(1))
    tiled = tiny_vae.decode(latent(), 0.05, 0.025, torch.Generator().manual_seed(1), tiles=(1, 1))
    assert torch.equal(whole, tiled)


def test_tiles_stay_close_to_the_whole_decode_and_blend_without_seams(tiny_vae):
    """Tiles see only their own cells: where the decoder looks further than the overlap
    (the random tiny decoder on a 4 x 6 latent does) the frames differ from the whole
    decode. Measured here: 2 x 3 tiles overlapping 2 cells differ by 0.048 on average (of
    a range of 1), and the rows along the tiles' seam by no more than 1.5 times that."""
    whole = decode_frames(tiny_vae, latent(), generator=torch.Generator().manual_seed(1))
    tiled = decode_frames(tiny_vae, latent(), generator=torch.Generator().manual_seed(1), tiles=(2, 3))
    difference = (tiled - whole).abs()
    assert tiled.shape == whole.shape == (1, 9, 128, 192, 3)
    assert difference.mean() <= 0.06
    seam = difference[:, :, 60:68].mean()  # the rows around the first row of tiles' lower edge
    assert seam <= 1.5 * difference.mean()


@pytest.mark.parametrize(
    ("tiles", "overlap", "message"),
    [
        ((0, 2), 2, r"decode tiles \(0, 2\) must be two whole numbers >= 1"),
        ((2, 2), -1, "decode tile overlap -1 must be a whole number of latent cells >= 0"),
        (
            (4, 1),
            2,
            r"4 tile rows over 4 latent cells with an overlap of 2 leave tiles of 2 cells.*at most 2 tile rows",
        ),
    ],
)
def test_bad_tilings_are_refused_with_what_is_allowed(tiles, overlap, message):
    with pytest.raises(SettingsError, match=message):
        check_tiles(tiles, overlap, 4, 6)


def test_a_request_refuses_a_tiling_its_size_cannot_take():
    with pytest.raises(SettingsError, match="tile columns over 2 latent cells"):
        Request(prompt="a fox", width=64, height=64, num_frames=9, decode_tiles=(1, 3))
