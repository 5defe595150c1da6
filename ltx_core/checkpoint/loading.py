"""Model files -> models: the official single `.safetensors` file and the diffusers folder.

The official file holds the transformer under `model.diffusion_model.` and the VAE under
`vae.`, and a metadata entry `config` = JSON with `transformer`, `vae` and `scheduler`
sections (what Lightricks' `Transformer3DModel.from_pretrained` and
`CausalVideoAutoencoder.from_pretrained` read). Our modules carry the official names, so
that file loads with only the prefixes stripped; a diffusers folder (`transformer/`,
`vae/`, ... each with `config.json` and safetensors, sharded or not) is read by
`diffusers_folder`. `checkpoint_writing` writes the official file.

Every check runs on safetensors headers (names, shapes, metadata) before any tensor is
read, and loading is strict: a missing, unexpected or wrongly shaped tensor is an error
naming the file and the key. Weights come only from safetensors; a pickle is refused
unopened.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..models.configs import (
    LTXV_2B_0_9_0,
    LTXV_2B_0_9_5,
    LTXV_13B_0_9_7,
    LTXV_VAE_0_9_0,
    LTXV_VAE_0_9_1,
    LTXV_VAE_0_9_5,
    SchedulerConfig,
    TransformerConfig,
    VAEConfig,
)
from ..errors import CheckpointError, LTXVError, SettingsError
from .keymaps import TRANSFORMER_PREFIX, VAE_PREFIX, vae_family, vae_family_from_keys
# path checks that need no torch live in preflight (the CLI runs them before importing it)
from ..preflight import PICKLE_SUFFIXES, check_model_path, default_model_paths, refuse_pickle  # noqa: F401
from ..sampling.scheduler import LTXV_SCHEDULER
from ..models.transformer import LTXVTransformer
from ..models.vae import CausalVideoVAE, PerChannelStatistics

SAFETENSORS_SUFFIX = ".safetensors"

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

# ---------------------------------------------------------------- versions
#
# A version here is an architecture, named after the first release that had it. Later
# releases that kept an architecture have the same tensor names and metadata fields
# (Lightricks' files carry no release number), so they report that first release:
ARCHITECTURE_OF_RELEASE = {
    "0.9.0": "0.9.0",  # 2B; VAE decoder without timestep conditioning
    "0.9.1": "0.9.1",  # 2B; timestep-conditioned (denoising) VAE decoder, noise injection
    "0.9.5": "0.9.5",  # 2B; VAE encoder of residual space-to-depth downsamplers
    "0.9.6": "0.9.5",  # 2B, the 0.9.5 tensors
    "0.9.7": "0.9.7",  # 13B transformer (48 blocks) with the 0.9.5 VAE
    "0.9.8": "0.9.7",  # 13B, the 0.9.7 tensors
    "0.9.8-2b": "0.9.5",  # the 2B distilled model of 0.9.8
}
VERSIONS = ("0.9.0", "0.9.1", "0.9.5", "0.9.7")
# The 13B transformer is the only one with 48 blocks (diffusers' infer_diffusers_model_type
# tests `transformer_blocks.47.scale_shift_table` the same way).
LAYERS_13B = 48


@dataclass(frozen=True)
class ModelConfigs:
    """The three configs a checkpoint carries."""

    transformer: TransformerConfig
    vae: VAEConfig
    scheduler: SchedulerConfig = LTXV_SCHEDULER


# Each version's published configuration, used when a file's metadata cannot be read.
STOCK_CONFIGS = {
    "0.9.0": ModelConfigs(LTXV_2B_0_9_0, LTXV_VAE_0_9_0),
    "0.9.1": ModelConfigs(LTXV_2B_0_9_0, LTXV_VAE_0_9_1),
    "0.9.5": ModelConfigs(LTXV_2B_0_9_5, LTXV_VAE_0_9_5),
    "0.9.7": ModelConfigs(LTXV_13B_0_9_7, LTXV_VAE_0_9_5),
}

# Names (prefix stripped) that mark a file as LTX-Video.
TRANSFORMER_MARKER = "patchify_proj.weight"
VAE_MARKER = "decoder.conv_in.conv.weight"

# Other models users put in the checkpoint slot, named so the error can say what it is.
KNOWN_OTHER_MODELS = (
    (
        re.compile(r"^(encoder\.block\.\d+\.layer|shared\.weight)"),
        "a T5 text encoder (it belongs in the text-encoder slot)",
    ),
    (re.compile(r"^(text_encoders|cond_stage_model|conditioner)\."), "a text-encoder bundle"),
    (
        re.compile(r"^model\.diffusion_model\.(input_blocks|middle_block|output_blocks)\."),
        "a Stable Diffusion UNet",
    ),
    (re.compile(r"^(model\.diffusion_model\.)?(double_blocks|single_blocks)\."), "a Flux transformer"),
    (re.compile(r"^(model\.diffusion_model\.)?joint_blocks\."), "a Stable Diffusion 3 transformer"),
    (
        re.compile(r"^time_embed\.emb\.timestep_embedder\."),
        "one file of a diffusers LTX-Video transformer "
        "(pass the diffusers folder holding transformer/ and vae/)",
    ),
    (
        re.compile(r"^(decoder\.conv_in\.conv\.|latents_mean$)"),
        "an LTX-Video VAE alone (a full checkpoint holds the transformer too)",
    ),
)


def detect_version(
    keys: Iterable[str], metadata: Mapping[str, str] | None = None, source: str = "checkpoint"
) -> str:
    """The architecture version ("0.9.0", "0.9.1", "0.9.5" or "0.9.7") of an official
    single-file checkpoint, from its tensor names and, where readable, its metadata.

    Rules, on names under `vae.` and `model.diffusion_model.`:
      - `encoder.down_blocks.1.conv.conv.weight` (a residual space-to-depth downsampler,
        `compress_*_res`) -> the 0.9.5 VAE; then a transformer with 48 blocks
        (`transformer_blocks.47.*`) -> "0.9.7" (13B), otherwise "0.9.5" (2B);
      - else `decoder.last_scale_shift_table` (timestep-conditioned decoder) -> "0.9.1";
      - else -> "0.9.0".
    A readable `config` metadata entry is classified by the same rules (VAE block names,
    `timestep_conditioning`, transformer `num_layers`) and must agree with the tensors.
    Raises CheckpointError for a file that is not a full LTX-Video checkpoint.
    """
    keys = set(keys)
    require_ltxv(keys, source)
    from_keys = _version_from_keys(keys)
    config = parse_config_metadata(metadata)
    from_config = _version_from_config(config) if config is not None else None
    if from_config is not None and from_config != from_keys:
        raise CheckpointError(
            f"{source}: its metadata config describes LTX-Video {from_config} but its tensors are "
            f"{from_keys}; the file was assembled from mismatched parts"
        )
    return from_keys


def _version_from_keys(keys: set[str]) -> str:
    family = vae_family_from_keys(k for k in keys if k.startswith(VAE_PREFIX))
    return version_with_size(family, num_layers=count_blocks(keys, TRANSFORMER_PREFIX))


def _version_from_config(config: Mapping) -> str | None:
    try:
        family = vae_family(VAEConfig.from_metadata(config["vae"]))
    except (LTXVError, TypeError, KeyError, ValueError):
        return None  # an unreadable section is reported when the config is built
    return version_with_size(family, num_layers=config["transformer"].get("num_layers"))


def version_with_size(vae_family_name: str, num_layers: int | None) -> str:
    """The version of a VAE family with a transformer of `num_layers` blocks (48: the 13B)."""
    if vae_family_name == "0.9.5" and num_layers == LAYERS_13B:
        return "0.9.7"
    return vae_family_name


def count_blocks(keys: Iterable[str], prefix: str) -> int:
    """How many `transformer_blocks.N.` the keys under `prefix` hold."""
    pattern = re.compile(rf"^{re.escape(prefix)}transformer_blocks\.(\d+)\.")
    indices = {int(m.group(1)) for m in map(pattern.match, keys) if m}
    return max(indices) + 1 if indices else 0


def parse_config_metadata(metadata: Mapping[str, str] | None) -> dict | None:
    """The `config` metadata entry as a dict with `transformer` and `vae` sections, or None
    when it is missing, not JSON, or not shaped like the published files'."""
    return None if config_metadata_problem(metadata) else json.loads(metadata["config"])


def config_metadata_problem(metadata: Mapping[str, str] | None) -> str | None:
    """Why the `config` metadata entry is unusable, or None when it is fine."""
    text = (metadata or {}).get("config")
    if text is None:
        return "has no `config` metadata entry"
    try:
        config = json.loads(text)
    except (TypeError, ValueError):
        return "has a `config` metadata entry that is not JSON"
    if not isinstance(config, dict) or not all(
        isinstance(config.get(part), dict) for part in ("transformer", "vae")
    ):
        return "has a `config` metadata entry without `transformer` and `vae` sections"
    return None


def require_ltxv(keys: set[str], source: str, need: tuple[str, ...] = ("transformer", "vae")) -> None:
    """Refuse a file that is not an LTX-Video checkpoint, saying what it holds."""
    present = {
        "transformer": f"{TRANSFORMER_PREFIX}{TRANSFORMER_MARKER}" in keys,
        "vae": f"{VAE_PREFIX}{VAE_MARKER}" in keys,
    }
    if not any(present.values()):
        raise CheckpointError(f"{source} is not an LTX-Video checkpoint: {describe_keys(keys)}")
    for part in need:
        if not present[part]:
            prefix = TRANSFORMER_PREFIX if part == "transformer" else VAE_PREFIX
            raise CheckpointError(
                f"{source} holds no LTX-Video {part} (no {prefix}* tensors); "
                "the official checkpoint holds the transformer and the VAE together"
            )


def describe_keys(keys: Iterable[str], limit: int = 5) -> str:
    """What a file holds, for an error message: a known model's name where one matches,
    and its most common key prefixes with counts."""
    keys = sorted(keys)
    if not keys:
        return "it holds no tensors"
    kind = next((name for pattern, name in KNOWN_OTHER_MODELS if any(pattern.match(k) for k in keys)), None)
    prefixes = Counter(_key_prefix(key) for key in keys)
    shown = ", ".join(f"{prefix} ({count})" for prefix, count in prefixes.most_common(limit))
    more = f" and {len(prefixes) - limit} more prefixes" if len(prefixes) > limit else ""
    looks = f"it looks like {kind}; " if kind else ""
    return f"{looks}found {len(keys)} tensors under {shown}{more}"


def _key_prefix(key: str) -> str:
    """`a.b.*` for a key `a.b.c...`, one part deeper under `model.diffusion_model.`."""
    parts = key.split(".")
    depth = 3 if key.startswith(TRANSFORMER_PREFIX) else 2
    return key if len(parts) <= depth else ".".join(parts[:depth]) + ".*"


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
        raise SettingsError(
            f"device {str(device)!r} is not a device name; allowed: cpu, cuda, cuda:N"
        ) from error
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise SettingsError(f"device {str(device)!r} is not supported; allowed: cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise SettingsError(f"device {str(device)!r} asked for, but no CUDA GPU is available here; use cpu")
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        raise SettingsError(
            f"device {str(device)!r} does not exist; this machine has cuda:0 to cuda:{count - 1}"
        )
    return resolved


# ---------------------------------------------------------------- files


class SafetensorsHeader:
    """Names, shapes and metadata of one `.safetensors` file, read without its tensors."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                self.metadata: dict[str, str] = file.metadata() or {}
                self.shapes: dict[str, tuple[int, ...]] = {
                    k: tuple(file.get_slice(k).get_shape()) for k in file.keys()
                }
        except SafetensorError as error:
            raise CheckpointError(
                f"{str(path)!r} is truncated or corrupt: safetensors cannot read it ({error}); "
                "download it again"
            ) from error

    def read(self, keys: Iterable[str], dtype: torch.dtype | None = None,
             device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
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


# Non-finite tensors named in full in an error; the rest are counted.
NON_FINITE_NAMED = 5


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
    named = ", ".join(f"{source.locations[name][1]} ({_count_non_finite(state[name])})"
                      for name in bad[:NON_FINITE_NAMED])
    more = f" and {len(bad) - NON_FINITE_NAMED} more" if len(bad) > NON_FINITE_NAMED else ""
    in_file = any(bool(_holds_non_finite(source.stored(name))) for name in bad[:NON_FINITE_NAMED])
    why = ("the file is damaged (a broken download, or saved from a training run that diverged); download it again"
           if in_file else f"their values are finite in the file but overflow {str(dtype).removeprefix('torch.')}; "
           "load the model in bf16 or fp32")
    raise CheckpointError(f"{_source_label(source)}: {len(bad)} {source.part} tensor(s) hold NaN or infinite values: "
                          f"{named}{more}; {why}")


def _count_non_finite(tensor: torch.Tensor) -> str:
    nan, inf = int(tensor.isnan().sum()), int(tensor.isinf().sum())
    return f"{nan} NaN and {inf} infinite of {tensor.numel()} values"


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a checkpoint came from and what it is."""

    path: Path
    layout: str  # "single_file" or "diffusers"
    version: str  # one of VERSIONS
    configs: ModelConfigs
    config_source: str  # "metadata", "stock" (metadata unreadable) or "diffusers config.json"
    text_encoder: Path | None = None  # a diffusers folder's text_encoder/, where present
    tokenizer: Path | None = None  # a diffusers folder's tokenizer/, where present


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
        from .diffusers_folder import inspect_diffusers_folder  # imported here: it imports this module

        info, sources = inspect_diffusers_folder(path)
    else:
        info, sources = _inspect_single_file(path)
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
    try:
        return _build(model_class, cfg, sources[part], dtype, device)
    except CheckpointError as error:
        if info.config_source != "stock":
            raise
        raise CheckpointError(
            f"{error} (the config is the stock {info.version} one, as the file's metadata "
            "is unreadable; a file of other sizes needs its metadata)"
        ) from error


def _build(
    model_class: Callable[..., nn.Module], cfg, source: TensorSource, dtype: torch.dtype, device: torch.device
) -> nn.Module:
    """Build on the meta device (no memory, no random init), check the file's tensors
    against the model's, then assign the file's tensors: strict."""
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
    where = _source_label(source)
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


def _source_label(source: TensorSource) -> str:
    files = sorted({str(header.path) for header, _ in source.locations.values()})
    return repr(files[0]) if len(files) == 1 else f"{repr(files[0])} (+{len(files) - 1} shards)"


# ---------------------------------------------------------------- the official single file


def _inspect_single_file(path: Path) -> tuple[CheckpointInfo, dict[str, TensorSource]]:
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a .safetensors file; only .safetensors are loaded"
        )
    header = SafetensorsHeader(path)
    version = detect_version(header.shapes, header.metadata, source=repr(str(path)))
    problem = config_metadata_problem(header.metadata)
    if problem is None:
        configs = _configs_from_metadata(json.loads(header.metadata["config"]), path)
    else:
        warnings.warn(
            f"{str(path)!r} {problem}; its tensors are LTX-Video {version}: using that version's stock "
            "configuration",
            stacklevel=3,
        )
        configs = STOCK_CONFIGS[version]
    other = sorted(k for k in header.shapes if not k.startswith((TRANSFORMER_PREFIX, VAE_PREFIX)))
    if other:  # e.g. a bundled text encoder: not ours to load, but say so
        warnings.warn(
            f"{str(path)!r}: {len(other)} tensors outside {TRANSFORMER_PREFIX} and {VAE_PREFIX} are "
            f"ignored ({describe_keys(other)})",
            stacklevel=3,
        )
    sources = {}
    for part, prefix in (("transformer", TRANSFORMER_PREFIX), ("vae", VAE_PREFIX)):
        locations = {k[len(prefix) :]: (header, k) for k in header.shapes if k.startswith(prefix)}
        sources[part] = TensorSource(part, locations)
    info = CheckpointInfo(path, "single_file", version, configs, "stock" if problem else "metadata")
    return info, sources


def _configs_from_metadata(config: dict, path: Path) -> ModelConfigs:
    try:
        transformer = TransformerConfig.from_metadata(config["transformer"])
        vae = VAEConfig.from_metadata(config["vae"])
    except (LTXVError, TypeError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r}: its metadata config cannot be used: {error}") from error
    return ModelConfigs(transformer, vae, scheduler_config_from_metadata(config.get("scheduler")))


def scheduler_config_from_metadata(section: Mapping | None) -> SchedulerConfig:
    """The metadata's scheduler section -> SchedulerConfig. Published files name Lightricks'
    RectifiedFlowScheduler (`target_shift_terminal`), which diffusers' scheduler with
    LTX-Video's settings reproduces (Lightricks' `diffusers_config_mapping` pairs them);
    files we write also carry SchedulerConfig's own fields."""
    if not isinstance(section, Mapping):
        return LTXV_SCHEDULER
    own = {f.name: section[f.name] for f in fields(SchedulerConfig) if f.name in section}
    if own:
        return replace(LTXV_SCHEDULER, **own)
    if "target_shift_terminal" in section:
        return replace(LTXV_SCHEDULER, shift_terminal=section["target_shift_terminal"])
    return LTXV_SCHEDULER
