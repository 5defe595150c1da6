"""Several GPUs for one video, on PyTorch's own `torch.distributed` (NCCL on GPUs, gloo on
CPUs): three ways of splitting the work, combinable, with the same result as one process
up to the order of floating-point sums.

- Sequence parallel (DeepSpeed-Ulysses): the video tokens, their timesteps and RoPE
  coordinates are split across the `sequence` ranks. Everything in the DiT is per token
  except self-attention, so only there do the ranks talk: an all-to-all turns "my tokens,
  all heads" into "all tokens, my heads" for q, k and v, attention runs on whole
  sequences, and a second all-to-all turns the output back (plugged in through the
  model's `use_kernels` seam). Cross-attention to the text, the feed-forward and
  the modulation stay local; the velocity is all-gathered at the end.
- CFG parallel: the guidance forward's batch (uncond, cond) is split across the `cfg`
  ranks and all-gathered afterwards (`guidance.guided_velocity` batches both halves).
- Decode split in time: `split_decode.TimeSplitVAE` gives each rank a run of latent
  frames and exchanges the frames each convolution needs at the borders.

Ranks are laid out as `rank = cfg_index * sequence + sequence_index`, so 4 GPUs as 2-way
CFG x 2-way sequence pair GPUs 0-1 and 2-3 for the all-to-alls. Every rank runs the same
pipeline with the same seed (text encoding, noise and sampler are replicated), so every
rank holds the same latent and the same frames; rank 0 writes the file.

    run = init_parallel(ParallelLayout(sequence=2, cfg=2))     # under torchrun
    models = parallelize(models, run)                          # same Models interface
    frames = pipeline.generate(models, request)
    all_ranks_succeeded(run)                                   # then rank 0 writes

From the command line (N = sequence x cfg processes, one GPU each):

    torchrun --nproc-per-node 4 -m ltx_core generate --prompt "..." --sequence-parallel 2 --cfg-parallel 2

A collective that fails (a rank crashed or was killed, or did not arrive within the
timeout) raises `RankFailure` on the ranks still alive, so the run ends with a clear
message and without a file. (With NCCL a hung collective may instead end in NCCL's
watchdog abort at the timeout; torchrun then stops the other ranks. Either way no file.)

Limits: the sequence size must divide the attention heads (32 in the 2B and 13B models);
a token count it does not divide is padded at the end and the padding cut off before
attention, so results do not change; a batch the CFG size does not divide is padded with
repeats (guidance off on 2 CFG ranks: both compute the same half).
"""

from __future__ import annotations

import datetime
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..errors import SettingsError
from .collectives import (
    RankFailure,  # noqa: F401 - what a caller of a parallel run catches, named from here too
    all_to_all,
    communicate,
    gather_along,
)
from .split_decode import TimeSplitVAE

# How long a rank waits in a collective for the others (model loading happens before the
# first one, so this also bounds how unevenly ranks may load): NCCL's own default.
DEFAULT_TIMEOUT_S = 600.0


# ---------------------------------------------------------------- layout and groups


@dataclass(frozen=True)
class ParallelLayout:
    """How many ranks split the tokens (`sequence`) and the guidance batch (`cfg`)."""

    sequence: int = 1
    cfg: int = 1

    def __post_init__(self):
        for name in ("sequence", "cfg"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name}-parallel size {value!r} must be a whole number of at least 1")

    @property
    def world_size(self) -> int:
        return self.sequence * self.cfg


@dataclass(frozen=True)
class ParallelRun:
    """One rank's view of the run: its place in the layout and its process groups."""

    layout: ParallelLayout
    rank: int
    device: torch.device
    sequence_group: dist.ProcessGroup | None  # None: this layout does not split tokens
    cfg_group: dist.ProcessGroup | None

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the output; the others hold the same frames."""
        return self.rank == 0


def layout_ranks(layout: ParallelLayout) -> tuple[list[list[int]], list[list[int]]]:
    """(sequence groups, cfg groups) as rank lists, for `rank = c * sequence + s`."""
    s, c = layout.sequence, layout.cfg
    sequence_groups = [[ci * s + si for si in range(s)] for ci in range(c)]
    cfg_groups = [[ci * s + si for ci in range(c)] for si in range(s)]
    return sequence_groups, cfg_groups


def make_groups(
    layout: ParallelLayout, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[dist.ProcessGroup | None, dist.ProcessGroup | None]:
    """This rank's (sequence group, cfg group) on the initialized default group; every
    rank must call it (group creation is collective). A size-1 split gets None."""
    if dist.get_world_size() != layout.world_size:
        raise SettingsError(
            f"sequence-parallel {layout.sequence} x cfg-parallel {layout.cfg} = {layout.world_size} ranks, "
            f"but the run has {dist.get_world_size()}; launch with --nproc-per-node {layout.world_size} "
            f"or choose sizes whose product is {dist.get_world_size()}"
        )
    timeout = datetime.timedelta(seconds=timeout_s)
    sequence_lists, cfg_lists = layout_ranks(layout)
    sequence_group, _ = dist.new_subgroups_by_enumeration(sequence_lists, timeout=timeout)
    cfg_group, _ = dist.new_subgroups_by_enumeration(cfg_lists, timeout=timeout)
    return (sequence_group if layout.sequence > 1 else None, cfg_group if layout.cfg > 1 else None)


def init_parallel(
    layout: ParallelLayout, device: str | torch.device | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> ParallelRun:
    """Join the run torchrun started (RANK, WORLD_SIZE, MASTER_ADDR, LOCAL_RANK in the
    environment; or a default group already initialized) and build the groups. A 1 x 1
    layout outside torchrun is a plain single-process run (nothing is initialized).

    device: 'cuda' (each rank takes cuda:LOCAL_RANK, NCCL) or 'cpu' (gloo); None: CUDA
    when present."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if layout.world_size == 1 and int(os.environ.get("WORLD_SIZE", 1)) == 1 and not dist.is_initialized():
        return ParallelRun(layout, 0, device, None, None)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "WORLD_SIZE" not in os.environ:
            raise SettingsError(
                f"sequence-parallel {layout.sequence} x cfg-parallel {layout.cfg} needs {layout.world_size} "
                f"processes; launch with torchrun --nproc-per-node {layout.world_size} -m ltx_core generate ..."
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=timeout_s), device_id=device if device.type == "cuda" else None
        )
    sequence_group, cfg_group = make_groups(layout, timeout_s)
    return ParallelRun(layout, dist.get_rank(), device, sequence_group, cfg_group)


def all_ranks_succeeded(run: ParallelRun) -> None:
    """Return once every rank got here; raise RankFailure if one never does. Call after
    generation and before writing, so no rank writes a video another rank failed on."""
    if run.world_size == 1:
        return
    done = torch.ones(1, device=run.device)
    communicate(dist.all_reduce, done)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- sequence parallel attention


def heads_to_tokens(qkv: Tensor, group: dist.ProcessGroup) -> Tensor:
    """(3, B, H, t, d): my t tokens, all heads -> (3, B, H/S, S*t, d): all tokens, my heads."""
    size = dist.get_world_size(group)
    send = qkv.unflatten(2, (size, -1)).movedim(2, 0)  # (S, 3, B, H/S, t, d): slice j for rank j
    received = all_to_all(send, group)  # slice j: rank j's tokens of my heads
    return received.movedim(0, 3).flatten(3, 4)


def tokens_to_heads(out: Tensor, group: dist.ProcessGroup) -> Tensor:
    """(B, H/S, S*t, d): all tokens, my heads -> (B, H, t, d): my tokens, all heads."""
    size = dist.get_world_size(group)
    send = out.unflatten(2, (size, -1)).movedim(2, 0)  # (S, B, H/S, t, d): rank j's tokens
    received = all_to_all(send, group)  # slice j: heads of group j for my tokens
    return received.movedim(0, 1).flatten(1, 2)


class UlyssesAttention:
    """Self-attention on a token shard: the `attention` of the model's self-attention kernels.

    `tokens` is the real sequence length of the current call; the padding that makes it
    divisible by the group size sits at the end, so it is cut off before attention (no
    mask needed, any SDPA backend applies) and zero-filled after."""

    def __init__(self, group: dist.ProcessGroup, inner: Callable = F.scaled_dot_product_attention):
        self.group = group
        self.inner = inner
        self.tokens: int | None = None

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if attn_mask is not None:
            raise NotImplementedError("sequence-parallel self-attention takes no mask")
        q, k, v = heads_to_tokens(torch.stack([q, k, v]), self.group).unbind(0)  # (B, H/S, T', d)
        padded = q.shape[2]
        real = padded if self.tokens is None else self.tokens
        out = self.inner(q[:, :, :real], k[:, :, :real], v[:, :, :real])
        out = F.pad(out, (0, 0, 0, padded - real))
        return tokens_to_heads(out, self.group)


# ---------------------------------------------------------------- the parallel transformer


def _padded(length: int, parts: int) -> int:
    return math.ceil(length / parts) * parts


def _shard(tensor: Tensor, dim: int, parts: int, index: int, pad_value: str = "zeros") -> Tensor:
    """Piece `index` of `parts` equal pieces along `dim`, after padding to a multiple of
    `parts` (zeros, or repeats of the last entry: the batch, where zeros would be a
    fully masked text)."""
    length = tensor.shape[dim]
    extra = _padded(length, parts) - length
    if extra:
        if pad_value == "zeros":
            filler = tensor.new_zeros(*tensor.shape[:dim], extra, *tensor.shape[dim + 1 :])
        else:
            filler = tensor.narrow(dim, length - 1, 1).expand(*tensor.shape[:dim], extra, *tensor.shape[dim + 1 :])
        tensor = torch.cat([tensor, filler], dim=dim)
    return tensor.chunk(parts, dim=dim)[index]


class ParallelTransformer:
    """The transformer's call signature, run sequence- and/or CFG-parallel over `run`'s
    groups; every rank gets the whole velocity. `model` is an `LTXVTransformer` or an
    `speed.optimize.OptimizedTransformer` (its `.model` gets the attention hook).

    Installing the hook changes the model's self-attention modules; `close()` restores
    them, after which the model runs single-process again."""

    def __init__(self, model, run: ParallelRun):
        # `model` is an `LTXVTransformer` or a runner of one (`speed.optimize.OptimizedTransformer`)
        self.inner = None if isinstance(model, torch.nn.Module) else model
        self.module = model if self.inner is None else model.model
        self.model = self.module
        self.parallel = run
        self.attention = None
        # rank = c * sequence + s (`layout_ranks`)
        self._cfg_rank, self._sequence_rank = divmod(run.rank, run.layout.sequence)
        if run.sequence_group is not None:
            self._install_attention(run.sequence_group)

    def _install_attention(self, group: dist.ProcessGroup) -> None:
        heads, size = self.module.cfg.num_attention_heads, self.parallel.layout.sequence
        if heads % size:
            allowed = [n for n in range(1, heads + 1) if heads % n == 0]
            raise SettingsError(
                f"sequence-parallel {size} does not divide the model's {heads} attention heads; "
                f"allowed sizes: {', '.join(map(str, allowed))}"
            )
        if isinstance(self.module.kernels.attention, UlyssesAttention):
            raise RuntimeError("this transformer already runs sequence-parallel; close() that wrapper first")
        self.attention = UlyssesAttention(group, inner=self.module.kernels.attention)
        self._own_kernels = self.module.use_kernels(replace(self.module.kernels, attention=self.attention))

    def close(self) -> None:
        """Give the model its own self-attention back."""
        if self.attention is None:
            return
        self.module.use_kernels(self._own_kernels)
        self.attention = None

    def __call__(
        self, latent: Tensor, timestep: Tensor, text: Tensor, text_mask: Tensor | None, coords: Tensor
    ) -> Tensor:
        return self.run(self.module, latent, timestep, text, text_mask, coords)

    def run(
        self,
        fn,
        latent: Tensor,
        timestep: Tensor,
        text: Tensor,
        text_mask: Tensor | None,
        coords: Tensor,
        *extra: Tensor,
    ) -> Tensor:
        """`fn(latent, timestep, text, text_mask, coords, *extra)` (the model's forward or
        guidance's perturbed forward) over the ranks; `extra` tensors are per batch item."""
        self.module.check_inputs(latent, timestep, text, text_mask, coords)  # the messages of one process
        batch = latent.shape[0]
        inputs = [latent, timestep, text, text_mask, coords, *extra]
        if self.parallel.cfg_group is not None:
            inputs = self._batch_shard(inputs, batch)
        out = self._sequence_forward(fn, *inputs)
        if self.parallel.cfg_group is not None:
            out = gather_along(out, 0, self.parallel.cfg_group)[:batch]
        return out

    def _batch_shard(self, inputs: list, batch: int) -> list:
        """This CFG rank's share of every per-item input (the batch padded with repeats)."""
        parts = self.parallel.layout.cfg
        if batch < parts:
            warnings.warn(
                f"cfg-parallel {parts} with a batch of {batch} (guidance off?): ranks repeat work; "
                "sequence parallelism would use them better",
                stacklevel=3,
            )
        return [
            _shard(value, 0, parts, self._cfg_rank, "repeat")
            if isinstance(value, Tensor) and value.ndim and value.shape[0] == batch
            else value
            for value in inputs
        ]

    def _sequence_forward(
        self,
        fn,
        latent: Tensor,
        timestep: Tensor,
        text: Tensor,
        text_mask: Tensor | None,
        coords: Tensor,
        *extra: Tensor,
    ) -> Tensor:
        inner = self.inner.run if self.inner is not None else (lambda f, *a: f(*a))
        if self.parallel.sequence_group is None:
            return inner(fn, latent, timestep, text, text_mask, coords, *extra)
        parts, index = self.parallel.layout.sequence, self._sequence_rank
        tokens = latent.shape[1]
        if timestep.ndim == 2 and timestep.shape[1] == tokens:  # per-token sigmas follow their tokens
            timestep = _shard(timestep, 1, parts, index)
        self.attention.tokens = tokens
        out = inner(
            fn, _shard(latent, 1, parts, index), timestep, text, text_mask, _shard(coords, 2, parts, index), *extra
        )  # (B, T'/S, C)
        return gather_along(out, 1, self.parallel.sequence_group)[:, :tokens]


def parallelize(models, run: ParallelRun):
    """`pipeline.Models` whose transformer and VAE decode run over `run`'s ranks; the text
    encoder stays replicated (one prompt costs little next to the DiT)."""
    if run.world_size == 1:
        return models
    runner = models.runner
    if run.sequence_group is not None or run.cfg_group is not None:
        runner = ParallelTransformer(models.runner or models.transformer, run)
    return replace(models, runner=runner, vae=TimeSplitVAE(models.vae))
