"""Writing the quantized files people download, from an official single file's tensors:
Lightricks' FP8 layout, ComfyUI's scaled FP8, and ComfyUI-GGUF's transformer files. What
the tests and benchmarks make their files with, and a converter for users' own weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .keymaps import TRANSFORMER_PREFIX
from .quantized import SCALED_FP8_MARKERS
from .versions import ModelConfigs
from .writing import config_metadata

# The weights Lightricks' FP8 files store as FP8: the blocks' attention and feed-forward.
BLOCK_LINEAR_WEIGHT = re.compile(r"transformer_blocks\.\d+\.(attn1|attn2|ff)\..*weight$")
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
SCALED_FP8_MARKER = f"{TRANSFORMER_PREFIX}{SCALED_FP8_MARKERS[0]}"


def is_block_linear_weight(name: str, tensor: torch.Tensor) -> bool:
    return tensor.ndim == 2 and BLOCK_LINEAR_WEIGHT.search(name) is not None


def fp8_tensors(tensors: Mapping[str, torch.Tensor], scaled: bool, device: str | torch.device = "cpu") -> dict:
    """Official single-file tensors -> an FP8 file's: Lightricks' (block linear weights cast
    to e4m3, values as they are) or ComfyUI's scaled (weight / scale cast, per-tensor fp32
    `scale_weight` = amax / 448, `scale_input` 1, and the `scaled_fp8` marker)."""
    out = {}
    for name, tensor in tensors.items():
        if not (name.startswith(TRANSFORMER_PREFIX) and is_block_linear_weight(name, tensor)):
            out[name] = tensor
            continue
        weight = tensor.to(device).float()
        if not scaled:
            out[name] = weight.clamp(-FP8_MAX, FP8_MAX).to(FP8).cpu()  # a cast past the range is NaN
            continue
        scale = weight.abs().amax().clamp(min=1e-12) / FP8_MAX
        out[name] = (weight / scale).to(FP8).cpu()
        layer = name.removesuffix(".weight")
        out[f"{layer}.scale_weight"] = scale.reshape(()).cpu()
        out[f"{layer}.scale_input"] = torch.ones(())
    if scaled:
        out[SCALED_FP8_MARKER] = torch.empty(0, dtype=FP8)
    return out


def transformer_only(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The transformer's tensors of an official single file, prefix stripped (GGUF's names)."""
    return {k.removeprefix(TRANSFORMER_PREFIX): v for k, v in tensors.items() if k.startswith(TRANSFORMER_PREFIX)}


def gguf_types(tensors: Mapping[str, torch.Tensor], qtype: str, mixed: Mapping[str, str] | None = None) -> dict:
    """Each transformer tensor's GGUF type: `qtype` where whole blocks fit (1-D tensors and
    `scale_shift_table` in F32, as ComfyUI-GGUF keeps them); `mixed` maps name suffixes to
    other types (a Q4_K_M-like file keeps `attn1.to_v.weight` in Q6_K, say)."""
    from .gguf_writing import choose_types

    chosen = choose_types(tensors, qtype)
    for name in chosen:
        for suffix, other in (mixed or {}).items():
            if name.endswith(suffix) and chosen[name] == qtype:
                chosen[name] = other
    return chosen


def write_gguf_checkpoint(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    qtypes: Mapping[str, str],
    configs: ModelConfigs | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """A ComfyUI-GGUF-style file of the transformer `tensors` (names without prefix), each
    quantized on `device`; `configs` adds the official `config` JSON entry (ComfyUI-GGUF's
    own files carry none, so their config is the stock one of their version)."""
    from .gguf_writing import write_gguf

    metadata = {"config": json.dumps(config_metadata(configs))} if configs is not None else None
    write_gguf(path, tensors, dict(qtypes), metadata=metadata, device=device)
    return Path(path)
