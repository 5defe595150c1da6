"""Peak memory and a rough running time of a generation, from the model configs alone.

    plan = estimate(Workload(transformer=cfg.transformer, vae=cfg.vae, width=768, height=512,
                             frames=121, device="cuda", dtype="bf16"))
    plan.peak_bytes, plan.peak_stage, plan.describe()
    check_fits(plan, available_memory("cuda:0"))       # SettingsError naming what fits

Nothing is allocated and torch is not imported: every stage's peak is counted from the
shapes the code makes, so a size far beyond the device is refused in milliseconds,
before any weight is read, and the nearest settings that fit are found by trying many.

Stages and what each keeps alive (the models the CLI holds on the device throughout, or
only the stage's own model as ComfyUI moves them):
- text: the T5 encoder on the prompts (small beside its weights);
- encode: the VAE encoder on a first frame, keyframes or a source clip;
- sampling: one DiT forward with the guidance passes batched, plus the sampler's latents;
- decode: the VAE decoder, layer by layer (whole or time-chunked);
- write: on the CPU, the frames as floats and as 8-bit pixels while the mp4 is encoded.

Modules: `workload` (what is planned, the plan), `stages` (the estimate, stage by stage),
`vae_activations` (the VAE's layers, counted), `parameters` (weights from the configs),
`fitting` (the nearest settings that fit), `headers` (weights from safetensors headers),
`device` (the memory a device has free).
"""

from __future__ import annotations

from .device import available_memory, device_capacity
from .fitting import Fit, check_fits, choose_offload, fewest_streamed_blocks, largest_size, most_frames, nearest_fits
from .headers import safetensors_shapes, text_encoder_weights
from .parameters import transformer_params, vae_params
from .stages import estimate, fp8_transformer_bytes, sampling_bytes, streamed_bytes, text_bytes, weight_bytes
from .vae_activations import decode_bytes, decoder_peak, encode_bytes
from .workload import (
    DEFAULT_DECODE_TIME_CHUNK,
    DTYPE_BYTES,
    GIB,
    T5_XXL,
    MemoryPlan,
    TextEncoderSize,
    WeightBytes,
    Workload,
    gib,
    time_class,
)

__all__ = [
    "DEFAULT_DECODE_TIME_CHUNK",
    "DTYPE_BYTES",
    "GIB",
    "T5_XXL",
    "Fit",
    "MemoryPlan",
    "TextEncoderSize",
    "WeightBytes",
    "Workload",
    "available_memory",
    "check_fits",
    "choose_offload",
    "fewest_streamed_blocks",
    "device_capacity",
    "decode_bytes",
    "decoder_peak",
    "encode_bytes",
    "estimate",
    "fp8_transformer_bytes",
    "gib",
    "largest_size",
    "most_frames",
    "nearest_fits",
    "safetensors_shapes",
    "sampling_bytes",
    "streamed_bytes",
    "text_bytes",
    "text_encoder_weights",
    "time_class",
    "transformer_params",
    "vae_params",
    "weight_bytes",
]
