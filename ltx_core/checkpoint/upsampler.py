"""Latent upsampler files -> `LatentUpsampler`: the official single `.safetensors`
(`ltxv-spatial-upscaler-*.safetensors`, `ltxv-temporal-upscaler-*.safetensors`: tensors
under the model's own names, the config as JSON in the `config` metadata entry, what
Lightricks' `LatentUpsampler.from_pretrained` reads) or a diffusers folder (the
`latent_upsampler/` of `LTXLatentUpsamplePipeline`, or that folder itself: `config.json`
and `diffusion_pytorch_model.safetensors`, the same tensor names).

Built as `loading` builds the transformer and the VAE: every check on the headers first,
then on the meta device, strictly, refusing NaN or infinite weights. Safetensors only.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError, LTXVError
from ..models.latent_upsampler import LatentUpsampler, LatentUpsamplerConfig
from ..preflight import check_model_path
from .diffusers_folder import diffusers_component
from .keymaps import TRANSFORMER_PREFIX, VAE_PREFIX
from .loading import build_strict, resolve_device, resolve_dtype
from .tensors import SafetensorsHeader, TensorSource
from .versions import describe_keys

PART = "latent upsampler"
# The stem convolution and the widening one: every upsampler has both, no other model does.
MARKERS = ("initial_conv.weight", "upsampler.0.weight")
DIFFUSERS_SUBFOLDER = "latent_upsampler"
# What to pass instead, for a file of another kind.
UPSAMPLER_FILES = "an ltxv-spatial-upscaler-*.safetensors or ltxv-temporal-upscaler-*.safetensors file"


def load_latent_upsampler(
    path: str | Path, dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LatentUpsampler:
    """The upsampler of an official single file or a diffusers folder, in `dtype` ("fp32",
    "bf16", "fp16") on `device`, in eval mode; its config is `.cfg`."""
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    cfg, source = inspect_latent_upsampler(path)
    return build_strict(LatentUpsampler, cfg, source, dtype, device)


def inspect_latent_upsampler(path: str | Path) -> tuple[LatentUpsamplerConfig, TensorSource]:
    """Every check that needs no tensor data: the path, the format, that it is an
    upsampler, its config; and where its tensors are."""
    path = check_model_path(path)
    return _inspect_folder(path) if path.is_dir() else _inspect_single_file(path)


def _inspect_single_file(path: Path) -> tuple[LatentUpsamplerConfig, TensorSource]:
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"latent upsampler {str(path)!r} is not a .safetensors file; only .safetensors are loaded"
        )
    header = SafetensorsHeader(path)
    where = repr(str(path))
    _require_upsampler(header.shapes, where)
    cfg = _config_of_single_file(header, where)
    return cfg, TensorSource(PART, {key: (header, key) for key in header.shapes})


def _inspect_folder(folder: Path) -> tuple[LatentUpsamplerConfig, TensorSource]:
    component = folder / DIFFUSERS_SUBFOLDER if (folder / DIFFUSERS_SUBFOLDER).is_dir() else folder
    if not (component / "config.json").is_file():
        if any((folder / name).is_dir() for name in ("transformer", "vae")):
            raise CheckpointError(
                f"folder {str(folder)!r} is a diffusers LTX-Video model folder (transformer/, "
                f"vae/), not a latent upsampler; load it as the checkpoint, and pass here "
                f"{UPSAMPLER_FILES} or a diffusers folder holding {DIFFUSERS_SUBFOLDER}/"
            )
        lacks = (
            f"its {DIFFUSERS_SUBFOLDER}/ has no config.json"
            if component != folder
            else f"it holds neither {DIFFUSERS_SUBFOLDER}/ nor config.json"
        )
        raise CheckpointError(
            f"folder {str(folder)!r} is not a diffusers latent upsampler: {lacks}; "
            f"pass {UPSAMPLER_FILES} or such a folder"
        )
    config, headers = diffusers_component(component)
    where = repr(str(component))
    header_of = {key: header for header in headers for key in header.shapes}
    _require_upsampler({key: header.shapes[key] for key, header in header_of.items()}, where)
    return _config(config, where), TensorSource(PART, {key: (header, key) for key, header in header_of.items()})


def _require_upsampler(shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Refuse another model's file, saying what it is and what to pass instead."""
    if all(marker in shapes for marker in MARKERS):
        return
    if any(key.startswith((TRANSFORMER_PREFIX, VAE_PREFIX)) for key in shapes):
        raise CheckpointError(
            f"{where} is an LTX-Video model checkpoint (transformer and VAE), not a latent "
            f"upsampler; load it as the checkpoint, and pass here {UPSAMPLER_FILES}"
        )
    raise CheckpointError(
        f"{where} is not an LTX-Video latent upsampler (it lacks {' and '.join(MARKERS)}): "
        f"{describe_keys(shapes)}; pass {UPSAMPLER_FILES}"
    )


def _config_of_single_file(header: SafetensorsHeader, where: str) -> LatentUpsamplerConfig:
    """The `config` metadata entry; where it is absent or not JSON, the config the tensor
    shapes describe, with a warning (the official loader would fail on such a file)."""
    try:
        config = json.loads(header.metadata["config"])
    except (KeyError, TypeError, ValueError):
        cfg = config_from_shapes(header.shapes, where)
        # stacklevel 5: the line that called load_latent_upsampler
        warnings.warn(
            f"{where} has no readable `config` metadata entry; using the config its tensor shapes describe: {cfg}",
            stacklevel=5,
        )
        return cfg
    return _config(config, where)


def _config(config, where: str) -> LatentUpsamplerConfig:
    try:
        return LatentUpsamplerConfig.from_metadata(config)
    except LTXVError as error:
        raise CheckpointError(f"{where}: its latent upsampler config cannot be used: {error}") from error


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]], where: str = "latent upsampler") -> LatentUpsamplerConfig:
    """The config a complete set of upsampler tensors describes: widths from the stem
    convolution (mid, in, 3, 3[, 3]), `dims` from its rank, the upsampling from how many
    times the widening convolution multiplies the width (4: space, 2: time, 8: both)."""
    mid, in_channels, *kernel = shapes[MARKERS[0]]
    growth = shapes[MARKERS[1]][0] // mid
    blocks = {int(m.group(1)) for m in map(re.compile(r"^res_blocks\.(\d+)\.").match, shapes) if m}
    try:
        return LatentUpsamplerConfig(
            in_channels=in_channels,
            mid_channels=mid,
            num_blocks_per_stage=max(blocks, default=-1) + 1,
            dims=len(kernel),
            spatial_upsample=growth in (4, 8),
            temporal_upsample=growth in (2, 8),
        )
    except LTXVError as error:
        raise CheckpointError(f"{where}: its tensors describe no latent upsampler: {error}") from error
