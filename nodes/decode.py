"""Denoising VAE decode: the decoder takes a timestep and removes the last bit of noise
(paper 2.1.3); its noise draw follows the seed."""

from __future__ import annotations

from ..ltx_core import pipeline as core_pipeline
from . import memory
from .convert import SEED_MAX, frames_to_image, seeded_generator
from .registry import CATEGORY, VAE_TYPE


class LTXVCoreDenoisingDecode:
    CATEGORY = CATEGORY
    DESCRIPTION = "VAE decode that also removes the last bit of noise: LATENT to IMAGE frames."
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The frames of every video of the batch, one after another.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE_TYPE,),
            "latent": ("LATENT",),
            "timestep": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Noise level the decoder removes (only VAEs with timestep conditioning use it)."}),
            "decode_noise_scale": ("FLOAT", {"default": 0.025, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Fresh noise mixed into the latent before decoding."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip": "Seed of the decode noise."}),
        }, "optional": {
            "chunk_frames": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "Decode this many latent frames (8 video frames each) at a time: the same frames, with memory that does not grow with the clip's length. 0: the whole clip at once."}),
            "time_chunk": ("INT", {"default": core_pipeline.DEFAULT_DECODE_TIME_CHUNK, "min": 0, "max": 1024, "tooltip": "Compute each decoder layer this many frames at a time: the same frames, with a much lower memory peak (32 on an H100: about half the decode memory at 768x512x121 for 4% more decode time). 0: whole layers (as a group-norm decoder always decodes)."}),
        }}  # fmt: skip

    def decode(self, vae, latent, timestep, decode_noise_scale, seed, chunk_frames=0,
               time_chunk=core_pipeline.DEFAULT_DECODE_TIME_CHUNK):
        with memory.on_device(vae) as device:
            frames = core_pipeline.decode_frames(
                memory.core_model(vae), latent["samples"], timestep=timestep, decode_noise_scale=decode_noise_scale,
                generator=seeded_generator(seed), device=device, chunk_frames=chunk_frames or None,
                time_chunk=(time_chunk or None) if memory.core_model(vae).decoder.can_chunk_time else None,
            )  # fmt: skip
        return (frames_to_image(frames),)
