"""The multi-scale release pipelines (LTX-Video 0.9.7 / 0.9.8): the latent upsampler's
loader and node, and a release config's per-pass schedule.

The official pipeline samples a first pass at about 2/3 of the size, doubles the latent
with the spatial upsampler (AdaIN against the first pass), noises it to the second pass's
first sigma and samples the second pass from there, then decodes (tone-mapped, for the
13B distilled configs). In ComfyUI: Empty Latent -> Sampler (STG, Keyframes) with the
Release Schedule's first pass -> Latent Upsample -> the same sampler with its second pass
-> Denoising VAE Decode (tone_map_compression) -> Save MP4.

Across the upsample, the noise mask follows the tokens (a first frame held in the first
pass stays held, as its upsampled tokens); keyframe tokens are refused, since the
official pipeline encodes its conditioning frames again at each pass's size: add the
guides to the upsampled latent instead.
"""

from __future__ import annotations

import os

import torch

from ..ltx_core.checkpoint import upsampler as core_upsampler
from ..ltx_core.errors import SettingsError
from ..ltx_core.multiscale import pass_sigmas
from ..ltx_core.release_config import load_preset, release_config_names
from ..ltx_core.sampling import latent_ops as core_latent_ops
from ..ltx_core.sampling.conditioning import ConditionedLatent
from ..ltx_core.sampling.guidance import Guidance
from . import memory
from .convert import core_to_latent, latent_to_core
from .loaders import _files, _missing_message, _resolve, _subfolders_with
from .registry import CATEGORY, GUIDANCE_TYPE, MODEL_TYPE, UPSAMPLER_TYPE, VAE_TYPE
from .sampling import PassGuidance

# ComfyUI's own LatentUpscaleModelLoader lists this folder (registry.register_model_folders
# adds it to a ComfyUI that lacks it).
UPSAMPLER_FOLDERS = ("latent_upscale_models",)
PASSES = ("first", "second", "single")
DEFAULT_PRESET = "ltxv-13b-0.9.8-distilled"


def _is_upsampler_folder(path: str) -> bool:
    """A diffusers folder: a pipeline's with `latent_upsampler/`, or that component itself."""
    component = os.path.join(path, core_upsampler.DIFFUSERS_SUBFOLDER)
    return os.path.isfile(os.path.join(component, "config.json")) or os.path.isfile(os.path.join(path, "config.json"))


def upsampler_names() -> list[str]:
    folders = _subfolders_with(UPSAMPLER_FOLDERS, _is_upsampler_folder)
    return sorted(set(folders + _files(UPSAMPLER_FOLDERS, folders)))


class LTXVCoreUpsamplerLoader:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads an LTX-Video latent upsampler for the multi-scale pipelines: the official "
        "ltxv-spatial-upscaler-*.safetensors (or a temporal one) or a diffusers latent_upsampler folder."
    )
    RETURN_TYPES = (UPSAMPLER_TYPE,)
    RETURN_NAMES = ("upsampler",)
    OUTPUT_TOOLTIPS = ("The latent upsampler, for LTX-Video Latent Upsample.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "upsampler_name": (upsampler_names(), {"tooltip": "A file or diffusers folder in models/latent_upscale_models (where ComfyUI's own Load Latent Upscale Model looks)."}),
            "dtype": (list(memory.DTYPES), {"default": "default", "tooltip": "Weight precision. default: bfloat16 (as published) on a GPU, float32 on the CPU."}),
            "device": (list(memory.DEVICES), {"default": "default", "tooltip": "Where it upsamples; 'default' follows ComfyUI."}),
        }}  # fmt: skip

    @classmethod
    def VALIDATE_INPUTS(cls, upsampler_name):
        if _resolve(UPSAMPLER_FOLDERS, upsampler_name) is None:
            return _missing_message("latent upsampler", upsampler_name, UPSAMPLER_FOLDERS, upsampler_names())
        return True

    def load(self, upsampler_name, dtype, device):
        path = _resolve(UPSAMPLER_FOLDERS, upsampler_name)
        dtype = memory.weight_dtype(dtype, "diffusion", device)
        model = core_upsampler.load_latent_upsampler(path, dtype=dtype, device="cpu")
        return (memory.patcher(model, "diffusion", device),)


class LTXVCoreLatentUpsample:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Doubles a video latent with a latent upsampler, between the two passes of a multi-scale "
        "pipeline: AdaIN keeps the first pass's colours and contrast. Add guides (keyframes, the first "
        "frame) again after it, at the new size, as the official pipeline does."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = (
        "The latent at twice the height and width (twice the frames, less one, for a temporal upsampler), its noise_mask carried over.",
    )
    FUNCTION = "upsample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "upsampler": (UPSAMPLER_TYPE,),
            "vae": (VAE_TYPE, {"tooltip": "The VAE of the latent: the upsampler works on its un-normalized values."}),
            "latent": ("LATENT", {"tooltip": "The sampled first pass."}),
            "adain_factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Match each channel's mean and spread to the input's (AdaIN): 1 fully (the official multi-scale pipeline), 0 not at all."}),
            "tone_map_compression": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Shrink large values of the upsampled latent (diffusers' upsample pipeline); 0: off. The official configs tone-map at decode instead: see LTX-Video Denoising VAE Decode."}),
        }}  # fmt: skip

    def upsample(self, upsampler, vae, latent, adain_factor, tone_map_compression):
        conditioned = latent_to_core(latent)
        model = memory.core_model(upsampler)
        _check_upsamplable(conditioned, model.cfg.in_channels)
        with torch.no_grad(), memory.on_device(upsampler) as device:
            samples = core_latent_ops.upsample_latent(
                model,
                memory.core_model(vae),
                conditioned.samples.to(device),
                adain_factor=adain_factor,
                tone_map_compression=tone_map_compression,
            )
        mask = _upsampled_mask(conditioned.noise_mask, model.cfg.factors)
        return (core_to_latent(ConditionedLatent(samples, mask)),)


def _check_upsamplable(conditioned: ConditionedLatent, channels: int) -> None:
    found = conditioned.samples.shape[1]
    if found != channels:
        raise SettingsError(
            f"latent has {found} channels but the latent upsampler takes {channels}; connect an "
            "LTX-Video latent (a sampler's output)"
        )
    if conditioned.keyframes:
        raise SettingsError(
            f"latent carries {len(conditioned.keyframes)} keyframe(s) from LTX-Video Add Keyframe / "
            "Guide, which would stay at the old size; add the guides to the upsampled latent instead "
            "(the official multi-scale pipeline encodes its conditioning frames again for the second "
            "pass)"
        )


def _upsampled_mask(mask: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """The noise mask (B, 1, f, h, w) on the upsampled grid: each token's value goes to the
    tokens it became, 2 x 2 in space; in time (the causal layout) frame 0 stays one frame
    and frame k becomes frames 2k - 1 and 2k."""
    time, space, _ = factors
    mask = mask.repeat_interleave(space, dim=3).repeat_interleave(space, dim=4)
    if time > 1:
        mask = mask[:, :, (torch.arange(time * (mask.shape[2] - 1) + 1) + 1) // time]
    return mask


class LTXVCoreReleaseSchedule:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "One pass of Lightricks' published inference settings (the release configs): its sigmas and its "
        "guidance, for LTX-Video Sampler (STG, Keyframes). Multi-scale configs (0.9.7, 0.9.8) have a first "
        "pass at about 2/3 of the size and a second one after LTX-Video Latent Upsample; the others one "
        "pass. Set the decode node's timestep, noise and tone map to the config's as well."
    )
    RETURN_TYPES = ("SIGMAS", GUIDANCE_TYPE)
    RETURN_NAMES = ("sigmas", "guidance")
    OUTPUT_TOOLTIPS = (
        "The pass's sigmas: the published timesteps, or its steps on the latent's token count less the skipped "
        "ones. A second pass starts below 1, from the upsampled latent noised to its first sigma.",
        "The pass's CFG and STG per step, for the sampler's guidance input.",
    )
    FUNCTION = "schedule"

    @classmethod
    def INPUT_TYPES(cls):
        names = list(release_config_names())
        return {"required": {
            "preset": (names, {"default": DEFAULT_PRESET if DEFAULT_PRESET in names else names[0], "tooltip": "A release config of Lightricks' LTX-Video repository, by file name; use the one of the checkpoint you load."}),
            "pass_name": (list(PASSES), {"default": PASSES[0], "tooltip": "first or second pass of a multi-scale config (0.9.7, 0.9.8); single for the one pass of the others."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "The latent the pass samples (the upsampled one for a second pass): a pass given as a step count shifts its sigmas by the latent's token count. Passes with published timesteps do not need it."}),
            "model": (MODEL_TYPE, {"tooltip": "The checkpoint the pass samples with: a pass given as a step count takes the schedule of the checkpoint's metadata, as the configs ask (sampler: from_checkpoint). Without it, LTX-Video's published schedule."}),
        }}  # fmt: skip

    def schedule(self, preset, pass_name, latent=None, model=None):
        config = load_preset(preset)
        settings = _pass_of(config, preset, pass_name)
        if not settings.uses_timesteps and latent is None:
            raise SettingsError(
                f"the {pass_name} pass of {preset} takes {settings.num_inference_steps} steps "
                "shifted by the latent's token count; connect the latent it samples to this "
                "node's latent input"
            )
        tokens = 1 if latent is None else latent_to_core(latent).num_tokens  # published timesteps ignore it
        sigmas = pass_sigmas(settings, tokens, config.scheduler(memory.checkpoint_scheduler(model)))
        guidance = Guidance(**settings.guidance_settings(config.stg_mode))
        return (sigmas, PassGuidance(guidance, settings.stochastic_sampling))


def _pass_of(config, preset: str, pass_name: str):
    if pass_name not in PASSES:
        raise SettingsError(f"pass_name {pass_name!r} is not known; allowed: {', '.join(PASSES)}")
    if config.second_pass is None:
        if pass_name != "single":
            raise SettingsError(
                f"{preset} is a one-pass config; pass_name {pass_name!r} is not allowed; allowed: single"
            )
        return config.first_pass
    if pass_name == "single":
        raise SettingsError(
            f"{preset} is a multi-scale config of two passes; pass_name 'single' is not allowed; "
            "allowed: first (at about 2/3 of the size) or second (after LTX-Video Latent Upsample)"
        )
    return config.first_pass if pass_name == "first" else config.second_pass
