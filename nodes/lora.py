"""LoRA and IC-LoRA control: a LoRA loader node (model in, model out, stackable) and the
node that adds an IC-LoRA's control video (depth, pose, edges) to a latent.

The loader never touches the weights: it returns a clone of the model patcher that lists
its LoRAs (`LORAS_OPTION`), so a graph that changes a strength re-runs only the sampler.
The sampler applies the stack to the transformer for its run and takes it off again
(`applied_loras`, the core's `lora.apply_loras` and its `remove`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import folder_paths

from ..ltx_core import lora as core_lora, pipeline as core_pipeline
from ..ltx_core.sampling.control import ControlVideo
from . import memory
from .convert import core_to_latent, latent_to_core
from .registry import CATEGORY, MODEL_TYPE, VAE_TYPE

LORA_FOLDER = "loras"
LORAS_OPTION = "ltxv_core_loras"  # model_options key: ((path, strength), ...) in the order stacked


def lora_names() -> list[str]:
    if LORA_FOLDER not in folder_paths.folder_names_and_paths:
        return []
    return sorted(f for f in folder_paths.get_filename_list(LORA_FOLDER) if f.lower().endswith(".safetensors"))


def loras_of(model) -> tuple[tuple[str, float], ...]:
    return tuple(model.model_options.get(LORAS_OPTION, ()))


@functools.lru_cache(maxsize=8)
def _read(path: str, modified: float) -> core_lora.LoRAFile:
    return core_lora.read_lora(path)  # `modified` keys the cache: a rewritten file is read again


@contextmanager
def applied_loras(model) -> Iterator[None]:
    """The model's LoRA stack applied to its transformer (on its device) for a run, then
    removed; the bases of merged layers wait on the offload device meanwhile."""
    stack = [(_read(path, os.path.getmtime(path)), strength) for path, strength in loras_of(model)]
    if not stack:
        yield
        return
    applied = core_lora.apply_loras(memory.core_model(model), stack, base_device=model.offload_device)
    try:
        yield
    finally:
        applied.remove()


class LTXVCoreLoraLoader:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Adds a LoRA (ComfyUI/Lightricks, diffusers or kohya layout; IC-LoRA control files too) to the "
        "LTX-Video transformer at a strength. Chain several. The base weights are not changed: the "
        "sampler applies the LoRAs for its run."
    )
    RETURN_TYPES = (MODEL_TYPE,)
    OUTPUT_TOOLTIPS = ("The transformer with this LoRA added to its stack.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE,),
            "lora_name": (lora_names(), {"tooltip": "A .safetensors LoRA in models/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip": "How much of the LoRA's change to apply; 0 leaves the model as it is."}),
        }}  # fmt: skip

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        if folder_paths.get_full_path(LORA_FOLDER, lora_name) is None:
            listed = ", ".join(lora_names()[:10]) or "none"
            return f"LoRA {lora_name!r} is not in models/loras; put the file there or choose one of: {listed}"
        return True

    def load(self, model, lora_name, strength):
        path = folder_paths.get_full_path(LORA_FOLDER, lora_name)
        core_lora.lora_header(path)  # a file that is no LoRA is refused here, not at sampling
        patched = model.clone()
        patched.model_options[LORAS_OPTION] = (*loras_of(model), (path, float(strength)))
        return (patched,)


class LTXVCoreAddControl:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "IC-LoRA control: gives a control video (depth, pose, edges) to the transformer as in-context "
        "tokens of the latent, on the grid its IC-LoRA asks for (the LoRA's reference_downscale_factor). "
        "Load the IC-LoRA with LTX-Video LoRA Loader and sample with LTX-Video Sampler (STG, Keyframes)."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent with the control video's tokens.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": "The transformer with its IC-LoRA: the control's grid follows the LoRA."}),
            "vae": (VAE_TYPE,),
            "latent": ("LATENT", {"tooltip": "The video latent, e.g. from LTX-Video Empty Latent."}),
            "control_video": ("IMAGE", {"tooltip": "The control clip, 8k + 1 frames (1, 9, 17, ...); center-cropped and resized."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "1: the control is kept as given."}),
            "downscale": ("INT", {"default": 0, "min": 0, "max": 8, "tooltip": "0: the IC-LoRA's own reference_downscale_factor (1 without one); else the control's grid is this many times coarser."}),
        }}  # fmt: skip

    def add(self, model, vae, latent, control_video, strength, downscale):
        conditioned = latent_to_core(latent)
        control = ControlVideo(control_video, strength=strength, downscale=downscale or lora_downscale(model))
        with memory.on_device(vae):
            result = core_pipeline.condition_on_control(memory.core_model(vae), conditioned, control)
        return (core_to_latent(result),)


def lora_downscale(model) -> int:
    """The reference downscale factor the model's LoRAs ask for (the largest; 1 with none)."""
    factors = [
        core_lora.reference_downscale_factor(core_lora.lora_header(path).metadata, path) for path, _ in loras_of(model)
    ]
    return max(factors, default=1)
