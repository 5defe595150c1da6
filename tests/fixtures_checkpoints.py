"""Random-weight LTX-Video checkpoints for tests, in both published layouts.

`write_official_single_file(path, release)` writes one `.safetensors` file exactly as
Lightricks publishes them: transformer tensors under `model.diffusion_model.`, VAE tensors
under `vae.` (all five `per_channel_statistics` included), and metadata
`{"config": json.dumps({"transformer": {...}, "vae": {...}, "scheduler": {...}})}` with
the fields Lightricks' `Transformer3DModel` / `CausalVideoAutoencoder` /
`RectifiedFlowScheduler.from_pretrained` read, extras included.

`write_diffusers_folder(path, release)` writes the same weights as diffusers'
`save_pretrained` does (`transformer/`, `vae/`, `scheduler/`, optionally `text_encoder/`
and `tokenizer/`), through diffusers' own model classes, mapped by `ltx_core.checkpoint.keymaps`.

Both build our models from tiny configs with the given seed, so the same
(release, seed) gives the same weights in both layouts. Releases are the keys of
`ltx_core.checkpoint.versions.ARCHITECTURE_OF_RELEASE`; 0.9.7 and 0.9.8 (13B) keep the 48 blocks
that identify them, at tiny width.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ltx_core.checkpoint.keymaps import transformer_from_diffusers, vae_family, vae_from_diffusers
from ltx_core.checkpoint.versions import ARCHITECTURE_OF_RELEASE, STOCK_CONFIGS, ModelConfigs
from ltx_core.checkpoint.writing import config_metadata, official_tensors
from ltx_core.models import configs as C
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.sampling.scheduler import LTXV_SCHEDULER

RELEASES = tuple(ARCHITECTURE_OF_RELEASE)

# Settings Lightricks' Transformer3DModel metadata carries beside ours (all inert at
# inference; `ltx_video/utils/diffusers_config_mapping.py` OURS_TRANSFORMER_CONFIG).
LIGHTRICKS_TRANSFORMER_EXTRAS = {
    "_diffusers_version": "0.25.1",
    "_name_or_path": "PixArt-alpha/PixArt-XL-2-256x256",
    "attention_type": "default",
    "dropout": 0.0,
    "double_self_attention": False,
    "norm_num_groups": 32,
    "num_embeds_ada_norm": 1000,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "project_to_2d_pos": True,
    "upcast_attention": False,
    "use_linear_projection": False,
    "positional_embedding_type": "rope",
}
TINY_TRANSFORMER_NO_CAUSAL_FIX = replace(C.TINY_TRANSFORMER, causal_temporal_positioning=False)
TINY_CONFIGS = {
    "0.9.0": ModelConfigs(TINY_TRANSFORMER_NO_CAUSAL_FIX, C.TINY_VAE_0_9_0),
    "0.9.1": ModelConfigs(TINY_TRANSFORMER_NO_CAUSAL_FIX, C.TINY_VAE_0_9_1),
    "0.9.5": ModelConfigs(C.TINY_TRANSFORMER, C.TINY_VAE_0_9_5),
    "0.9.7": ModelConfigs(replace(C.TINY_TRANSFORMER, num_layers=48), C.TINY_VAE_0_9_5),
}


def release_configs(release: str, tiny: bool = True) -> ModelConfigs:
    """The configs of a release's architecture: tiny, or as published (GBs of weights)."""
    version = ARCHITECTURE_OF_RELEASE[release]
    return TINY_CONFIGS[version] if tiny else STOCK_CONFIGS[version]


def random_models(configs: ModelConfigs, seed: int = 0) -> tuple[LTXVTransformer, CausalVideoVAE]:
    """Our two models with seeded random weights; the tensors the default init sets to
    constants (statistics, scale tables, noise scales) are randomized too, so a tensor
    loaded into the wrong place changes the outputs."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer, vae = LTXVTransformer(configs.transformer).eval(), CausalVideoVAE(configs.vae).eval()
        with torch.no_grad():
            for parameter in [*transformer.parameters(), *vae.parameters()]:
                parameter.add_(torch.randn_like(parameter) * 0.05 * parameter.abs().mean().clamp(min=0.1))
            statistics = vae.per_channel_statistics
            statistics.get_buffer("mean-of-means").normal_(0.0, 0.5)
            statistics.get_buffer("std-of-means").uniform_(0.5, 1.5)
            statistics.get_buffer("mean-of-stds").uniform_(0.5, 1.5)
            statistics.get_buffer("mean-of-stds_over_std-of-means").uniform_(0.5, 1.5)
    return transformer, vae


def published_metadata(configs: ModelConfigs, version: str) -> dict:
    """`config_metadata` as the published files spell it: Lightricks' extra transformer
    settings, and 0.9.0's VAE `blocks` with bare layer counts (`["res_x", 4]`)."""
    config = config_metadata(configs)
    config["transformer"] = {**LIGHTRICKS_TRANSFORMER_EXTRAS, **config["transformer"]}
    if version == "0.9.0" and "blocks" in config["vae"]:
        config["vae"]["blocks"] = [
            [name, params["num_layers"]] if set(params) == {"num_layers"} else [name, params]
            for name, params in config["vae"]["blocks"]
        ]
    return config


def write_official_single_file(
    path: str | Path,
    version: str,
    tiny: bool = True,
    seed: int = 0,
    metadata: str = "published",
    drop: tuple[str, ...] = (),
) -> Path:
    """One official-layout `.safetensors` file of `version` (a release name).

    metadata: "published" (the real files' shape), "missing" (no `config` entry) or
    "not-json" (a broken `config` entry). `drop` removes tensors by full name.
    """
    configs = release_configs(version, tiny)
    tensors = official_tensors(*random_models(configs, seed))
    for name in drop:
        del tensors[name]
    config = published_metadata(configs, ARCHITECTURE_OF_RELEASE[version])
    entries = {
        "published": {"config": json.dumps(config)},
        "missing": {},
        "not-json": {"config": json.dumps(config)[:-7]},
    }[metadata]
    path = Path(path)
    save_file(tensors, str(path), metadata=entries or None)
    return path


# ---------------------------------------------------------------- diffusers layout


def diffusers_transformer_kwargs(cfg: C.TransformerConfig) -> dict:
    """LTXVideoTransformer3DModel arguments for a TransformerConfig."""
    return dict(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        cross_attention_dim=cfg.cross_attention_dim,
        num_layers=cfg.num_layers,
        caption_channels=cfg.caption_channels,
        norm_eps=cfg.norm_eps,
        norm_elementwise_affine=cfg.norm_elementwise_affine,
        attention_bias=cfg.attention_bias,
    )


def diffusers_vae_kwargs(cfg: C.VAEConfig) -> dict:
    """AutoencoderKLLTXVideo arguments for a VAEConfig of a published block layout (widths
    from the base channels and the layouts' 2x multipliers, as in diffusers'
    `scripts/convert_ltx_to_diffusers.py` get_vae_config)."""
    family = vae_family(cfg)
    e, d = cfg.encoder_base_channels, cfg.decoder_base_channels
    decoder_res = [dict(p) for name, p in cfg.decoder_block_list if name == "res_x"]
    kwargs = dict(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        latent_channels=cfg.latent_channels,
        patch_size=cfg.patch_size,
        timestep_conditioning=cfg.timestep_conditioning,
        layers_per_block=tuple(dict(p)["num_layers"] for name, p in cfg.encoder_block_list if name == "res_x"),
        decoder_layers_per_block=tuple(p["num_layers"] for p in decoder_res),
        decoder_inject_noise=tuple(bool(p.get("inject_noise", False)) for p in decoder_res),
    )
    if family == "0.9.0":
        return {
            **kwargs,
            "block_out_channels": (e, 2 * e, 4 * e, 4 * e),
            "decoder_block_out_channels": (d, 2 * d, 4 * d, 4 * d),
        }
    decoder = dict(
        decoder_block_out_channels=(2 * d, 4 * d, 8 * d),
        decoder_spatio_temporal_scaling=(True,) * 3,
        upsample_residual=(True,) * 3,
        upsample_factor=(2,) * 3,
    )
    if family == "0.9.1":
        return {**kwargs, **decoder, "block_out_channels": (e, 2 * e, 4 * e, 4 * e)}
    return {
        **kwargs,
        **decoder,
        "block_out_channels": (e, 2 * e, 4 * e, 8 * e, 16 * e),
        "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
        "spatio_temporal_scaling": (True,) * 4,
        "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    }


def _into_diffusers(reference: torch.nn.Module, ours: torch.nn.Module, official_names: dict[str, str]) -> None:
    """Load our tensors into the diffusers model, strictly: official_names maps
    official name -> diffusers name (what keymaps gives for each diffusers key)."""
    ours_state = ours.state_dict()
    reference.load_state_dict({key: ours_state[name] for name, key in official_names.items()}, strict=True)


def write_diffusers_folder(
    path: str | Path,
    version: str,
    tiny: bool = True,
    seed: int = 0,
    text_encoder: Path | None = None,
    max_shard_size: str | None = None,
) -> Path:
    """A diffusers LTX-Video folder of `version` with the weights `write_official_single_file`
    writes for the same seed. `text_encoder`: a Hugging Face T5 folder (with spiece.model)
    copied into text_encoder/ and tokenizer/. `max_shard_size` (e.g. "20KB") shards the
    transformer with an index, as the 13B release is."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    configs = release_configs(version, tiny)
    transformer, vae = random_models(configs, seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    reference = LTXVideoTransformer3DModel(**diffusers_transformer_kwargs(configs.transformer)).eval()
    _into_diffusers(reference, transformer, transformer_from_diffusers({k: k for k in reference.state_dict()}))
    reference.save_pretrained(
        path / "transformer",
        safe_serialization=True,
        **({"max_shard_size": max_shard_size} if max_shard_size else {}),
    )

    reference_vae = AutoencoderKLLTXVideo(**diffusers_vae_kwargs(configs.vae)).eval()
    _into_diffusers(reference_vae, vae, vae_from_diffusers({k: k for k in reference_vae.state_dict()}, configs.vae))
    reference_vae.save_pretrained(path / "vae", safe_serialization=True)

    (path / "scheduler").mkdir(exist_ok=True)
    scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", **asdict(LTXV_SCHEDULER)}
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    if text_encoder is not None:
        shutil.copytree(text_encoder, path / "text_encoder", dirs_exist_ok=True)
        (path / "tokenizer").mkdir(exist_ok=True)
        shutil.copy(Path(text_encoder) / "spiece.model", path / "tokenizer" / "spiece.model")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "LTXPipeline", "_diffusers_version": "0.42.1"}))
    return path


def header_of(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata."""
    with safe_open(str(path), framework="pt") as file:
        return {k: file.get_tensor(k) for k in file.keys()}, file.metadata() or {}
