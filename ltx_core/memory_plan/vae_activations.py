"""The VAE, layer by layer: the tensors its decoder (whole layers or depth-first time chunks, or a
rank's frames) and its encoder keep alive at their peaks, and the decoder's operations.
The decoder's steps are walked from the config as `models.vae.Decoder` builds them.

The coefficients below count the tensors `ltx_core` creates (weights excluded): each is
the measured multiple of one tensor's size that a layer keeps alive at its peak, read
with `memory_probe.PeakLiveBytes` and checked against `torch.cuda.max_memory_allocated`
by `benchmarks/memory_planner.py` (results in benchmarks/results/memory_planner.json).
Code that changes what a layer keeps alive must re-run that benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models.configs import PIXELS_PER_LATENT, VAE_DECODER_STRIDES, VAE_ENCODER_STRIDES, VAEConfig
from ..models.time_windows import ConvSpan, UpsampleSpan, schedule, time_padding
from ..preflight import tile_spans
from .workload import KERNEL_VOLUME, TIME_KERNEL, Workload

# ---------------------------------------------------------------- calibrated multiples
# VAE resnet block on whole frames: its input once more, three tensors of its output width.
RESNET_WHOLE_IN, RESNET_WHOLE_OUT = 1.05, 3.0
# Depth-to-space upsampler on whole frames: its convolution's output and the rearranged copy.
UPSAMPLE_WHOLE = 2.0
# The time-chunked (depth-first) decode, per frame of the window a chunk reads: a resnet
# block's temporaries of its input width (more with timestep conditioning, the modulated
# norms) and of its output width; an upsampler's of its widened convolution output. The
# frames each layer keeps between chunks are counted exactly, by walking the decode's own
# schedule (`models.time_windows`).
STREAM_RESNET_IN, STREAM_RESNET_TIMESTEP, STREAM_RESNET_OUT, STREAM_UPSAMPLE = 0.5, 2.0, 0.5, 0.25
# cuDNN scratch memory of a whole-frame resnet convolution, per byte of its input: fitted to
# the H100 decode peaks of benchmarks/results/gpu_speed.json (eager, whole and time-chunked
# layers); the chunked decode's scratch is within the tensor count's error there.
CUDA_WHOLE_CONV_WORKSPACE = 2.0
# Latent-sized tensors alive through the decode: the latent, the noise, their mix.
DECODE_LATENTS = 3.0
# VAE encoder (whole layers): a resnet block's output-width tensors besides its padded
# input, and a downsampler's tensors of its input's size besides its padded input.
ENCODE_RESNET_OUT, ENCODE_DOWNSAMPLE = 2.75, 2.0


# ---------------------------------------------------------------- the decoder's steps


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
    `models.vae.Decoder` builds them from the block list, walked in reverse)."""
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
        layer = upsampler(name, params, channels, frames, height, width)
        layers.append(layer)
        channels, frames, height, width = layer.channels_out, layer.frames_out, layer.height_out, layer.width_out
    return layers


def upsampler(name: str, params: dict, channels: int, frames: int, height: int, width: int) -> Layer:
    """A depth-to-space upsampler: a convolution to `repeats` times the channels, then the
    stride's factors moved into time and space (`vae_layers.DepthToSpaceUpsample`)."""
    stride = VAE_DECODER_STRIDES[name]
    factor = params.get("multiplier", 1) if name == "compress_all" else 1
    dropped = 1 if stride[0] == 2 else 0  # latent frame 0 holds one pixel frame, not two
    return Layer(
        "upsample",
        channels,
        channels // factor,
        frames,
        frames * stride[0] - dropped,
        height,
        width,
        height * stride[1],
        width * stride[2],
        repeats=math.prod(stride) // factor,
        time_stride=stride[0],
    )


# ---------------------------------------------------------------- the decode


def decode_bytes(work: Workload) -> int:
    """Peak of `decode_frames`: the decoder on all latent frames, or on each rank's frames
    (sequence or CFG parallel), then the video in the run's dtype beside its fp32 copy."""
    frames, height, width = work.latent_grid
    world = work.sequence_parallel * work.cfg_parallel
    video = work.batch * 3 * work.frames * work.height * work.width
    after = video * work.dtype_bytes + (video * 4 if work.dtype_bytes != 4 else 0)
    if world > 1:  # each rank decodes its run of frames plus the borders, then gathers the video
        own = math.ceil(frames / world) + 2
        return int(max(decoder_peak(work, own, height, width, None), 2 * video * work.dtype_bytes + video * 4))
    if work.decode_tiles is not None and tuple(work.decode_tiles) != (1, 1):
        # one tile decodes at a time beside the fp32 blend of the whole video and its weights
        rows, columns = work.decode_tiles
        tile_h = max(end - start for start, end in tile_spans(height, rows, work.decode_tile_overlap))
        tile_w = max(end - start for start, end in tile_spans(width, columns, work.decode_tile_overlap))
        blend = video * 4 + work.height * work.width * 4
        tile_video = work.batch * 3 * work.frames * tile_h * tile_w * PIXELS_PER_LATENT**2
        return int(
            max(
                blend + decoder_peak(work, frames, tile_h, tile_w, work.decode_time_chunk),
                blend + 2 * tile_video * 4,  # a tile's pixels and their weighted copy
                after,
            )
        )
    return int(max(decoder_peak(work, frames, height, width, work.decode_time_chunk), after))


def decoder_peak(work: Workload, frames: int, height: int, width: int, time_chunk: int | None) -> float:
    """Most bytes alive in one decode of (frames, height, width) latents: whole layers (the
    latents, one layer's input and what the layer makes), or depth-first in time chunks."""
    b, size = work.batch, work.dtype_bytes
    latents = DECODE_LATENTS * b * work.vae.latent_channels * frames * height * width * size
    layers = decoder_layers(work.vae, frames, height, width)
    if time_chunk is not None and time_chunk < layers[-1].frames_out:
        return latents + streamed_peak(work, layers, time_chunk)
    peaks = [layer.size_in(b, size) + layer_extra(layer, b, size) + _workspace(work, layer) for layer in layers]
    peaks.append(_finish_peak(work, layers[-1]))
    return latents + max(peaks)


def _workspace(work: Workload, layer: Layer) -> float:
    """cuDNN's scratch memory for a resnet block's convolutions on whole frames, which a
    GPU allocates beside the tensors (a chunk's convolutions need little)."""
    if work.device != "cuda" or layer.kind != "resnet":
        return 0.0
    return CUDA_WHOLE_CONV_WORKSPACE * layer.size_in(work.batch, work.dtype_bytes)


def layer_extra(layer: Layer, batch: int, size: int) -> float:
    """Bytes a decoder layer makes beyond its input, on whole frames."""
    size_in, size_out = layer.size_in(batch, size), layer.size_out(batch, size)
    if layer.kind == "conv":
        return size_in * (layer.frames_in + 2) / layer.frames_in + size_out
    if layer.kind == "resnet":
        return RESNET_WHOLE_IN * size_in + RESNET_WHOLE_OUT * size_out
    return UPSAMPLE_WHOLE * layer.repeats * size_in


def _finish_temporaries(work: Workload, last: Layer, frames_in: float, frames_out: float) -> float:
    """Norm, last modulation, SiLU and the output convolution, then the unpatchified
    video, on `frames_in` frames of the last layer's output making `frames_out`: the largest
    of the elementwise temporaries, the padded input beside the convolution's output, and
    that output beside its rearranged copy."""
    per_frame = last.size_out(work.batch, work.dtype_bytes) / last.frames_out
    ratio = 3 * work.vae.patch_size**2 / last.channels_out  # output channels over input
    elementwise = 3.0 if work.vae.timestep_conditioning else 2.0
    spans = (elementwise * frames_in, 2 * frames_in + ratio * frames_out, 2 * ratio * frames_out)
    return max(spans) * per_frame


def _finish_peak(work: Workload, last: Layer) -> float:
    return last.size_out(work.batch, work.dtype_bytes) + _finish_temporaries(
        work, last, last.frames_out, last.frames_out
    )


def streamed_peak(work: Workload, layers: list[Layer], time_chunk: int) -> float:
    """The depth-first decode (`models.vae_stream`) walked step by step on its schedule:
    conv_in's output, the frames each layer keeps for the chunks still to come (as its
    buffer keeps them, whole chunks at a time), the video once its first chunk is made,
    and the running chunk's window copy and temporaries."""
    b, size = work.batch, work.dtype_bytes
    pads = time_padding(TIME_KERNEL, work.vae.causal_decoder)
    steps = layers[1:]
    spans = [_span(layer, pads) for layer in steps] + [ConvSpan(layers[-1].frames_out, (pads,))]
    per_frame = [layer.size_out(b, size) / layer.frames_out for layer in layers]  # stage i's input: [i]
    buffers = [[(0, layers[0].frames_out)]] + [[] for _ in steps]
    made, video, peak = [0] * len(spans), 0.0, 0.0
    last = layers[-1]
    video_frame = b * 3 * last.height_out * last.width_out * work.vae.patch_size**2 * size
    for step in schedule(spans, time_chunk):
        i, window, out = step.stage, step.hi - step.lo, step.end - step.start
        parts = [p for p in buffers[i] if p[0] < step.hi and p[0] + p[1] > step.lo]
        copy = window * per_frame[i] if len(parts) > 1 else 0.0
        held = sum(n * per_frame[j] for j, buffer in enumerate(buffers) for _, n in buffer)
        if i < len(steps):
            running = _chunk_bytes(work, steps[i], window, out)
        else:  # the output stage
            running = _finish_temporaries(work, last, window, out)
        peak = max(peak, held + video + copy + running)
        if i < len(steps):
            buffers[i + 1].append((made[i + 1], out))
            made[i + 1] += out
        elif not video:  # the video is made beside its first chunk
            video = video_frame * layers[-1].frames_out
            peak = max(peak, held + video + video_frame * out)
        buffers[i] = [p for p in buffers[i] if p[0] + p[1] > step.keep_from]
    return peak


def _span(layer: Layer, pads: tuple[int, int]):
    if layer.kind == "resnet":
        return ConvSpan(layer.frames_in, (pads, pads))
    return UpsampleSpan(
        layer.frames_in, layer.time_stride, layer.frames_in * layer.time_stride - layer.frames_out, pads
    )


def _chunk_bytes(work: Workload, layer: Layer, window: int, out: int) -> float:
    """A resnet block's or upsampler's output chunk and temporaries on a `window` of input
    frames making `out` output frames."""
    b, size = work.batch, work.dtype_bytes
    per_in, per_out = layer.size_in(b, size) / layer.frames_in, layer.size_out(b, size) / layer.frames_out
    if layer.kind == "resnet":
        width_in = STREAM_RESNET_IN + (STREAM_RESNET_TIMESTEP if layer.timestep else 0.0)
        return out * per_out + width_in * window * per_in + STREAM_RESNET_OUT * out * per_out
    return out * per_out + STREAM_UPSAMPLE * layer.repeats * window * per_in


# ---------------------------------------------------------------- the encode


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


def vae_flops(work: Workload) -> float:
    """Operations of the decoder's convolutions (a multiply-add counted as two)."""
    frames, height, width = work.latent_grid
    total = 0.0
    for layer in decoder_layers(work.vae, frames, height, width):
        width_out = layer.channels_in * layer.repeats if layer.kind == "upsample" else layer.channels_out
        positions = layer.frames_in * layer.height_in * layer.width_in
        convs = 2 if layer.kind == "resnet" else 1
        total += convs * 2 * KERNEL_VOLUME * layer.channels_in * width_out * positions
    return work.batch * total
