"""What fits: a plan beyond the memory is refused with the nearest settings that fit, the
levers that keep the video first (memory-saving decode, precision, FP8, offloading), then
the largest size and the most frames, each found by estimating many workloads."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import SettingsError
from ..models.configs import FRAMES_PER_LATENT, PIXELS_PER_LATENT
from .stages import estimate
from .workload import GIB, MemoryPlan, Workload, gib


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
    raise SettingsError(
        f"{plan.describe()}, but {gib(available)} is available on {plan.workload.device}. "
        f"Nearest settings that fit: {options}.{advice}"
    )


# The memory `choose_offload` leaves beyond the estimate: a share, as the estimate of the
# peak the allocator reaches may fall a little short (memory_planner.json holds its
# errors), and a fixed amount for the allocator's cached, fragmented blocks, which count
# against a GPU's memory as well and do not shrink with it (streamed blocks come and go
# in pieces of their own sizes; low_vram.json has a run under a small cap that ran out).
OFFLOAD_MARGIN = 0.1
OFFLOAD_RESERVE = GIB // 2


def offload_room(available: int) -> int:
    """The bytes of `available` that `choose_offload` lets a plan's estimate fill."""
    return int(available * (1 - OFFLOAD_MARGIN)) - OFFLOAD_RESERVE


@dataclass(frozen=True)
class Fit:
    """Settings that fit: the fields of `Workload` changed and a sentence for users."""

    changes: dict = field(hash=False)
    description: str


def nearest_fits(work: Workload, available: int) -> list[Fit]:
    """Levers that keep the video's size (memory-saving decodes, precision, FP8), then the
    largest size at the same aspect and the most frames that fit."""
    fits = [fit for fit in _levers(work, available) if _fits(replace(work, **fit.changes), available)]
    size = largest_size(work, available)
    if size is not None:
        fits.append(
            Fit(
                {"width": size[0], "height": size[1]},
                f"{size[0]}x{size[1]} with {work.frames} frames (the largest size at this aspect)",
            )
        )
    frames = most_frames(work, available)
    if frames is not None:
        fits.append(Fit({"frames": frames}, f"{work.width}x{work.height} with {frames} frames (the most that fit)"))
    return fits


def _fits(work: Workload, available: int) -> bool:
    return estimate(work).peak_bytes <= available


def _levers(work: Workload, available: int) -> list[Fit]:
    levers = []
    chunkable = (
        work.vae is not None and work.vae.norm_layer != "group_norm" and work.sequence_parallel * work.cfg_parallel == 1
    )
    if chunkable and (work.decode_time_chunk is None or work.decode_time_chunk > 8):
        levers.append(Fit({"decode_time_chunk": 8}, "decode_time_chunk 8 (the same frames, less decode memory)"))
    tiles = (
        work.vae is not None and work.decode_tiles in (None, (1, 1)) and work.sequence_parallel * work.cfg_parallel == 1
    )
    if tiles and min(work.latent_grid[1:]) >= 4:
        levers.append(
            Fit({"decode_tiles": (2, 2)}, "decode_tiles 2x2 (spatial tiles: less decode memory, frames close to whole)")
        )
    if work.dtype_bytes == 4:
        levers.append(Fit({"dtype": "bf16"}, "dtype bf16 (half the weights and activations)"))
    if work.device == "cuda" and not work.fp8:
        levers.append(Fit({"fp8": True}, "fp8 (FP8 linear layers, a GPU with FP8 tensor cores)"))
    if work.models_stay and not work.streamed_blocks:
        levers.append(
            Fit(
                {"models_stay": False},
                "offload models: each model on the device only while it runs (the same frames)",
            )
        )
    streamed = fewest_streamed_blocks(work, available)
    if streamed:
        levers.append(
            Fit(
                {"models_stay": False, "streamed_blocks": streamed},
                f"offload blocks: {streamed} of the transformer's blocks streamed from CPU memory "
                "(the same frames, slower)",
            )
        )
    if work.guidance or work.stg:
        levers.append(Fit({"guidance": False, "stg": False}, "guidance 1 without STG (one pass, other results)"))
    return levers


def choose_offload(work: Workload, available: int | None) -> Workload:
    """`work` with the least offloading that fits `available` bytes less its margins (`offload_room`):
    none, else each model on the device only while it runs, else the fewest transformer
    blocks streamed from CPU memory; every block streamed where nothing fits (the refusal
    then names what else would). Unknown memory: `work` as it is."""
    if available is None:
        return work
    available = offload_room(available)
    if _fits(work, available):
        return work
    models = replace(work, models_stay=False, streamed_blocks=0)
    if _fits(models, available):
        return models
    layers = work.transformer.num_layers if work.transformer is not None else 0
    return replace(models, streamed_blocks=fewest_streamed_blocks(work, available) or layers)


def fewest_streamed_blocks(work: Workload, available: int) -> int | None:
    """The fewest transformer blocks to stream for `work` to fit, None where streaming
    every block still does not (or there is no transformer)."""
    if work.transformer is None:
        return None
    low, high = 1, work.transformer.num_layers
    streamed = lambda count: replace(work, models_stay=False, streamed_blocks=count)
    if not _fits(streamed(high), available):
        return None
    while low < high:  # memory falls as more blocks are streamed: bisect
        middle = (low + high) // 2
        if _fits(streamed(middle), available):
            high = middle
        else:
            low = middle + 1
    return low


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
