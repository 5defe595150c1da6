"""Denoising VAE decode: the decoder takes a timestep and removes the last bit of noise
(paper 2.1.3); its noise draw follows the seed.

Tone mapping (the 13B 0.9.8 distilled configs' `tone_map_compression_ratio`) sits here
because the official pipeline applies it as part of decoding: to the latent after the
decode noise is mixed in, just before the decoder. The VAE's decode mixes that noise
itself, so with tone mapping the noise is mixed first here and the decode mixes none, in
the order and with the draws of the core's multi-scale pipeline
(`multiscale.decode_second_pass`), so a seed gives the command line's frames.
"""

from __future__ import annotations

from ..ltx_core import pipeline as core_pipeline
from ..ltx_core.preflight import DEFAULT_TILE_OVERLAP
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
            "time_chunk": ("INT", {"default": core_pipeline.DEFAULT_DECODE_TIME_CHUNK, "min": 0, "max": 1024, "tooltip": "Compute each decoder layer this many frames at a time: the same frames, with a much lower memory peak for a little more decode time (smaller: less memory, more time). 0: whole layers (as a group-norm decoder always decodes)."}),
            "tone_map_compression": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Shrink the latent's large values smoothly before decoding, which tames over-bright, over-saturated spots (a release config's tone_map_compression_ratio: 0.6 in the 13B 0.9.8 distilled second pass). 0: off."}),
            "tile_rows": ("INT", {"default": 1, "min": 1, "max": 16, "tooltip": "Decode the frames in this many rows of overlapping spatial tiles, one tile at a time: decode memory by the tile, for large frames on small cards. 1 (with 1 column): whole frames."}),
            "tile_columns": ("INT", {"default": 1, "min": 1, "max": 16, "tooltip": "Columns of spatial tiles (see tile_rows)."}),
            "tile_overlap": ("INT", {"default": DEFAULT_TILE_OVERLAP, "min": 0, "max": 16, "tooltip": "Latent cells (32 pixels each) the tiles overlap and blend across."}),
        }}  # fmt: skip

    # ComfyUI hands a node only the values of the inputs it declares, so a saved workflow
    # that still holds an earlier version's input (chunk_frames) loads and runs without it.
    def decode(
        self,
        vae,
        latent,
        timestep,
        decode_noise_scale,
        seed,
        time_chunk=core_pipeline.DEFAULT_DECODE_TIME_CHUNK,
        tone_map_compression=0.0,
        tile_rows=1,
        tile_columns=1,
        tile_overlap=DEFAULT_TILE_OVERLAP,
    ):
        time_chunk = (time_chunk or None) if memory.core_model(vae).decoder.can_chunk_time else None
        samples = latent["samples"]
        plan = memory.refuse_what_never_fits(
            vae,
            "decode",
            samples.shape,
            decode_time_chunk=time_chunk,
            decode_tiles=(tile_rows, tile_columns),
            decode_tile_overlap=tile_overlap,
        )
        with memory.on_device(vae, plan) as device:
            frames = core_pipeline.decode_frames(
                memory.core_model(vae),
                samples,
                timestep=timestep,
                decode_noise_scale=decode_noise_scale,
                generator=seeded_generator(seed),
                device=device,
                time_chunk=time_chunk,
                tone_map_compression=tone_map_compression,
                tiles=(tile_rows, tile_columns),
                tile_overlap=tile_overlap,
            )
        return (frames_to_image(frames),)
