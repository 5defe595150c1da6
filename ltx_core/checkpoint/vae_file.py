"""The VAE from a file of its own choosing, for a checkpoint that holds none (a GGUF
transformer): the VAE of an official single file or a diffusers folder, or a file holding
the VAE alone (the official names with or without the `vae.` prefix, as the VAE files
published beside GGUF transformers are), its config from a `config` metadata entry where
one is readable, else the stock config of its family (read from the tensor names).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.vae import CausalVideoVAE
from ..models.vae_config import LTXV_VAE_BY_FAMILY, VAEConfig
from ..preflight import check_model_path
from .keymaps import TRANSFORMER_PREFIX, VAE_PREFIX, vae_family_from_keys
from .loading import build_strict, inspect_checkpoint, resolve_device, resolve_dtype
from .tensors import SafetensorsHeader, TensorSource
from .versions import VAE_MARKER, CheckpointInfo, describe_keys


def inspect_vae(path: str | Path) -> tuple[VAEConfig, TensorSource]:
    """(config, tensors) of the VAE at `path`, from headers alone."""
    path = check_model_path(path)
    header = None if path.is_dir() else SafetensorsHeader(path)
    if header is None or any(k.startswith(TRANSFORMER_PREFIX) for k in header.shapes):
        info, sources, _, _ = inspect_checkpoint(path)
        if "vae" not in sources:
            raise CheckpointError(f"{str(path)!r} holds no VAE; give an official single file or a VAE file")
        return info.configs.vae, sources["vae"]
    prefix = VAE_PREFIX if f"{VAE_PREFIX}{VAE_MARKER}" in header.shapes else ""
    if f"{prefix}{VAE_MARKER}" not in header.shapes:
        raise CheckpointError(f"{str(path)!r} holds no LTX-Video VAE: {describe_keys(header.shapes)}")
    names = {k[len(prefix) :]: (header, k) for k in header.shapes if k.startswith(prefix)}
    return _config(header, names, path), TensorSource("vae", names)


def _config(header: SafetensorsHeader, names, path: Path) -> VAEConfig:
    """The `config` metadata's VAE section (a whole official config, or the VAE's alone),
    else the stock config of the family the tensor names show."""
    text = header.metadata.get("config")
    if text is None:
        return LTXV_VAE_BY_FAMILY[vae_family_from_keys(names)]
    try:
        config = json.loads(text)
        return VAEConfig.from_metadata(config.get("vae", config))
    except (CheckpointError, AttributeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r}: its metadata config cannot be used: {error}") from error


def load_vae_file(
    path: str | Path, dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> CausalVideoVAE:
    """The VAE at `path` (any of the module docstring's files), strict, in eval mode."""
    cfg, source = inspect_vae(path)
    return build_strict(CausalVideoVAE, cfg, source, resolve_dtype(dtype), resolve_device(device))


def with_vae_file(info: CheckpointInfo, sources: dict[str, TensorSource], path: str | Path | None):
    """A checkpoint's (info, sources) with the VAE of `path` in place of its own (None: as
    they are); a checkpoint without a VAE of its own and no `path` is refused, naming the fix."""
    if path is None:
        if "vae" not in sources:
            raise CheckpointError(
                f"{str(info.path)!r} is a {info.layout} file: it holds only the transformer; give the VAE "
                "(the CLI's --vae: an official single .safetensors file, a diffusers folder or a VAE file)"
            )
        return info, sources
    cfg, source = inspect_vae(path)
    return replace(info, configs=replace(info.configs, vae=cfg)), {**sources, "vae": source}
