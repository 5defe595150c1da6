"""RoPE coordinates and frequencies (paper 2.2.1) on small grids; parity with diffusers is
in tests/parity/test_transformer_parity.py."""

import math

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.models.rope import apply_rope, fractional_coords, latent_coords, pixel_coords, rope_cos_sin

MAX_POS = (20, 2048, 2048)
THETA = 10000.0


def test_latent_coords_follow_the_f_h_w_token_order():
    """Token i of `b c f h w -> b (f h w) c` must get its own (frame, row, column), or RoPE
    places every token at another token's position."""
    f, h, w = 2, 3, 4
    coords = latent_coords(f, h, w, batch_size=2)
    assert coords.shape == (2, 3, f * h * w)
    for i in range(f * h * w):
        assert coords[1, :, i].tolist() == [i // (h * w), (i // w) % h, i % w]


def test_pixel_coords_scale_time_by_8_and_space_by_32():
    coords = pixel_coords(latent_coords(4, 2, 1, 1), causal_fix=False)
    assert coords[0, 0].unique().tolist() == [0, 8, 16, 24]
    assert coords[0, 1].unique().tolist() == [0, 32]


def test_causal_fix_starts_latent_frame_k_at_pixel_frame_8k_minus_7():
    """The causal VAE's first latent frame holds one pixel frame, so frames 0..3 start at
    pixel frames 0, 1, 9, 17; space is untouched."""
    plain = pixel_coords(latent_coords(4, 2, 1, 1), causal_fix=False)
    causal = pixel_coords(latent_coords(4, 2, 1, 1), causal_fix=True)
    assert causal[0, 0].unique().tolist() == [0, 1, 9, 17]
    assert torch.equal(causal[:, 1:], plain[:, 1:])


@pytest.mark.parametrize("frame_rate, pixel_frame, seconds", [(25, 25, 1.0), (24, 9, 0.375), (30, 17, 17 / 30)])
def test_fractional_coords_turn_pixel_frames_into_seconds(frame_rate, pixel_frame, seconds):
    pixels = torch.tensor([[[pixel_frame], [64], [96]]])
    coords = fractional_coords(pixels, frame_rate)
    assert coords.dtype == torch.float32
    assert coords[0, 0, 0].item() == pytest.approx(seconds, rel=1e-6)
    assert coords[0, 1:, 0].tolist() == [64.0, 96.0]


@pytest.mark.parametrize("frame_rate", [0, -24.0])
def test_a_frame_rate_that_is_not_positive_is_refused(frame_rate):
    with pytest.raises(SettingsError, match="frame_rate is .*allowed: a positive number"):
        fractional_coords(torch.zeros(1, 3, 1), frame_rate)


@pytest.mark.parametrize("dim, padding", [(16, 4), (20, 2), (24, 0)])
def test_cos_sin_pad_the_dims_left_over_by_six_with_no_rotation(dim, padding):
    coords = torch.rand(2, 3, 5) * torch.tensor(MAX_POS)[None, :, None]
    cos, sin = rope_cos_sin(coords, dim, THETA, MAX_POS)
    assert cos.shape == sin.shape == (2, 5, dim)
    assert cos.dtype == sin.dtype == torch.float32
    assert torch.all(cos[..., :padding] == 1) and torch.all(sin[..., :padding] == 0)
    torch.testing.assert_close(cos**2 + sin**2, torch.ones_like(cos))


def test_frequencies_grow_exponentially_from_half_pi_to_theta_half_pi():
    """Frequency j of n is theta ** (j / (n - 1)) * pi/2 (exponential spacing, Fig. 8). At
    fraction 0.75 the angle is half the frequency; theta = 3 keeps every angle below pi."""
    dim, theta = 24, 3.0
    coords = torch.tensor(MAX_POS, dtype=torch.float32)[None, :, None] * 0.75
    cos, sin = rope_cos_sin(coords, dim, theta, MAX_POS)
    time_channels = [2 * 3 * j for j in range(dim // 6)]  # first channel of each time pair
    angles = torch.atan2(sin[0, 0, time_channels], cos[0, 0, time_channels])
    expected = torch.tensor([0.5 * math.pi / 2 * theta ** (j / 3) for j in range(4)])
    torch.testing.assert_close(angles, expected)


def test_the_middle_of_each_range_is_the_unrotated_position():
    """Fractions map to [-1, 1], so half of max_pos is angle 0 on every frequency."""
    middle = torch.tensor(MAX_POS, dtype=torch.float32)[None, :, None] / 2
    cos, sin = rope_cos_sin(middle, 16, THETA, MAX_POS)
    torch.testing.assert_close(cos, torch.ones_like(cos))
    torch.testing.assert_close(sin, torch.zeros_like(sin), atol=1e-6, rtol=0)


def test_axes_interleave_within_each_frequency():
    """Channel pad + 2 * (3 * j + axis) (and +1) belongs to frequency j of `axis` (t, h, w),
    the official layout: moving only the time coordinate changes only time's channels."""
    dim, padding = 16, 4
    base = torch.tensor([[[1.3], [100.0], [200.0]]])
    moved = base.clone()
    moved[0, 0, 0] = 3.7
    cos, sin = rope_cos_sin(base, dim, THETA, MAX_POS)
    cos_moved, sin_moved = rope_cos_sin(moved, dim, THETA, MAX_POS)
    changed = ((cos != cos_moved) | (sin != sin_moved))[0, 0]
    time_channels = [padding + 2 * (3 * j) + r for j in range((dim - padding) // 6) for r in (0, 1)]
    assert changed.nonzero().flatten().tolist() == time_channels


def test_rotated_query_key_products_depend_only_on_the_offset():
    """Shifting both positions by the same amount leaves q . k unchanged: RoPE encodes the
    relative position, which is what it is for."""
    torch.manual_seed(0)
    dim = 24
    q, k = torch.randn(1, 1, dim), torch.randn(1, 1, dim)

    def product(q_pos, k_pos):
        q_rot = apply_rope(q, *rope_cos_sin(torch.tensor([[[q_pos], [64.0], [64.0]]]), dim, THETA, MAX_POS))
        k_rot = apply_rope(k, *rope_cos_sin(torch.tensor([[[k_pos], [64.0], [64.0]]]), dim, THETA, MAX_POS))
        return (q_rot * k_rot).sum().item()

    assert product(1.0, 0.5) == pytest.approx(product(3.0, 2.5), abs=1e-4)
    assert product(1.0, 0.5) != pytest.approx(product(1.0, 2.5), abs=1e-4)


def test_apply_rope_turns_each_channel_pair_by_its_angle():
    x = torch.tensor([[[1.0, 0.0, 0.0, 2.0]]])
    cos = torch.tensor([[[0.0, 0.0, -1.0, -1.0]]])  # pair 0 by pi/2, pair 1 by pi
    sin = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    assert apply_rope(x, cos, sin).tolist() == [[[0.0, 1.0, 0.0, -2.0]]]
