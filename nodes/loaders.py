"""Loader nodes: the checkpoint (transformer + VAE), the transformer alone (GGUF, FP8), the
VAE alone, and the T5 text encoder.

Files are listed from ComfyUI's model folders through `folder_paths`; the core loads
them (safetensors only, config from the file's metadata) and the models are handed to
ComfyUI's memory manager.
"""

from __future__ import annotations

import os
from dataclasses import replace

import comfy.text_encoders
import folder_paths

from ..ltx_core import pipeline as core_pipeline
from ..ltx_core.checkpoint import loading as core_checkpoint, vae_file as core_vae_file
from ..ltx_core.checkpoint.single_file import SAFETENSORS_SUFFIX
from ..ltx_core.models import text_encoder as core_text_encoder
from ..ltx_core.speed import optimize as core_speed
from . import memory
from .registry import ASSETS_DIR, CATEGORY, MODEL_TYPE, T5_TYPE, VAE_TYPE

CHECKPOINT_FOLDERS = ("checkpoints", "diffusion_models")
TRANSFORMER_FOLDERS = ("diffusion_models", "unet_gguf", "checkpoints")  # unet_gguf: ComfyUI-GGUF's
VAE_FOLDERS = ("vae", "checkpoints")
GGUF_SUFFIX = ".gguf"
TEXT_ENCODER_FOLDERS = ("text_encoders", "clip")

# The loader's choice of `Speed.chosen(compile, fp8, ..., kernels)`, the CLI's --compile / --fp8 / --fast-kernels;
# the first is the default (the fused kernels: the same frames within bf16's rounding, nothing to compile).
OPTIMIZATIONS = {
    "kernels": (False, False, True),
    "none": (False, False, False),
    "compile": (True, False, False),
    "compile+fp8": (True, True, False),
}
COMPILE_BACKEND = "inductor"  # torch.compile's; the CPU tests trace with "eager"


def _folders(names: tuple[str, ...]) -> list[str]:
    paths = []
    for name in names:
        if name in folder_paths.folder_names_and_paths:
            paths += [path for path in folder_paths.get_folder_paths(name) if path not in paths]
    return paths


def _subfolders_with(names: tuple[str, ...], marker) -> list[str]:
    """Sub-folders (one level) of the model folders for which `marker(path)` holds:
    diffusers and Hugging Face models are folders, which `folder_paths` does not list."""
    found = []
    for root in _folders(names):
        if os.path.isdir(root):
            found += [entry.name for entry in os.scandir(root) if entry.is_dir() and marker(entry.path)]
    return found


def _files(names: tuple[str, ...], inside_folder_models: list[str]) -> list[str]:
    """`.safetensors` files of the model folders, leaving out those that belong to a
    folder model (a diffusers or Hugging Face folder is chosen as a whole)."""
    found = []
    for name in names:
        if name in folder_paths.folder_names_and_paths:
            found += [f for f in folder_paths.get_filename_list(name) if f.lower().endswith(SAFETENSORS_SUFFIX)]
    inside = tuple(folder.rstrip("/\\") + sep for folder in inside_folder_models for sep in ("/", "\\"))
    return [f for f in found if not f.startswith(inside)]


def _is_diffusers_folder(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "transformer")) and os.path.isdir(os.path.join(path, "vae"))


def _is_t5_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def _is_shipped_checkpoint(entry: os.DirEntry) -> bool:
    return entry.is_file() and entry.name.lower().endswith(SAFETENSORS_SUFFIX)


def _is_shipped_text_encoder(entry: os.DirEntry) -> bool:
    return entry.is_dir() and _is_t5_folder(entry.path)


# Which of the shipped assets (registry.ASSETS_DIR, one level) each loader offers: the
# single-file demo checkpoint to the checkpoint loader, the T5 folder to the T5 loader.
SHIPPED_KIND = {CHECKPOINT_FOLDERS: _is_shipped_checkpoint, TEXT_ENCODER_FOLDERS: _is_shipped_text_encoder}


def _shipped(names: tuple[str, ...]) -> list[str]:
    if names not in SHIPPED_KIND or not os.path.isdir(ASSETS_DIR):
        return []  # a kind the pack ships no file of (the latent upsamplers)
    return [entry.name for entry in os.scandir(ASSETS_DIR) if SHIPPED_KIND[names](entry)]


def checkpoint_names() -> list[str]:
    folders = _subfolders_with(CHECKPOINT_FOLDERS, _is_diffusers_folder)
    return sorted(set(folders + _files(CHECKPOINT_FOLDERS, folders) + _shipped(CHECKPOINT_FOLDERS)))


def text_encoder_names() -> list[str]:
    folders = _subfolders_with(TEXT_ENCODER_FOLDERS, _is_t5_folder)
    return sorted(set(folders + _files(TEXT_ENCODER_FOLDERS, folders) + _shipped(TEXT_ENCODER_FOLDERS)))


def _resolve(names: tuple[str, ...], name: str) -> str | None:
    """The first model folder's file or folder of that name, else the shipped asset of that
    kind and name (a user's file of the same name comes first); never a path outside them."""
    for root in map(os.path.abspath, _folders(names)):
        path = os.path.abspath(os.path.join(root, name))
        if os.path.commonpath([root, path]) == root and path != root and os.path.exists(path):
            return path
    return os.path.join(ASSETS_DIR, name) if name in _shipped(names) else None


def _missing_message(what: str, name: str, names: tuple[str, ...], available: list[str]) -> str:
    listed = ", ".join(available[:10]) if available else "none"
    return (
        f"{what} {name!r} is not in the model folders {names} ({', '.join(_folders(names))}); "
        f"put the file there or choose one of: {listed}"
    )


class LTXVCoreCheckpointLoader:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads an LTX-Video checkpoint: the official single .safetensors file or a diffusers "
        "folder. Gives the video transformer and the causal VAE."
    )
    RETURN_TYPES = (MODEL_TYPE, VAE_TYPE)
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("The video transformer (DiT).", "The causal video VAE.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (checkpoint_names(), {"tooltip": "A file or diffusers folder in models/checkpoints or models/diffusion_models, or the shipped demo model."}),
            "dtype": (list(memory.DTYPES), {"default": "default", "tooltip": "Weight precision of the transformer and the VAE. default: bfloat16 (as published) on a GPU, float32 on the CPU."}),
            "device": (list(memory.DEVICES), {"default": "default", "tooltip": "Where the models run; 'default' follows ComfyUI."}),
        }, "optional": {
            "optimization": (list(OPTIMIZATIONS), {"default": "kernels", "tooltip": "GPU speed-ups. kernels (default): fused kernels and the fastest attention backend on a CUDA GPU, no compiling (the same numbers within bf16's rounding; nothing changes on the CPU); none: PyTorch's own layers; compile: torch.compile of the transformer and, on a GPU, the VAE decoder (the first run at each size compiles for longer than later runs save, unless one workflow is queued many times at one size); compile+fp8: FP8 linear layers too (GPUs with FP8 tensor cores: RTX 40xx, L4, H100; slightly different numbers)."}),
            "offload": (list(memory.OFFLOAD), {"default": "auto", "tooltip": "ComfyUI moves whole models and offloads one when another needs the room. auto: when sampling would not fit the GPU's memory, stream the fewest transformer blocks from CPU memory while the one before computes (the same frames, slower); blocks: always stream every block (the least GPU memory); none: never stream (a run too large is refused)."}),
        }}  # fmt: skip

    @classmethod
    def VALIDATE_INPUTS(cls, ckpt_name):
        if _resolve(CHECKPOINT_FOLDERS, ckpt_name) is None:
            return _missing_message("checkpoint", ckpt_name, CHECKPOINT_FOLDERS, checkpoint_names())
        return True

    def load(self, ckpt_name, dtype, device, optimization="kernels", offload="auto"):
        load_device, _ = memory.model_devices("diffusion", device)
        speed = _node_speed(optimization, load_device)
        path = _resolve(CHECKPOINT_FOLDERS, ckpt_name)
        loaded = core_checkpoint.load_checkpoint(
            path, dtype=memory.weight_dtype(dtype, "diffusion", device), device="cpu"
        )
        transformer, attention = _optimized(loaded.transformer, speed, load_device)
        if speed.compile_vae:
            core_speed.compile_vae_decoder(loaded.vae, backend=speed.compile_backend)
        model = memory.patcher(
            transformer, "diffusion", device, scheduler=loaded.configs.scheduler, offload=offload, attention=attention
        )
        return (model, memory.patcher(loaded.vae, "vae", device))


def _node_speed(optimization: str, load_device):
    """The loader's choice as the core's `Speed`, checked before any weights are read.
    ComfyUI moves the model between devices (no CUDA graphs)."""
    compile, fp8, kernels = OPTIMIZATIONS[optimization]
    speed = replace(
        core_speed.Speed.chosen(compile, fp8, load_device, stays_put=False, kernels=kernels),
        compile_backend=COMPILE_BACKEND,
    )
    if speed.fp8:
        core_pipeline.check_fp8_device(load_device)
    return speed


def _optimized(transformer, speed, load_device):
    """The transformer with `speed` applied in place for the device it will run on (FP8
    weights are quantized there a layer at a time, the fused kernels are checked there),
    left in CPU memory: a plain module for ComfyUI's memory manager; and the attention
    backend chosen for it, which the samplers run it under (`memory.runner`)."""
    if not speed.changes_transformer:
        return transformer, "default"
    return transformer, core_speed.optimize_transformer(transformer, speed, device=load_device).attention


def _gguf_files(names: tuple[str, ...]) -> list[str]:
    """`.gguf` files under the model folders (ComfyUI's own lists skip that suffix), as
    paths relative to their folder."""
    found = []
    for root in _folders(names):
        for folder, _, files in os.walk(root, followlinks=True):
            relative = os.path.relpath(folder, root)
            found += [os.path.normpath(os.path.join(relative, f)) for f in files if f.lower().endswith(GGUF_SUFFIX)]
    return found


def transformer_names() -> list[str]:
    return sorted(set(_files(TRANSFORMER_FOLDERS, []) + _gguf_files(TRANSFORMER_FOLDERS)))


def vae_names() -> list[str]:
    return sorted(set(_files(VAE_FOLDERS, [])))


class LTXVCoreTransformerLoader:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads the LTX-Video transformer alone: a GGUF file (ComfyUI-GGUF's, kept quantized), an FP8 "
        "or scaled-FP8 file, or an official single file. Pair it with LTX-Video VAE Loader."
    )
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The video transformer (DiT).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet_name": (transformer_names(), {"tooltip": "A .gguf or .safetensors file in models/diffusion_models (or unet) or models/checkpoints."}),
            "dtype": (list(memory.DTYPES), {"default": "default", "tooltip": "Precision of the weights that are not quantized, and of the computation."}),
            "device": (list(memory.DEVICES), {"default": "default", "tooltip": "Where the model runs; 'default' follows ComfyUI."}),
        }, "optional": {
            "optimization": (list(OPTIMIZATIONS), {"default": "kernels", "tooltip": "As in LTX-Video Checkpoint Loader; compile+fp8 runs an FP8 file's weights on the FP8 tensor cores."}),
            "offload": (list(memory.OFFLOAD), {"default": "auto", "tooltip": "ComfyUI moves whole models and offloads one when another needs the room. auto: when sampling would not fit the GPU's memory, stream the fewest transformer blocks from CPU memory while the one before computes (the same frames, slower); blocks: always stream every block (the least GPU memory); none: never stream (a run too large is refused)."}),
        }}  # fmt: skip

    @classmethod
    def VALIDATE_INPUTS(cls, unet_name):
        if _resolve(TRANSFORMER_FOLDERS, unet_name) is None:
            return _missing_message("transformer", unet_name, TRANSFORMER_FOLDERS, transformer_names())
        return True

    def load(self, unet_name, dtype, device, optimization="kernels", offload="auto"):
        load_device, _ = memory.model_devices("diffusion", device)
        speed = _node_speed(optimization, load_device)
        path = _resolve(TRANSFORMER_FOLDERS, unet_name)
        weight_dtype = memory.weight_dtype(dtype, "diffusion", device)
        transformer, info = core_checkpoint.load_transformer(path, dtype=weight_dtype, device="cpu")
        transformer, attention = _optimized(transformer, speed, load_device)
        scheduler = info.configs.scheduler
        return (memory.patcher(transformer, "diffusion", device, scheduler, offload=offload, attention=attention),)


class LTXVCoreVAELoader:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads the LTX-Video causal VAE alone: a VAE file (as published beside GGUF transformers) or the "
        "VAE of an official single file."
    )
    RETURN_TYPES = (VAE_TYPE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The causal video VAE.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (vae_names(), {"tooltip": "A .safetensors file in models/vae or models/checkpoints."}),
            "dtype": (list(memory.DTYPES), {"default": "default", "tooltip": "Weight precision. default: bfloat16 on a GPU, float32 on the CPU."}),
            "device": (list(memory.DEVICES), {"default": "default", "tooltip": "Where it encodes and decodes; 'default' follows ComfyUI."}),
        }}  # fmt: skip

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        if _resolve(VAE_FOLDERS, vae_name) is None:
            return _missing_message("VAE", vae_name, VAE_FOLDERS, vae_names())
        return True

    def load(self, vae_name, dtype, device):
        path = _resolve(VAE_FOLDERS, vae_name)
        vae = core_vae_file.load_vae_file(path, dtype=memory.weight_dtype(dtype, "vae", device), device="cpu")
        return (memory.patcher(vae, "vae", device),)


class LTXVCoreT5Loader:
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads the T5 text encoder: a Hugging Face folder (config.json, weights and the "
        "sentencepiece tokenizer) or a single .safetensors file with the tokenizer beside it."
    )
    RETURN_TYPES = (T5_TYPE,)
    RETURN_NAMES = ("t5",)
    OUTPUT_TOOLTIPS = ("The T5 encoder with its tokenizer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder_name": (text_encoder_names(), {"tooltip": "A folder or file in models/text_encoders or models/clip, or the shipped demo T5."}),
            "dtype": (list(memory.DTYPES), {"default": "default", "tooltip": "Weight precision of the encoder. default: bfloat16 on a GPU, float32 on the CPU."}),
            "device": (list(memory.DEVICES), {"default": "default", "tooltip": "Where it encodes; it leaves that device right after."}),
        }}  # fmt: skip

    @classmethod
    def VALIDATE_INPUTS(cls, text_encoder_name):
        if _resolve(TEXT_ENCODER_FOLDERS, text_encoder_name) is None:
            return _missing_message("text encoder", text_encoder_name, TEXT_ENCODER_FOLDERS, text_encoder_names())
        return True

    def load(self, text_encoder_name, dtype, device):
        path = _resolve(TEXT_ENCODER_FOLDERS, text_encoder_name)
        encoder = core_text_encoder.load_text_encoder(
            path, _tokenizer_for(path), dtype=memory.weight_dtype(dtype, "text_encoder", device), device="cpu"
        )
        return (memory.LoadedT5(encoder, memory.patcher(encoder.model, "text_encoder", device)),)


def _tokenizer_for(path: str) -> str | None:
    """A folder model brings its tokenizer; a single file (ComfyUI's t5xxl_*.safetensors)
    takes one from beside it, else the T5 tokenizer that ComfyUI ships."""
    if os.path.isdir(path):
        return None
    beside = core_text_encoder.find_tokenizer_beside(path)
    # comfy.text_encoders is a namespace package: no __file__, one folder on its path
    return str(beside) if beside else os.path.join(list(comfy.text_encoders.__path__)[0], "t5_tokenizer")
