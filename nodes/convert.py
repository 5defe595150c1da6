"""ComfyUI's types to the core's and back: layout only, no model or latent math.

`CONDITIONING` is ComfyUI's list of [embeddings (B, L, D), {"attention_mask": (B, L)}];
`LATENT` is {"samples": (B, 128, f, h, w), "noise_mask": (B, 1, f, h or 1, w or 1)}, the
same layout and normalization as ComfyUI's own LTXV latents, with a token's timestep
`sigma * noise_mask` (1 = generate, 1 - strength for a conditioning frame); `IMAGE` is
(frames, H, W, 3) in [0, 1], which is the core's frame layout.
"""

from __future__ import annotations

from dataclasses import replace

import comfy.model_management
import torch

from ..ltx_core import conditioning as core_conditioning
from ..ltx_core import text_encoder as core_text_encoder
from ..ltx_core.errors import SettingsError
from ..ltx_core.pipeline import SEED_MAX, seeded_generator  # noqa: F401 (the nodes' seeds are the core's)


PROMPT_IS_EMPTY = "ltxv_core_prompt_is_empty"  # our key in the conditioning's dict
# Our key in the LATENT dict: the core's `Keyframe`s (conditioning frames away from the
# latent grid, from LTX-Video Add Keyframe / Guide). Every node that reads a LATENT with
# `latent_to_core` and writes one with `core_to_latent` carries them on.
KEYFRAMES_KEY = "ltxv_core_keyframes"


def embeddings_to_conditioning(embeddings, prompt_is_empty: bool = False) -> list:
    device = comfy.model_management.intermediate_device()
    extras = {"attention_mask": embeddings.mask.to(device), PROMPT_IS_EMPTY: prompt_is_empty}
    return [[embeddings.embeds.to(device), extras]]


def conditioning_to_embeddings(conditioning: list, name: str, required: bool = False):
    """The first entry of a `CONDITIONING` list as the core's `TextEmbeddings`; a
    `required` one (the positive prompt) must come from a non-empty prompt."""
    if not conditioning:
        raise SettingsError(f"{name} conditioning is empty; connect an LTX-Video T5 Text Encode node")
    embeds, extras = conditioning[0][0], conditioning[0][1]
    if required and extras.get(PROMPT_IS_EMPTY):
        raise SettingsError(f"{name} prompt is empty; describe the video to generate (only the negative prompt may be empty)")
    mask = extras.get("attention_mask")
    if mask is None:  # a CONDITIONING of another encoder: every token counts
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
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
    return frames.float().cpu().contiguous()
