"""The diffusers LTX-Video folder: a model_index.json beside one sub-folder per component.

`transformer/` and `vae/` each hold a `config.json` (diffusers' LTXVideoTransformer3DModel
and AutoencoderKLLTXVideo settings) and their weights in safetensors, either one
`diffusion_pytorch_model.safetensors` or shards listed by
`diffusion_pytorch_model.safetensors.index.json`; `scheduler/` holds `scheduler_config.json`;
`text_encoder/` and `tokenizer/` hold the T5 encoder. Here the configs become ours and the
diffusers tensor names map to the official ones (through `keymaps`); `loading` checks and
loads the result as it does the official single file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ..errors import CheckpointError, LTXVError
from ..models.configs import LTXV_SCHEDULER, LTXV_VAE_BY_FAMILY, SchedulerConfig, TransformerConfig, VAEConfig
from ..preflight import PICKLE_SUFFIXES
from .keymaps import transformer_from_diffusers, vae_family_from_keys, vae_from_diffusers
from .tensors import SafetensorsHeader, TensorSource
from .versions import (
    STOCK_CONFIGS,
    CheckpointInfo,
    ModelConfigs,
    count_blocks,
    scheduler_config_from_metadata,
    version_with_size,
)

# Sub-folders of a diffusers LTX-Video folder; the first two hold the models loaded here.
DIFFUSERS_MODEL_FOLDERS = ("transformer", "vae")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"


def inspect_diffusers_folder(folder: Path) -> tuple[CheckpointInfo, dict[str, TensorSource]]:
    """What `loading.inspect_checkpoint` returns for a folder: its info (version from the
    tensor names, configs from the config.json files) and where each model's tensors are."""
    missing = [name for name in DIFFUSERS_MODEL_FOLDERS if not (folder / name).is_dir()]
    if missing and (folder / "latent_upsampler").is_dir():
        raise CheckpointError(
            f"folder {str(folder)!r} is a diffusers LTX-Video latent upsampler (latent_upsampler/), not a "
            "checkpoint; load it with the latent upsampler loader, "
            "ltx_core.checkpoint.upsampler.load_latent_upsampler"
        )
    if missing:
        raise CheckpointError(
            f"folder {str(folder)!r} is not a diffusers LTX-Video folder: it lacks "
            f"{', '.join(name + '/' for name in missing)} (expected transformer/, vae/, text_encoder/, "
            "tokenizer/, scheduler/); pass the official .safetensors file or the folder that holds them"
        )
    transformer_config, transformer_headers = diffusers_component(folder / "transformer")
    vae_config, vae_headers = diffusers_component(folder / "vae")
    vae_keys = {key: key for header in vae_headers for key in header.shapes}
    transformer_keys = {key: key for header in transformer_headers for key in header.shapes}
    family = vae_family_from_keys(vae_keys)
    version = version_with_size(family, num_layers=count_blocks(transformer_keys, ""))
    configs = ModelConfigs(
        transformer_config_from_diffusers(transformer_config, STOCK_CONFIGS[version].transformer, folder),
        vae_config_from_diffusers(vae_config, family, folder),
        _scheduler_config_from_folder(folder / "scheduler"),
    )
    sources = {
        "transformer": _diffusers_source(
            "transformer", transformer_headers, transformer_from_diffusers(transformer_keys)
        ),
        "vae": _diffusers_source("vae", vae_headers, vae_from_diffusers(vae_keys, configs.vae)),
    }
    present = {name: folder / name if (folder / name).is_dir() else None for name in ("text_encoder", "tokenizer")}
    info = CheckpointInfo(
        folder,
        "diffusers",
        version,
        configs,
        "diffusers config.json",
        present["text_encoder"],
        present["tokenizer"],
    )
    return info, sources


def _diffusers_source(part: str, headers: list[SafetensorsHeader], official_to_key: Mapping[str, str]) -> TensorSource:
    # keymaps rename keys only; mapping each key to itself gives official name -> file key
    header_of = {key: header for header in headers for key in header.shapes}
    return TensorSource(part, {name: (header_of[key], key) for name, key in official_to_key.items()})


def diffusers_component(folder: Path) -> tuple[dict, list[SafetensorsHeader]]:
    """config.json and the safetensors headers (one file, or the shards of an index)."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"diffusers folder {str(folder)!r} has no config.json")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as error:
        raise CheckpointError(f"{str(config_file)!r} is not JSON: {error}") from error
    index = folder / DIFFUSERS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as error:
            raise CheckpointError(f"{str(index)!r} is not a safetensors index (no weight_map): {error}") from error
        files = [folder / shard for shard in shards]
        absent = [str(file) for file in files if not file.is_file()]
        if absent:
            raise CheckpointError(f"{str(index)!r} names shards that are absent: {', '.join(absent[:3])}")
    elif (folder / DIFFUSERS_WEIGHTS).is_file():
        files = [folder / DIFFUSERS_WEIGHTS]
    else:
        pickles = [p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        found = f"; it holds only pickles ({', '.join(pickles)}), which are refused" if pickles else ""
        raise CheckpointError(
            f"diffusers folder {str(folder)!r} has no {DIFFUSERS_WEIGHTS} or {DIFFUSERS_INDEX}{found}"
        )
    return config, [SafetensorsHeader(file) for file in files]


def transformer_config_from_diffusers(config: Mapping, stock: TransformerConfig, folder: Path) -> TransformerConfig:
    """diffusers' LTXVideoTransformer3DModel config.json -> TransformerConfig, on the
    detected version's stock config (diffusers keeps RoPE settings and the causal time
    fix in the pipeline, not the config)."""
    unsupported = {"activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads"}
    for name, allowed in unsupported.items():
        if config.get(name, allowed) != allowed:
            raise CheckpointError(
                f"{str(folder / 'transformer')!r}: {name} {config[name]!r} is not supported; allowed: {allowed!r}"
            )
    copied = (
        "num_layers",
        "num_attention_heads",
        "attention_head_dim",
        "in_channels",
        "out_channels",
        "caption_channels",
        "cross_attention_dim",
        "attention_bias",
        "norm_elementwise_affine",
        "norm_eps",
    )
    try:
        return replace(stock, **{name: config[name] for name in copied if name in config})
    except LTXVError as error:
        raise CheckpointError(f"{str(folder / 'transformer')!r}: {error}") from error


def vae_config_from_diffusers(config: Mapping, family: str, folder: Path) -> VAEConfig:
    """diffusers' AutoencoderKLLTXVideo config.json -> VAEConfig: the family's block list
    (the layout diffusers' own converter assumes) with the layer counts, noise injection
    and widths of the config."""
    stock = LTXV_VAE_BY_FAMILY[family]
    try:
        encoder = _with_res_x(stock.encoder_block_list, config["layers_per_block"], None)
        decoder = _with_res_x(
            stock.decoder_block_list, config["decoder_layers_per_block"], config.get("decoder_inject_noise")
        )
        # widths: the first encoder block's, and the decoder's at full resolution; 0.9.1+
        # decoders widen by `upsample_factor` on the way down to the latent
        decoder_width = config["decoder_block_out_channels"][0]
        if family != "0.9.0":
            decoder_width //= config["upsample_factor"][0]
        # 0.9.0 lists its blocks once for both halves; keep that form where they agree
        shared = encoder if stock.blocks is not None and encoder == decoder else None
        return replace(
            stock,
            blocks=shared,
            encoder_blocks=None if shared else encoder,
            decoder_blocks=None if shared else decoder,
            encoder_base_channels=config["block_out_channels"][0],
            decoder_base_channels=decoder_width,
            latent_channels=config.get("latent_channels", stock.latent_channels),
            in_channels=config.get("in_channels", stock.in_channels),
            out_channels=config.get("out_channels", stock.out_channels),
            patch_size=config.get("patch_size", stock.patch_size),
            timestep_conditioning=config.get("timestep_conditioning", stock.timestep_conditioning),
        )
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{str(folder / 'vae' / 'config.json')!r} does not describe an LTX-Video {family} VAE: {error}"
        ) from error


def _with_res_x(blocks, layers, inject_noise) -> tuple:
    """The block list with each `res_x`'s layer count (and noise injection) replaced, in order."""
    res_x = [i for i, (name, _) in enumerate(blocks) if name == "res_x"]
    if len(layers) != len(res_x) or (inject_noise is not None and len(inject_noise) != len(res_x)):
        raise ValueError(f"{len(layers)} layer counts for {len(res_x)} res_x blocks")
    out = [[name, dict(params)] for name, params in blocks]
    for n, i in enumerate(res_x):
        out[i][1]["num_layers"] = layers[n]
        if inject_noise is not None and (inject_noise[n] or "inject_noise" in out[i][1]):
            out[i][1]["inject_noise"] = bool(inject_noise[n])
    return tuple((name, params) for name, params in out)


def _scheduler_config_from_folder(folder: Path) -> SchedulerConfig:
    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        return LTXV_SCHEDULER
    try:
        config = json.loads(config_file.read_text())
    except ValueError as error:
        raise CheckpointError(f"{str(config_file)!r} is not JSON: {error}") from error
    return scheduler_config_from_metadata(config)
