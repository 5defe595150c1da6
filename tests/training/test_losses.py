"""The VAE's training losses (`ltx_core.training.losses`)."""

from __future__ import annotations

import math

import torch

from ltx_core.training import losses

ATOL = 1e-6


def test_the_3d_haar_transform_keeps_energy_and_splits_into_eight_bands():
    video = torch.randn(2, 3, 8, 16, 16)
    bands = losses.haar_dwt_3d(video)
    assert bands.shape == (2, 8, 3, 4, 8, 8)
    assert math.isclose(float((bands**2).sum()), float((video**2).sum()), rel_tol=1e-5)
    assert float(losses.dwt_l1_loss(video, video)) < ATOL


def test_the_discriminator_sees_both_videos_and_its_order_matters():
    """Reconstruction GAN (2.1.2): swapping original and reconstruction changes the verdict."""
    torch.manual_seed(0)
    disc = losses.PairDiscriminator(width=8)
    a, b = torch.randn(1, 3, 5, 16, 16), torch.randn(1, 3, 5, 16, 16)
    assert not torch.allclose(disc(a, b), disc(b, a))
    assert disc(a, b).shape[:2] == (1, 1)


def test_uniform_kl_is_zero_for_the_standard_normal():
    assert float(losses.uniform_kl(torch.zeros(4), torch.zeros(4))) < ATOL
