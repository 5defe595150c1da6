"""Names that saved graphs depend on: the category, the pack's own types, and the extra
model folders the pack registers with ComfyUI."""

from __future__ import annotations

import logging
import os
import shutil

import folder_paths

CATEGORY = "LTX-Video"

# The pack's own objects carry a prefix, so ComfyUI refuses to wire them into nodes of
# other packs (a ComfyUI MODEL is not our transformer, its VAE is not ours).
MODEL_TYPE = "LTXV_CORE_MODEL"
VAE_TYPE = "LTXV_CORE_VAE"
T5_TYPE = "LTXV_CORE_T5"

# The tiny demo model ships inside the core package, so the shipped workflows run as
# they are: its folder is one more place for checkpoints and text encoders.
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS_DIR = os.path.join(PACK_DIR, "ltx_core", "assets")
# The images the shipped i2v / first_last workflows load by name (scripts/make_example_inputs.py).
EXAMPLE_INPUTS_DIR = os.path.join(PACK_DIR, "workflows", "input")


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


def install_example_inputs(input_dir: str | None = None) -> list[str]:
    """Copy the images the shipped workflows load into ComfyUI's input folder, so they run
    as they are. A file of the same name already there is the user's and is never
    replaced; a folder that cannot be written is only logged. Returns the names copied."""
    input_dir = input_dir or folder_paths.get_input_directory()
    copied = []
    for name in sorted(os.listdir(EXAMPLE_INPUTS_DIR)) if os.path.isdir(EXAMPLE_INPUTS_DIR) else []:
        target = os.path.join(input_dir, name)
        if not name.lower().endswith(".png") or os.path.exists(target):
            continue
        try:
            os.makedirs(input_dir, exist_ok=True)
            shutil.copyfile(os.path.join(EXAMPLE_INPUTS_DIR, name), target)
            copied.append(name)
        except OSError as error:
            logging.warning("LTX-Video: could not copy the example image %s to %s: %s", name, input_dir, error)
    return copied
