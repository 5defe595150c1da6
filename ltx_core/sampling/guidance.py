"""Guidance: classifier-free guidance (CFG) and spatiotemporal skip guidance (STG).

Both turn the transformer into the sampler's `velocity_fn(x, timesteps)` by running it on
a batch of copies of the latent: (uncond, cond) for CFG, plus a perturbed copy for STG,
whose self-attention in the chosen blocks is replaced through the transformer's
`prepare` / `blocks` / `finish` seam (`perturbed_forward`). The transformer itself knows
nothing of guidance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import SettingsError, check_number, is_int
from .euler import VelocityFn

# How a perturbed block's self-attention is replaced: Lightricks' `SkipLayerStrategy.
# AttentionValues` (the values pass through, an identity attention map) and `AttentionSkip`
# (the sub-layer's own input passes through: attention bypassed).
STG_MODES = ("attention_values", "attention_skip")


def check_stg(scale, blocks, mode: str, rescale) -> None:
    """STG settings: a scale >= 0, block indices (range checked against the model), a mode."""
    check_number("stg_scale", scale, 0.0, "a finite number >= 0 (0: no STG)")
    check_number("stg_rescale", rescale, 0.0, "a finite number >= 0 (0 or 1: no rescale)")
    if not isinstance(blocks, (tuple, list)) or not all(is_int(b) and b >= 0 for b in blocks):
        raise SettingsError(f"stg_blocks {blocks!r} must be block indices, whole numbers >= 0")
    if scale > 0 and not blocks:
        raise SettingsError(f"stg_scale {scale} needs stg_blocks, the blocks to perturb (e.g. (19,) for the 2B model)")
    if mode not in STG_MODES:
        raise SettingsError(f"stg_mode {mode!r} is not known; allowed: {', '.join(STG_MODES)}")


def check_stg_blocks(blocks: tuple[int, ...], layers: int) -> None:
    if any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < layers for b in blocks):
        raise SettingsError(f"stg_blocks {tuple(blocks)} name blocks this model lacks; allowed: 0 to {layers - 1}")


def perturbed_self_attention(skip: Tensor, mode: str):
    """A block's self-attention with the items where `skip` (B, 1, 1) is 0 perturbed as
    `mode` says, mixed in before `to_out` as Lightricks' AttnProcessor2_0 does."""

    def self_attention(attn, x: Tensor, rope, kernels) -> Tensor:
        q, k, v = attn.project(x)
        out = attn.attend(q, k, v, rope, None, kernels)
        kept = v if mode == "attention_values" else x
        return attn.to_out[0](out * skip + kept * (1.0 - skip))

    return self_attention


def perturbed_forward(model, blocks: tuple[int, ...], mode: str) -> Callable[..., Tensor]:
    """`forward(latent, timestep, text, text_mask, coords, perturbed)`: the model's forward,
    with the self-attention of `blocks` perturbed (`mode`) in the items where `perturbed`
    (B,) is true."""
    if mode not in STG_MODES:
        raise SettingsError(f"stg_mode {mode!r} is not known; allowed: {', '.join(STG_MODES)}")
    check_stg_blocks(blocks, len(model.transformer_blocks))

    def forward(latent: Tensor, timestep: Tensor, text: Tensor, text_mask: Tensor | None, coords: Tensor,
                perturbed: Tensor) -> Tensor:  # fmt: skip
        model.check_inputs(latent, timestep, text, text_mask, coords)
        if tuple(perturbed.shape) != (latent.shape[0],):
            raise SettingsError(f"perturbed has shape {tuple(perturbed.shape)}; allowed: ({latent.shape[0]},)")
        x, modulation, embedded_t, context, text_bias, rope = model.prepare(latent, timestep, text, text_mask, coords)
        skip = (~perturbed.bool()).to(x.dtype).view(-1, 1, 1)
        replaced = dict.fromkeys(blocks, perturbed_self_attention(skip, mode))
        return model.finish(model.blocks(x, modulation, rope, context, text_bias, replaced), embedded_t)

    return forward


def guided_velocity(
    model_fn: Callable[..., Tensor],
    text: Tensor,
    text_mask: Tensor,
    negative_text: Tensor | None,
    negative_mask: Tensor | None,
    guidance_scale: float,
    stg_scale: float = 0.0,
    stg_rescale: float = 0.7,
) -> VelocityFn:
    """Classifier-free guidance over `model_fn(x, timesteps, text, text_mask)`: one batched
    forward on (uncond, cond), v = v_u + scale * (v_c - v_u), as diffusers' LTX pipelines.
    Scale 1 is the conditional velocity alone, so the unconditional half is skipped.

    `stg_scale` > 0 adds Lightricks' spatiotemporal skip guidance: a third item in the
    same batch, the prompt again with `model_fn(..., perturbed)` told which items to
    perturb, and v += stg_scale * (v_c - v_perturbed); see `_stg`."""
    if guidance_scale != 1.0 and (negative_text is None or negative_mask is None):
        raise SettingsError(f"guidance scale {guidance_scale} needs negative text embeddings and mask")
    if stg_scale > 0:
        return _stg(model_fn, text, text_mask, negative_text, negative_mask, guidance_scale, stg_scale, stg_rescale)
    if guidance_scale == 1.0:
        return lambda x, timesteps: model_fn(x, timesteps, text, text_mask)
    both_text = torch.cat([negative_text, text])
    both_mask = torch.cat([negative_mask, text_mask])

    def velocity(x: Tensor, timesteps: Tensor) -> Tensor:
        both_x, both_timesteps = torch.cat([x, x]), torch.cat([timesteps, timesteps])
        v_uncond, v_cond = model_fn(both_x, both_timesteps, both_text, both_mask).chunk(2)
        return v_uncond + guidance_scale * (v_cond - v_uncond)

    return velocity


def _stg(model_fn, text, text_mask, negative_text, negative_mask, guidance_scale, stg_scale, rescale) -> VelocityFn:
    """Lightricks' `LTXVideoPipeline.__call__` guidance: batch (uncond, cond, perturbed),
    v = v_u + g (v_c - v_u) (v_c without CFG), v += s (v_c - v_p), then, unless the
    rescale is 1 (Lightricks skips it there), v *= r std(v_c) / std(v) + 1 - r, the
    standard deviations over each video's velocity."""
    with_cfg = guidance_scale != 1.0
    texts = [negative_text, text, text] if with_cfg else [text, text]
    masks = [negative_mask, text_mask, text_mask] if with_cfg else [text_mask, text_mask]
    all_text, all_mask = torch.cat(texts), torch.cat(masks)
    copies = len(texts)

    def velocity(x: Tensor, timesteps: Tensor) -> Tensor:
        batch = x.shape[0]
        perturbed = torch.arange(copies * batch, device=x.device) >= (copies - 1) * batch
        out = model_fn(torch.cat([x] * copies), torch.cat([timesteps] * copies), all_text, all_mask, perturbed)
        *rest, v_cond, v_perturbed = out.chunk(copies)
        v = rest[0] + guidance_scale * (v_cond - rest[0]) if with_cfg else v_cond
        v = v + stg_scale * (v_cond - v_perturbed)
        if rescale != 1.0:
            factor = v_cond.reshape(batch, -1).std(dim=1) / v.reshape(batch, -1).std(dim=1)
            v = v * (rescale * factor + (1 - rescale)).view(batch, 1, 1)
        return v

    return velocity
