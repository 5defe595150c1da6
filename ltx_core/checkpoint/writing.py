"""Models -> the official single `.safetensors` file: both models' tensors under
`model.diffusion_model.` and `vae.`, and the `config` metadata entry Lightricks' loaders
read (the layout `single_file` reads)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import CheckpointError
from ..models.configs import LIGHTRICKS_SAMPLERS
from .keymaps import TRANSFORMER_PREFIX, VAE_PREFIX
from .versions import ARCHITECTURE_OF_RELEASE, ModelConfigs, detect_version


def official_tensors(
    transformer: nn.Module, vae: nn.Module, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Both models' tensors under the official single-file names, contiguous, on the CPU."""
    tensors = {f"{TRANSFORMER_PREFIX}{k}": v for k, v in transformer.state_dict().items()}
    tensors.update({f"{VAE_PREFIX}{k}": v for k, v in vae.state_dict().items()})

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

    return {k: cast(v.detach()).cpu().contiguous() for k, v in tensors.items()}


def config_metadata(configs: ModelConfigs) -> dict:
    """The `config` metadata entry of the official file, as a dict: the sections Lightricks'
    classes read (`_class_name` + fields), the scheduler both as Lightricks' and ours."""
    scheduler = {
        "_class_name": "RectifiedFlowScheduler",
        "num_train_timesteps": 1000,
        "shifting": "SD3",
        "base_resolution": None,
        "target_shift_terminal": configs.scheduler.shift_terminal,
        **asdict(configs.scheduler),
        # the key both schedulers share, in Lightricks' spelling, which ours also reads
        "sampler": {ours: theirs for theirs, ours in LIGHTRICKS_SAMPLERS.items()}[configs.scheduler.sampler],
    }
    return {
        "transformer": {"_class_name": "Transformer3DModel", **asdict(configs.transformer)},
        "vae": configs.vae.to_metadata(),
        "scheduler": scheduler,
    }


def save_single_file(
    path: str | Path,
    transformer: nn.Module,
    vae: nn.Module,
    configs: ModelConfigs | None = None,
    version: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write both models in the official single-file layout, metadata included.

    `configs` defaults to the models' own (`.cfg`) with the stock scheduler; `version`,
    when given, must be what the written tensors will be detected as (a guard against
    labelling a file wrongly); `dtype` casts floating tensors (None: as they are).
    Written to a temporary file and renamed, so a failure leaves no partial file.
    """
    path = Path(path)
    configs = configs or ModelConfigs(transformer.cfg, vae.cfg)
    tensors = official_tensors(transformer, vae, dtype)
    metadata = {"config": json.dumps(config_metadata(configs)), "format": "pt"}
    detected = detect_version(tensors, metadata, source=repr(str(path)))
    if version is not None and ARCHITECTURE_OF_RELEASE.get(version, version) != detected:
        raise CheckpointError(f"refusing to write {str(path)!r} as LTX-Video {version}: its tensors are {detected}")
    temporary = path.with_name(f".{path.name}.part")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
