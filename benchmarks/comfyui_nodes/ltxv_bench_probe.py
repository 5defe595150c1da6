"""A custom node module only `benchmarks/comfyui_speed` loads (through its server's extra
model paths, never from the pack): two routes, so each row's peak GPU memory is that row's.

- POST /ltxv_bench/row_start: unload every model ComfyUI holds (the previous row's would
  count in this one's peak), empty the CUDA cache, reset the peak;
- GET /ltxv_bench/peak_memory: the GPU memory torch allocated at its most since then, GiB
  (null without CUDA).
"""

import comfy.model_management
import torch
from aiohttp import web
from server import PromptServer

NODE_CLASS_MAPPINGS: dict = {}


@PromptServer.instance.routes.post("/ltxv_bench/row_start")
async def row_start(request):
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return web.json_response({})


@PromptServer.instance.routes.get("/ltxv_bench/peak_memory")
async def peak_memory(request):
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None
    return web.json_response({"peak_gib": peak})
