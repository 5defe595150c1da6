"""Weights read off `.safetensors` headers (an 8-byte length, then JSON) without torch and
without the tensors: the planner's exact weight bytes where the files are at hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .workload import DTYPE_BYTES, T5_XXL, TextEncoderSize


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
    return {
        key: tuple(entry["shape"])
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "shape" in entry
    }


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
