"""Conditioning on any frames and spatiotemporal skip guidance (STG): the "add keyframe /
guide" node and a sampler with STG.

An image (or an 8k + 1 frame clip) conditions the video from a frame index on: at frame 0
it replaces the first latent frames (as the first-frame node); elsewhere it travels in
the `LATENT` as keyframe tokens (`convert.KEYFRAMES_KEY`: the core's `Keyframe`s, with
their own coordinates and noise level), which either sampler gives to the transformer and
drops from its result (Lightricks' and diffusers' 0.9.5+ conditioning). Chain the node to
add several (first + last frame, a clip's continuation...).
"""

from __future__ import annotations

import torch

from ..ltx_core import pipeline as core_pipeline
from ..ltx_core.errors import SettingsError
from ..ltx_core.preflight import parse_blocks
from ..ltx_core.sampling.conditioning import ConditioningItem
from ..ltx_core.sampling.euler import STRENGTH_RULES
from ..ltx_core.sampling.guidance import STG_MODES, Guidance
from ..ltx_core.video import resize_center_crop
from . import memory
from .convert import core_to_latent, latent_to_core
from .registry import CATEGORY, GUIDANCE_TYPE, VAE_TYPE
from .sampling import LTXVCoreSampler, PassGuidance, run_sampler, scheduler_config

MAX_FRAMES = 1025


def start_frame(frame_index: int, num_frames: int, count: int) -> int:
    """A negative index counts from the end and places the item's last frame there
    (-1: the item ends on the video's last frame). Past the end the core refuses it."""
    if frame_index >= 0:
        return frame_index
    start = num_frames + frame_index - (count - 1)
    if start < 0:
        raise SettingsError(
            f"frame_index {frame_index} puts the {count} conditioning frame(s) before the first frame of the "
            f"{num_frames}-frame video; negative indices count from the end, down to {frame_index - start}"
        )
    return start


class LTXVCoreAddGuide:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Conditions a video latent on an image or an 8k + 1 frame clip from a frame index on: "
        "keyframes, the last frame, a clip to continue. Frames of another size are center-cropped "
        "and resized to the video's. Sample with LTX-Video Sampler (STG, Keyframes)."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent with the frames in place (frame 0) or as keyframe tokens.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE_TYPE,),
            "latent": ("LATENT", {"tooltip": "The video latent, e.g. from LTX-Video Empty Latent."}),
            "image": ("IMAGE", {"tooltip": "One image, or a clip of 8k + 1 frames (1, 9, 17, ...)."}),
            "frame_index": ("INT", {"default": 0, "min": -MAX_FRAMES, "max": MAX_FRAMES, "tooltip": "Pixel frame where the image (the clip's first frame) goes; negative counts from the end (-1: ends on the last frame). A clip away from 0 starts at a multiple of 8."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "1: kept as given (timestep 0); lower lets the model change it."}),
        }}  # fmt: skip

    def add(self, vae, latent, image, frame_index, strength):
        conditioned = latent_to_core(latent)
        _, _, frames, height, width = conditioned.samples.shape
        model = memory.core_model(vae)
        size = (width * model.spatial_compression, height * model.spatial_compression)
        num_frames = (frames - 1) * model.temporal_compression + 1
        fitted = torch.stack([resize_center_crop(frame, *size) for frame in image]) if len(image) else image
        item = ConditioningItem(fitted, start_frame(frame_index, num_frames, len(image)), strength)
        plan = memory.refuse_what_never_fits(vae, "encode", conditioned.samples.shape, encode_frames=len(image))
        with memory.on_device(vae, plan):
            result = core_pipeline.condition_on_items(model, conditioned, [item])
        return (core_to_latent(result),)


class LTXVCoreGuidedSampler(LTXVCoreSampler):
    DESCRIPTION = (
        "LTX-Video Sampler that also takes keyframe tokens (from LTX-Video Add Keyframe / Guide) and "
        "spatiotemporal skip guidance (STG, Lightricks' inference code): a third pass in the same batch "
        "with the self-attention of the chosen blocks perturbed. A guidance input (LTX-Video Release "
        "Schedule) replaces cfg and the STG settings with a release config's per-step schedule."
    )

    @classmethod
    def INPUT_TYPES(cls):
        inputs = super().INPUT_TYPES()
        inputs["required"] = {**inputs["required"],
            "stg_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip": "STG scale; 0 is plain CFG. Lightricks' 2B configs: 1.0."}),
            "stg_blocks": ("STRING", {"default": "19", "tooltip": "Comma-separated transformer blocks to perturb (Lightricks' 2B: 19; 13B: 42)."}),
            "stg_mode": (list(STG_MODES), {"default": STG_MODES[0], "tooltip": "attention_values: the block's self-attention returns its values; attention_skip: it is bypassed; residual: its own residual is dropped, which LTX-Video's attention lacks, so only the rescale acts (as in Lightricks' code); transformer_block: the whole block is skipped."}),
            "stg_rescale": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Pull the guided velocity's spread back towards the conditional one (Lightricks' rescaling_scale; 0 or 1: none)."}),
            "strength_rule": (list(STRENGTH_RULES), {"default": "held", "tooltip": "Tokens of strength below 1: held at 1 - strength until the schedule passes it (Lightricks, diffusers) or scaled (timestep sigma * (1 - strength), ComfyUI)."}),
        }  # fmt: skip
        inputs["optional"] = {**inputs["optional"],
            "guidance": (GUIDANCE_TYPE, {"tooltip": "A release config pass's guidance (LTX-Video Release Schedule): its CFG and STG per step replace cfg, stg_scale, stg_blocks, stg_mode and stg_rescale, and its stochastic setting replaces the stochastic switch."}),
        }  # fmt: skip
        return inputs

    def sample(
        self,
        model,
        positive,
        negative,
        latent,
        seed,
        steps,
        cfg,
        frame_rate,
        dynamic_shift,
        base_shift,
        max_shift,
        terminal,
        stg_scale,
        stg_blocks,
        stg_mode,
        stg_rescale,
        strength_rule,
        sigmas=None,
        guidance=None,
        stochastic=False,
    ):
        if guidance is None:  # cfg, the STG widgets and the stochastic switch
            guidance = PassGuidance(
                Guidance(cfg, stg_scale, parse_blocks(stg_blocks), stg_mode, stg_rescale), stochastic
            )
        schedule = scheduler_config(dynamic_shift, base_shift, max_shift, terminal)
        return (
            run_sampler(
                model,
                positive,
                negative,
                latent,
                seed,
                steps,
                guidance.guidance,
                frame_rate,
                schedule,
                sigmas,
                strength_rule,
                guidance.stochastic,
            ),
        )
