"""Latent nodes: the empty video latent, the VAE encode of a first frame, and the
per-token conditioning latent that joins them (paper 2.4).

The `LATENT` they give has the layout and normalization of ComfyUI's own LTXV latents,
(batch, 128, frames, height/32, width/32), so latents pass between this pack and
ComfyUI's built-in LTXV nodes; a conditioning frame's timestep travels as `noise_mask`.
"""

from __future__ import annotations

from types import SimpleNamespace

import comfy.model_management

from ..ltx_core import pipeline as core_pipeline
from ..ltx_core.models.configs import FRAMES_PER_LATENT, LTXV_VAE_0_9_5, PIXELS_PER_LATENT
from ..ltx_core.sampling import conditioning as core_conditioning
from . import memory
from .convert import core_to_latent, latent_to_core
from .registry import CATEGORY, VAE_TYPE

MAX_SIZE = 8192
MAX_FRAMES = 1025
# The empty latent needs no VAE wired in, as ComfyUI's own does not: it takes the geometry
# every published VAE shares (`configs.VAE_SCALE`) and their 128 latent channels.
LATENT_GEOMETRY = SimpleNamespace(
    temporal_compression=FRAMES_PER_LATENT,
    spatial_compression=PIXELS_PER_LATENT,
    latent_channels=LTXV_VAE_0_9_5.latent_channels,
)


def size_widgets(default_width: int = 768, default_height: int = 512) -> dict:
    # steps of 32 and 8: the VAE's spatial and temporal compression (paper 2.1); the page
    # snaps what a user types to min + k * step, so it offers only valid sizes
    return {
        "width": ("INT", {"default": default_width, "min": 32, "max": MAX_SIZE, "step": 32, "tooltip": "Pixels; a multiple of 32."}),
        "height": ("INT", {"default": default_height, "min": 32, "max": MAX_SIZE, "step": 32, "tooltip": "Pixels; a multiple of 32."}),
    }  # fmt: skip


def check_size(width: int, height: int, frames: int = 1) -> None:
    """Raise the core's message naming the widget and its nearest valid values.

    Checked when the node runs, not in `VALIDATE_INPUTS`: ComfyUI skips its own min/max
    checks for every input that `VALIDATE_INPUTS` takes and attaches a failure to all of
    them, and a size wired from another node reaches `VALIDATE_INPUTS` as None."""
    core_conditioning.check_multiple("width", width, LATENT_GEOMETRY.spatial_compression)
    core_conditioning.check_multiple("height", height, LATENT_GEOMETRY.spatial_compression)
    core_conditioning.check_num_frames(frames, LATENT_GEOMETRY.temporal_compression, name="frames")


class LTXVCoreEmptyLatentVideo:
    CATEGORY = CATEGORY
    DESCRIPTION = "An empty (all-zero) LTX-Video latent for text-to-video, every token to be generated."
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("(batch, 128, (frames - 1) / 8 + 1, height / 32, width / 32)",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **size_widgets(),
            "frames": ("INT", {"default": 97, "min": 1, "max": MAX_FRAMES, "step": 8, "tooltip": "8k + 1 frames: 1, 9, 17, ..., 97, 105, ..."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}  # fmt: skip

    def generate(self, width, height, frames, batch_size):
        check_size(width, height, frames)
        return (core_to_latent(core_conditioning.empty_latent(batch_size, frames, height, width, LATENT_GEOMETRY)),)


class LTXVCoreVAEEncodeFirstFrame:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Encodes the first image of a batch as the first latent frame of a video. An image of "
        "another size or aspect is center-cropped and resized to width x height."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("One latent frame: (1, 128, 1, height / 32, width / 32).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": (VAE_TYPE,), "image": ("IMAGE",), **size_widgets()}}

    def encode(self, vae, image, width, height):
        check_size(width, height)  # before the VAE is moved to its device
        model = memory.core_model(vae)
        cells = (height // model.spatial_compression, width // model.spatial_compression)
        plan = memory.refuse_what_never_fits(vae, "encode", (1, model.cfg.latent_channels, 1, *cells), encode_frames=1)
        with memory.on_device(vae, plan) as device:
            latent = core_pipeline.encode_first_frame(model, image, width, height, device=device)
        return ({"samples": latent.to(comfy.model_management.intermediate_device())},)


class LTXVCoreConditionFirstFrame:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Puts an encoded first frame into a video latent. Its tokens get the timestep "
        "sigma * (1 - strength) while the rest are generated (per-token timesteps, paper 2.4)."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent with the frame in place and its noise_mask.",)
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The video latent, e.g. from LTX-Video Empty Latent."}),
            "first_frame": ("LATENT", {"tooltip": "From LTX-Video VAE Encode First Frame."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "1: the frame is kept as given (t_c = 0); 0: no conditioning."}),
        }}  # fmt: skip

    def condition(self, latent, first_frame, strength):
        conditioned = core_conditioning.condition_first_frame(
            latent_to_core(latent), first_frame["samples"], strength=strength
        )
        return (core_to_latent(conditioned),)
