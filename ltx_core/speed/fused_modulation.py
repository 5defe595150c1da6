"""The blocks' AdaLN modulation and gated residuals in one pass each (the fused modulation lever).

Each transformer block (2.2, Fig. 6) computes `rms_norm(x) * (1 + scale) + shift` before its
self-attention and its feed-forward, and `x + gate * y` after each. Run as PyTorch ops, the
first is three kernels that read and write the whole token tensor three times and the second
two kernels that do so twice, with a rounding to bf16 after each. Here one Triton program per
token reads x (and y) and its row of scale, shift or gate once, works in fp32 and writes once.

    model.use_kernels(replace(model.kernels, norm_modulate=norm_modulate, gated_residual=gated_residual))

Traced by torch.compile both are custom ops, run eagerly plain functions (the ops' dispatch
costs more host time per call than the launch): the Triton kernels on CUDA, the torch
reference elsewhere, so the CPU tests run the reference math and the kernels themselves are
tested through Triton's interpreter. Compiling fuses these chains itself, so `optimize`
turns them on only without compiling.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SettingsError
from ..op_names import traced_as_op
from .triton_launch import autotuned, interpreting, launch


def _fake_like_x(x, *others):
    return x.new_empty(x.shape)


@traced_as_op("norm_modulate", _fake_like_x)
def norm_modulate(x: Tensor, scale: Tensor, shift: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """`rms_norm(x, weight, eps) * (1 + scale) + shift` for x (B, T, D) and scale, shift
    (B, 1 or T, D) (one modulation per video or per token); contiguous, in x's dtype."""
    _check_rows("norm_modulate", x, scale=scale, shift=shift)
    if weight is not None and weight.shape != x.shape[-1:]:
        raise SettingsError(f"norm_modulate: norm weight {tuple(weight.shape)}; allowed: ({x.shape[-1]},)")
    if x.is_cuda or interpreting():
        return _launch_norm_modulate(x, scale, shift, weight, eps)
    return norm_modulate_reference(x, scale, shift, weight, eps)


@traced_as_op("gated_residual", _fake_like_x)
def gated_residual(x: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    """`x + gate * y` for x, y (B, T, D) and gate (B, 1 or T, D); contiguous, in x's dtype."""
    _check_rows("gated_residual", x, gate=gate, y=y)
    if x.is_cuda or interpreting():
        return _launch_gated_residual(x, gate, y)
    return gated_residual_reference(x, gate, y)


def norm_modulate_reference(x: Tensor, scale: Tensor, shift: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """The unfused math, as `transformer.TransformerBlock` runs it."""
    return (F.rms_norm(x, x.shape[-1:], weight, eps) * (1 + scale) + shift).contiguous()


def gated_residual_reference(x: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    return (x + gate * y).contiguous()


def _check_rows(op: str, x: Tensor, **others: Tensor) -> None:
    """The shapes the kernels read, refused with the reason before any memory is touched."""
    if x.ndim != 3:
        raise SettingsError(f"{op}: x {tuple(x.shape)}; allowed: (batch, tokens, width)")
    batch, tokens, width = x.shape
    for name, t in others.items():
        rows = (tokens,) if name == "y" else (1, tokens)
        if t.ndim != 3 or t.shape[0] != batch or t.shape[1] not in rows or t.shape[2] != width:
            allowed = f"({batch}, {' or '.join(map(str, dict.fromkeys(rows)))}, {width})"
            raise SettingsError(f"{op}: {name} {tuple(t.shape)}; allowed: {allowed}")
        if t.dtype != x.dtype:
            raise SettingsError(f"{op}: {name} is {t.dtype}, x is {x.dtype}; allowed: one dtype")


@functools.cache
def build_kernels():
    """The Triton kernels; imported only where they run (Triton ships with CUDA torch)."""
    import triton
    import triton.language as tl

    @triton.jit
    def norm_modulate_kernel(
        x_ptr, scale_ptr, shift_ptr, weight_ptr, out_ptr, T, D, eps,
        x_sb, x_st, s_sb, s_st, h_sb, h_st,
        HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)  # one token
        b, t = row // T, row % T
        cols = tl.arange(0, BLOCK)
        inside = cols < D
        x = tl.load(x_ptr + b * x_sb + t * x_st + cols, mask=inside, other=0.0).to(tl.float32)
        x = x * tl.rsqrt(tl.sum(x * x, axis=0) / D + eps)
        if HAS_WEIGHT:
            x = x * tl.load(weight_ptr + cols, mask=inside, other=0.0).to(tl.float32)
        scale = tl.load(scale_ptr + b * s_sb + t * s_st + cols, mask=inside, other=0.0).to(tl.float32)
        shift = tl.load(shift_ptr + b * h_sb + t * h_st + cols, mask=inside, other=0.0).to(tl.float32)
        out = x * (1.0 + scale) + shift
        tl.store(out_ptr + row * D + cols, out.to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def gated_residual_kernel(
        x_ptr, gate_ptr, y_ptr, out_ptr, T, D,
        x_sb, x_st, g_sb, g_st, y_sb, y_st,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        b, t = row // T, row % T
        cols = tl.arange(0, BLOCK)
        inside = cols < D
        x = tl.load(x_ptr + b * x_sb + t * x_st + cols, mask=inside, other=0.0).to(tl.float32)
        gate = tl.load(gate_ptr + b * g_sb + t * g_st + cols, mask=inside, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + b * y_sb + t * y_st + cols, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * D + cols, (x + gate * y).to(out_ptr.dtype.element_ty), mask=inside)

    kernels = {"norm_modulate": norm_modulate_kernel, "gated_residual": gated_residual_kernel}
    return triton, {name: autotuned(k, (2, 4, 8), key=["D"]) for name, k in kernels.items()}


def _row_strides(t: Tensor) -> tuple[Tensor, int, int]:
    """(tensor, batch stride, token stride) with unit channel stride (a copy only where the
    channels are strided); token stride 0 for one row per video, read by every token."""
    if t.stride(2) != 1:
        t = t.contiguous()
    return t, t.stride(0), 0 if t.shape[1] == 1 else t.stride(1)


def _launch_norm_modulate(x: Tensor, scale: Tensor, shift: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    (x, *x_strides), (scale, *s_strides), (shift, *h_strides) = map(_row_strides, (x, scale, shift))
    placeholder = weight.contiguous() if weight is not None else x  # never read without a weight
    args = (x, scale, shift, placeholder, out, x.shape[1], x.shape[2], eps, *x_strides, *s_strides, *h_strides)
    _run("norm_modulate", x, args, HAS_WEIGHT=weight is not None)
    return out


def _launch_gated_residual(x: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    (x, *x_strides), (gate, *g_strides), (y, *y_strides) = map(_row_strides, (x, gate, y))
    _run("gated_residual", x, (x, gate, y, out, x.shape[1], x.shape[2], *x_strides, *g_strides, *y_strides))
    return out


def _run(kernel: str, x: Tensor, args: tuple, **meta) -> None:
    """One program per token of x (B, T, D), each over the whole row."""
    triton, kernels = build_kernels()
    launch(kernels[kernel], (x.shape[0] * x.shape[1],), x, *args, **meta, BLOCK=triton.next_power_of_2(x.shape[2]))


def matches_reference(device: torch.device | str, dtype: torch.dtype = torch.bfloat16, width: int = 96) -> bool:
    """Whether both ops run on `device` and agree with their math computed in fp32, at `width`
    channels, with the modulation one row per video and per token, as the model's (six
    chunks of one AdaLN tensor): every value within one `dtype` rounding step of itself plus
    1e-4 of its row's largest (the kernels round once, at the end). False where a kernel
    cannot be built or run, so callers keep the unfused path. Run at the model's width
    before any CUDA graph capture: a kernel's first call at a width times its launch
    configurations, which a capture cannot hold."""
    g = torch.Generator(device=device).manual_seed(0)
    tokens = 1024 if torch.device(device).type == "cuda" else 24
    x, y = ((torch.randn(2, tokens, width, generator=g, device=device) * 3).to(dtype) for _ in range(2))
    weight = (torch.rand(width, generator=g, device=device) + 0.5).to(dtype)
    try:
        for rows in (1, tokens):
            ada = torch.randn(2, rows, 6, width, generator=g, device=device).to(dtype)
            shift, scale, gate = ada[:, :, 0], ada[:, :, 1], ada[:, :, 2]
            pairs = [
                (norm_modulate(x, scale, shift, w, 1e-6), norm_modulate_reference(*_fp32(x, scale, shift, w), 1e-6))
                for w in (None, weight)
            ]
            pairs.append((gated_residual(x, gate, y), gated_residual_reference(*_fp32(x, gate, y))))
            if not all(_close(got, exact, dtype) for got, exact in pairs):
                return False
    except Exception:
        return False
    return True


def _fp32(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.float() for t in tensors]


def _close(got: Tensor, exact: Tensor, dtype: torch.dtype) -> bool:
    step = torch.finfo(dtype).eps
    return bool(((got.float() - exact).abs() <= 1e-4 * exact.abs().amax(-1, keepdim=True) + step * exact.abs()).all())


def enable(model: nn.Module) -> int:
    """Route every block's modulated norms and gated residuals of `model` (an `LTXVTransformer`)
    through the fused ops, through the model's kernel seam. Returns how many blocks now use
    them. The ops have no backward: for inference only."""
    model.use_kernels(replace(model.kernels, norm_modulate=norm_modulate, gated_residual=gated_residual))
    return len(model.transformer_blocks)
