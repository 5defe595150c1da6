"""FP8 linear layers for the DiT: weights quantized once per output row to float8_e4m3fn,
activations quantized per row on the fly, one `torch._scaled_mm` with row-wise scales and a
bf16 result (Hopper's FP8 tensor cores run it at about twice the bf16 rate).

Why row-wise: one scale per weight row and per token keeps an outlier token or output
channel from flattening the rest (a single tensor-wide scale loses ~2 bits on this model's
activations). Attention itself stays in bf16 (issue 6): only `nn.Linear` layers change.

    swapped = convert_to_fp8(transformer)       # in place; returns the swapped names

Layers that stay precise (`KEEP_PRECISE`): the patchify input projection (128 channels in,
cheap), the timestep MLP and AdaLN-single (their output scales every block), the caption
projection (runs once per step on 128 tokens), and `proj_out` (the velocity itself).
"""

from __future__ import annotations

import fnmatch

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import SettingsError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448
# Smallest amax a row may have, so an all-zero row gets a finite scale instead of 0 / 0.
MIN_AMAX = 1e-12
# fnmatch patterns of module names whose Linear layers keep their precision (module doc).
KEEP_PRECISE = ("patchify_proj", "adaln_single.*", "caption_projection.*", "proj_out")
# cuBLAS' FP8 kernels need both matrix sides in multiples of 16 elements.
FP8_ALIGNMENT = 16


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """(M, K) -> float8_e4m3fn values and fp32 scales (M, 1) with x ~= values * scales."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=MIN_AMAX)
    scale = amax / FP8_MAX
    values = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return values, scale


class FP8Linear(nn.Module):
    """A drop-in for an `nn.Linear` whose weight is stored as row-wise scaled FP8.

    `weight` and `weight_scale` are buffers (not trained); the bias keeps the layer's dtype,
    which is also the output dtype (`out_dtype`, bf16 for the benchmarked model)."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.out_dtype = out_dtype or linear.weight.dtype
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", weight)  # (N, K) fp8, row-major: column-major B for _scaled_mm
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())  # (1, N) fp32
        bias = linear.bias.detach().to(self.out_dtype) if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        leading = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        values, scale = quantize_rows(rows)
        padding = -rows.shape[0] % FP8_ALIGNMENT
        if padding:  # zero rows: scale 1e-12 / 448, values 0, cut off again below
            values = F.pad(values.view(torch.uint8), (0, 0, 0, padding)).view(FP8_DTYPE)
            scale = F.pad(scale, (0, 0, 0, padding), value=1.0)
        out = torch._scaled_mm(values, self.weight.t(), scale_a=scale, scale_b=self.weight_scale,
                               out_dtype=self.out_dtype)
        if padding:
            out = out[: rows.shape[0]]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*leading, self.out_features)

    def dequantized_weight(self) -> Tensor:
        """The weight this layer multiplies by, in fp32 (for error checks)."""
        return self.weight.float() * self.weight_scale.t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3fn row-wise"


def _keeps_precision(name: str, keep: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in keep)


def _fp8_ready(linear: nn.Linear) -> bool:
    return linear.in_features % FP8_ALIGNMENT == 0 and linear.out_features % FP8_ALIGNMENT == 0


def convert_to_fp8(model: nn.Module, out_dtype: torch.dtype | None = None,
                   keep_precise: tuple[str, ...] = KEEP_PRECISE) -> list[str]:
    """Replace, in place, every `nn.Linear` of `model` whose name matches none of the
    `keep_precise` fnmatch patterns and whose sizes FP8 kernels take (multiples of 16) by
    an `FP8Linear`; returns the replaced names.

    Call it after the weights are loaded and the model is on its device: the weights are
    quantized from whatever the layer holds then. The model's `state_dict` changes (FP8
    weights plus `weight_scale`), so save the original, never the converted one."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        raise SettingsError(f"fp8 needs torch.float8_e4m3fn and torch._scaled_mm; torch {torch.__version__} "
                            "lacks them (allowed: torch 2.4 or later)")
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not _keeps_precision(name, keep_precise)
               and _fp8_ready(module)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FP8Linear(linear, out_dtype))
    return [name for name, _ in targets]


def fp8_supported(device: torch.device | str) -> bool:
    """FP8 tensor cores: CUDA compute capability 8.9 (Ada) or 9.0+ (Hopper). On CPU,
    `_scaled_mm` works (slowly) in recent torch, which the tests use."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type == "cpu"
    return torch.cuda.get_device_capability(device) >= (8, 9)
