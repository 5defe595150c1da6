"""The estimate, stage by stage: the weights each stage keeps on the device beside what
it makes (the text encoder's, the DiT's and the sampler's tensors counted here, the VAE's
in `vae_activations`), and a rough time from the operations of the DiT and the decoder.

The coefficients below count the tensors `ltx_core` creates (weights excluded): each is
the measured multiple of one tensor's size that a layer keeps alive at its peak, read
with `memory_probe.PeakLiveBytes` and checked against `torch.cuda.max_memory_allocated`
by `benchmarks/memory_planner.py` (results in benchmarks/results/memory_planner.json).
Code that changes what a layer keeps alive must re-run that benchmark.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .parameters import block_linear_params, block_params, transformer_params, vae_params
from .vae_activations import decode_bytes, encode_bytes, vae_flops
from .workload import TIMESTEP_FEATURES, MemoryPlan, Workload

# ---------------------------------------------------------------- calibrated multiples
# DiT forward: tensors of (passes x tokens x width) alive at the feed-forward of a block
# (the block input, the RoPE tables, the hidden layer and its activation, ...).
DIT_ACTIVATIONS = 14.0
# Per-token timesteps (a first frame or keyframes held): the modulation is (tokens x 6
# width) instead of one row, kept beside its sum with each block's table and the embedding.
PER_TOKEN_MODULATION = 13.0
PER_TOKEN_FEATURES = 0.875  # of the fp32 sinusoidal features of every token
# Text side of a forward: the projected caption and the cross-attention keys and values.
TEXT_CONTEXT = 2.85
# The sampler's fp32 latents (x, velocity, denoised, the clean latent, masks) per
# latent channel of every token: a fixed part and a part per guidance pass.
SAMPLER_FIXED, SAMPLER_PER_PASS = 4.3, 2.1
# Sequence parallel: q, k and v travel through all-to-all buffers of the rank's tokens.
ALL_TO_ALL_BUFFERS = 4.0
# FP8 linear layers quantize their input row by row through fp32 copies of it.
FP8_QUANTIZE = 2.0

# T5 on one prompt: tensors of (tokens x width), and fp32 attention logits of (heads x
# tokens x tokens).
T5_TOKEN_TENSORS, T5_LOGITS = 8.0, 4.0

# Rough throughput per device and dtype (FLOP/s) for the time class only.
DEVICE_FLOPS = {("cuda", 2): 4.0e14, ("cuda", 4): 5.0e13, ("cpu", 4): 6.0e10, ("cpu", 2): 2.0e10}


# ---------------------------------------------------------------- the estimate


def estimate(work: Workload) -> MemoryPlan:
    """Peak bytes of each stage of `work` on its device, and a rough time."""
    weights = weight_bytes(work)
    total = sum(weights.values())
    stay = work.models_stay and not work.streamed_blocks  # streaming blocks places models one at a time
    sampling_weights = weights["transformer"] if not work.fp8 else fp8_transformer_bytes(work)
    sampling_weights -= streamed_bytes(work, sampling_weights)
    # a one-shot run releases the text encoder after the text and the transformer after sampling
    after_text = total - weights["text_encoder"] if work.one_shot else total
    sampling = after_text - weights["transformer"] + sampling_weights
    resident_for = {  # the weights on the device during each stage
        "text": total if stay else weights["text_encoder"],
        "encode": after_text if stay else weights["vae"],
        "sampling": sampling if stay else sampling_weights,
        "decode": sampling if stay and not work.one_shot else weights["vae"],
    }
    decoded = work if work.decode_frames is None else replace(work, frames=work.decode_frames)
    made = {  # what each stage makes beside its weights, counted only for the stages run
        "text": lambda: text_bytes(work),
        "encode": lambda: encode_bytes(work),
        "sampling": lambda: sampling_bytes(work),
        "decode": lambda: decode_bytes(decoded),
        "write": lambda: write_bytes(decoded),
    }
    resident_for["write"] = resident_for["decode"]
    stages = {}
    for name in _stages_run(work):
        if name == "load" and not stay:
            continue  # loaded into CPU memory: each model reaches the device with its stage
        stages[name] = total if name == "load" else resident_for[name] + made[name]()
    return MemoryPlan(work, weights, stages, seconds(work))


def _stages_run(work: Workload) -> tuple[str, ...]:
    if work.stages is not None:
        return work.stages
    return (
        "load",
        "text",
        *(("encode",) if work.encode_frames else ()),
        "sampling",
        "decode",
        *(("write",) if work.device == "cpu" else ()),
    )  # on a GPU the frames are written from host memory


def weight_bytes(work: Workload) -> dict[str, int]:
    """Bytes of the three models' weights in the run's dtype."""
    if work.weights is not None:
        return {
            "transformer": work.weights.transformer,
            "vae": work.weights.vae,
            "text_encoder": work.weights.text_encoder,
        }
    size = work.dtype_bytes
    return {
        "transformer": transformer_params(work.transformer) * size,
        "vae": vae_params(work.vae) * size,
        "text_encoder": work.text_encoder.params * size,
    }


def fp8_transformer_bytes(work: Workload) -> int:
    """The transformer after its block linears turn into FP8 (one byte a weight, one fp32
    scale per row); the rest keeps the run's dtype."""
    full = weight_bytes(work)["transformer"]
    linear, rows = block_linear_params(work.transformer)
    return full - linear * work.dtype_bytes + linear + rows * 4


def streamed_bytes(work: Workload, transformer_bytes: int) -> int:
    """Of the transformer's `transformer_bytes`, those left in CPU memory while it samples:
    its streamed blocks but the two on the device at a time (the one running and the one
    being copied)."""
    if not work.streamed_blocks or work.transformer is None:
        return 0
    cfg = work.transformer
    one_block = transformer_bytes * block_params(cfg) / transformer_params(cfg)
    return int(one_block * (work.streamed_blocks - min(work.streamed_blocks, 2)))


def text_bytes(work: Workload) -> int:
    """T5 on one prompt padded to the token limit (the prompt and the negative one are
    encoded in turn): a few (tokens x width) tensors and each layer's attention logits,
    then the embeddings kept for sampling."""
    prompts = 2 if work.guidance else 1
    width, tokens = work.text_encoder.width, work.text_tokens
    one = T5_TOKEN_TENSORS * tokens * width * work.dtype_bytes + T5_LOGITS * work.text_encoder.heads * tokens**2 * 4
    return int(one + prompts * tokens * width * work.dtype_bytes)


def sampling_bytes(work: Workload) -> int:
    """One DiT forward on a rank's share of the batched passes and tokens, plus the
    sampler's fp32 latents; attention kernels keep only per-row statistics."""
    cfg = work.transformer
    passes = math.ceil(work.passes * work.batch / work.cfg_parallel)
    tokens = math.ceil((work.tokens + work.keyframe_tokens) / work.sequence_parallel)
    unit = passes * tokens * cfg.inner_dim * work.dtype_bytes
    dit = DIT_ACTIVATIONS * unit
    if work.per_token_timesteps or work.keyframe_tokens:
        dit += PER_TOKEN_MODULATION * unit + PER_TOKEN_FEATURES * passes * tokens * TIMESTEP_FEATURES * 4
    if work.sequence_parallel > 1:
        dit += ALL_TO_ALL_BUFFERS * unit
    if work.fp8:  # a linear's input quantized through fp32 copies (the feed-forward's is fused)
        dit += FP8_QUANTIZE * unit * 4 / work.dtype_bytes
    text = TEXT_CONTEXT * passes * work.text_tokens * cfg.inner_dim * work.dtype_bytes
    statistics = passes * cfg.num_attention_heads * tokens * 4 * 2
    latent_tokens = work.batch * (work.tokens + work.keyframe_tokens)
    sampler = (SAMPLER_FIXED + SAMPLER_PER_PASS * work.passes) * latent_tokens * cfg.in_channels * 4
    return int(dit + text + statistics + sampler)


def write_bytes(work: Workload) -> int:
    """The decoded frames as fp32, and as 8-bit pixels converted frame by frame."""
    pixels = work.batch * work.frames * work.height * work.width * 3
    return pixels * 4 + pixels


# ---------------------------------------------------------------- time


def seconds(work: Workload) -> float:
    """Sampling and decoding operations over a rough rate of the device: a class of
    duration (seconds, minutes, hours), not a measurement."""
    rate = DEVICE_FLOPS.get((work.device, min(work.dtype_bytes, 4)), DEVICE_FLOPS[("cpu", 4)])
    if work.fp8 and work.device == "cuda":
        rate *= 1.5
    world = work.sequence_parallel * work.cfg_parallel
    dit = work.steps * dit_flops(work) if work.transformer is not None else 0.0
    return (dit + (vae_flops(work) if work.vae is not None else 0.0)) / rate / world


def dit_flops(work: Workload) -> float:
    """Operations of one DiT forward: the block linears and the attention products."""
    cfg = work.transformer
    tokens, dim = work.tokens + work.keyframe_tokens, cfg.inner_dim
    linears, _ = block_linear_params(cfg)
    attention = cfg.num_layers * (4 * tokens * tokens * dim + 4 * tokens * work.text_tokens * dim)
    return work.batch * work.passes * (2 * linears * tokens + attention)
