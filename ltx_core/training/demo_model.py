"""The shipped demo model: its configs, where its files live, and how they are written.

Sizes are chosen for the CPU demo (256x256, 25 frames at 24 fps -> 4 x 8 x 8 = 256
tokens, 20 steps with CFG, well inside the time target of `benchmarks.bench_cpu_demo` on
2 cores) and for the package limits (the single file under 16 MiB in bf16): the 0.9.1
architecture (patch 4, 32x32x8, 128 latent channels, timestep-conditioned decoder with
noise injection) with few, narrow layers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..checkpoint.versions import ModelConfigs
from ..checkpoint.writing import save_single_file
from ..models.configs import (
    LTXV_2B_0_9_0,
    LTXV_SCHEDULER,
    LTXV_VAE_0_9_1,
    SchedulerConfig,
    TransformerConfig,
    VAEConfig,
)
from ..preflight import shipped_model_paths
from .t5 import TINY_T5

# Where the shipped files live is preflight's (the CLI finds them without importing torch).
DEMO_CHECKPOINT, DEMO_TEXT_ENCODER = shipped_model_paths()

DEMO_SIZE = dict(height=256, width=256, num_frames=25, frame_rate=24.0)


def _with_layers(blocks, layers: list[int]):
    """The official block list with each `res_x`'s layer count replaced, in order."""
    counts = iter(layers)
    return tuple(
        (name, {**dict(p), "num_layers": next(counts)}) if name == "res_x" else (name, dict(p)) for name, p in blocks
    )


# 0.9.1 layout; encoder res_x layers (full res .. latent res), decoder listed full res first.
DEMO_VAE: VAEConfig = replace(
    LTXV_VAE_0_9_1,
    encoder_blocks=_with_layers(LTXV_VAE_0_9_1.encoder_blocks, [2, 2, 1, 1, 1]),
    decoder_blocks=_with_layers(LTXV_VAE_0_9_1.decoder_blocks, [2, 2, 2, 1]),
    encoder_base_channels=16,
    decoder_base_channels=12,
)

# 0.9.1's transformer layout (no causal time fix), 5 blocks of 4 heads x 48.
DEMO_TRANSFORMER: TransformerConfig = replace(
    LTXV_2B_0_9_0,
    num_layers=5,
    num_attention_heads=4,
    attention_head_dim=48,
    cross_attention_dim=192,
    caption_channels=TINY_T5["d_model"],
)


# Its sampling schedule, written into its file's metadata (the CLI and the long-video node
# sample with a checkpoint's own; the shipped workflows' sampler widgets say the same): a
# fixed time shift of e^1.39 ~ 4 at every token count, where the stock token-count shift
# gives its 256 tokens e^0.68 ~ 2 (paper 2.5.2). More steps at high noise, where the shape
# and its motion are laid out; chosen among shifts 1-8 on validation prompts of trained
# combinations (`evaluation.sampling_sweep`, results/sampling_sweep_shift.json).
DEMO_SCHEDULER: SchedulerConfig = replace(LTXV_SCHEDULER, base_shift=1.39, max_shift=1.39)


def save_demo_checkpoint(
    transformer: torch.nn.Module, vae: torch.nn.Module, path: Path | str, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """Write the official single-file layout, metadata included (the 0.9.1 architecture and
    the demo's schedule)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    configs = ModelConfigs(transformer.cfg, vae.cfg, DEMO_SCHEDULER)
    return save_single_file(path, transformer, vae, configs=configs, version="0.9.1", dtype=dtype)
