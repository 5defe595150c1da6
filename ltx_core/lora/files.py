"""LoRA files for the LTX-Video transformer: the key layouts people publish, read into one
form (official module name -> down, up, alpha), and written back for tests and tools.

The layout is told by the keys alone, never the file name:
- "comfyui": `diffusion_model.<official module>.lora_A.weight` / `.lora_B.weight` and an
  optional `.alpha` (Lightricks' trainer, ComfyUI; `lora_down` / `lora_up` also read);
- "diffusers": `transformer.<diffusers module>.lora_A.weight` / `.lora_B.weight`; the
  module names go through `checkpoint.keymaps`, and the alphas come from the peft config
  diffusers writes into the metadata (`lora_adapter_metadata`), else alpha = rank;
- "kohya": `lora_unet_<official module, dots as underscores>.lora_down.weight` /
  `.lora_up.weight` / `.alpha` (ComfyUI's `lora_unet_` names for LTX-Video);
- "official": the comfyui keys without their `diffusion_model.` prefix.

Key kinds beyond plain LoRA (LoHa, LoKr, DoRA's `dora_scale`, a middle `lora_mid`, bias or
norm diffs, full weight replacements) are refused with a `CheckpointError` naming them:
leaving them out would load a different model than the one trained, without a sign.
Keys of another model part (a text encoder's) are ignored with a warning.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..checkpoint.keymaps import TRANSFORMER_DIFFUSERS_TO_OFFICIAL, rename_keys
from ..checkpoint.tensors import SafetensorsHeader, non_finite_names
from ..errors import CheckpointError, SettingsError
from ..preflight import refuse_pickle

LAYOUT_PREFIXES = {"comfyui": "diffusion_model.", "diffusers": "transformer.", "kohya": "lora_unet_", "official": ""}
LAYOUTS = tuple(LAYOUT_PREFIXES)
# The pair of each key family: (down, up) suffixes after the module name.
PAIR_SUFFIXES = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"))
ALPHA_SUFFIX = ".alpha"
# Key kinds this reader refuses, with what they are (module docstring): markers anywhere
# in a key (a LoHa's `.hada_w1_a`), then key endings.
UNSUPPORTED_INFIXES = {
    ".hada_": "LoHa",
    ".lokr_": "LoKr",
    ".lora_mid.": "LoRA with a middle (Tucker) factor",
    "lora_magnitude_vector": "DoRA",
}
UNSUPPORTED_ENDINGS = {
    ".dora_scale": "DoRA",
    ".lora_B.bias": "LoRA bias",
    ".lora_up.bias": "LoRA bias",
    ".diff_b": "bias diff",
    ".diff": "weight diff",
    ".w_norm": "norm weight diff",
    ".b_norm": "norm bias diff",
    ".set_weight": "weight replacement",
}
# Official transformer modules whose names hold underscores, for kohya's dots-as-underscores.
_TOP_MODULES = (
    "patchify_proj",
    "adaln_single.emb.timestep_embedder.linear_1",
    "adaln_single.emb.timestep_embedder.linear_2",
    "adaln_single.linear",
    "caption_projection.linear_1",
    "caption_projection.linear_2",
    "proj_out",
)
_BLOCK_MODULES = tuple(
    f"{attn}.{part}" for attn in ("attn1", "attn2") for part in ("to_q", "to_k", "to_v", "to_out.0")
) + ("ff.net.0.proj", "ff.net.2")
_KOHYA_BLOCK = re.compile(r"transformer_blocks_(\d+)_(.+)")
# Where IC-LoRA files say how much smaller their reference video is (metadata value).
REFERENCE_DOWNSCALE_KEY = "reference_downscale_factor"
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"


@dataclass(frozen=True)
class LoRAWeights:
    """One linear module's update, strength 1: delta W = alpha / rank * up @ down."""

    down: Tensor  # (rank, in_features)
    up: Tensor  # (out_features, rank)
    alpha: float | None = None  # None: the rank (scale 1)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


@dataclass(frozen=True)
class LoRAFile:
    """A LoRA's updates by official module name (`transformer_blocks.3.attn1.to_q`)."""

    modules: dict[str, LoRAWeights]
    metadata: dict[str, str] = field(default_factory=dict)
    layout: str = "comfyui"
    source: str = "<in memory>"  # the path, for messages

    @property
    def reference_downscale_factor(self) -> int:
        """How many times smaller than the video an IC-LoRA's reference video is (1: same size)."""
        return reference_downscale_factor(self.metadata, self.source)


# ---------------------------------------------------------------- reading


def read_lora(path: str | Path) -> LoRAFile:
    """A LoRA `.safetensors` file of any layout above, its tensors as stored (dtype kept)."""
    header = lora_header(path)
    layout, modules = _module_keys(header.shapes, str(path))
    tensors = header.read([key for keys in modules.values() for key in keys.values()])
    bad = non_finite_names(tensors)
    if bad:
        raise CheckpointError(f"{str(path)!r}: LoRA tensor(s) hold NaN or infinite values: {', '.join(bad[:5])}")
    alphas = _diffusers_alphas(header.metadata, modules, str(path)) if layout == "diffusers" else {}
    weights = {}
    for module, keys in modules.items():
        alpha = float(tensors[keys["alpha"]].float().item()) if "alpha" in keys else alphas.get(module)
        weights[official_module_name(module, layout)] = LoRAWeights(tensors[keys["down"]], tensors[keys["up"]], alpha)
    return LoRAFile(weights, dict(header.metadata), layout, repr(str(path)))


def reference_downscale_factor(metadata: dict, source: str) -> int:
    """An IC-LoRA's metadata -> how many times smaller its reference video is (1: absent)."""
    text = metadata.get(REFERENCE_DOWNSCALE_KEY)
    if text is None:
        return 1
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value >= 1 and value.is_integer()):
        raise CheckpointError(
            f"{source}: metadata {REFERENCE_DOWNSCALE_KEY}={text!r} is not allowed; allowed: a whole number >= 1"
        )
    return int(value)


def lora_header(path: str | Path) -> SafetensorsHeader:
    """The file's header, refused unless it is a LoRA of a layout above: what the command
    line checks before any model loads (no tensor is read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"LoRA file {str(path)!r} does not exist")
    refuse_pickle(path)
    header = SafetensorsHeader(path)
    _module_keys(header.shapes, str(path))
    return header


def detect_layout(keys) -> str | None:
    """The layout whose LoRA pairs the keys hold (the prefix of the most pair keys), or None."""
    counts = dict.fromkeys(LAYOUTS, 0)
    for key in keys:
        if not any(key.endswith(suffix) for pair in PAIR_SUFFIXES for suffix in pair):
            continue
        layout = next((name for name, prefix in LAYOUT_PREFIXES.items() if prefix and key.startswith(prefix)), None)
        counts[layout or "official"] += 1
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def _module_keys(shapes: Mapping[str, tuple], source: str) -> tuple[str, dict[str, dict[str, str]]]:
    """(layout, module name as in the file -> {"down", "up", "alpha"?: key}), checked."""
    _refuse_unsupported(shapes, source)
    layout = detect_layout(shapes)
    if layout is None:
        raise CheckpointError(
            f"{source!r} holds no LoRA tensors (keys like {_sample(shapes)}); allowed: "
            "<module>.lora_A.weight / .lora_B.weight or .lora_down.weight / .lora_up.weight"
        )
    prefix = LAYOUT_PREFIXES[layout]
    modules: dict[str, dict[str, str]] = {}
    others = []
    for key in shapes:
        found = _split_key(key, prefix) if key.startswith(prefix) and _other_layout(key, layout) is None else None
        if found is None:
            others.append(key)
            continue
        module, role = found
        modules.setdefault(module, {})[role] = key
    if others:
        warnings.warn(
            f"{source}: {len(others)} key(s) not of its {layout} LoRA layout, ignored: {_sample(others)}",
            stacklevel=3,
        )
    for module, keys in modules.items():
        _check_pair(module, keys, shapes, source)
    return layout, modules


def _other_layout(key: str, layout: str) -> str | None:
    """The prefixed layout a key belongs to when the file's is the unprefixed "official"."""
    if layout != "official":
        return None
    return next((name for name, prefix in LAYOUT_PREFIXES.items() if prefix and key.startswith(prefix)), None)


def _split_key(key: str, prefix: str) -> tuple[str, str] | None:
    """`<prefix><module><suffix>` -> (module, "down" / "up" / "alpha"), or None."""
    body = key[len(prefix) :]
    for down, up in PAIR_SUFFIXES:
        for suffix, role in ((down, "down"), (up, "up")):
            if body.endswith(suffix):
                return body[: -len(suffix)], role
    if body.endswith(ALPHA_SUFFIX):
        return body[: -len(ALPHA_SUFFIX)], "alpha"
    return None


def _check_pair(module: str, keys: dict[str, str], shapes: Mapping[str, tuple], source: str) -> None:
    """Both halves present, (rank, in) and (out, rank) with the same rank, a scalar alpha."""
    if "down" not in keys or "up" not in keys:
        have = ", ".join(keys.values())
        raise CheckpointError(f"{source}: LoRA module {module!r} has only {have}; it needs both its down and up")
    down, up = shapes[keys["down"]], shapes[keys["up"]]
    if len(down) != 2 or len(up) != 2 or down[0] != up[1]:
        raise CheckpointError(
            f"{source}: LoRA module {module!r} has down {down} and up {up}; "
            "allowed: down (rank, in_features) and up (out_features, rank) of one rank"
        )
    if "alpha" in keys and math.prod(shapes[keys["alpha"]]) != 1:
        raise CheckpointError(f"{source}: {keys['alpha']!r} has shape {shapes[keys['alpha']]}; allowed: one number")


def _refuse_unsupported(keys, source: str) -> None:
    found: dict[str, list[str]] = {}
    for key in keys:
        kind = next((kind for marker, kind in UNSUPPORTED_INFIXES.items() if marker in key), None)
        kind = kind or next((kind for end, kind in UNSUPPORTED_ENDINGS.items() if key.endswith(end)), None)
        if kind is not None:
            found.setdefault(kind, []).append(key)
    if found:
        named = "; ".join(f"{kind}: {_sample(names)}" for kind, names in found.items())
        raise CheckpointError(
            f"{source}: key kinds this loader does not apply ({named}); "
            "allowed: plain LoRA (lora_A/lora_B or lora_down/lora_up, optional alpha)"
        )


def _sample(keys, count: int = 3) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(repr(key) for key in keys[:count]) + more


# ---------------------------------------------------------------- names


def official_module_name(module: str, layout: str) -> str:
    """A module name as the layout spells it -> the official checkpoint's name. diffusers'
    spellings (`proj_in`, `time_embed`) are read in every layout: no official name holds
    them, and trainers mix the two under the same prefixes."""
    if layout == "kohya":
        module = _from_underscores(module)
    return next(iter(rename_keys({module: None}, TRANSFORMER_DIFFUSERS_TO_OFFICIAL)))


def _from_underscores(name: str) -> str:
    """kohya's `transformer_blocks_3_attn1_to_q` -> `transformer_blocks.3.attn1.to_q`;
    diffusers' names (`proj_in`, `time_embed_...`) are read too. Unknown names are kept
    (they match no layer and are reported as such)."""
    top = {_underscored(name): name for name in _TOP_MODULES}
    top.update({_underscored(d): o for d, o in _diffusers_top_names().items()})
    if name in top:
        return top[name]
    match = _KOHYA_BLOCK.fullmatch(name)
    block = {_underscored(module): module for module in _BLOCK_MODULES}
    if match and match.group(2) in block:
        return f"transformer_blocks.{match.group(1)}.{block[match.group(2)]}"
    return name


def _underscored(name: str) -> str:
    return name.replace(".", "_")


def _diffusers_top_names() -> dict[str, str]:
    """diffusers' spelling -> official, of the top-level modules whose names differ."""
    return {_diffusers_module_name(name): name for name in _TOP_MODULES}


def _diffusers_module_name(official: str) -> str:
    inverse = {official: diffusers for diffusers, official in TRANSFORMER_DIFFUSERS_TO_OFFICIAL.items()}
    return rename_keys({official: None}, inverse).popitem()[0]


def _diffusers_alphas(metadata: Mapping[str, str], modules, source: str) -> dict[str, float]:
    """Each module's alpha from the peft config diffusers saves (`lora_alpha`, its
    `alpha_pattern`, `use_rslora`); none without that config (diffusers then uses the rank)."""
    raw = metadata.get(DIFFUSERS_METADATA_KEY)
    if not raw:
        return {}
    try:
        config = {k.removeprefix("transformer."): v for k, v in json.loads(raw).items()}
    except (json.JSONDecodeError, AttributeError) as error:
        raise CheckpointError(f"{source}: metadata {DIFFUSERS_METADATA_KEY} is not a JSON object ({error})") from None
    if config.get("use_dora"):
        raise CheckpointError(f"{source}: a DoRA adapter (use_dora); allowed: plain LoRA")
    if "lora_alpha" not in config:
        return {}
    patterns = config.get("alpha_pattern") or {}
    alphas = {}
    for module in modules:
        alpha = next((v for p, v in patterns.items() if module == p or module.endswith(f".{p}")), config["lora_alpha"])
        rank = _rank_of(module, config)
        alphas[module] = float(alpha) * (math.sqrt(rank) if config.get("use_rslora") else 1.0)
    return alphas


def _rank_of(module: str, config: Mapping) -> int:
    patterns = config.get("rank_pattern") or {}
    return next((v for p, v in patterns.items() if module == p or module.endswith(f".{p}")), config.get("r", 1))


# ---------------------------------------------------------------- writing


def save_lora(
    path: str | Path,
    lora_tensors: Mapping[str, LoRAWeights | tuple],
    layout: str = "comfyui",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write LoRA updates (official module name -> `LoRAWeights` or (down, up[, alpha])) as
    `layout` spells them: "comfyui" / "official" / "kohya" with `.alpha` tensors, "diffusers"
    with its peft config (`lora_alpha` and an `alpha_pattern`) in the metadata."""
    if layout not in LAYOUTS:
        raise SettingsError(f"LoRA layout {layout!r} is not allowed; allowed: {', '.join(LAYOUTS)}")
    weights = {name: w if isinstance(w, LoRAWeights) else LoRAWeights(*w) for name, w in lora_tensors.items()}
    if not weights:
        raise SettingsError("save_lora needs at least one module's LoRA tensors")
    metadata = dict(metadata or {})
    tensors: dict[str, Tensor] = {}
    down_suffix, up_suffix = PAIR_SUFFIXES[1] if layout == "kohya" else PAIR_SUFFIXES[0]
    for name, w in weights.items():
        module = _written_name(name, layout)
        tensors[module + down_suffix] = w.down.contiguous()
        tensors[module + up_suffix] = w.up.contiguous()
        if w.alpha is not None and layout != "diffusers":
            tensors[module + ALPHA_SUFFIX] = torch.tensor(float(w.alpha))
    if layout == "diffusers" and any(w.alpha is not None for w in weights.values()):
        metadata[DIFFUSERS_METADATA_KEY] = json.dumps(_peft_config(weights))
    save_file(tensors, str(path), metadata=metadata)
    return Path(path)


def _written_name(official: str, layout: str) -> str:
    if layout == "diffusers":
        return "transformer." + _diffusers_module_name(official)
    if layout == "kohya":
        return "lora_unet_" + _underscored(official)
    return LAYOUT_PREFIXES[layout] + official


def _peft_config(weights: Mapping[str, LoRAWeights]) -> dict:
    """The peft LoraConfig keys diffusers writes: one rank and alpha, the rest as patterns."""
    names = {name: _diffusers_module_name(name) for name in weights}
    ranks = {names[n]: w.rank for n, w in weights.items()}
    alphas = {names[n]: float(w.rank if w.alpha is None else w.alpha) for n, w in weights.items()}
    rank = max(set(ranks.values()), key=list(ranks.values()).count)
    alpha = max(set(alphas.values()), key=list(alphas.values()).count)
    config = {
        "r": rank,
        "lora_alpha": alpha,
        "rank_pattern": {m: r for m, r in ranks.items() if r != rank},
        "alpha_pattern": {m: a for m, a in alphas.items() if a != alpha},
        "target_modules": sorted(names.values()),
    }
    return {f"transformer.{key}": value for key, value in config.items()}
