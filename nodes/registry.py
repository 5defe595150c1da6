"""Names that saved graphs depend on: the category, the pack's own types, and the extra
model folders the pack registers with ComfyUI."""

from __future__ import annotations

import os

import folder_paths

CATEGORY = "LTX-Video"

# The pack's own objects carry a prefix, so ComfyUI refuses to wire them into nodes of
# other packs (a ComfyUI MODEL is not our transformer, its VAE is not ours).
MODEL_TYPE = "LTXV_CORE_MODEL"
VAE_TYPE = "LTXV_CORE_VAE"
T5_TYPE = "LTXV_CORE_T5"

# The tiny demo model ships inside the core package, so the shipped workflows run as
# they are: its folder is one more place for checkpoints and text encoders.
ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ltx_core", "assets")


def register_model_folders() -> None:
    """Make sure every folder kind the loaders list exists in this ComfyUI (older copies
    have no `text_encoders` or `diffusion_models`), and add the shipped assets folder."""
    models_dir = folder_paths.models_dir
    for kind in ("text_encoders", "diffusion_models"):
        if kind not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(kind, os.path.join(models_dir, kind))
    for kind in ("checkpoints", "text_encoders"):
        if ASSETS_DIR not in folder_paths.get_folder_paths(kind):
            folder_paths.add_model_folder_path(kind, ASSETS_DIR)
