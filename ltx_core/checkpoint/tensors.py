"""Tensors in `.safetensors` files: a file's header (names, shapes, metadata) read without
its tensors, where each of one model's tensors lies (one file or the shards of several),
and the refusal of a model whose weights hold a NaN or an infinity.

Weights come only from safetensors; nothing here opens a pickle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError

# Non-finite tensors named in full in an error; the rest are counted.
NON_FINITE_NAMED = 5


class SafetensorsHeader:
    """Names, shapes and metadata of one `.safetensors` file, read without its tensors."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                self.metadata: dict[str, str] = file.metadata() or {}
                slices = {k: file.get_slice(k) for k in file.keys()}
                self.shapes: dict[str, tuple[int, ...]] = {k: tuple(s.get_shape()) for k, s in slices.items()}
                # safetensors' names ("BF16", "F8_E4M3"): how `quantized.file_format` tells formats apart
                self.dtypes: dict[str, str] = {k: s.get_dtype() for k, s in slices.items()}
        except SafetensorError as error:
            raise CheckpointError(
                f"{str(path)!r} is truncated or corrupt: safetensors cannot read it ({error}); download it again"
            ) from error

    def read(
        self, keys: Iterable[str], dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """The tensors `keys` in `dtype` (None: as stored) on `device`."""
        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as file:
                return {key: file.get_tensor(key).to(device=device, dtype=dtype) for key in keys}
        except SafetensorError as error:
            raise CheckpointError(f"{str(self.path)!r} is truncated or corrupt: {error}") from error


@dataclass(frozen=True)
class TensorSource:
    """One model's tensors in one or more files: our (official) name -> (file, key there)."""

    part: str  # "transformer" or "vae"
    locations: dict[str, tuple[SafetensorsHeader, str]]

    def shape(self, name: str) -> tuple[int, ...]:
        header, key = self.locations[name]
        return header.shapes[key]

    def where(self, name: str) -> str:
        header, key = self.locations[name]
        return f"{key!r} in {str(header.path)!r}"

    def label(self) -> str:
        """The file, or the first shard and how many more, for an error message."""
        files = sorted({str(header.path) for header, _ in self.locations.values()})
        return repr(files[0]) if len(files) == 1 else f"{repr(files[0])} (+{len(files) - 1} shards)"

    def read(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """Every tensor in `dtype` on `device`; refused if any holds a NaN or an infinity."""
        by_file: dict[SafetensorsHeader, dict[str, str]] = {}
        for name, (header, key) in self.locations.items():
            by_file.setdefault(header, {})[key] = name
        state = {}
        for header, names in by_file.items():
            for key, tensor in header.read(names, dtype, device).items():
                state[names[key]] = tensor
        refuse_non_finite(self, state, dtype)
        return state

    def stored(self, name: str) -> torch.Tensor:
        """One tensor as the file stores it, on the CPU."""
        header, key = self.locations[name]
        return header.read([key])[key]


def non_finite_names(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors that hold a NaN or an infinity. One min/max pass over
    each (a NaN or an infinity reaches the min or the max), no copy, one device sync."""
    names = [name for name, tensor in state.items() if tensor.is_floating_point() and tensor.numel()]
    if not names:
        return []
    flags = torch.stack([_holds_non_finite(state[name]) for name in names])
    return [name for name, bad in zip(names, flags.tolist()) if bad]


def _holds_non_finite(tensor: torch.Tensor) -> torch.Tensor:
    low, high = torch.aminmax(tensor)
    return ~(torch.isfinite(low) & torch.isfinite(high))


def refuse_non_finite(source: TensorSource, state: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """A model with a NaN or an infinity in a weight generates black or noisy frames from
    every prompt; refuse it at load, naming the tensors and whether the file holds those
    values or the conversion to `dtype` made them (a finite value beyond fp16's range)."""
    bad = non_finite_names(state)
    if not bad:
        return
    named = ", ".join(
        f"{source.locations[name][1]} ({_count_non_finite(state[name])})" for name in bad[:NON_FINITE_NAMED]
    )
    more = f" and {len(bad) - NON_FINITE_NAMED} more" if len(bad) > NON_FINITE_NAMED else ""
    in_file = any(bool(_holds_non_finite(source.stored(name))) for name in bad[:NON_FINITE_NAMED])
    why = (
        "the file is damaged (a broken download, or saved from a training run that diverged); download it again"
        if in_file
        else f"their values are finite in the file but overflow {str(dtype).removeprefix('torch.')}; "
        "load the model in bf16 or fp32"
    )
    raise CheckpointError(
        f"{source.label()}: {len(bad)} {source.part} tensor(s) hold NaN or infinite values: {named}{more}; {why}"
    )


def _count_non_finite(tensor: torch.Tensor) -> str:
    nan, inf = int(tensor.isnan().sum()), int(tensor.isinf().sum())
    return f"{nan} NaN and {inf} infinite of {tensor.numel()} values"
