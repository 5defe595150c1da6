"""ComfyUI's types to the core's and back: layout only, no model or latent math.

`CONDITIONING` is ComfyUI's list of [embeddings (B, L, D), {"attention_mask": (B, L), ...}]
in the form ComfyUI's own T5 text encoders give (see `COMFY_MASK_DTYPE`), which this pack's
samplers and ComfyUI's LTXV model both read; `LATENT` is {"samples": (B, 128, f, h, w),
"noise_mask": (B, 1, f, h or 1, w or 1)}, the same layout and normalization as ComfyUI's own
LTXV latents, with a token's timestep `sigma * noise_mask` (1 = generate, 1 - strength for a
conditioning frame); `IMAGE` is (frames, H, W, 3) in [0, 1], which is the core's frame layout.
"""

from __future__ import annotations

from dataclasses import replace

import comfy.model_management
import torch

from ..ltx_core.errors import SettingsError
from ..ltx_core.models import text_encoder as core_text_encoder
from ..ltx_core.pipeline import SEED_MAX, seeded_generator  # noqa: F401 (the nodes' seeds are the core's)
from ..ltx_core.sampling import conditioning as core_conditioning

PROMPT_IS_EMPTY = "ltxv_core_prompt_is_empty"  # our key in the conditioning's dict
# ComfyUI's text conditioning for LTX-Video: its CLIPTextEncode on an `ltxv` CLIPLoader
# (comfy/text_encoders/lt.py on sd1_clip.py) gives embeddings (1, L, 4096) float32 with
# {"pooled_output": None, "attention_mask": (1, L) torch.long}, the mask 1 on the prompt's
# tokens and its </s> and 0 on the <pad>s that fill it up to 128 tokens (a longer prompt is
# never cut, so L may be more). ComfyUI's LTXV model makes the mask the additive bias
# (mask - 1) * max-float on every cross-attention, so it never attends to the padding; nor
# does our transformer, given the same tokens as real (its bias, -10000, also leaves them
# zero weight). The mask must be an integer tensor: before its model runs, ComfyUI casts
# every conditioning tensor but int32/int64 ones to the model's float dtype, and its LTXV
# model takes a float mask for a bias already shaped for attention (a bool (B, L) mask fails
# there with a size mismatch). A conditioning without a mask (another encoder's), which
# ComfyUI's LTXV model refuses, has every token attended to by ours.
COMFY_MASK_DTYPE = torch.long
# Our key in the LATENT dict: the core's `Keyframe`s (conditioning frames away from the
# latent grid, from LTX-Video Add Keyframe / Guide). Every node that reads a LATENT with
# `latent_to_core` and writes one with `core_to_latent` carries them on.
KEYFRAMES_KEY = "ltxv_core_keyframes"


def embeddings_to_conditioning(embeddings, prompt_is_empty: bool = False) -> list:
    """The core's `TextEmbeddings` in ComfyUI's own form (see COMFY_MASK_DTYPE), so ComfyUI's
    samplers read them too, plus our flag for the samplers of this pack."""
    device = comfy.model_management.intermediate_device()
    extras = {
        "pooled_output": None,
        "attention_mask": embeddings.mask.to(device=device, dtype=COMFY_MASK_DTYPE),
        PROMPT_IS_EMPTY: prompt_is_empty,
    }
    return [[embeddings.embeds.to(device=device, dtype=torch.float32), extras]]


def conditioning_to_embeddings(conditioning: list, name: str, required: bool = False):
    """The first entry of a `CONDITIONING` list as the core's `TextEmbeddings`, its mask
    True on the tokens ComfyUI's LTXV model attends to; a `required` one (the positive
    prompt) must not come from an empty prompt of our T5 Encode."""
    if not conditioning:
        raise SettingsError(f"{name} conditioning is empty; connect an LTX-Video T5 Text Encode node")
    embeds, extras = conditioning[0][0], conditioning[0][1]
    if required and extras.get(PROMPT_IS_EMPTY):
        raise SettingsError(
            f"{name} prompt is empty; describe the video to generate (only the negative prompt may be empty)"
        )
    mask = _real_tokens(extras.get("attention_mask"), embeds, name)
    return core_text_encoder.TextEmbeddings(embeds=embeds, mask=mask)


def _real_tokens(mask, embeds: torch.Tensor, name: str) -> torch.Tensor:
    """(B, L) bool, True where ComfyUI's LTXV model attends (see COMFY_MASK_DTYPE): a 0/1 mask
    of ints (ComfyUI's) or bools (this pack's older graphs) as given, no mask as all tokens."""
    if mask is None:
        return torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
    if torch.is_floating_point(mask):
        raise SettingsError(
            f"{name} conditioning has a float attention_mask, which ComfyUI's LTX-Video model takes "
            "for an additive attention bias; give a 0/1 mask of integers, as ComfyUI's text encoders "
            "and this pack's do"
        )
    if mask.ndim != 2 or mask.shape[1] != embeds.shape[1]:
        raise SettingsError(
            f"{name} conditioning has embeddings of {embeds.shape[1]} tokens but an attention_mask of "
            f"shape {tuple(mask.shape)}; a node that joined conditionings (e.g. Conditioning Concat) "
            "left the mask behind"
        )
    return mask != 0


def text_pair(positive: list, negative: list):
    """The positive and negative `CONDITIONING` as `TextEmbeddings` of one length, as the
    core batches them. ComfyUI's own encoders give a prompt longer than 127 tokens all its
    tokens (and ours pad to their max_tokens), so the two may differ; ComfyUI's sampler then
    runs them in separate model calls. The shorter gets masked zero tokens, which take no
    attention, so each prompt's velocity is the same as alone."""
    texts = (
        conditioning_to_embeddings(positive, "positive", required=True),
        conditioning_to_embeddings(negative, "negative"),
    )
    length = max(text.embeds.shape[1] for text in texts)
    return tuple(_padded(text, length) for text in texts)


def _padded(text, length: int):
    missing = length - text.embeds.shape[1]
    if missing == 0:
        return text
    embeds, mask = text.embeds, text.mask
    embeds = torch.cat([embeds, embeds.new_zeros(embeds.shape[0], missing, embeds.shape[2])], dim=1)
    mask = torch.cat([mask, mask.new_zeros(mask.shape[0], missing)], dim=1)
    return core_text_encoder.TextEmbeddings(embeds=embeds, mask=mask)


def latent_to_core(latent: dict):
    """A ComfyUI `LATENT` as the core's `ConditionedLatent` (checked by the core), with
    the keyframes it carries. Without a `noise_mask` (ComfyUI's own EmptyLTXVLatentVideo
    gives none) every token is generated: ComfyUI's default mask of ones, (B, 1, f, 1, 1)."""
    samples = latent["samples"]
    noise_mask = latent.get("noise_mask")
    if noise_mask is None and samples.ndim == 5:
        noise_mask = torch.ones(samples.shape[0], 1, samples.shape[2], 1, 1, device=samples.device)
    keyframes = tuple(latent.get(KEYFRAMES_KEY, ()))
    return core_conditioning.ConditionedLatent(samples=samples, noise_mask=noise_mask, keyframes=keyframes)


def core_to_latent(conditioned) -> dict:
    """The core's `ConditionedLatent` as a `LATENT` on ComfyUI's intermediate device
    (where ComfyUI keeps tensors between nodes); keyframes, if any, under `KEYFRAMES_KEY`."""
    device = comfy.model_management.intermediate_device()
    latent = {"samples": conditioned.samples.to(device), "noise_mask": conditioned.noise_mask.to(device)}
    if conditioned.keyframes:
        latent[KEYFRAMES_KEY] = tuple(replace(k, samples=k.samples.to(device)) for k in conditioned.keyframes)
    return latent


def frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    """The core's frames, (F, H, W, 3) or (B, F, H, W, 3), as one ComfyUI `IMAGE` batch
    (videos of a batch follow each other)."""
    if frames.ndim == 5:
        frames = frames.flatten(0, 1)
    # laid out on the frames' device (a GPU permutes them at its memory speed) before the one copy out
    return frames.float().contiguous().cpu()
