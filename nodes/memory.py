"""The pack's models under ComfyUI's memory manager.

Each model is wrapped in `comfy.model_patcher.ModelPatcher`, so ComfyUI's memory manager
counts it, moves it with `load_models_gpu` and offloads it when another model needs the
room, as it does for its own models. A node asks for its model with the memory its own
work needs beside it (`on_device`, from the node's memory plan), so ComfyUI offloads other
models first where the two would not fit; the model then stays on its device after the node,
as ComfyUI's own models do, until another model needs the room: the next run of a workflow
(a new seed) starts computing at once instead of moving the weights in and out again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..ltx_core import memory_plan as planner, offload as core_offload
from ..ltx_core.errors import SettingsError
from ..ltx_core.models.configs import FRAMES_PER_LATENT, LTXV_SCHEDULER, PIXELS_PER_LATENT, SchedulerConfig
from ..ltx_core.preflight import OFFLOAD_CHOICES
from ..ltx_core.speed import optimize as core_speed

# "default": bfloat16 (as published) where the model runs on a GPU that has it, float32 on
# the CPU, where bfloat16 matmuls are several times slower
DTYPES = {"default": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEVICES = ("default", "cpu")  # "default": the device ComfyUI runs models on (--cpu makes it the CPU)
# the loaders' offload choice: ComfyUI moves whole models already, so what is left is blocks
OFFLOAD = tuple(choice for choice in OFFLOAD_CHOICES if choice != "models")


@dataclass(frozen=True)
class LoadedT5:
    """What travels on an `LTXV_CORE_T5` wire: the core's encoder (tokenizer + model) and
    the patcher through which ComfyUI moves its model."""

    encoder: object
    patcher: comfy.model_patcher.ModelPatcher


def weight_dtype(name: str, kind: str, device: str) -> torch.dtype:
    """The dtype a loader's `dtype` choice means for a `kind` of model on `device`."""
    if name not in DTYPES:
        raise SettingsError(f"dtype {name!r} is unknown; allowed: {', '.join(DTYPES)}")
    if DTYPES[name] is not None:
        return DTYPES[name]
    load_device = model_devices(kind, device)[0]
    return torch.bfloat16 if load_device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def model_devices(kind: str, device: str) -> tuple[torch.device, torch.device]:
    """(load device, offload device) for a `kind` of model ("diffusion", "vae",
    "text_encoder"), following ComfyUI's own choices unless the user picked "cpu"."""
    if device not in DEVICES:
        raise SettingsError(f"device {device!r} is unknown; allowed: {', '.join(DEVICES)}")
    if device == "cpu":
        cpu = torch.device("cpu")
        return cpu, cpu
    if kind == "text_encoder":
        return mm.text_encoder_device(), mm.text_encoder_offload_device()
    if kind == "vae":
        return mm.vae_device(), mm.vae_offload_device()
    return mm.get_torch_device(), mm.unet_offload_device()


class ManagedModel(torch.nn.Module):
    """A core model in the shape ComfyUI's `ModelPatcher` manages: it sets `device` on
    the module it holds (a read-only property on transformers' models) and reads
    `get_dtype()`; its memory estimate is the state dict, which is the core model's.
    A transformer also keeps its checkpoint's `scheduler` section here, which release
    configs' "from_checkpoint" schedule means, and the attention backend its loader chose."""

    def __init__(
        self,
        core: torch.nn.Module,
        device: torch.device,
        scheduler: SchedulerConfig | None = None,
        offload="auto",
        attention: str = "default",
    ):
        super().__init__()
        self.core = core
        self.device = device
        self.scheduler = scheduler
        self.offload = offload  # a transformer's block streaming: one of OFFLOAD
        self.attention = attention  # an SDPA backend name (`speed.optimize.attention_context`)

    def get_dtype(self) -> torch.dtype:
        return next(self.core.parameters()).dtype


def patcher(
    module: torch.nn.Module,
    kind: str,
    device: str,
    scheduler: SchedulerConfig | None = None,
    offload: str = "auto",
    attention: str = "default",
) -> comfy.model_patcher.ModelPatcher:
    """Wrap a core model, sitting on its offload device, for ComfyUI's memory manager.
    The plain `ModelPatcher`, not ComfyUI's dynamic one: the core's layers are torch's
    own, which ComfyUI can only move whole."""
    load_device, offload_device = model_devices(kind, device)
    module.to(offload_device)
    if offload not in OFFLOAD:
        raise SettingsError(f"offload {offload!r} is unknown; allowed: {', '.join(OFFLOAD)}")
    managed = ManagedModel(module, offload_device, scheduler, offload, attention)
    return comfy.model_patcher.ModelPatcher(
        managed, load_device=load_device, offload_device=offload_device, size=weight_bytes(module)
    )


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's tensors, a tied tensor once (ComfyUI's own count sums the
    state dict, which lists T5's shared embedding twice)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.nbytes for t in tensors.values())


def core_model(model: comfy.model_patcher.ModelPatcher) -> torch.nn.Module:
    """The core's model inside a patcher made by `patcher`."""
    return model.model.core


def runner(model: comfy.model_patcher.ModelPatcher):
    """What a sampler calls: the core transformer, under its loader's attention backend
    where one was chosen (`speed.optimize.OptimizedTransformer`: no CUDA graphs, as ComfyUI
    moves the model)."""
    core, attention = core_model(model), model.model.attention
    return core if attention == "default" else core_speed.OptimizedTransformer(core, attention)


def checkpoint_scheduler(model: comfy.model_patcher.ModelPatcher | None) -> SchedulerConfig:
    """The schedule of the checkpoint a transformer came from (its metadata's scheduler
    section); LTX-Video's published one where none is known."""
    if model is None:
        return LTXV_SCHEDULER
    return model.model.scheduler or LTXV_SCHEDULER


@contextmanager
def on_device(
    model: comfy.model_patcher.ModelPatcher, plan: planner.MemoryPlan | None = None
) -> Iterator[torch.device]:
    """The model on its load device for the duration of a node, moved there by ComfyUI, which
    first offloads other models where they would not leave room for the model and its work
    (`plan`'s peak above the model's weights; without a plan, ComfyUI's own minimum). Loaded
    whole: a partial load leaves torch layers on the CPU, which the core cannot run. It stays
    there afterwards, on ComfyUI's loaded list (see the module's docstring)."""
    mm.load_models_gpu([model], memory_required=work_bytes(model, plan), force_full_load=True)
    yield model.load_device


def work_bytes(model: comfy.model_patcher.ModelPatcher, plan: planner.MemoryPlan | None) -> int:
    """Device bytes a node's work needs beside the model's weights, from its memory plan."""
    return 0 if plan is None else max(0, plan.peak_bytes - weight_bytes(core_model(model)))


@contextmanager
def streamed_on_device(model: comfy.model_patcher.ModelPatcher, streamed: int, peak: int) -> Iterator[torch.device]:
    """The transformer on its load device with its last `streamed` blocks streamed from CPU
    memory (`ltx_core.offload`) for the duration of a node, after ComfyUI freed `peak` bytes
    there; its weights stay where ComfyUI keeps them at rest."""
    device = torch.device(model.load_device)
    offload(model)  # resident from an earlier run that fitted: its weights go back to rest first
    mm.free_memory(peak, device)
    core = core_model(model)
    previous = core.block_weights
    placement = core_offload.stream_transformer(core, device, streamed)
    try:
        with placement.on_device(core):
            yield device
    finally:
        core.use_block_weights(previous)


def offload(model: comfy.model_patcher.ModelPatcher) -> None:
    """Give the model's device memory back now and take it off ComfyUI's loaded list."""
    if model.load_device == model.offload_device:
        return
    for index in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[index].model is model:
            mm.current_loaded_models.pop(index).model_unload()
    mm.soft_empty_cache()


def refuse_what_never_fits(
    model: comfy.model_patcher.ModelPatcher, stage: str, latent_shape, **settings
) -> planner.MemoryPlan | None:
    """Refuse a node's run (`stage`: "sampling" for the DiT, "decode" or "encode" for the VAE) whose
    memory plan exceeds all of its device's memory, before the model is moved there: the
    error gives the estimate and the nearest sizes that fit instead of an out-of-memory
    error minutes later. Only the whole memory counts, since ComfyUI frees other models
    first; `settings` are `memory_plan.Workload` fields (guidance, stg, decode_time_chunk...).
    Returns the plan to run (None off the two devices the planner knows): for a GPU
    transformer whose loader allows it, with the fewest blocks streamed that fit."""
    device = torch.device(model.load_device)
    if device.type not in ("cuda", "cpu"):
        return None  # the planner knows these two
    core = core_model(model)
    batch, _, frames, height, width = latent_shape
    dit = stage == "sampling"
    own = weight_bytes(core)
    work = planner.Workload(
        core.cfg if dit else None,
        None if dit else core.cfg,
        width * PIXELS_PER_LATENT,
        height * PIXELS_PER_LATENT,
        (frames - 1) * FRAMES_PER_LATENT + 1,
        batch=batch,
        dtype=str(next(core.parameters()).dtype).split(".")[-1],
        device=device.type,
        models_stay=False,
        stages=(stage,),
        weights=planner.WeightBytes(own if dit else 0, 0 if dit else own, 0),
        **settings,
    )
    capacity = planner.device_capacity(str(device))
    work = _with_streaming(work, getattr(model.model, "offload", "none"), capacity)
    plan = planner.estimate(work)
    planner.check_fits(plan, capacity, advice=" (all of the device's memory counts: ComfyUI frees other models first)")
    return plan


def _with_streaming(work: planner.Workload, choice: str, capacity: int | None) -> planner.Workload:
    """A GPU transformer's run with the blocks its loader's offload choice streams."""
    if work.transformer is None or work.device != "cuda" or choice == "none":
        return work
    if choice == "blocks":
        return replace(work, streamed_blocks=work.transformer.num_layers)
    return planner.choose_offload(work, capacity)
