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
- decode: the VAE decoder, layer by layer (whole, time-chunked or in windows);
- write: on the CPU, the frames as floats and as 8-bit pixels while the mp4 is encoded.

The coefficients below count the tensors `ltx_core` creates (weights excluded): each is
the measured multiple of one tensor's size that a layer keeps alive at its peak, read
with `memory_probe.PeakLiveBytes` and checked against `torch.cuda.max_memory_allocated`
by `benchmarks/memory_planner.py` (results in benchmarks/results/memory_planner.json).
Code that changes what a layer keeps alive must re-run that benchmark.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from .models.configs import VAE_DECODER_STRIDES, VAE_ENCODER_STRIDES, TransformerConfig, VAEConfig
from .errors import SettingsError

GIB = 2**30
# The dtype names `checkpoint.resolve_dtype` accepts, in its order (a test pins them equal).
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}
# `vae.DEFAULT_DECODE_TIME_CHUNK`, known here without importing torch (a test pins them equal).
DEFAULT_DECODE_TIME_CHUNK = 32
FRAMES_PER_LATENT, PIXELS_PER_LATENT = 8, 32  # every published VAE
TIMESTEP_FEATURES = 256  # the DiT's and the VAE's sinusoidal timestep width
KERNEL_VOLUME = 27  # every VAE convolution is 3 x 3 x 3

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
# VAE resnet block on whole frames: its input once more, three tensors of its output width.
RESNET_WHOLE_IN, RESNET_WHOLE_OUT = 1.05, 3.0
# Time-chunked resnet block: per frame of a chunk (plus the two frames its convolutions
# reach), tensors of the input and of the output width; one more each with timestep
# conditioning (the modulated norm).
RESNET_CHUNK_IN, RESNET_CHUNK_OUT, RESNET_CHUNK_TIMESTEP = 1.0, 2.0, 0.5
# Depth-to-space upsampler: its convolution's output and the rearranged copy.
UPSAMPLE_WHOLE, UPSAMPLE_CHUNK = 2.0, 3.0
# cuDNN scratch memory of a whole-frame resnet convolution, per byte of its input: fitted to
# the H100 decode peaks of benchmarks/results/gpu_speed.json (eager, whole and time-chunked
# layers); the chunked decode's scratch is within the tensor count's error there.
CUDA_WHOLE_CONV_WORKSPACE = 2.0
# Latent-sized tensors alive through the decode: the latent, the noise, their mix.
DECODE_LATENTS = 3.0
# VAE encoder (whole layers): a resnet block's output-width tensors besides its padded
# input, and a downsampler's tensors of its input's size besides its padded input.
ENCODE_RESNET_OUT, ENCODE_DOWNSAMPLE = 2.75, 2.0

# T5 on one prompt: tensors of (tokens x width), and fp32 attention logits of (heads x
# tokens x tokens).
T5_TOKEN_TENSORS, T5_LOGITS = 8.0, 4.0

# Rough throughput per device and dtype (FLOP/s) for the time class only.
DEVICE_FLOPS = {("cuda", 2): 4.0e14, ("cuda", 4): 5.0e13, ("cpu", 4): 6.0e10, ("cpu", 2): 2.0e10}


@dataclass(frozen=True)
class TextEncoderSize:
    """What the planner needs of the T5 encoder: its parameters, width and heads."""

    params: int
    width: int
    heads: int = 64


# T5 v1.1 XXL's encoder (LTX-Video's text encoder): 24 layers, 4096 wide, 64 heads.
T5_XXL = TextEncoderSize(params=4_762_310_656, width=4096, heads=64)


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of each model's weights on the device, where the files say so exactly."""

    transformer: int
    vae: int
    text_encoder: int


@dataclass(frozen=True)
class Workload:
    """One generation as the planner sees it: the models' configs and the run's settings."""

    transformer: TransformerConfig
    vae: VAEConfig
    width: int
    height: int
    frames: int
    batch: int = 1
    guidance: bool = True  # CFG: the unconditional pass rides in the same batch
    stg: bool = False  # STG: a third, perturbed pass
    per_token_timesteps: bool = False  # a first frame or keyframes held at their own level
    keyframe_tokens: int = 0  # extra tokens of keyframes placed elsewhere than frame 0
    encode_frames: int = 0  # frames the VAE encodes first (1: a first frame; a clip's count)
    steps: int = 20
    dtype: str = "bf16"
    device: str = "cuda"  # "cuda" or "cpu"
    fp8: bool = False
    decode_time_chunk: int | None = DEFAULT_DECODE_TIME_CHUNK
    decode_chunk_frames: int | None = None
    sequence_parallel: int = 1
    cfg_parallel: int = 1
    text_tokens: int = 128
    text_encoder: TextEncoderSize = T5_XXL
    weights: WeightBytes | None = None  # None: counted from the configs
    models_stay: bool = True  # every model on the device throughout (the CLI); else one at a time

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def latent_grid(self) -> tuple[int, int, int]:
        """(frames, height, width) of the latent."""
        return ((self.frames - 1) // FRAMES_PER_LATENT + 1, self.height // PIXELS_PER_LATENT,
                self.width // PIXELS_PER_LATENT)

    @property
    def tokens(self) -> int:
        return math.prod(self.latent_grid)

    @property
    def passes(self) -> int:
        return (2 if self.guidance else 1) + (1 if self.stg else 0)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes each stage needs at its peak (its weights included) and a rough time."""

    workload: Workload
    weights: dict[str, int]
    stages: dict[str, int]
    seconds: float

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=self.stages.get)

    @property
    def peak_bytes(self) -> int:
        return self.stages[self.peak_stage]

    @property
    def time_class(self) -> str:
        return time_class(self.seconds)

    def describe(self) -> str:
        """One line: the peak, where it is, and the time class."""
        work = self.workload
        parts = ", ".join(f"{name} {gib(size)}" for name, size in self.stages.items())
        return (f"{work.width}x{work.height}, {work.frames} frames in {work.dtype} on {work.device} needs about "
                f"{gib(self.peak_bytes)} at its peak ({self.peak_stage}; by stage: {parts}); {self.time_class}")


def gib(size: float) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB / 10 else f"{size / 2**20:.0f} MiB"


def time_class(seconds: float) -> str:
    """A rough duration a user can plan with, never a promise."""
    if seconds < 60:
        return "under a minute"
    if seconds < 3600:
        return f"roughly {max(1, round(seconds / 60))} minutes"
    if seconds < 2 * 86400:
        return f"roughly {seconds / 3600:.0f} hours"
    return f"roughly {seconds / 86400:.0f} days"


# ---------------------------------------------------------------- the estimate


def estimate(work: Workload) -> MemoryPlan:
    """Peak bytes of each stage of `work` on its device, and a rough time."""
    weights = weight_bytes(work)
    total = sum(weights.values())
    stay = work.models_stay
    sampling_weights = weights["transformer"] if not work.fp8 else fp8_transformer_bytes(work)
    resident_for = {  # the weights on the device during each stage
        "text": total if stay else weights["text_encoder"],
        "encode": total if stay else weights["vae"],
        "sampling": total - weights["transformer"] + sampling_weights if stay else sampling_weights,
        "decode": total - weights["transformer"] + sampling_weights if stay else weights["vae"],
    }
    stages = {"load": total if stay else max(weights.values())}
    stages["text"] = resident_for["text"] + text_bytes(work)
    if work.encode_frames:
        stages["encode"] = resident_for["encode"] + encode_bytes(work)
    stages["sampling"] = resident_for["sampling"] + sampling_bytes(work)
    stages["decode"] = resident_for["decode"] + decode_bytes(work)
    if work.device == "cpu":  # on a GPU the frames are written from host memory
        stages["write"] = resident_for["decode"] + write_bytes(work)
    return MemoryPlan(work, weights, stages, seconds(work))


def weight_bytes(work: Workload) -> dict[str, int]:
    """Bytes of the three models' weights in the run's dtype."""
    if work.weights is not None:
        return {"transformer": work.weights.transformer, "vae": work.weights.vae,
                "text_encoder": work.weights.text_encoder}
    size = work.dtype_bytes
    return {"transformer": transformer_params(work.transformer) * size, "vae": vae_params(work.vae) * size,
            "text_encoder": work.text_encoder.params * size}


def fp8_transformer_bytes(work: Workload) -> int:
    """The transformer after its block linears turn into FP8 (one byte a weight, one fp32
    scale per row); the rest keeps the run's dtype."""
    full = weight_bytes(work)["transformer"]
    linear, rows = block_linear_params(work.transformer)
    return full - linear * work.dtype_bytes + linear + rows * 4


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


# ---------------------------------------------------------------- the VAE, layer by layer


@dataclass(frozen=True)
class Layer:
    """One decoder step on a batch of one: its kind, channels, frames and spatial size in
    and out."""

    kind: str  # "conv", "resnet" or "upsample"
    channels_in: int
    channels_out: int
    frames_in: int
    frames_out: int
    height_in: int
    width_in: int
    height_out: int
    width_out: int
    timestep: bool = False  # a timestep-conditioned resnet block (its norms modulated)
    repeats: int = 1  # an upsampler's convolution widens its input this many times
    time_stride: int = 1

    def size_in(self, batch: int, dtype_bytes: int) -> int:
        return batch * self.channels_in * self.frames_in * self.height_in * self.width_in * dtype_bytes

    def size_out(self, batch: int, dtype_bytes: int) -> int:
        return batch * self.channels_out * self.frames_out * self.height_out * self.width_out * dtype_bytes


def decoder_layers(cfg: VAEConfig, frames: int, height: int, width: int) -> list[Layer]:
    """The decoder's steps on a latent of (frames, height, width), in order (as
    `vae.Decoder` builds them from the block list, walked in reverse)."""
    channels = cfg.decoder_width
    layers = [Layer("conv", cfg.latent_channels, channels, frames, frames, height, width, height, width)]
    for name, params in reversed(cfg.decoder_block_list):
        params = dict(params)
        if name in ("res_x", "res_x_y"):
            out = channels if name == "res_x" else channels // params.get("multiplier", 2)
            timestep = cfg.timestep_conditioning and name == "res_x"
            count = params["num_layers"] if name == "res_x" else 1
            layers += [Layer("resnet", channels, out, frames, frames, height, width, height, width, timestep)] * count
            channels = out
            continue
        layer = _upsampler(name, params, channels, frames, height, width)
        layers.append(layer)
        channels, frames, height, width = layer.channels_out, layer.frames_out, layer.height_out, layer.width_out
    return layers


def _upsampler(name: str, params: dict, channels: int, frames: int, height: int, width: int) -> Layer:
    """A depth-to-space upsampler: a convolution to `repeats` times the channels, then the
    stride's factors moved into time and space (`vae.DepthToSpaceUpsample`)."""
    stride = VAE_DECODER_STRIDES[name]
    factor = params.get("multiplier", 1) if name == "compress_all" else 1
    dropped = 1 if stride[0] == 2 else 0  # latent frame 0 holds one pixel frame, not two
    return Layer("upsample", channels, channels // factor, frames, frames * stride[0] - dropped, height, width,
                 height * stride[1], width * stride[2], repeats=math.prod(stride) // factor, time_stride=stride[0])


def decode_bytes(work: Workload) -> int:
    """Peak of `decode_frames`: the decoder on all latent frames, on windows of them
    (`decode_chunk_frames`), or on each rank's frames (sequence or CFG parallel), then
    the video in the run's dtype beside its fp32 copy."""
    frames, height, width = work.latent_grid
    world = work.sequence_parallel * work.cfg_parallel
    video = work.batch * 3 * work.frames * work.height * work.width
    after = video * work.dtype_bytes + (video * 4 if work.dtype_bytes != 4 else 0)
    if world > 1:  # each rank decodes its run of frames plus the borders, then gathers the video
        own = math.ceil(frames / world) + 2
        return int(max(decoder_peak(work, own, height, width, None), 2 * video * work.dtype_bytes + video * 4))
    if work.decode_chunk_frames is None or work.decode_chunk_frames >= frames:
        return int(max(decoder_peak(work, frames, height, width, work.decode_time_chunk), after))
    return int(max(_windows_peak(work, frames, height, width, video), after))


def _windows_peak(work: Workload, frames: int, height: int, width: int, video: int) -> float:
    """`vae_chunked.decode_in_chunks`: each window is its chunk plus the decoder's time
    radius each side (within the clip); a window's piece is a view of its whole output,
    which stays alive until the pieces are joined into the video."""
    radius, chunk = time_radius(work.vae), work.decode_chunk_frames
    pixels = work.batch * 3 * work.height * work.width * work.dtype_bytes
    held, peak = 0.0, 0.0
    for start in range(0, frames, chunk):
        window = min(frames, start + chunk + radius) - max(0, start - radius)
        peak = max(peak, held + decoder_peak(work, window, height, width, work.decode_time_chunk))
        held += pixels * (FRAMES_PER_LATENT * (window - 1) + 1)
    return max(peak, held + video * work.dtype_bytes)


def decoder_peak(work: Workload, frames: int, height: int, width: int, time_chunk: int | None) -> float:
    """Most bytes alive in one decode of (frames, height, width) latents: the latents,
    one layer's input and what the layer makes."""
    b, size = work.batch, work.dtype_bytes
    latents = DECODE_LATENTS * b * work.vae.latent_channels * frames * height * width * size
    layers = decoder_layers(work.vae, frames, height, width)
    peaks = [layer.size_in(b, size) + layer_extra(layer, b, size, time_chunk) + _workspace(work, layer, time_chunk)
             for layer in layers]
    peaks.append(_finish_peak(work, layers[-1], time_chunk))
    return latents + max(peaks)


def _workspace(work: Workload, layer: Layer, chunk: int | None) -> float:
    """cuDNN's scratch memory for a resnet block's convolutions on whole frames, which a
    GPU allocates beside the tensors (a chunk's convolutions need little)."""
    whole = chunk is None or chunk >= layer.frames_in
    if work.device != "cuda" or layer.kind != "resnet" or not whole:
        return 0.0
    return CUDA_WHOLE_CONV_WORKSPACE * layer.size_in(work.batch, work.dtype_bytes)


def layer_extra(layer: Layer, batch: int, size: int, chunk: int | None) -> float:
    """Bytes a decoder layer makes beyond its input, whole or `chunk` frames at a time."""
    size_in, size_out = layer.size_in(batch, size), layer.size_out(batch, size)
    chunked = chunk is not None and chunk < layer.frames_in
    if layer.kind == "conv":
        return size_in * (layer.frames_in + 2) / layer.frames_in + size_out
    if layer.kind == "resnet":
        if not chunked:
            return RESNET_WHOLE_IN * size_in + RESNET_WHOLE_OUT * size_out
        modulated = RESNET_CHUNK_TIMESTEP if layer.timestep else 0.0
        per_frame = ((RESNET_CHUNK_IN + modulated) * size_in + (RESNET_CHUNK_OUT + modulated) * size_out)
        return size_out + (chunk + 2) * per_frame / layer.frames_in
    if not chunked:  # upsampler
        return UPSAMPLE_WHOLE * layer.repeats * size_in
    return size_out + UPSAMPLE_CHUNK * layer.repeats * chunk * size_in / layer.frames_in


def _finish_peak(work: Workload, last: Layer, chunk: int | None) -> float:
    """Norm, last modulation, SiLU and the output convolution, then the unpatchified
    video: the largest of the elementwise temporaries, the padded input beside the
    convolution's output, and that output beside its rearranged copy."""
    b, size = work.batch, work.dtype_bytes
    frames = last.frames_out
    size_in = last.size_out(b, size)
    ratio = 3 * work.vae.patch_size**2 / last.channels_out  # output channels over input
    elementwise = 3.0 if work.vae.timestep_conditioning else 2.0
    def temporaries(span: float, conv_span: float) -> float:
        return max(elementwise * span, 2 * span + ratio * conv_span, 2 * ratio * conv_span) * size_in
    if chunk is None or chunk >= frames:
        return size_in + temporaries(1.0, 1.0)
    return size_in + ratio * size_in + temporaries((chunk + 2) / frames, chunk / frames)


def time_radius(cfg: VAEConfig) -> int:
    """Latent frames each side one decoded frame depends on (as `vae_chunked.time_radius`):
    each 3-frame convolution reaches 2 frames at its layer's frame rate."""
    rate, radius = 1, 2.0  # conv_in
    for layer in decoder_layers(cfg, 2, 1, 1)[1:]:
        if layer.kind == "resnet":
            radius += 2 * 2 / rate
        else:
            radius += 2 / rate
            rate *= layer.time_stride
    radius += 2 / rate  # conv_out
    return math.ceil((radius if cfg.causal_decoder else radius / 2) - 1e-9)


def encode_bytes(work: Workload) -> int:
    """The VAE encoder on `encode_frames` frames at the video's size, whole layers: the
    frames on the device, their patchified copy, then each block's input and what it
    makes (short clips pad relatively more frames in time)."""
    cfg, b, size = work.vae, work.batch, work.dtype_bytes
    frames, height, width = work.encode_frames, work.height // cfg.patch_size, work.width // cfg.patch_size
    video = b * 3 * frames * work.height * work.width * size
    pad = (frames + 2) / frames
    channels = cfg.encoder_base_channels
    current = b * channels * frames * height * width * size
    peak = video + video * pad + current  # conv_in on the patchified frames
    for name, params in cfg.encoder_block_list:
        params, stride = dict(params), VAE_ENCODER_STRIDES[name]
        keeps_width = name in ("res_x", "compress_time", "compress_space", "compress_all")
        out = channels if keeps_width else channels * params.get("multiplier", 2)
        frames = (frames - 1) // stride[0] + 1
        height, width = height // stride[1], width // stride[2]
        after = b * out * frames * height * width * size
        if name.startswith("res_x"):
            extra = current + (ENCODE_RESNET_OUT + pad) * after
        else:  # a strided or space-to-depth convolution: its padded input, output and copies
            extra = pad * current + ENCODE_DOWNSAMPLE * current
        peak = max(peak, current + extra)
        channels, current, pad = out, after, (frames + 2) / frames
    return int(video + peak)


# ---------------------------------------------------------------- parameters from the configs


def transformer_params(cfg: TransformerConfig) -> int:
    """Parameters of `LTXVTransformer(cfg)`."""
    dim = cfg.inner_dim
    linear = lambda n_in, n_out, bias=True: n_in * n_out + (n_out if bias else 0)  # noqa: E731
    outside = (linear(cfg.in_channels, dim) + linear(TIMESTEP_FEATURES, dim) + linear(dim, dim)
               + linear(dim, 6 * dim) + linear(cfg.caption_channels, dim) + linear(dim, dim)
               + 2 * dim + linear(dim, cfg.out_channels))
    linears, _ = block_linear_params(cfg)
    # per block: the attentions' biases and QK-norm weights, the feed-forward's biases, the
    # modulation table, the norms' weights where they have them
    attention = 2 * (3 * dim * cfg.attention_bias + dim + 2 * dim)
    rest = attention + 5 * dim + 6 * dim + (2 * dim if cfg.norm_elementwise_affine else 0)
    return outside + linears + cfg.num_layers * rest


def block_linear_params(cfg: TransformerConfig) -> tuple[int, int]:
    """(weight parameters, output rows) of the linear layers inside the blocks: what FP8
    quantizes."""
    dim = cfg.inner_dim
    weights = 2 * (3 * dim * dim + dim * dim) + 2 * 4 * dim * dim  # two attentions, feed-forward
    rows = 2 * 4 * dim + 4 * dim + dim
    return cfg.num_layers * weights, cfg.num_layers * rows


def _conv(n_in: int, n_out: int, kernel: int = KERNEL_VOLUME) -> int:
    return n_in * n_out * kernel + n_out


def _norm(cfg: VAEConfig, channels: int) -> int:
    return 0 if cfg.norm_layer == "pixel_norm" else 2 * channels


def _resnet(cfg: VAEConfig, n_in: int, n_out: int, noise: bool = False, timestep: bool = False) -> int:
    params = _norm(cfg, n_in) + _conv(n_in, n_out) + _norm(cfg, n_out) + _conv(n_out, n_out)
    params += 2 * n_in if noise else 0
    params += 2 * n_in + _conv(n_in, n_out, 1) if n_in != n_out else 0
    return params + (4 * n_in if timestep else 0)


def _timestep_mlp(dim: int) -> int:
    return TIMESTEP_FEATURES * dim + dim + dim * dim + dim


def vae_params(cfg: VAEConfig) -> int:
    """Parameters and statistics of `CausalVideoVAE(cfg)`."""
    return encoder_params(cfg) + decoder_params(cfg) + 5 * cfg.latent_channels + (
        (2 * cfg.latent_channels) ** 2 + 2 * cfg.latent_channels + cfg.latent_channels**2 + cfg.latent_channels
        if cfg.use_quant_conv else 0)


def encoder_params(cfg: VAEConfig) -> int:
    channels = cfg.encoder_base_channels
    params = _conv(cfg.in_channels * cfg.patch_size**2, channels)
    for name, block in cfg.encoder_block_list:
        block = dict(block)
        if name == "res_x":
            params += block["num_layers"] * _resnet(cfg, channels, channels)
            continue
        if name in ("compress_time", "compress_space", "compress_all"):
            params += _conv(channels, channels)
            continue
        out = channels * block.get("multiplier", 2)
        if name == "res_x_y":
            params += _resnet(cfg, channels, out)
        elif name == "compress_all_x_y":
            params += _conv(channels, out)
        else:  # space-to-depth residual downsampler
            params += _conv(channels, out // math.prod(VAE_ENCODER_STRIDES[name]))
        channels = out
    extra = cfg.latent_channels if cfg.latent_log_var == "per_channel" else 1
    return params + _norm(cfg, channels) + _conv(channels, cfg.latent_channels + extra)


def decoder_params(cfg: VAEConfig) -> int:
    channels = cfg.decoder_width
    timestep = cfg.timestep_conditioning
    params = _conv(cfg.latent_channels, channels)
    for name, block in reversed(cfg.decoder_block_list):
        block = dict(block)
        noise = block.get("inject_noise", False)
        if name == "res_x":
            params += block["num_layers"] * _resnet(cfg, channels, channels, noise, timestep)
            params += _timestep_mlp(4 * channels) if timestep else 0
        elif name == "res_x_y":
            out = channels // block.get("multiplier", 2)
            params += _resnet(cfg, channels, out, noise)
            channels = out
        else:
            layer = _upsampler(name, block, channels, 1, 1, 1)
            params += _conv(channels, channels * layer.repeats)
            channels = layer.channels_out
    params += _norm(cfg, channels) + _conv(channels, cfg.out_channels * cfg.patch_size**2)
    if timestep:
        params += 1 + _timestep_mlp(2 * channels) + 2 * channels
    return params


# ---------------------------------------------------------------- time


def seconds(work: Workload) -> float:
    """Sampling and decoding operations over a rough rate of the device: a class of
    duration (seconds, minutes, hours), not a measurement."""
    rate = DEVICE_FLOPS.get((work.device, min(work.dtype_bytes, 4)), DEVICE_FLOPS[("cpu", 4)])
    if work.fp8 and work.device == "cuda":
        rate *= 1.5
    world = work.sequence_parallel * work.cfg_parallel
    return (work.steps * dit_flops(work) + vae_flops(work)) / rate / world


def dit_flops(work: Workload) -> float:
    cfg = work.transformer
    tokens, dim = work.tokens + work.keyframe_tokens, cfg.inner_dim
    linears, _ = block_linear_params(cfg)
    attention = cfg.num_layers * (4 * tokens * tokens * dim + 4 * tokens * work.text_tokens * dim)
    return work.batch * work.passes * (2 * linears * tokens + attention)


def vae_flops(work: Workload) -> float:
    frames, height, width = work.latent_grid
    total = 0.0
    for layer in decoder_layers(work.vae, frames, height, width):
        width_out = layer.channels_in * layer.repeats if layer.kind == "upsample" else layer.channels_out
        positions = layer.frames_in * layer.height_in * layer.width_in
        convs = 2 if layer.kind == "resnet" else 1
        total += convs * 2 * KERNEL_VOLUME * layer.channels_in * width_out * positions
    return work.batch * total


# ---------------------------------------------------------------- what fits


def check_fits(plan: MemoryPlan, available: int | None, name_fit=None, advice: str = "") -> None:
    """Refuse a plan whose peak exceeds `available` bytes (None: unknown, so allowed), with
    the estimate, what is available and the nearest settings that fit; `name_fit(fit)`
    says a `Fit` in the caller's words (the CLI's flags; None where the caller has no such
    setting), `advice` ends the message."""
    if available is None or plan.peak_bytes <= available:
        return
    name_fit = name_fit or (lambda fit: fit.description)
    named = [name_fit(fit) for fit in nearest_fits(plan.workload, available)]  # None: not offered by the caller
    options = "; ".join(filter(None, named)) or "none of the sizes or levers tried; use a device with more memory"
    raise SettingsError(f"{plan.describe()}, but {gib(available)} is available on {plan.workload.device}. "
                        f"Nearest settings that fit: {options}.{advice}")


@dataclass(frozen=True)
class Fit:
    """Settings that fit: the fields of `Workload` changed and a sentence for users."""

    changes: dict = field(hash=False)
    description: str


def nearest_fits(work: Workload, available: int) -> list[Fit]:
    """Levers that keep the video's size (memory-saving decodes, precision, FP8), then the
    largest size at the same aspect and the most frames that fit."""
    fits = [fit for fit in _levers(work) if _fits(replace(work, **fit.changes), available)]
    size = largest_size(work, available)
    if size is not None:
        fits.append(Fit({"width": size[0], "height": size[1]},
                        f"{size[0]}x{size[1]} with {work.frames} frames (the largest size at this aspect)"))
    frames = most_frames(work, available)
    if frames is not None:
        fits.append(Fit({"frames": frames}, f"{work.width}x{work.height} with {frames} frames (the most that fit)"))
    return fits


def _fits(work: Workload, available: int) -> bool:
    return estimate(work).peak_bytes <= available


def _levers(work: Workload) -> list[Fit]:
    levers = []
    chunkable = work.vae.norm_layer != "group_norm" and work.sequence_parallel * work.cfg_parallel == 1
    if chunkable and (work.decode_time_chunk is None or work.decode_time_chunk > 8):
        levers.append(Fit({"decode_time_chunk": 8}, "decode_time_chunk 8 (the same frames, less decode memory)"))
        levers.append(Fit({"decode_time_chunk": 8, "decode_chunk_frames": 1},
                          "decode_time_chunk 8 with decode_chunk_frames 1 (the same frames, decoded in windows)"))
    if work.dtype_bytes == 4:
        levers.append(Fit({"dtype": "bf16"}, "dtype bf16 (half the weights and activations)"))
    if work.device == "cuda" and not work.fp8:
        levers.append(Fit({"fp8": True}, "fp8 (FP8 linear layers, a GPU with FP8 tensor cores)"))
    if work.models_stay:
        levers.append(Fit({"models_stay": False}, "offload: each model on the device only while it runs, as "
                          "ComfyUI moves them (the same frames)"))
    if work.guidance or work.stg:
        levers.append(Fit({"guidance": False, "stg": False}, "guidance 1 without STG (one pass, other results)"))
    return levers


def largest_size(work: Workload, available: int) -> tuple[int, int] | None:
    """The largest width x height at (about) the same aspect that fits, in steps of 32."""
    longer = max(work.width, work.height)
    for side in range(longer - PIXELS_PER_LATENT, 0, -PIXELS_PER_LATENT):
        scale = side / longer
        width = max(PIXELS_PER_LATENT, round(work.width * scale / PIXELS_PER_LATENT) * PIXELS_PER_LATENT)
        height = max(PIXELS_PER_LATENT, round(work.height * scale / PIXELS_PER_LATENT) * PIXELS_PER_LATENT)
        if _fits(replace(work, width=width, height=height), available):
            return width, height
    return None


def most_frames(work: Workload, available: int) -> int | None:
    """The most frames (8k + 1, fewer than asked) that fit at the asked size."""
    low, high = 0, (work.frames - 1) // FRAMES_PER_LATENT - 1  # in latent frames after the first
    if high < 0 or not _fits(replace(work, frames=1), available):
        return None
    while low < high:  # memory grows with the frame count: bisect
        middle = (low + high + 1) // 2
        if _fits(replace(work, frames=middle * FRAMES_PER_LATENT + 1), available):
            low = middle
        else:
            high = middle - 1
    return low * FRAMES_PER_LATENT + 1


# ---------------------------------------------------------------- weights from file headers


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a `.safetensors` header (an 8-byte length, then JSON),
    without torch and without the tensors; {} for a file that is not one (the loader says
    what is wrong with it)."""
    try:
        with open(path, "rb") as file:
            length = int.from_bytes(file.read(8), "little")
            if not 0 < length <= Path(path).stat().st_size:
                return {}
            header = json.loads(file.read(length))
    except (OSError, ValueError):
        return {}
    return {key: tuple(entry["shape"]) for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and "shape" in entry}


def text_encoder_weights(path: str | Path, dtype: str) -> tuple[int, TextEncoderSize]:
    """Bytes of a T5 encoder's weights as `text_encoder.load_text_encoder` holds them (the
    encoder's tensors, a whole T5's decoder left out, the tied embedding once, in `dtype`;
    under fp16 the feed-forward output layers in fp32, as transformers keeps them), and
    its size read off the same headers."""
    path = Path(path)
    folder = path / "text_encoder" if (path / "text_encoder").is_dir() else path
    files = [path] if path.is_file() else sorted(folder.glob("*.safetensors"))
    shapes = {key: shape for file in files for key, shape in safetensors_shapes(file).items()}
    size, total, params = DTYPE_BYTES[dtype], 0, 0
    width, heads = T5_XXL.width, T5_XXL.heads
    has_shared = any(key.endswith("shared.weight") for key in shapes)
    for key, shape in shapes.items():
        parts = key.split(".")
        if "decoder" in parts or not ("encoder" in parts or key.endswith("shared.weight")):
            continue
        if has_shared and key.endswith("encoder.embed_tokens.weight"):
            continue
        width = shape[1] if key.endswith(("shared.weight", "embed_tokens.weight")) and len(shape) == 2 else width
        heads = shape[1] if key.endswith("relative_attention_bias.weight") and len(shape) == 2 else heads
        wide = 4 if dtype in ("fp16", "float16") and "wo" in parts else size
        params += math.prod(shape)
        total += math.prod(shape) * wide
    return total, TextEncoderSize(params, width, heads)


# ---------------------------------------------------------------- the device


def available_memory(device: str) -> int | None:
    """Bytes the run may use on `device`: a GPU's free memory as its driver reports it, the
    machine's available memory for the CPU (/proc/meminfo's MemAvailable, else psutil);
    None where neither can be read."""
    if str(device).startswith("cuda"):
        import torch  # only a GPU run asks, and it imports torch anyway

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return _meminfo_available() or _psutil_available()


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _psutil_available() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


