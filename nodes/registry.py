"""Names that saved graphs depend on: the category, the pack's own types, and the extra
model folders the pack registers with ComfyUI."""

from __future__ import annotations

import logging
import os
import shutil

import folder_paths

from ..ltx_core.preflight import SHIPPED_ASSETS

CATEGORY = "LTX-Video"

# The pack's own objects carry a prefix, so ComfyUI refuses to wire them into nodes of
# other packs (a ComfyUI MODEL is not our transformer, its VAE is not ours).
MODEL_TYPE = "LTXV_CORE_MODEL"
VAE_TYPE = "LTXV_CORE_VAE"
T5_TYPE = "LTXV_CORE_T5"
UPSAMPLER_TYPE = "LTXV_CORE_UPSAMPLER"  # a latent upsampler (multi-scale pipelines)
GUIDANCE_TYPE = "LTXV_CORE_GUIDANCE"  # one pass's guidance schedule from a release config

# The tiny demo model ships inside the core package, so the shipped workflows run as
# they are. Only the pack's loaders list it, each loader its own kind (loaders.py): as a
# folder of ComfyUI's `checkpoints` or `text_encoders` it would also be offered by ComfyUI's
# own loaders, which cannot load it, and the T5 folder by the checkpoint loader.
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS_DIR = str(SHIPPED_ASSETS)
# The images the shipped i2v / first_last workflows load by name (scripts/make_example_inputs.py).
EXAMPLE_INPUTS_DIR = os.path.join(PACK_DIR, "workflows", "input")


def register_model_folders() -> None:
    """Make sure every folder kind the loaders list exists in this ComfyUI (older copies
    have no `text_encoders`, `diffusion_models` or `latent_upscale_models`, the folder of
    ComfyUI's own latent upscale model loader). The shipped assets are not added to any
    kind (see ASSETS_DIR)."""
    models_dir = folder_paths.models_dir
    for kind in ("text_encoders", "diffusion_models", "latent_upscale_models", "vae", "loras"):
        if kind not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(kind, os.path.join(models_dir, kind))


def install_example_inputs(input_dir: str | None = None) -> list[str]:
    """Copy the images and clips the shipped workflows load into ComfyUI's input folder, so they run
    as they are. A file of the same name already there is the user's and is never
    replaced; a folder that cannot be written is only logged. Returns the names copied."""
    input_dir = input_dir or folder_paths.get_input_directory()
    copied = []
    for name in sorted(os.listdir(EXAMPLE_INPUTS_DIR)) if os.path.isdir(EXAMPLE_INPUTS_DIR) else []:
        target = os.path.join(input_dir, name)
        if not name.lower().endswith((".png", ".mp4")) or os.path.exists(target):
            continue
        try:
            os.makedirs(input_dir, exist_ok=True)
            shutil.copyfile(os.path.join(EXAMPLE_INPUTS_DIR, name), target)
            copied.append(name)
        except OSError as error:
            logging.warning("LTX-Video: could not copy the example image %s to %s: %s", name, input_dir, error)
    return copied
