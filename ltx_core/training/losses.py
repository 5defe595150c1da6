"""VAE losses of paper 2.1: pixel MSE, 3D wavelet L1 (2.1.5), reconstruction GAN (2.1.2).

The perceptual (LPIPS) term of 2.1.6 is left out: its network needs pretrained VGG/AlexNet
weights, which cannot be had on this machine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _haar_split(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Low and high Haar bands along `dim`, stacked on a new dim 1 (the band axis)."""
    even, odd = x.unfold(dim, 2, 2).unbind(-1)
    return torch.stack(((even + odd) / math.sqrt(2), (even - odd) / math.sqrt(2)), dim=1)


def haar_dwt_3d(video: torch.Tensor) -> torch.Tensor:
    """One level of the separable 3D Haar transform: (B, C, F, H, W) -> (B, 8, C, F/2, H/2, W/2).

    An odd frame count (8k + 1, as the causal VAE takes) repeats the last frame once.
    """
    if video.shape[2] % 2:
        video = torch.cat([video, video[:, :, -1:]], dim=2)
    bands = video.unsqueeze(1)  # (B, 1, C, F, H, W)
    for dim in (3, 4, 5):  # frames, rows, columns
        split = _haar_split(bands, dim)  # (B, 2, bands, C, ...)
        bands = split.flatten(1, 2)
    return bands


def dwt_l1_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between the 8 sub-bands of the two videos' 3D DWT (paper 2.1.5)."""
    return F.l1_loss(haar_dwt_3d(reconstruction.float()), haar_dwt_3d(target.float()))


class PairDiscriminator(nn.Module):
    """Reconstruction-GAN critic (paper 2.1.2, Fig. 5b): sees two videos of one sample
    side by side (channels concatenated) and scores, per space-time patch, whether the
    first of the two is the original."""

    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        layers, channels = [], 2 * in_channels
        for out, stride in ((width, (1, 2, 2)), (2 * width, (2, 2, 2)), (4 * width, (2, 2, 2))):
            layers += [nn.Conv3d(channels, out, 3, stride=stride, padding=1), nn.GroupNorm(8, out), nn.LeakyReLU(0.2)]
            channels = out
        layers.append(nn.Conv3d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([first, second], dim=1))  # (B, 1, f, h, w) logits


def discriminator_loss(disc: PairDiscriminator, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """The critic learns to tell which of the pair is the original, in both orders."""
    reconstruction = reconstruction.detach()
    real_first = disc(original, reconstruction)
    fake_first = disc(reconstruction, original)
    return F.binary_cross_entropy_with_logits(
        real_first, torch.ones_like(real_first)
    ) + F.binary_cross_entropy_with_logits(fake_first, torch.zeros_like(fake_first))


def generator_gan_loss(disc: PairDiscriminator, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """The decoder is rewarded when the critic takes its reconstruction for the original."""
    fake_first = disc(reconstruction, original)
    real_first = disc(original, reconstruction)
    return F.binary_cross_entropy_with_logits(
        fake_first, torch.ones_like(fake_first)
    ) + F.binary_cross_entropy_with_logits(real_first, torch.zeros_like(real_first))


def uniform_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per element, with one log-variance shared by all
    channels (paper 2.1.4), so no channel is sacrificed to the KL term."""
    return 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).mean()
