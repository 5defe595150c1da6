"""State-dict key maps between diffusers' names and the official single-file names.

Our modules carry the official checkpoint's names, so the official file loads with only
its prefix stripped; a diffusers folder goes through the renames below. The maps are
data (ordered substring renames, applied in order), as Lightricks' own loader keeps them
(`ltx_video/utils/diffusers_config_mapping.py`). Each model owner edits only its section.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

# --- transformer keys ---

# Prefix of the transformer's tensors in the official single `.safetensors` file.
TRANSFORMER_PREFIX = "model.diffusion_model."

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
