"""A linear layer whose weight stays as the file stores it (FP8, GGUF blocks) and is
dequantized per call, so the model's memory holds the quantized weights, not floats.

It goes in through the transformer's seam (`LTXVTransformer.replace_linear`). A fused
projection (`to_qkv`, `to_kv`) holds one part per checkpoint weight, stacked along the
output rows in the fused order: GGUF "mixed" files (Q4_K_M, say) store `to_v` in another
type than `to_q`, so the parts may differ in kind.

With `Speed(fp8=True)`, `speed.fp8.convert_to_fp8` turns a layer whose parts are all
float8_e4m3fn into an `FP8Linear` over the same bytes (`fp8_rows`), without a float copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint.quantized import QuantizedWeight
from ..errors import CheckpointError


class QuantizedLinear(nn.Module):
    """`F.linear(x, weight, bias)` with `weight` the parts dequantized to x's dtype at call
    time (the float weight lives only while the layer runs)."""

    def __init__(self, parts: Sequence[QuantizedWeight], bias: Tensor | None = None):
        super().__init__()
        widths = {part.shape[1] if len(part.shape) == 2 else None for part in parts}
        if not parts or len(widths) != 1 or None in widths:
            shapes = [list(part.shape) for part in parts]
            raise CheckpointError(f"a linear layer's weight parts must be 2-D with equal widths; got {shapes}")
        self.in_features = widths.pop()
        self.out_features = sum(part.shape[0] for part in parts)
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise CheckpointError(f"a bias of shape {list(bias.shape)} for {self.out_features} output rows")
        self.parts = nn.ModuleList(parts)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The (out_features, in_features) weight this layer multiplies by, in `dtype`."""
        weights = [part.dequantize(dtype) for part in self.parts]
        return weights[0] if len(weights) == 1 else torch.cat(weights)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.dequantized_weight(x.dtype), self.bias)

    def fp8_rows(self) -> tuple[Tensor, Tensor] | None:
        """(float8_e4m3fn weight (out, in), fp32 scale per output row (out,)) where every
        part is e4m3 FP8, for `FP8Linear.from_quantized`; None otherwise."""
        rows = [part.fp8_rows() for part in self.parts]
        if any(r is None for r in rows):
            return None
        if len(rows) == 1:
            return rows[0]
        values = torch.cat([v.view(torch.uint8) for v, _ in rows]).view(torch.float8_e4m3fn)
        return values, torch.cat([s for _, s in rows])

    @property
    def kinds(self) -> list[str]:
        return [part.kind for part in self.parts]

    def extra_repr(self) -> str:
        kinds = ", ".join(self.kinds)
        return f"in_features={self.in_features}, out_features={self.out_features}, parts=[{kinds}]"
