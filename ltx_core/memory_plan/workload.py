"""What the planner plans (`Workload`: the models' configs and the run's settings) and what
it answers (`MemoryPlan`: each stage's peak and a rough time), with the sizes every part
of the planner counts in."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models.configs import FRAMES_PER_LATENT, PIXELS_PER_LATENT, TransformerConfig, VAEConfig
from ..preflight import DEFAULT_TILE_OVERLAP

GIB = 2**30
# The dtype names `checkpoint.resolve_dtype` accepts, in its order (a test pins them equal).
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}
# `models.vae.DEFAULT_DECODE_TIME_CHUNK`, known here without importing torch (a test pins them equal).
DEFAULT_DECODE_TIME_CHUNK = 16
TIMESTEP_FEATURES = 256  # the DiT's and the VAE's sinusoidal timestep width
TIME_KERNEL = 3  # every VAE convolution is 3 x 3 x 3
KERNEL_VOLUME = TIME_KERNEL**3


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

    transformer: TransformerConfig | None  # None: a run of the VAE alone (a decode node)
    vae: VAEConfig | None  # None: a run of the DiT alone (a sampler node)
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
    decode_tiles: tuple[int, int] | None = None  # (rows, columns) of spatial tiles (None: whole frames)
    decode_tile_overlap: int = DEFAULT_TILE_OVERLAP
    sequence_parallel: int = 1
    cfg_parallel: int = 1
    text_tokens: int = 128
    text_encoder: TextEncoderSize = T5_XXL
    weights: WeightBytes | None = None  # None: counted from the configs
    models_stay: bool = True  # every model on the device throughout; else one at a time (offloading)
    one_shot: bool = False  # text encoder, then transformer released once done (`pipeline.done_with`)
    streamed_blocks: int = 0  # transformer blocks streamed from CPU memory while sampling (block offloading)
    decode_frames: int | None = None  # frames decoded at once where not `frames` (a long video's whole clip)
    stages: tuple[str, ...] | None = None  # the stages run (None: a whole generation); a node runs one

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def latent_grid(self) -> tuple[int, int, int]:
        """(frames, height, width) of the latent."""
        return (
            (self.frames - 1) // FRAMES_PER_LATENT + 1,
            self.height // PIXELS_PER_LATENT,
            self.width // PIXELS_PER_LATENT,
        )

    @property
    def tokens(self) -> int:
        return math.prod(self.latent_grid)

    @property
    def offload(self) -> str:
        """The offloading these settings are: "none", "models" or "blocks"."""
        return "blocks" if self.streamed_blocks else "none" if self.models_stay else "models"

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
        return (
            f"{work.width}x{work.height}, {work.frames} frames in {work.dtype} on {work.device} needs about "
            f"{gib(self.peak_bytes)} at its peak ({self.peak_stage}; by stage: {parts}); {self.time_class}"
        )


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
