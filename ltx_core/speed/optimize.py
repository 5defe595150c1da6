"""Speed levers for the DiT on a GPU, plugged in through the transformer's seams and
chosen by one `Speed` setting (measured by `python -m benchmarks.bench_gpu_speed`):

- regional `torch.compile`: `prepare`, each transformer block and `finish` are compiled
  separately; the blocks share one graph, so compiling costs one block, not all, and the
  norms, RoPE, modulation, gates and casts become a few fused kernels;
- QK-norm + RoPE in one Triton pass per token (`fused_qk_rope`, through the
  transformer's block kernel seam);
- without compiling, the modulated norms and gated residuals in one Triton pass each
  (`fused_modulation`, through the same seam);
- FP8 linear layers (`fp8`);
- the SDPA backend (cuDNN, FlashAttention-2, memory-efficient) chosen by timing them on
  the real shape;
- CUDA graphs: the whole forward captured once per input shape and replayed, so no
  Python or launch gaps remain between kernels.

    fast = optimize_transformer(transformer, Speed.chosen(compile=True, fp8=False, device="cuda", stays_put=True))
    velocity = fast.run(transformer, latent, timestep, text, text_mask, coords)

It changes the model in place (fusion and FP8 replace layers), so keep an unmodified copy
for saving.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import SettingsError
from ..models.transformer import GELUProjection
from ..op_names import traced_as_op
from . import fused_modulation, fused_qk_rope
from .fp8 import (
    KEEP_PRECISE,
    convert_to_fp8,
    fp8_supported,
    fuse_fp8_feed_forwards,
    quantize_in_one_pass,
    quantize_kernel_matches_reference,
)

ATTENTION_CHOICES = ("auto", "default", "cudnn", "flash", "efficient", "math")
# Compiled variants per code object: bf16 / FP8 x batch 1 / 2 and the dtype of inputs
# would pass the default limit of 8 once several models live in one process.
RECOMPILE_LIMIT = 64


def _sdpa_backends() -> dict[str, object]:
    from torch.nn.attention import SDPBackend

    return {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }


def attention_context(name: str) -> contextlib.AbstractContextManager:
    """SDPA with backend `name` tried first; the others stay allowed as fallbacks (the
    cross-attention's text mask rules FlashAttention out, for instance)."""
    if name not in ATTENTION_CHOICES or name == "auto":
        raise SettingsError(f"attention backend {name!r}; allowed: {', '.join(ATTENTION_CHOICES[1:])}")
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    backends = _sdpa_backends()
    order = [backends[name]] + [b for key, b in backends.items() if key != name]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch without set_priority: only the chosen backend and math
        return sdpa_kernel([backends[name], backends["math"]])


def time_cuda(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median seconds of `fn()` on the current CUDA stream, timed with events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def time_attention_backends(
    batch: int,
    heads: int,
    tokens: int,
    head_dim: int,
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, float]:
    """Median seconds of one self-attention of this shape per SDPA backend; a backend that
    cannot run it is left out. q, k, v are strided views of (B, T, H*D), as the model makes."""
    from torch.nn.attention import sdpa_kernel

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(batch, tokens, heads * head_dim, generator=g, device=device, dtype=dtype)
        .unflatten(-1, (heads, head_dim))
        .transpose(1, 2)
        for _ in range(3)
    )
    results = {}
    for name, backend in _sdpa_backends().items():
        if name == "math":
            continue  # never competitive, and its memory grows with tokens squared
        try:
            with sdpa_kernel([backend]):
                results[name] = time_cuda(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
        except RuntimeError:
            continue
    return results


def pick_attention_backend(
    batch: int, heads: int, tokens: int, head_dim: int, device: torch.device | str = "cuda"
) -> str:
    """The fastest SDPA backend for this self-attention shape ('default' off CUDA)."""
    if torch.device(device).type != "cuda":
        return "default"
    timings = time_attention_backends(batch, heads, tokens, head_dim, device)
    return min(timings, key=timings.get) if timings else "default"


def raise_recompile_limit(limit: int = RECOMPILE_LIMIT) -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))


def compile_regions(model: nn.Module, mode: str | None = None, backend: str = "inductor") -> None:
    """Regional compilation (PyTorch's recipe for repeated blocks): one graph for
    `prepare`, one shared by every block, one for `finish`; static shapes, no graph breaks
    (`fullgraph`). backend 'eager' traces without generating code (the CPU tests)."""
    raise_recompile_limit()
    options = dict(fullgraph=True, dynamic=False, backend=backend)
    if mode is not None:
        options["mode"] = mode
    for block in model.transformer_blocks:
        block.compile(**options)
    model.prepare = torch.compile(model.prepare, **options)
    model.finish = torch.compile(model.finish, **options)


def _fake_linear_gelu_tanh(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@traced_as_op("linear_gelu_tanh", _fake_linear_gelu_tanh)
def linear_gelu_tanh(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """gelu_tanh(x @ weight.T + bias) in one cuBLASLt GEMM with a bias+GELU epilogue, saving
    the pass over the 4x-wide feed-forward activation. Traced, a custom op, opaque to
    Inductor, which would otherwise split it back into a GEMM and a pointwise kernel."""
    rows = x.reshape(-1, x.shape[-1])
    return torch._addmm_activation(bias, rows, weight.t(), use_gelu=True).reshape(*x.shape[:-1], weight.shape[0])


def gelu_epilogue_is_tanh(device: torch.device | str) -> bool:
    """Whether `_addmm_activation`'s GELU is the tanh approximation the model uses on this
    device (cuBLASLt's epilogue is; the CPU kernel computes the exact erf form). Checked in
    fp32 on pre-activations of about unit size, where the two forms differ by ~1e-3 and the
    GEMM's rounding by ~1e-6 (in bf16 the rounding would hide the difference)."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 64, generator=g, device=device)
    w = torch.randn(64, 64, generator=g, device=device) / 8
    b = torch.randn(64, generator=g, device=device)
    fused = linear_gelu_tanh(x, w, b)
    plain = torch.nn.functional.linear(x, w, b)
    tanh = torch.nn.functional.gelu(plain, approximate="tanh")
    exact = torch.nn.functional.gelu(plain)
    return bool((fused - tanh).abs().max() < (fused - exact).abs().max())


class EpilogueGELUProjection(GELUProjection):
    """`GELUProjection` whose bias and GELU run in the GEMM's epilogue (same parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear_gelu_tanh(x, self.proj.weight, self.proj.bias)


def fuse_gelu_epilogues(model: nn.Module) -> int:
    """Feed-forward input layers -> `EpilogueGELUProjection` (a class swap: names and
    weights stay). Returns how many; 0 where the device's epilogue is not the tanh GELU."""
    layers = [m for m in model.modules() if type(m) is GELUProjection and type(m.proj) is nn.Linear]
    if not layers or not gelu_epilogue_is_tanh(layers[0].proj.weight.device):
        return 0
    for module in layers:
        module.__class__ = EpilogueGELUProjection
    return len(layers)


class CUDAGraphForward:
    """Capture `fn(*args)` once per input signature (shapes, dtypes, devices, None slots),
    then replay it: inputs are copied into the captured buffers, the output is cloned.

    `fn` must not synchronize with the host (no `.item()`, no data-dependent shapes);
    warm-up runs on a side stream first, which also triggers any compilation."""

    def __init__(self, fn: Callable[..., Tensor], warmup: int = 2):
        self.fn = fn
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[list, Tensor, torch.cuda.CUDAGraph]] = {}
        # One memory pool for every captured shape (batch 1 and the CFG batch 2): replays
        # never overlap and each output is cloned at once, so their activations can share
        # memory, which then costs the larger graph's, not the sum.
        self.pool = None

    @staticmethod
    def _signature(args: Sequence) -> tuple:
        return tuple((tuple(a.shape), a.dtype, a.device) if isinstance(a, Tensor) else a for a in args)

    def _capture(self, args: Sequence) -> tuple[list, Tensor, torch.cuda.CUDAGraph]:
        static = [a.clone() if isinstance(a, Tensor) else a for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.fn(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.fn(*static)
        return static, out, graph

    def __call__(self, *args) -> Tensor:
        key = self._signature(args)
        if key not in self.graphs:
            self.graphs[key] = self._capture(args)
        static, out, graph = self.graphs[key]
        for buffer, value in zip(static, args):
            if isinstance(buffer, Tensor) and buffer.data_ptr() != value.data_ptr():
                buffer.copy_(value)
        graph.replay()
        return out.clone()


@dataclass
class OptimizedTransformer:
    """The runner of a transformer behind the chosen levers: `run(fn, *inputs)` calls `fn`
    (the model's forward, or guidance's perturbed forward) under the chosen attention
    backend; the plain forward replays CUDA graphs where they are on."""

    model: nn.Module
    attention: str = "default"
    cuda_graphs: bool = False
    levers: dict = field(default_factory=dict)

    def __post_init__(self):
        self._graphed = CUDAGraphForward(self._forward) if self.cuda_graphs else None

    def _forward(self, *args) -> Tensor:
        with attention_context(self.attention), torch.no_grad():
            return self.model(*args)

    def run(self, fn, *inputs) -> Tensor:
        if fn is self.model:
            return self._graphed(*inputs) if self._graphed is not None else self._forward(*inputs)
        with attention_context(self.attention), torch.no_grad():  # no captured graph for other forwards
            return fn(*inputs)

    def __call__(self, latent, timestep, text, text_mask, coords) -> Tensor:
        return self.run(self.model, latent, timestep, text, text_mask, coords)


@dataclass(frozen=True)
class Speed:
    """The GPU speed a user chooses, the one setting the CLI (`--compile`, `--fp8`) and the
    loader node (`optimization`) both turn into levers through `Speed.chosen`.

    compile: regional `torch.compile` of the DiT; fp8: FP8 linear layers (FP8 tensor cores,
    or the CPU); cuda_graphs: the forward captured per input shape (one process, a model
    that stays on its device); attention: an SDPA backend name, 'default' (PyTorch's order)
    or 'auto' (the fastest on the model's self-attention shape); compile_vae: the VAE
    decoder's layers compiled too (a longer cold start for a faster decode);
    compile_backend: torch.compile's backend ('eager' only traces: the CPU tests)."""

    compile: bool = False
    fp8: bool = False
    cuda_graphs: bool = False
    attention: str = "default"
    compile_vae: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self):
        if self.attention not in ATTENTION_CHOICES:
            raise SettingsError(f"attention backend {self.attention!r}; allowed: {', '.join(ATTENTION_CHOICES)}")

    @classmethod
    def chosen(
        cls, compile: bool, fp8: bool, device: torch.device | str, stays_put: bool, kernels: bool = False
    ) -> Speed:
        """The levers for a user's compile / fp8 choice on `device`. CUDA graphs pin memory
        addresses and replay collectives, so only a model that `stays_put` (one process,
        never moved by a memory manager) gets them; on CUDA the attention backend is timed
        and compiling compiles the VAE decoder too (its fused layers decode faster). `kernels`
        alone (no compile, no fp8): on CUDA, the fused kernels and the timed attention backend
        without compiling (`optimize_transformer` applies them once the attention is not the
        default); elsewhere nothing."""
        on_cuda = torch.device(device).type == "cuda"
        if not (compile or fp8):
            return cls(attention="auto") if kernels and on_cuda else cls()
        return cls(
            compile=compile,
            fp8=fp8,
            cuda_graphs=on_cuda and stays_put,
            attention="auto" if on_cuda else "default",
            compile_vae=compile and on_cuda,
        )

    @property
    def changes_transformer(self) -> bool:
        return self.compile or self.fp8 or self.cuda_graphs or self.attention != "default"


@dataclass(frozen=True)
class FusedParts:
    """The fused kernels a `Speed` brings, each on where it matches its reference. They exist
    apart only so the GPU benchmark can measure what each gives; users never set them.

    gelu_epilogue: the feed-forward's bias + GELU in the GEMM's epilogue (bf16; FP8 layers
    fuse it into their input quantization instead); fp8_quantize: with fp8, each layer's
    input quantization in one pass (`fp8.quantize_activations`: a Triton kernel on CUDA run
    eagerly) and the feed-forward's hidden bias + GELU in the same pass
    (`fp8.FP8FeedForward`); qk_norm_rope: on CUDA,
    each self-attention's QK-norm + RoPE in one Triton pass (`fused_qk_rope`);
    fp8_keep_precise: layer name patterns left in bf16 under fp8; modulation: on CUDA
    without compiling, each block's modulated norms and gated residuals in one Triton pass
    each (`fused_modulation`; compiling fuses them itself)."""

    gelu_epilogue: bool = True
    fp8_quantize: bool = True
    qk_norm_rope: bool = True
    modulation: bool = True
    fp8_keep_precise: tuple[str, ...] = KEEP_PRECISE


def optimize_transformer(
    model: nn.Module, speed: Speed, parts: FusedParts = FusedParts(), device: torch.device | None = None
) -> OptimizedTransformer:
    """Apply `speed` to `model` (in place: fusion and FP8 replace layers) and return the
    runner that calls it. Call it with the weights loaded and the model on its device, or
    in CPU memory for offloading with the run's `device` named."""
    dtype = next(model.parameters()).dtype
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if speed.cuda_graphs and device.type != "cuda":
        raise SettingsError(f"cuda_graphs needs the model on a CUDA device; it is on {device}")
    if speed.fp8 and not fp8_supported(device):
        raise SettingsError(
            f"fp8 needs FP8 tensor cores (compute capability 8.9+), or on the CPU a torch whose "
            f"_scaled_mm takes row-wise scales (2.14 does); {device} with torch {torch.__version__} "
            "has neither"
        )
    model.eval().requires_grad_(False)
    levers = dict(compile=speed.compile, fp8=speed.fp8, cuda_graphs=speed.cuda_graphs)
    if parts.gelu_epilogue and not speed.fp8:
        levers["gelu_epilogues"] = fuse_gelu_epilogues(model)
    if speed.fp8:
        levers["fp8_layers"] = len(convert_to_fp8(model, keep_precise=parts.fp8_keep_precise, device=device))
        if parts.fp8_quantize and quantize_kernel_matches_reference(device):
            levers["fp8_one_pass_quantize"] = quantize_in_one_pass(model)
            levers["fp8_fused_feed_forwards"] = fuse_fp8_feed_forwards(model)
    if (
        parts.qk_norm_rope
        and device.type == "cuda"
        and fused_qk_rope.matches_reference(device, dtype, model.cfg.inner_dim)
    ):
        levers["fused_qk_rope"] = fused_qk_rope.enable(model)
    if (
        parts.modulation
        and device.type == "cuda"
        and not speed.compile
        and fused_modulation.matches_reference(device, dtype, model.cfg.inner_dim)
    ):
        levers["fused_modulation"] = fused_modulation.enable(model)
    attention = speed.attention
    if attention == "auto":  # the self-attention of a 768x512x121 video, the most common size
        cfg = model.cfg
        attention = pick_attention_backend(1, cfg.num_attention_heads, 6144, cfg.attention_head_dim, device=device)
    levers["attention"] = attention
    if speed.compile:
        compile_regions(model, backend=speed.compile_backend)
    return OptimizedTransformer(model, attention, speed.cuda_graphs, levers)


def compile_vae_decoder(vae: nn.Module, backend: str = "inductor") -> None:
    """Compile the decoder's layers one by one (`Decoder.compile_layers`, static shapes), so
    each norm -> modulation -> SiLU -> padding chain is one kernel instead of five passes
    over the largest tensors of the whole run."""
    raise_recompile_limit()
    vae.decoder.compile_layers(backend=backend)
