"""What the multi-scale pipeline does to a latent between its passes: upsample it with a
latent upsampler, match its statistics to the first pass (AdaIN), and compress its large
values (tone mapping).

Latents here are normalized with the VAE's per-channel statistics, as everywhere in the
core. Reference: Lightricks' `LTXMultiScalePipeline`, `adain_filter_latent` and
`LTXVideoPipeline.tone_map_latents` (`ltx_video/pipelines/pipeline_ltx_video.py`), and
diffusers' `LTXLatentUpsamplePipeline`, which computes the same functions.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from ..errors import SettingsError, check_number
from ..models.latent_upsampler import LatentUpsampler
from ..models.vae import CausalVideoVAE, PerChannelStatistics
from .conditioning import ConditionedLatent


def upsample_latent(
    upsampler: LatentUpsampler,
    vae: CausalVideoVAE | PerChannelStatistics,
    latent: Tensor,
    *,
    adain_factor: float = 0.0,
    tone_map_compression: float = 0.0,
) -> Tensor:
    """Normalized latent (B, C, f, h, w) -> normalized upsampled latent, of
    `upsampler.cfg.upsampled_size(f, h, w)`, in `latent`'s dtype and on its device. `vae`
    is the VAE the latent belongs to (or its `per_channel_statistics`, all that is used).

    The upsampler was trained on raw VAE latents: un-normalize, upsample, normalize again
    (the official `_upsample_latents`, ComfyUI's LTXVLatentUpsampler). `adain_factor` and
    `tone_map_compression` apply AdaIN against the input and tone mapping in that raw space
    before normalizing, in the order of diffusers' LTXLatentUpsamplePipeline. The official
    multi-scale pipeline uses adain_factor 1.0 here and tone maps at decode instead
    (`tone_map` on the normalized latent).
    """
    _check_adain_factor(adain_factor)  # before the upsampler's work
    _check_compression(tone_map_compression)
    weight = upsampler.initial_conv.weight
    raw = vae.denormalize(latent)
    upsampled = upsampler(raw.to(device=weight.device, dtype=weight.dtype)).to(latent)
    if adain_factor:
        upsampled = adain_filter(upsampled, raw, adain_factor)
    if tone_map_compression:
        upsampled = tone_map(upsampled, tone_map_compression)
    return vae.normalize(upsampled)


def adain_filter(latent: Tensor, reference: Tensor, factor: float = 1.0) -> Tensor:
    """AdaIN: give each channel of each video in `latent` (B, C, ...) the mean and standard
    deviation of the same channel in `reference` (B, C, ..., any size), then blend:
    factor 0 returns `latent`, 1 the matched latent (outside [0, 1] extrapolates, as the
    official `torch.lerp` does).

    The official multi-scale pipeline matches the upsampled latent to the first pass this
    way (factor 1), so the second pass starts from the first pass's colours and contrast.
    The statistics are over all frames and pixels of a channel, with the
    unbiased (n - 1) standard deviation of the official `torch.std_mean`; so the result
    does not depend on whether both latents are normalized or raw (a per-channel affine
    map moves mean and deviation alike).
    """
    _check_adain_factor(factor)
    if latent.shape[:2] != reference.shape[:2]:
        raise SettingsError(
            f"AdaIN reference of batch and channels {tuple(reference.shape[:2])} does not "
            f"match the latent's {tuple(latent.shape[:2])}"
        )
    dims = tuple(range(2, latent.dim()))
    ref_std, ref_mean = torch.std_mean(reference.to(latent), dim=dims, keepdim=True)
    std, mean = torch.std_mean(latent, dim=dims, keepdim=True)
    matched = (latent - mean) / std * ref_std + ref_mean
    return torch.lerp(latent, matched, factor)


def tone_map(latent: Tensor, compression: float) -> Tensor:
    """Shrink large latent values smoothly: each value is scaled by
    1 - 0.8 s sigmoid(4 s (|x| - 1)) with s = 0.75 * compression, so values well above 1
    shrink towards 1 - 0.6 * compression of themselves, values near 0 by at most
    about 3% (s sigmoid(-4 s) is small), and compression 0 is the identity.

    The official pipeline applies it to the normalized latent just before decoding, after
    the decoder's noise is mixed in (the 13B 0.9.8 distilled configs ask 0.6 of their
    second pass); diffusers' upsample pipeline applies it to the raw upsampled latent
    (`upsample_latent(tone_map_compression=...)`). Same function, other inputs.
    """
    _check_compression(compression)
    s = 0.75 * compression
    return latent * (1.0 - 0.8 * s * torch.sigmoid(4.0 * s * (latent.abs() - 1.0)))


def _check_adain_factor(factor: float) -> None:
    _check_range("AdaIN factor", factor, -10.0, 10.0, "(0: off, 1: full; the official range)")


def _check_compression(compression: float) -> None:
    _check_range("tone-map compression", compression, 0.0, 1.0, "(0: off, 1: full)")


def _check_range(name: str, value: float, low: float, high: float, meaning: str) -> None:
    check_number(name, value, low, f"a number from {low:g} to {high:g} {meaning}")
    if value > high:
        raise SettingsError(f"{name} {value!r} is not allowed; allowed: a number from {low:g} to {high:g} {meaning}")


def latent_preview(latent: Tensor) -> Tensor:
    """A cheap false-colour look at a latent (no VAE): the middle frame of the first video,
    its 3 principal channel directions scaled to [0, 1], (h, w, 3)."""
    if isinstance(latent, ConditionedLatent):
        latent = latent.samples
    frame = latent[0, :, latent.shape[2] // 2].float()  # (C, h, w)
    pixels = rearrange(frame, "c h w -> (h w) c")
    pixels = pixels - pixels.mean(dim=0)
    _, _, directions = torch.linalg.svd(pixels, full_matrices=False)
    rgb = pixels @ directions[:3].T  # (h*w, <=3)
    rgb = rgb * torch.sign(rgb.sum(dim=0) + 1e-12)  # a fixed sign, so previews do not flicker
    rgb = torch.nn.functional.pad(rgb, (0, 3 - rgb.shape[1]))
    low, high = rgb.min(dim=0).values, rgb.max(dim=0).values
    rgb = (rgb - low) / (high - low).clamp(min=1e-6)
    return rgb.reshape(frame.shape[1], frame.shape[2], 3)
