"""Model files -> models: `load_checkpoint` (both models), `load_transformer`, `load_vae`.

A path is the official single `.safetensors` file (`single_file`) or a diffusers folder
(`diffusers_folder`); `inspect_checkpoint` runs every check that needs no tensor data
(path, format, version, configs, dtype and device) on the safetensors headers before any
tensor is read. The models are then built on the meta device and loaded strictly: a
missing, unexpected or wrongly shaped tensor is an error naming the file and the key.
Quantized files (Lightricks' FP8, ComfyUI's scaled FP8, GGUF: `quantized`) load the same
way; their quantized transformer weights become `QuantizedLinear` layers that stay
quantized in memory (`build_quantized`). A GGUF file holds only the transformer.
Weights come only from safetensors and GGUF; a pickle is refused unopened (`preflight`).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..errors import CheckpointError, SettingsError
from ..models.quantized_linear import QuantizedLinear
from ..models.transformer import LTXVTransformer
from ..models.vae import CausalVideoVAE, PerChannelStatistics

# path checks that need no torch live in preflight (the CLI runs them before importing torch)
from ..preflight import check_model_path
from .diffusers_folder import inspect_diffusers_folder
from .gguf_file import is_gguf
from .quantized import QuantizedSource, plain_weight, refuse_non_finite_quantized
from .single_file import inspect_single_file
from .tensors import TensorSource
from .versions import CheckpointInfo, ModelConfigs

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


# ---------------------------------------------------------------- settings


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A dtype by name ("fp32", "bf16", "fp16", or the torch spelling) or as a torch.dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        name = str(dtype)
    else:
        name = str(dtype).removeprefix("torch.")
        if name in DTYPES:
            return DTYPES[name]
    raise SettingsError(f"dtype {name!r} is not supported; allowed: {', '.join(DTYPES)}")


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here: "cpu", "cuda" or "cuda:N"."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise SettingsError(f"device {str(device)!r} is not a device name; allowed: cpu, cuda, cuda:N") from error
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise SettingsError(f"device {str(device)!r} is not supported; allowed: cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise SettingsError(f"device {str(device)!r} asked for, but no CUDA GPU is available here; use cpu")
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise SettingsError(f"device {str(device)!r} does not exist; this machine has cuda:0 to cuda:{count - 1}")
    return resolved


# ---------------------------------------------------------------- loading


class LoadedCheckpoint(NamedTuple):
    """`transformer, vae, info = load_checkpoint(...)` or by attribute."""

    transformer: LTXVTransformer
    vae: CausalVideoVAE
    info: CheckpointInfo

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def configs(self) -> ModelConfigs:
        return self.info.configs


def load_checkpoint(
    path: str | Path, dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Transformer and VAE from an official single `.safetensors` file or a diffusers folder,
    in `dtype` ("fp32", "bf16", "fp16") on `device`, in eval mode."""
    info, sources, dtype, device = inspect_checkpoint(path, dtype, device)
    _require_part("vae", info, sources)  # before the transformer is read
    transformer = _build_part("transformer", info, sources, dtype, device)
    return LoadedCheckpoint(transformer, _build_part("vae", info, sources, dtype, device), info)


def load_transformer(
    path: str | Path, dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[LTXVTransformer, CheckpointInfo]:
    """The transformer alone, from the same files as `load_checkpoint` (the VAE is not read)."""
    info, sources, dtype, device = inspect_checkpoint(path, dtype, device)
    return _build_part("transformer", info, sources, dtype, device), info


def load_vae(
    path: str | Path, dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[CausalVideoVAE, CheckpointInfo]:
    """The VAE alone, from the same files as `load_checkpoint` (the transformer is not read)."""
    info, sources, dtype, device = inspect_checkpoint(path, dtype, device)
    return _build_part("vae", info, sources, dtype, device), info


def inspect_checkpoint(
    path: str | Path, dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[CheckpointInfo, dict[str, TensorSource], torch.dtype, torch.device]:
    """Every check that needs no tensor data: path, format, version, configs, settings."""
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    path = check_model_path(path)
    if path.is_dir():
        info, sources = inspect_diffusers_folder(path)
    elif is_gguf(path):
        from .gguf_checkpoint import inspect_gguf  # the gguf package only for GGUF files

        info, sources = inspect_gguf(path)
    else:
        info, sources = inspect_single_file(path)
    return info, sources, dtype, device


def _build_part(
    part: str,
    info: CheckpointInfo,
    sources: dict[str, TensorSource],
    dtype: torch.dtype,
    device: torch.device,
) -> nn.Module:
    model_class, cfg = {
        "transformer": (LTXVTransformer, info.configs.transformer),
        "vae": (CausalVideoVAE, info.configs.vae),
    }[part]
    _require_part(part, info, sources)
    try:
        return build_strict(model_class, cfg, sources[part], dtype, device)
    except CheckpointError as error:
        if info.config_source != "stock":
            raise
        raise CheckpointError(
            f"{error} (the config is the stock {info.version} one, as the file's metadata "
            "is unreadable; a file of other sizes needs its metadata)"
        ) from error


def _require_part(part: str, info: CheckpointInfo, sources: dict[str, TensorSource]) -> None:
    """A GGUF file holds the transformer alone: asking it for the VAE names where to get one."""
    if part not in sources:
        raise CheckpointError(
            f"{str(info.path)!r} holds only the transformer (a {info.layout} file has no {part}); load the "
            f"VAE from an official single .safetensors file or a diffusers folder of LTX-Video {info.version}"
        )


def build_strict(
    model_class: Callable[..., nn.Module], cfg, source: TensorSource, dtype: torch.dtype, device: torch.device
) -> nn.Module:
    """Build on the meta device (no memory, no random init), check the file's tensors
    against the model's, then assign the file's tensors: strict."""
    if isinstance(source, QuantizedSource):
        return build_quantized(model_class, cfg, source, dtype, device)
    with torch.device("meta"):
        model = model_class(cfg)
    _check_tensors(model, source)
    state = source.read(dtype, device)
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in chain(model.parameters(), model.buffers())):
        # a tensor the file may omit (the VAE's unused statistics) kept its meta default:
        # build for real and copy the file's tensors in instead
        model = model_class(cfg).to(device=device, dtype=dtype)
        model.load_state_dict(state, strict=True)
    return model.eval()


def _optional_names(model: nn.Module) -> set[str]:
    """State-dict names a file may lack: the VAE statistics nothing computes with."""
    return {
        f"{name}.{stat}".lstrip(".")
        for name, module in model.named_modules()
        if isinstance(module, PerChannelStatistics)
        for stat in module.OPTIONAL
    }


def _check_tensors(model: nn.Module, source: TensorSource) -> None:
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = set(source.locations)
    missing = sorted(set(expected) - found - _optional_names(model))
    unexpected = sorted(found - set(expected))
    where = source.label()
    if missing:
        raise CheckpointError(
            f"{where} lacks {len(missing)} of the {len(expected)} {source.part} tensors its config needs, "
            f"e.g. {', '.join(missing[:3])}; the file is incomplete or its config does not match it"
        )
    if unexpected:
        raise CheckpointError(
            f"{where} has {len(unexpected)} {source.part} tensors its config does not use, "
            f"e.g. {', '.join(unexpected[:3])}; its config does not match its tensors"
        )
    for name in sorted(found):
        if source.shape(name) != expected[name]:
            raise CheckpointError(
                f"{source.part} tensor {source.where(name)} has shape {list(source.shape(name))}, "
                f"but the config asks for {list(expected[name])}"
            )


# ---------------------------------------------------------------- quantized weights


def build_quantized(
    model_class: Callable[..., nn.Module], cfg, source: QuantizedSource, dtype: torch.dtype, device: torch.device
) -> nn.Module:
    """`build_strict` for a model with quantized weights: built on meta and checked strictly
    (names and shapes, quantized ones included), then each linear layer holding a quantized
    weight becomes a `QuantizedLinear` of the stored parts (read one layer at a time onto
    `device`, never in float), and the float tensors are assigned in `dtype`."""
    with torch.device("meta"):
        model = model_class(cfg)
    _check_tensors(model, source)
    layers = _quantized_layers(model, source)
    state = source.read(dtype, device)
    weights = {}
    for layer, parts in layers.items():
        quantized = iter(source.read_quantized([n for n in parts if n in source.kinds], device))
        stored = [next(quantized) if n in source.kinds else plain_weight(state.pop(n)) for n in parts]
        weights.update((n, w) for n, w in zip(parts, stored) if n in source.kinds)
        biases = [state.pop(n.removesuffix(".weight") + ".bias", None) for n in parts]
        bias = None if any(b is None for b in biases) else torch.cat(biases)
        model.replace_linear(layer, QuantizedLinear(stored, bias))
    refuse_non_finite_quantized(source, weights)
    unexpected = model.load_state_dict(state, strict=False, assign=True).unexpected_keys
    left = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta] + unexpected
    if left:  # the strict check above makes this a bug of ours, not of the file
        raise CheckpointError(f"{source.label()}: {source.part} tensors not loaded: {', '.join(left[:3])}")
    return model.eval()


def _quantized_layers(model: nn.Module, source: QuantizedSource) -> dict[str, list[str]]:
    """Each layer holding a quantized weight -> its checkpoint weight names in row order
    (one, or the fused projection's parts); a quantized tensor that is no linear weight is refused."""
    parts: dict[str, list[tuple[int, str]]] = {}
    own = model.linear_layers()  # once: `checkpoint_linear` walks every module for these
    for name in model.state_dict():
        module = name.removesuffix(".weight")
        if module == name or len(source.shape(name)) != 2:
            continue
        try:
            layer, rows = (module, slice(0, 1)) if module in own else model.checkpoint_linear(module)
        except SettingsError:
            continue
        parts.setdefault(layer, []).append((rows.start, name))
    linear_weights = {name for layer in parts.values() for _, name in layer}
    for name in sorted(set(source.kinds) - linear_weights):
        raise CheckpointError(
            f"{source.part} tensor {source.where(name)} is stored as {source.kinds[name]}, but only linear "
            "layers' weights may be quantized; the file was converted wrongly"
        )
    return {
        layer: [name for _, name in sorted(names)]
        for layer, names in parts.items()
        if any(name in source.kinds for _, name in names)
    }
