"""GGUF checkpoints of LTX-Video, as ComfyUI-GGUF (city96) writes them.

Such a file holds the transformer only, under the official key names
(`transformer_blocks.0.attn1.to_q.weight`, usually without `model.diffusion_model.`),
with `general.architecture` = "ltxv". Each tensor keeps its ggml type: large weights
quantized (Q8_0, Q4_K, ...), 1-D tensors and `scale_shift_table` in F32 or F16.

The file is parsed by the `gguf` package's GGUFReader, never by hand, and memory-mapped:
nothing is read until a tensor's bytes are used. `gguf` is imported inside functions, so
importing this module costs nothing at start-up.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import CheckpointError
from .gguf_quants import SUPPORTED_TYPES

GGUF_MAGIC = b"GGUF"
LTXV_ARCHITECTURE = "ltxv"
# Architectures ComfyUI-GGUF reads by guessing from the tensor names: none (files of
# stable-diffusion.cpp) and "pig" (files of its own compatibility tool).
GUESSED_ARCHITECTURES = (None, "pig")
# Tensors that mark an LTX-Video transformer (ComfyUI-GGUF's detection keys, minus the
# 28th block, which a smaller model lacks), after the optional prefix.
LTXV_MARKERS = ("adaln_single.emb.timestep_embedder.linear_2.weight", "caption_projection.linear_2.weight")
STORED_PREFIX = "model.diffusion_model."
# ComfyUI-GGUF's converter flattens some tensors to rows of 256 values for K-quants and
# keeps their real shape here (torch order).
ORIGINAL_SHAPE_KEY = "comfy.gguf.orig_shape."
# What GGUFReader raises on bytes that are not a whole, well-formed GGUF file (it reads
# with numpy: short reads fail to reshape, bad enums and strings fail to convert).
READER_ERRORS = (ValueError, IndexError, KeyError, OverflowError, TypeError, MemoryError)


def is_gguf(path: str | Path) -> bool:
    """Whether `path` is a GGUF file, by its first four bytes (b"GGUF"), not its name."""
    try:
        with open(path, "rb") as file:
            return file.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


class GGUFFile:
    """One LTX-Video GGUF file: its tensors' names, shapes, types and stored bytes.

    Opening checks the whole header: a file that is not GGUF, is truncated, is of another
    architecture, or holds a tensor of a type SUPPORTED_TYPES lacks is a CheckpointError.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader = _open_reader(self.path)
        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}
        try:  # fields are decoded lazily: a corrupt string fails only here
            self.metadata: dict[str, str | int | float | bool] = _scalar_fields(self._reader)
            self._original_shapes = _original_shapes(self._reader, self.path)
        except READER_ERRORS as error:
            raise _corrupt(self.path, error) from error
        self.architecture = self._check_architecture()
        self._check_types()

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, {len(self._tensors)} tensors)"

    @property
    def names(self) -> list[str]:
        """Tensor names as stored (a `model.diffusion_model.` prefix, if any, kept)."""
        return list(self._tensors)

    def _tensor(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise CheckpointError(f"{str(self.path)!r} has no tensor {name!r}") from None

    def qtype(self, name: str) -> str:
        """The ggml type of tensor `name`, e.g. "Q4_K" (a `gguf.GGMLQuantizationType` name)."""
        return self._tensor(name).tensor_type.name

    def shape(self, name: str) -> tuple[int, ...]:
        """Tensor `name`'s shape in torch order (outermost first): GGUF stores dimensions
        innermost first, so they are reversed; a ComfyUI-GGUF original shape wins."""
        tensor = self._tensor(name)
        if name in self._original_shapes:
            return self._original_shapes[name]
        return tuple(int(dim) for dim in reversed(tensor.shape.tolist()))

    def raw(self, name: str) -> torch.Tensor:
        """Tensor `name`'s stored bytes as a uint8 tensor of rows of blocks (the stored
        dimensions outermost first, the last one in bytes), not dequantized.

        No copy: the tensor shares the file's copy-on-write memory map, which it keeps
        alive on its own after this object is gone. Copy-on-write (not read-only) makes the
        bytes safe to write to, in memory only: a write to a read-only map would crash the
        process, and copying up front would double the memory of a 10+ GB file."""
        return torch.from_numpy(self._tensor(name).data).view(torch.uint8)

    def _check_architecture(self) -> str:
        """ "ltxv", or a CheckpointError naming the file's architecture. Files without one
        (or "pig") are accepted when their tensor names are LTX-Video's."""
        architecture = self.metadata.get("general.architecture")
        if architecture == LTXV_ARCHITECTURE:
            return architecture
        if architecture in GUESSED_ARCHITECTURES and self._has_ltxv_tensors():
            return LTXV_ARCHITECTURE
        raise CheckpointError(
            f"{str(self.path)!r} is a GGUF file of architecture {architecture!r}, not LTX-Video; "
            f"allowed: a ComfyUI-GGUF LTX-Video transformer (general.architecture = {LTXV_ARCHITECTURE!r})"
        )

    def _has_ltxv_tensors(self) -> bool:
        names = {name.removeprefix(STORED_PREFIX) for name in self._tensors}
        return all(marker in names for marker in LTXV_MARKERS)

    def _check_types(self) -> None:
        """A CheckpointError naming the first tensors of types we cannot dequantize."""
        bad = [f"{name} ({self.qtype(name)})" for name in self._tensors if self.qtype(name) not in SUPPORTED_TYPES]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise CheckpointError(
                f"{str(self.path)!r} holds tensors of unsupported GGUF types: {shown}; "
                f"supported types: {', '.join(SUPPORTED_TYPES)}"
            )
        for name in self._original_shapes:
            self._check_original_shape(name)

    def _check_original_shape(self, name: str) -> None:
        stored = self._tensor(name)
        original = self._original_shapes[name]
        if math.prod(original) != int(stored.n_elements):
            raise CheckpointError(
                f"{str(self.path)!r}: the original shape {list(original)} of tensor {name!r} does not hold "
                f"its {int(stored.n_elements)} stored values"
            )


def _open_reader(path: Path):
    """GGUFReader over `path`, copy-on-write mapped; its failures become CheckpointErrors."""
    if not path.is_file():
        raise CheckpointError(f"GGUF file {str(path)!r} does not exist (or is not a file)")
    if not is_gguf(path):
        raise CheckpointError(
            f"{str(path)!r} is not a GGUF file: it does not start with the bytes {GGUF_MAGIC!r}; "
            "allowed: a .gguf file as ComfyUI-GGUF writes it"
        )
    import gguf

    try:
        reader = gguf.GGUFReader(path, mode="c")
    except READER_ERRORS as error:
        raise _corrupt(path, error) from error
    if reader.byte_order == "S":
        # torch cannot view byte-swapped data; every published GGUF file is little-endian
        raise CheckpointError(f"{str(path)!r} is a big-endian GGUF file; allowed: little-endian GGUF files")
    return reader


def _corrupt(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"{str(path)!r} is a truncated or corrupt GGUF file: the gguf package cannot read it ({error}); "
        "download or convert it again"
    )


def _scalar_fields(reader) -> dict[str, str | int | float | bool]:
    """The file's key-value fields that are one string, number or bool (arrays skipped;
    the reader's own `GGUF.*` entries too)."""
    import gguf

    fields = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or not field.types or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        value = field.contents()
        fields[name] = value.item() if hasattr(value, "item") else value
    return fields


def _original_shapes(reader, path: Path) -> dict[str, tuple[int, ...]]:
    """ComfyUI-GGUF's `comfy.gguf.orig_shape.<name>` integer arrays, by tensor name."""
    import gguf

    shapes = {}
    for name, field in reader.fields.items():
        if not name.startswith(ORIGINAL_SHAPE_KEY):
            continue
        integers = (gguf.GGUFValueType.INT32, gguf.GGUFValueType.INT64, gguf.GGUFValueType.UINT32)
        if len(field.types) != 2 or field.types[0] != gguf.GGUFValueType.ARRAY or field.types[1] not in integers:
            raise CheckpointError(f"{str(path)!r}: {name} must be an array of integers, got types {field.types}")
        shapes[name.removeprefix(ORIGINAL_SHAPE_KEY)] = tuple(int(v) for v in field.contents())
    return shapes
