"""The collectives every parallel module calls through: a failed one names the lost rank's
consequence (`RankFailure`) instead of surfacing a backend error, so a run with a dead
rank ends with a clear message and without a file.

Both the sharded transformer (`distributed`) and the time-split decode (`split_decode`)
talk through these, so neither imports the other for them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor


class RankFailure(RuntimeError):
    """Another rank of the run crashed, was killed or stopped answering."""


def communicate(op: Callable, *args, **kwargs):
    """Run a collective; its failure means another rank is gone: say so plainly."""
    try:
        return op(*args, **kwargs)
    except (RuntimeError, dist.DistError) as error:
        rank, world = dist.get_rank(), dist.get_world_size()
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RankFailure(
            f"rank {rank} of {world}: {op.__name__} failed ({reason}); another rank crashed, was killed or did "
            "not answer within the timeout, so the run is stopped and no video is written"
        ) from error


def gather_along(tensor: Tensor, dim: int, group: dist.ProcessGroup | None) -> Tensor:
    """All-gather equal-shaped pieces of the group's ranks and concatenate them in rank order."""
    tensor = tensor.contiguous()
    pieces = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    communicate(dist.all_gather, pieces, tensor, group=group)
    return torch.cat(pieces, dim=dim)


def all_to_all(tensor: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Slice i of dim 0 goes to rank i; slice i of the result came from rank i."""
    tensor = tensor.contiguous()
    out = torch.empty_like(tensor)  # like a contiguous tensor: the collectives write densely
    communicate(dist.all_to_all_single, out, tensor, group=group)
    return out
