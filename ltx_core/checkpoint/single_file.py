"""The official single `.safetensors` file: the transformer under `model.diffusion_model.`,
the VAE under `vae.`, and the `config` metadata entry. Our modules carry the official
names, so each model's tensors are the file's with the prefix stripped.

Read from its header alone (names, shapes, dtypes, metadata); `loading` builds the models.
FP8 files (Lightricks' and ComfyUI's scaled ones, `quantized`) have the same layout: their
FP8 transformer weights come as a `QuantizedSource`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import CheckpointError
from .keymaps import TRANSFORMER_PREFIX, VAE_PREFIX
from .quantized import SCALED_FP8_MARKERS, file_format, single_file_source
from .tensors import SafetensorsHeader, TensorSource
from .versions import (
    STOCK_CONFIGS,
    CheckpointInfo,
    config_metadata_problem,
    configs_from_metadata,
    describe_keys,
    detect_version,
)

SAFETENSORS_SUFFIX = ".safetensors"


def inspect_single_file(path: Path) -> tuple[CheckpointInfo, dict[str, TensorSource]]:
    """What `loading.inspect_checkpoint` returns for a file: its info (version from the
    tensors, configs from the metadata or the version's stock ones) and each model's tensors."""
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a .safetensors file, nor GGUF (its first bytes are not b'GGUF'); "
            "allowed: an official single .safetensors file, a diffusers folder, or a GGUF transformer"
        )
    header = SafetensorsHeader(path)
    version = detect_version(header.shapes, header.metadata, source=repr(str(path)))
    problem = config_metadata_problem(header.metadata)
    if problem is None:
        configs = configs_from_metadata(json.loads(header.metadata["config"]), path)
    else:
        # stacklevel 3: the line that called `loading.inspect_checkpoint`
        warnings.warn(
            f"{str(path)!r} {problem}; its tensors are LTX-Video {version}: using that version's stock configuration",
            stacklevel=3,
        )
        configs = STOCK_CONFIGS[version]
    _warn_of_other_tensors(header, path)
    fmt = file_format(header.dtypes, header.metadata, repr(str(path)))
    sources = {
        part: single_file_source(header, part, prefix, fmt)
        for part, prefix in (("transformer", TRANSFORMER_PREFIX), ("vae", VAE_PREFIX))
    }
    config_source = "stock" if problem else "metadata"
    info = CheckpointInfo(path, "single_file", version, configs, config_source, quantization=fmt)
    return info, sources


def _warn_of_other_tensors(header: SafetensorsHeader, path: Path) -> None:
    """A bundled text encoder, say, is not ours to load, but the user is told."""
    ours = (TRANSFORMER_PREFIX, VAE_PREFIX)
    other = sorted(k for k in header.shapes if not k.startswith(ours) and k not in SCALED_FP8_MARKERS)
    if other:
        warnings.warn(
            f"{str(path)!r}: {len(other)} tensors outside {TRANSFORMER_PREFIX} and {VAE_PREFIX} are "
            f"ignored ({describe_keys(other)})",
            stacklevel=4,
        )
