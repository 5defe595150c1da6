"""A GGUF file (ComfyUI-GGUF's LTX-Video transformer) as a checkpoint: what
`loading.inspect_checkpoint` returns for it, the transformer's tensors as a
`QuantizedSource` (quantized weights stay as stored; F32/F16/BF16 tensors load as floats).

Such a file holds only the transformer: the version comes from its tensors (48 blocks:
the 13B; otherwise the 2B, whose releases share one tensor layout) and the configuration
from a `config` metadata entry where the file has one (the official single file's JSON),
otherwise the version's stock one. The VAE must come from another file.

Imported only for GGUF files (`loading`), so other loads never import `gguf`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError
from .gguf_file import STORED_PREFIX, GGUFFile
from .gguf_quants import dequantize
from .keymaps import vae_family
from .quantized import FLOAT_TYPES, GGUF_KIND_PREFIX, QuantizedSource
from .tensors import TensorSource
from .versions import (
    LAYERS_13B,
    STOCK_CONFIGS,
    TRANSFORMER_MARKER,
    CheckpointInfo,
    ModelConfigs,
    config_metadata_problem,
    configs_from_metadata,
    count_blocks,
    describe_keys,
    version_with_size,
)

# metadata entries that may carry the official `config` JSON
CONFIG_KEYS = ("config", "ltxv.config")
# the 2B releases' tensors are alike; this is the architecture their newest files have
DEFAULT_2B_VERSION = "0.9.5"


class GGUFTensors:
    """A GGUF file in the shape `TensorSource` reads a file: `path`, `shapes` (torch
    order), `read(keys, dtype, device)` for float tensors, and `raw(key)` for stored bytes."""

    def __init__(self, file: GGUFFile):
        self.file, self.path = file, file.path
        self.shapes = {name: file.shape(name) for name in file.names}
        self.qtypes = {name: file.qtype(name) for name in file.names}

    def read(self, keys, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Tensors `keys`, dequantized, in `dtype` (None: F32/F16/BF16 as stored, others fp32)."""
        out = {}
        for key in keys:
            qtype = self.qtypes[key]
            raw = self.file.raw(key).to(device)
            out[key] = dequantize(raw, qtype, self.shapes[key], dtype or FLOAT_TYPES.get(qtype, torch.float32))
        return out

    def raw(self, key: str) -> Tensor:
        return self.file.raw(key)


def inspect_gguf(path: Path) -> tuple[CheckpointInfo, dict[str, TensorSource]]:
    """Info and the transformer's tensors of a GGUF file; only header fields are read."""
    tensors = GGUFTensors(GGUFFile(path))
    names = {key.removeprefix(STORED_PREFIX): key for key in tensors.shapes}
    if TRANSFORMER_MARKER not in names:
        raise CheckpointError(f"{str(path)!r} holds no LTX-Video transformer: {describe_keys(names)}")
    configs, version, config_source = _configs(tensors, path, count_blocks(names, ""))
    kinds = {
        n: f"{GGUF_KIND_PREFIX}{tensors.qtypes[k]}" for n, k in names.items() if tensors.qtypes[k] not in FLOAT_TYPES
    }
    locations = {n: (tensors, k) for n, k in names.items()}
    source = QuantizedSource("transformer", locations, kinds, {}, "gguf")
    info = CheckpointInfo(path, "gguf", version, configs, config_source, quantization="gguf")
    return info, {"transformer": source}


def _configs(tensors: GGUFTensors, path: Path, blocks: int) -> tuple[ModelConfigs, str, str]:
    """(configs, version, where the config came from) of a GGUF transformer."""
    metadata = {"config": next((tensors.file.metadata[k] for k in CONFIG_KEYS if k in tensors.file.metadata), None)}
    if isinstance(metadata["config"], str) and config_metadata_problem(metadata) is None:
        configs = configs_from_metadata(json.loads(metadata["config"]), path)
        layers = configs.transformer.num_layers
        if layers != blocks:
            raise CheckpointError(
                f"{str(path)!r}: its metadata config has {layers} transformer blocks but its tensors {blocks}"
            )
        return configs, version_with_size(vae_family(configs.vae), layers), "metadata"
    if blocks == LAYERS_13B:
        return STOCK_CONFIGS["0.9.7"], "0.9.7", "stock"
    # stacklevel 4: the line that called `loading.inspect_checkpoint`
    warnings.warn(
        f"{str(path)!r} carries no LTX-Video config and the 2B releases' transformers have the same tensors: "
        f"using the stock {DEFAULT_2B_VERSION} configuration (the 0.9.5-0.9.8 2B models); a 0.9.0 or 0.9.1 "
        "transformer would need its own config",
        stacklevel=4,
    )
    return STOCK_CONFIGS[DEFAULT_2B_VERSION], DEFAULT_2B_VERSION, "stock"
