"""State-dict names: the prefixes of the two models in the official single file, and the
key maps between diffusers' names and the official ones.

Our modules carry the official checkpoint's names, so the official file loads with only
its prefix stripped; a diffusers folder goes through the renames below. The maps are
data (ordered substring renames, applied in order), as Lightricks' own loader keeps them
(`ltx_video/utils/diffusers_config_mapping.py`). Each model owner edits only its section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

from ..errors import CheckpointError
from ..models.configs import VAEConfig

# Prefixes of the models' tensors in the official single `.safetensors` file.
TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."

# --- transformer keys ---

# diffusers `LTXVideoTransformer3DModel` name -> official `Transformer3DModel` name.
# Every other key (transformer_blocks.N.attn1.to_q, ff.net.0.proj, scale_shift_table,
# caption_projection.linear_1, proj_out, ...) is spelled the same in both.
TRANSFORMER_DIFFUSERS_TO_OFFICIAL: dict[str, str] = {
    "proj_in": "patchify_proj",
    "time_embed": "adaln_single",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
}


def rename_keys(state_dict: Mapping[str, Tensor], renames: Mapping[str, str]) -> dict[str, Tensor]:
    """Apply substring renames, in order, to every key; the tensors are not copied."""
    renamed = {}
    for key, tensor in state_dict.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        renamed[key] = tensor
    return renamed


def transformer_from_diffusers(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A diffusers transformer state dict under the official names (`LTXVTransformer`'s)."""
    return rename_keys(state_dict, TRANSFORMER_DIFFUSERS_TO_OFFICIAL)


# --- vae keys ---

# Official flat block -> diffusers module, per VAE family (`ltx_core.models.configs.LTXV_VAE_*`).
# diffusers regroups the flat lists: each down block is [res_x, downsampler, res_x_y
# as `conv_out`], each up block [res_x_y as `conv_in`, upsampler, res_x]; the encoder's
# last and the decoder's first `res_x` are the `mid_block`. Sources: diffusers
# `loaders/single_file_utils.convert_ltx_vae_checkpoint_to_diffusers` (VAE_KEYS_RENAME_DICT,
# VAE_091_RENAME_DICT, VAE_095_RENAME_DICT), checked against the block lists.
_VAE_0_9_0_ENCODER = {
    "encoder.down_blocks.0": "encoder.down_blocks.0",
    "encoder.down_blocks.1": "encoder.down_blocks.0.downsamplers.0",
    "encoder.down_blocks.2": "encoder.down_blocks.0.conv_out",
    "encoder.down_blocks.3": "encoder.down_blocks.1",
    "encoder.down_blocks.4": "encoder.down_blocks.1.downsamplers.0",
    "encoder.down_blocks.5": "encoder.down_blocks.1.conv_out",
    "encoder.down_blocks.6": "encoder.down_blocks.2",
    "encoder.down_blocks.7": "encoder.down_blocks.2.downsamplers.0",
    "encoder.down_blocks.8": "encoder.down_blocks.3",
    "encoder.down_blocks.9": "encoder.mid_block",
}
_VAE_0_9_0_DECODER = {
    "decoder.up_blocks.0": "decoder.mid_block",
    "decoder.up_blocks.1": "decoder.up_blocks.0",
    "decoder.up_blocks.2": "decoder.up_blocks.1.upsamplers.0",
    "decoder.up_blocks.3": "decoder.up_blocks.1",
    "decoder.up_blocks.4": "decoder.up_blocks.2.conv_in",
    "decoder.up_blocks.5": "decoder.up_blocks.2.upsamplers.0",
    "decoder.up_blocks.6": "decoder.up_blocks.2",
    "decoder.up_blocks.7": "decoder.up_blocks.3.conv_in",
    "decoder.up_blocks.8": "decoder.up_blocks.3.upsamplers.0",
    "decoder.up_blocks.9": "decoder.up_blocks.3",
}
_VAE_0_9_5_ENCODER = {
    "encoder.down_blocks.0": "encoder.down_blocks.0",
    "encoder.down_blocks.1": "encoder.down_blocks.0.downsamplers.0",
    "encoder.down_blocks.2": "encoder.down_blocks.1",
    "encoder.down_blocks.3": "encoder.down_blocks.1.downsamplers.0",
    "encoder.down_blocks.4": "encoder.down_blocks.2",
    "encoder.down_blocks.5": "encoder.down_blocks.2.downsamplers.0",
    "encoder.down_blocks.6": "encoder.down_blocks.3",
    "encoder.down_blocks.7": "encoder.down_blocks.3.downsamplers.0",
    "encoder.down_blocks.8": "encoder.mid_block",
}
# 0.9.1+ decoders: [res_x, compress_all] x 3 + res_x, no res_x_y.
_VAE_0_9_1_DECODER = {
    "decoder.up_blocks.0": "decoder.mid_block",
    "decoder.up_blocks.1": "decoder.up_blocks.0.upsamplers.0",
    "decoder.up_blocks.2": "decoder.up_blocks.0",
    "decoder.up_blocks.3": "decoder.up_blocks.1.upsamplers.0",
    "decoder.up_blocks.4": "decoder.up_blocks.1",
    "decoder.up_blocks.5": "decoder.up_blocks.2.upsamplers.0",
    "decoder.up_blocks.6": "decoder.up_blocks.2",
}
# Outside the block lists. diffusers has no `mean-of-stds`, `mean-of-stds_over_std-of-means`
# or `channel` statistics; `CausalVideoVAE` loads without them.
_VAE_COMMON = {
    "decoder.last_time_embedder": "decoder.time_embedder",
    "decoder.last_scale_shift_table": "decoder.scale_shift_table",
    "per_channel_statistics.mean-of-means": "latents_mean",
    "per_channel_statistics.std-of-means": "latents_std",
}
VAE_OFFICIAL_TO_DIFFUSERS: dict[str, dict[str, str]] = {
    "0.9.0": {**_VAE_0_9_0_ENCODER, **_VAE_0_9_0_DECODER, **_VAE_COMMON},
    "0.9.1": {**_VAE_0_9_0_ENCODER, **_VAE_0_9_1_DECODER, **_VAE_COMMON},
    "0.9.5": {**_VAE_0_9_5_ENCODER, **_VAE_0_9_1_DECODER, **_VAE_COMMON},
}
# Renames inside a block, diffusers -> official: `resnets` are `res_blocks`, and the
# 1x1x1 shortcut conv and the shortcut LayerNorm sit one module shallower / deeper.
VAE_DIFFUSERS_TO_OFFICIAL_LEAVES = {
    ".resnets.": ".res_blocks.",
    ".conv_shortcut.conv.": ".conv_shortcut.",
    ".norm3.": ".norm3.norm.",
}
# Keys (official names, `vae.` stripped) that tell the families apart:
# - 0.9.0 has no timestep conditioning: no `decoder.last_scale_shift_table`;
# - 0.9.5+ has space-to-depth downsamplers, whose conv is nested one deeper:
#   `encoder.down_blocks.1.conv.conv.weight` (0.9.0 / 0.9.1: `...1.conv.weight`);
# - 0.9.1 is the rest; it alone injects noise (`...res_blocks.N.per_channel_scale1`).
_VAE_FAMILY_KEYS = {  # family -> (official key, diffusers key) that only it (and later) has
    "timestep": ("decoder.last_scale_shift_table", "decoder.scale_shift_table"),
    "0.9.5": ("encoder.down_blocks.1.conv.conv.weight", "encoder.down_blocks.0.downsamplers.0.conv.conv.weight"),
}


def vae_family(cfg: VAEConfig) -> str:
    """ "0.9.0", "0.9.1" or "0.9.5" (0.9.5-0.9.8) from a config's block layout; tiny
    configs of the same layout belong to the same family."""
    if any(name.endswith("_res") for name, _ in cfg.encoder_block_list):
        return "0.9.5"
    return "0.9.1" if cfg.timestep_conditioning else "0.9.0"


def vae_family_from_keys(keys: Iterable[str]) -> str:
    """The VAE family of a state dict, from key names alone (official names with or
    without the `vae.` prefix, or diffusers names)."""
    keys = {key.removeprefix(VAE_PREFIX) for key in keys}
    if any(k in keys for k in _VAE_FAMILY_KEYS["0.9.5"]):
        return "0.9.5"
    return "0.9.1" if any(k in keys for k in _VAE_FAMILY_KEYS["timestep"]) else "0.9.0"


def _official_key(key: str, diffusers_to_official: Mapping[str, str]) -> str:
    """Longest diffusers module prefix -> its official block, then the leaf renames."""
    for prefix in sorted(diffusers_to_official, key=len, reverse=True):
        if key == prefix or key.startswith(prefix + "."):
            key = diffusers_to_official[prefix] + key[len(prefix) :]
            break
    for old, new in VAE_DIFFUSERS_TO_OFFICIAL_LEAVES.items():
        key = key.replace(old, new)
    return key


def vae_from_diffusers(state_dict: Mapping[str, Tensor], cfg: VAEConfig) -> dict[str, Tensor]:
    """A diffusers `AutoencoderKLLTXVideo` state dict under the official names
    (`CausalVideoVAE`'s), for the family of `cfg`."""
    family = vae_family(cfg)
    table = VAE_OFFICIAL_TO_DIFFUSERS[family]
    expected = {
        "encoder": sum(k.startswith("encoder.") for k in table),
        "decoder": sum(k.startswith("decoder.up_blocks.") for k in table),
    }
    found = {"encoder": len(cfg.encoder_block_list), "decoder": len(cfg.decoder_block_list)}
    if found != expected:
        raise CheckpointError(
            f"VAE config with {found['encoder']} encoder / {found['decoder']} decoder blocks "
            f"does not have the layout of the LTX-Video {family} VAE "
            f"({expected['encoder']} / {expected['decoder']}); no diffusers key map for it"
        )
    diffusers_to_official = {d: o for o, d in table.items()}
    return {_official_key(k, diffusers_to_official): v for k, v in state_dict.items()}
