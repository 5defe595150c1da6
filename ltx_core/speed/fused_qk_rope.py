"""QK-norm and RoPE of the self-attention in one pass over each token (the fused
RMSNorm/RoPE lever).

The reference (`transformer.Attention`) normalizes q and k across all heads (2.2.2) and
then rotates each channel pair by its RoPE angle (2.2.1). Compiled by Inductor that is three
kernels per block that read and write q and k two more times and read full-width cos/sin
tables (82 us per block at 768x512x121 on an H100, against 45 us for this pass:
`qk_norm_rope_us` in benchmarks/results/gpu_speed.json). Here
one Triton program per token reads q, k and the pair tables of `rope.rope_pair_cos_sin`
once, works in fp32 and writes the rotated q and k once.

    model.use_kernels(replace(model.kernels, qk_norm_rope=qk_norm_rope))   # what `enable` does
    q, k = qk_norm_rope(q, k, q_norm.weight, k_norm.weight, cos_pairs, sin_pairs, eps)

Under torch.compile it is a custom op (compiled regions and CUDA graphs keep it whole), run
eagerly a plain function: the Triton kernel on CUDA, the torch reference elsewhere, so the
CPU tests run the reference math and the kernel itself is tested through Triton's interpreter.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SettingsError
from ..models.rope import apply_rope
from ..op_names import traced_as_op
from .triton_launch import autotuned, interpreting, launch


def _fake_qk_norm_rope(q, k, q_weight, k_weight, cos, sin, eps):
    return q.new_empty(q.shape), k.new_empty(k.shape)


@traced_as_op("qk_norm_rope", _fake_qk_norm_rope)
def qk_norm_rope(
    q: Tensor, k: Tensor, q_weight: Tensor, k_weight: Tensor, cos: Tensor, sin: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """(RoPE(RMSNorm(q)), RoPE(RMSNorm(k))) for q, k (B, T, D) and pair tables cos, sin
    (B, T, D // 2); the results are contiguous, in q's dtype."""
    _check_shapes(q, k, q_weight, k_weight, cos, sin)
    if q.is_cuda or interpreting():
        batch, tokens, width = q.shape
        cos, sin = (t.expand(batch, tokens, width // 2) for t in (cos, sin))  # broadcast batch: one row each
        return _qk_norm_rope_triton(q, k, q_weight, k_weight, cos, sin, eps)
    return qk_norm_rope_reference(q, k, q_weight, k_weight, cos, sin, eps)


def _check_shapes(q, k, q_weight, k_weight, cos, sin) -> None:
    """The shapes the kernel reads, refused with the reason before any memory is touched."""
    if q.ndim != 3 or q.shape != k.shape or q.dtype != k.dtype or q.shape[-1] % 2:
        raise SettingsError(
            f"qk_norm_rope: q {tuple(q.shape)} {q.dtype} and k {tuple(k.shape)} {k.dtype}; "
            "allowed: the same (batch, tokens, even width) and dtype"
        )
    batch, tokens, width = q.shape
    if q_weight.shape != (width,) or k_weight.shape != (width,):
        raise SettingsError(
            f"qk_norm_rope: norm weights {tuple(q_weight.shape)}, {tuple(k_weight.shape)}; allowed: ({width},)"
        )
    for name, table in (("cos", cos), ("sin", sin)):
        if table.ndim != 3 or table.shape[0] not in (1, batch) or table.shape[1:] != (tokens, width // 2):
            raise SettingsError(
                f"qk_norm_rope: {name} table {tuple(table.shape)}; allowed: "
                f"({batch} or 1, {tokens}, {width // 2}), one angle per channel pair"
            )


def qk_norm_rope_reference(
    q: Tensor, k: Tensor, q_weight: Tensor, k_weight: Tensor, cos: Tensor, sin: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """The unfused math, as `transformer.Attention` runs it."""
    cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    rotated_q = apply_rope(F.rms_norm(q, q.shape[-1:], q_weight, eps), cos, sin)
    rotated_k = apply_rope(F.rms_norm(k, k.shape[-1:], k_weight, eps), cos, sin)
    return rotated_q.to(q.dtype).contiguous(), rotated_k.to(k.dtype).contiguous()


@functools.cache
def build_kernel():
    """The Triton kernel; imported only where it runs (Triton ships with CUDA torch)."""
    import triton
    import triton.language as tl

    @triton.jit
    def qk_norm_rope_kernel(
        q_ptr,
        k_ptr,
        q_weight_ptr,
        k_weight_ptr,
        cos_ptr,
        sin_ptr,
        q_out_ptr,
        k_out_ptr,
        q_row_stride,
        k_row_stride,
        P,
        eps,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)  # one token: q, k and its angles read once
        pairs = tl.arange(0, BLOCK)
        channels = tl.arange(0, 2 * BLOCK)  # contiguous loads and stores, split into pairs
        cos = tl.load(cos_ptr + row * P + pairs, mask=pairs < P, other=1.0).to(tl.float32)
        sin = tl.load(sin_ptr + row * P + pairs, mask=pairs < P, other=0.0).to(tl.float32)
        inside = channels < 2 * P
        for which in tl.static_range(2):  # q, then k
            if which == 0:
                x_ptr, w_ptr, out_ptr, x_row_stride = q_ptr, q_weight_ptr, q_out_ptr, q_row_stride
            else:
                x_ptr, w_ptr, out_ptr, x_row_stride = k_ptr, k_weight_ptr, k_out_ptr, k_row_stride
            x = tl.load(x_ptr + row * x_row_stride + channels, mask=inside, other=0.0).to(tl.float32)
            inverse_rms = tl.rsqrt(tl.sum(x * x, axis=0) / (2 * P) + eps)  # over all heads (2.2.2)
            x = x * inverse_rms * tl.load(w_ptr + channels, mask=inside, other=0.0).to(tl.float32)
            even, odd = tl.split(tl.reshape(x, (BLOCK, 2)))
            rotated = tl.join(even * cos - odd * sin, odd * cos + even * sin)  # (BLOCK, 2)
            tl.store(
                out_ptr + row * 2 * P + channels,
                tl.reshape(rotated, (2 * BLOCK,)).to(out_ptr.dtype.element_ty),
                mask=inside,
            )

    return triton, autotuned(qk_norm_rope_kernel, (2, 4, 8), key=["P"])


def _rows(x: Tensor) -> tuple[Tensor, int]:
    """x (B, T, D) as rows b * T + t with unit channel stride: a view where possible (q and k
    are chunks of the fused q/k/v projection), else a copy. Returns (tensor, row stride)."""
    batch, tokens, _ = x.shape
    if x.stride(2) != 1 or (batch > 1 and x.stride(0) != tokens * x.stride(1)):
        x = x.contiguous()
    return x, x.stride(1)


def _qk_norm_rope_triton(q, k, q_weight, k_weight, cos, sin, eps):
    triton, kernel = build_kernel()
    (q, q_stride), (k, k_stride) = _rows(q), _rows(k)
    cos, sin = cos.contiguous(), sin.contiguous()
    batch, tokens, width = q.shape
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    grid = (batch * tokens,)
    args = (
        q,
        k,
        q_weight.contiguous(),
        k_weight.contiguous(),
        cos,
        sin,
        q_out,
        k_out,
        q_stride,
        k_stride,
        width // 2,
        eps,
    )
    block = triton.next_power_of_2(width // 2)
    launch(kernel, grid, q, *args, BLOCK=block)
    return q_out, k_out


def matches_reference(device: torch.device | str, dtype: torch.dtype = torch.bfloat16, width: int = 96) -> bool:
    """Whether `qk_norm_rope` runs on `device` and agrees with the reference computed in fp32,
    at `width` channels on q and k cut from one fused projection output as the model's are:
    every value within one `dtype` rounding step of itself plus 1e-4 of its row's largest
    (the kernel rounds once, at the end). False where the kernel cannot be built or run, so
    callers keep the unfused path. Run at the model's width before any CUDA graph capture:
    the kernel's first call at a width times its launch configurations, which a capture
    cannot hold."""
    g = torch.Generator(device=device).manual_seed(0)
    tokens = 1024 if torch.device(device).type == "cuda" else 40
    q, k, _ = (torch.randn(2, tokens, 3 * width, generator=g, device=device) * 3).to(dtype).chunk(3, dim=-1)
    q_weight, k_weight = (torch.rand(width, generator=g, device=device).to(dtype) + 0.5 for _ in range(2))
    angles = torch.rand(2, tokens, width // 2, generator=g, device=device) * 300
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    try:
        got = qk_norm_rope(q, k, q_weight, k_weight, cos, sin, 1e-5)
    except Exception:
        return False
    exact = qk_norm_rope_reference(
        q.float(), k.float(), q_weight.float(), k_weight.float(), cos.float(), sin.float(), 1e-5
    )
    step = torch.finfo(dtype).eps
    return all(
        bool(((g.float() - e).abs() <= 1e-4 * e.abs().amax(-1, keepdim=True) + step * e.abs()).all())
        for g, e in zip(got, exact)
    )


def enable(model: nn.Module) -> int:
    """Route every self-attention's QK-norm and RoPE of `model` (an `LTXVTransformer`) through
    `qk_norm_rope`, through the model's kernel seam. Returns how many attention layers now
    use it. The op has no backward: for inference only."""
    model.use_kernels(replace(model.kernels, qk_norm_rope=qk_norm_rope))
    return len(model.transformer_blocks)
