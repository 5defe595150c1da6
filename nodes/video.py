"""Save video: frames to an mp4 in ComfyUI's output folder, shown in the UI like
ComfyUI's own outputs, with the prompt and the workflow in the file's metadata."""

from __future__ import annotations

import os

import folder_paths

from ..ltx_core import video as core_video
from .registry import CATEGORY


class LTXVCoreSaveVideo:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Writes the frames as an H.264 mp4 (PyAV) into ComfyUI's output folder. The file "
        "appears whole or not at all, and carries the prompt and workflow as metadata."
    )
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames of one video, in order."}),
                "frame_rate": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 240.0, "step": 0.01, "tooltip": "Frames per second of the mp4; the sampler's frame rate, so the video plays at the speed it was generated for."}),
                "filename_prefix": ("STRING", {"default": "LTXV/video", "tooltip": "Sub-folder and file name start inside the output folder."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }  # fmt: skip

    def save(self, images, frame_rate, filename_prefix, prompt=None, extra_pnginfo=None):
        output_dir = folder_paths.get_output_directory()
        height, width = images.shape[1:3]
        folder, name, counter, subfolder, _prefix = folder_paths.get_save_image_path(
            filename_prefix, output_dir, width, height
        )
        filename = f"{name}_{counter:05}_.mp4"
        core_video.write_mp4(
            images, os.path.join(folder, filename), fps=frame_rate, metadata=_metadata(prompt, extra_pnginfo)
        )
        result = {"filename": filename, "subfolder": subfolder, "type": "output", "format": "video/mp4"}
        return {"ui": {"images": [result], "animated": (True,)}}


def _metadata(prompt, extra_pnginfo) -> dict:
    """What ComfyUI's own savers embed (unless started with --disable-metadata)."""
    from comfy.cli_args import args

    if args.disable_metadata:
        return {}
    metadata = {}
    if prompt is not None:
        metadata["prompt"] = prompt
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = value
    return metadata
