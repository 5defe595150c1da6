"""What a checkpoint is: its architecture version, the configs it carries, and where it
came from.

The version comes from tensor names (official, `model.diffusion_model.` and `vae.`
prefixes) and, where readable, the `config` metadata entry (JSON with `transformer`,
`vae` and `scheduler` sections, what Lightricks' `Transformer3DModel.from_pretrained` and
`CausalVideoAutoencoder.from_pretrained` read); both are read from headers alone. A file
that is no LTX-Video checkpoint is refused saying what it looks like.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..errors import CheckpointError, LTXVError
from ..models.configs import (
    LIGHTRICKS_SAMPLERS,
    LTXV_2B_0_9_0,
    LTXV_2B_0_9_5,
    LTXV_13B_0_9_7,
    LTXV_SCHEDULER,
    LTXV_VAE_0_9_0,
    LTXV_VAE_0_9_1,
    LTXV_VAE_0_9_5,
    SCHEDULE_SAMPLERS,
    SchedulerConfig,
    TransformerConfig,
    VAEConfig,
)
from .keymaps import TRANSFORMER_PREFIX, VAE_PREFIX, vae_family, vae_family_from_keys

# ---------------------------------------------------------------- versions and configs
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
# The 13B transformer is the only one with 48 blocks (diffusers' infer_diffusers_model_type
# tests `transformer_blocks.47.scale_shift_table` the same way).
LAYERS_13B = LTXV_13B_0_9_7.num_layers


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
VERSIONS = tuple(STOCK_CONFIGS)


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
    # how the transformer's weights are stored: "plain", "fp8" (Lightricks), "scaled_fp8"
    # (ComfyUI) or "gguf" (`quantized.file_format`)
    quantization: str = "plain"


# ---------------------------------------------------------------- detection from names and metadata

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
        "one file of a diffusers LTX-Video transformer (pass the diffusers folder holding transformer/ and vae/)",
    ),
    (
        re.compile(r"^(decoder\.conv_in\.conv\.|latents_mean$)"),
        "an LTX-Video VAE alone (a full checkpoint holds the transformer too)",
    ),
    (
        re.compile(r"^(initial_conv|post_upsample_res_blocks)\."),
        "an LTX-Video latent upsampler (load it with the latent upsampler loader, "
        "ltx_core.checkpoint.upsampler.load_latent_upsampler; the checkpoint holds the transformer and the VAE)",
    ),
)


def detect_version(keys: Iterable[str], metadata: Mapping[str, str] | None = None, source: str = "checkpoint") -> str:
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


# ---------------------------------------------------------------- the config metadata


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
    if not isinstance(config, dict) or not all(isinstance(config.get(part), dict) for part in ("transformer", "vae")):
        return "has a `config` metadata entry without `transformer` and `vae` sections"
    return None


def configs_from_metadata(config: dict, path: Path) -> ModelConfigs:
    """The parsed `config` metadata entry -> ModelConfigs; an unusable section is an error
    naming the file."""
    try:
        transformer = TransformerConfig.from_metadata(config["transformer"])
        vae = VAEConfig.from_metadata(config["vae"])
        scheduler = scheduler_config_from_metadata(config.get("scheduler"))
    except (LTXVError, TypeError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r}: its metadata config cannot be used: {error}") from error
    return ModelConfigs(transformer, vae, scheduler)


def scheduler_config_from_metadata(section: Mapping | None) -> SchedulerConfig:
    """The metadata's scheduler section -> SchedulerConfig. Published files name Lightricks'
    RectifiedFlowScheduler (`target_shift_terminal`), which diffusers' scheduler with
    LTX-Video's settings reproduces (Lightricks' `diffusers_config_mapping` pairs them);
    files we write also carry SchedulerConfig's own fields. Its `sampler` (the spacing
    before the shift) and `shifting` are honoured as Lightricks' scheduler reads them."""
    if not isinstance(section, Mapping):
        return LTXV_SCHEDULER
    sampler = _schedule_sampler(section.get("sampler"))
    own = {f.name: section[f.name] for f in fields(SchedulerConfig) if f.name in section and f.name != "sampler"}
    if own:
        return replace(LTXV_SCHEDULER, **own, sampler=sampler)
    return replace(LTXV_SCHEDULER, sampler=sampler, **_lightricks_shifting(section))


def _schedule_sampler(value) -> str:
    """Lightricks' `sampler` in our spelling; absent, their default (Uniform). Any other
    value would take other steps than the official scheduler, so it is refused."""
    if value is None:
        return "uniform"
    name = LIGHTRICKS_SAMPLERS.get(value, value) if isinstance(value, str) else value
    if name not in SCHEDULE_SAMPLERS:
        allowed = ", ".join(f"{theirs} ({ours})" for theirs, ours in LIGHTRICKS_SAMPLERS.items())
        raise ValueError(f"scheduler sampler {value!r} is not supported; allowed: {allowed}")
    return name


def _lightricks_shifting(section: Mapping) -> dict:
    """Lightricks' `shifting`: "SD3" is the token-count shift, stretched to
    `target_shift_terminal`; null is no shift at all (`RectifiedFlowScheduler.shift_timesteps`)."""
    shifting = section.get("shifting", "SD3")
    if shifting is None:
        return {"use_dynamic_shifting": False, "shift": 1.0, "shift_terminal": None}
    if shifting != "SD3":
        raise ValueError(f"scheduler shifting {shifting!r} is not supported; allowed: SD3 or null")
    if "target_shift_terminal" in section:
        return {"shift_terminal": section["target_shift_terminal"]}
    return {}
