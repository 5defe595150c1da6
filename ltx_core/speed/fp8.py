"""FP8 linear layers for the DiT: weights quantized once per output row to float8_e4m3fn,
activations quantized per row on the fly, one `torch._scaled_mm` with row-wise scales and a
bf16 result (Hopper's FP8 tensor cores run it at about twice the bf16 rate).

Why row-wise: one scale per weight row and per token keeps an outlier token or output
channel from flattening the rest (a single tensor-wide scale loses ~2 bits on this model's
activations). Attention itself stays in bf16: only `nn.Linear` layers change.

    swapped = convert_to_fp8(transformer)       # in place; returns the swapped names

Layers that stay precise (`KEEP_PRECISE`): the patchify input projection (128 channels in,
cheap), the timestep MLP and AdaLN-single (their output scales every block), the caption
projection (runs once per step on 128 tokens), and `proj_out` (the velocity itself).
"""

from __future__ import annotations

import fnmatch
import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SettingsError
from ..op_names import traced_as_op
from .triton_launch import autotuned, launch

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


def _row_wise_scaled_mm(a: Tensor, b: Tensor, out_dtype: torch.dtype, bias: Tensor | None = None) -> Tensor | None:
    """a @ b.T through `_scaled_mm` with both sides quantized per row, or None where this
    torch (or cuBLAS) refuses row-wise scales or the bias: the one-time capability checks."""
    (qa, sa), (qb, sb) = quantize_rows(a), quantize_rows(b)
    try:
        return torch._scaled_mm(qa, qb.t(), scale_a=sa, scale_b=sb.reshape(1, -1), bias=bias, out_dtype=out_dtype)
    except (RuntimeError, NotImplementedError):
        return None


@functools.cache
def scaled_mm_adds_bias(device: torch.device, out_dtype: torch.dtype) -> bool:
    """Whether `torch._scaled_mm` with row-wise scales adds a bias in its epilogue on `device`
    (cuBLAS' FP8 kernels take a bf16 or fp16 bias): one pass fewer over every biased FP8
    layer's output, and q, k, v stay views of the fused projection instead of being written
    again with their bias. Checked once per device against the separate addition."""
    if device.type != "cuda" or out_dtype not in (torch.bfloat16, torch.float16):
        return False
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(32, 64, generator=g, device=device) for _ in range(2))
    bias = torch.randn(32, generator=g, device=device).to(out_dtype)
    fused = _row_wise_scaled_mm(a, b, out_dtype, bias)
    if fused is None:
        return False
    plain = _row_wise_scaled_mm(a, b, out_dtype).float()
    return bool(((fused.float() - (plain + bias.float())).abs() <= 0.02 * plain.abs().amax() + 1e-3).all())


class FP8Linear(nn.Module):
    """A drop-in for an `nn.Linear` whose weight is stored as row-wise scaled FP8.

    `weight` and `weight_scale` are buffers (not trained); the bias keeps the layer's dtype,
    which is also the output dtype (`out_dtype`, bf16 for the benchmarked model)."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype | None = None):
        super().__init__()
        weight, scale = quantize_rows(linear.weight.detach())
        bias = linear.bias.detach() if linear.bias is not None else None
        self._hold(weight, scale, bias, out_dtype or linear.weight.dtype)

    @classmethod
    def from_quantized(
        cls, weight: Tensor, row_scale: Tensor, bias: Tensor | None, out_dtype: torch.dtype
    ) -> FP8Linear:
        """An FP8Linear over a weight already stored as float8_e4m3fn (an FP8 checkpoint's)
        with its fp32 scale per output row (`row_scale`, (N,) or (N, 1): a file's single
        scale repeated per row; 1 for Lightricks' files). The stored values are multiplied
        as they are: no float copy, no second rounding."""
        if weight.dtype != FP8_DTYPE or weight.ndim != 2 or row_scale.numel() != weight.shape[0]:
            raise SettingsError(
                f"an FP8 layer takes a 2-D {FP8_DTYPE} weight and one scale per row; got a "
                f"{weight.dtype} weight of shape {list(weight.shape)} with {row_scale.numel()} scales"
            )
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._hold(weight, row_scale.float().reshape(-1, 1), bias, out_dtype)
        return layer

    def _hold(self, weight: Tensor, scale: Tensor, bias: Tensor | None, out_dtype: torch.dtype) -> None:
        """weight (N, K) fp8 and scale (N, 1) fp32 with weight * scale the layer's weight."""
        self.out_features, self.in_features = weight.shape
        self.out_dtype = out_dtype
        self.register_buffer("weight", weight.contiguous())  # (N, K) row-major: column-major B for _scaled_mm
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())  # (1, N) fp32
        bias = bias.to(out_dtype) if bias is not None else None
        self.register_buffer("bias", bias)
        # decided here, not in forward: compiled regions must not trace the one-time check
        self.bias_in_epilogue = bias is not None and scaled_mm_adds_bias(weight.device, out_dtype)
        self.one_pass_quantize = False  # set by `quantize_in_one_pass`

    def quantize(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's input rows (M, K) -> FP8 values and their scales (M, 1)."""
        return (quantize_activations if self.one_pass_quantize else quantize_rows)(rows)

    def forward(self, x: Tensor) -> Tensor:
        values, scale = self.quantize(x.reshape(-1, self.in_features))
        return self.matmul_quantized(values, scale, bias=True).reshape(*x.shape[:-1], self.out_features)

    def matmul_quantized(self, values: Tensor, scale: Tensor, bias: bool) -> Tensor:
        """(M, N) result of FP8 rows `values` (M, K) with their scales (M, 1), plus the
        bias when `bias`."""
        rows = values.shape[0]
        padding = -rows % FP8_ALIGNMENT
        if padding:  # zero rows: scale 1, values 0, cut off again below
            values = F.pad(values.view(torch.uint8), (0, 0, 0, padding)).view(FP8_DTYPE)
            scale = F.pad(scale, (0, 0, 0, padding), value=1.0)
        in_epilogue = bias and self.bias_in_epilogue
        out = torch._scaled_mm(
            values,
            self.weight.t(),
            scale_a=scale,
            scale_b=self.weight_scale,
            bias=self.bias if in_epilogue else None,
            out_dtype=self.out_dtype,
        )
        if padding:
            out = out[:rows]
        if bias and self.bias is not None and not in_epilogue:  # in a pass of its own
            out = out + self.bias
        return out

    def dequantized_weight(self) -> Tensor:
        """The weight this layer multiplies by, in fp32 (for error checks)."""
        return self.weight.float() * self.weight_scale.t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3fn row-wise"


# ---------------------------------------------------------------- the activations' quantization


def quantize_activations(x: Tensor) -> tuple[Tensor, Tensor]:
    """`quantize_rows` of a layer's input (M, K) as the FP8 layers run it where
    `quantize_kernel_matches_reference`: on CUDA, run eagerly, one Triton pass over each row
    (the torch form is about seven kernels, each a pass over the rows and a launch, and the
    eager steps wait on those launches); compiled, the torch form, which Inductor fuses with
    the op that produced the rows."""
    if x.is_cuda and not torch.compiler.is_compiling():
        return _quantize_rows_triton(x, None)
    return quantize_rows(x)


def _fake_gelu_quantize_rows(x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape, dtype=FP8_DTYPE), x.new_empty((x.shape[0], 1), dtype=torch.float32)


@traced_as_op("gelu_quantize_rows", _fake_gelu_quantize_rows)
def gelu_quantize_rows(x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """quantize_rows(gelu_tanh(x + bias)) for x (M, K): on CUDA one Triton kernel that reads
    each row once (Inductor splits the row amax of the 4x-wide hidden activation into a
    reduction pass and a quantizing pass, slower: gpu_speed.json `gemm_rates`); elsewhere the
    torch reference. Traced, a custom op, so compiled graphs and CUDA graphs keep it whole."""
    return _in_one_pass(x, bias)


def _in_one_pass(x: Tensor, gelu_bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """The kernel on CUDA, the torch reference elsewhere."""
    if x.is_cuda:
        return _quantize_rows_triton(x, gelu_bias)
    if gelu_bias is None:
        return quantize_rows(x)
    return quantize_rows(F.gelu(x.float() + gelu_bias.float(), approximate="tanh"))


@functools.cache
def _triton_quantize_kernel():
    """Built on first use: Triton is there only where torch runs on CUDA."""
    import triton
    import triton.language as tl

    @triton.jit
    def quantize_kernel(
        x_ptr,
        bias_ptr,
        values_ptr,
        scale_ptr,
        K,
        BLOCK: tl.constexpr,
        GELU: tl.constexpr,
        LIMIT: tl.constexpr,
        FLOOR: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        inside = cols < K
        y = tl.load(x_ptr + row * K + cols, mask=inside, other=0.0).to(tl.float32)
        if GELU:
            x = y + tl.load(bias_ptr + cols, mask=inside, other=0.0).to(tl.float32)
            u = 0.7978845608028654 * (x + 0.044715 * x * x * x)  # sqrt(2 / pi) (x + 0.044715 x^3)
            y = x * (1.0 - 1.0 / (tl.exp(2.0 * u) + 1.0))  # 0.5 x (1 + tanh u), overflow-safe
        amax = tl.maximum(tl.max(tl.abs(y), axis=0), FLOOR)  # masked columns are 0
        # Rounded divisions, as torch's: the GPU's default fp32 '/' is approximate (2 ulp),
        # and a value that lands an ulp off crosses an FP8 rounding boundary now and then.
        scale = tl.div_rn(amax, LIMIT)
        q = tl.minimum(tl.maximum(tl.div_rn(y, scale), -LIMIT), LIMIT)
        tl.store(values_ptr + row * K + cols, q.to(tl.float8e4nv), mask=inside)
        tl.store(scale_ptr + row, scale)

    return triton, autotuned(quantize_kernel, (4, 8, 16, 32), key=["K", "GELU"])


def _quantize_rows_triton(x: Tensor, gelu_bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """The kernel on rows x (M, K): with `gelu_bias`, of gelu_tanh(x + gelu_bias). On the
    GPU, or on the CPU under Triton's interpreter (the tests)."""
    triton, kernel = _triton_quantize_kernel()
    x = x.contiguous()
    bias = gelu_bias.contiguous() if gelu_bias is not None else x
    rows, width = x.shape
    values = torch.empty((rows, width), device=x.device, dtype=FP8_DTYPE)
    scale = torch.empty((rows, 1), device=x.device, dtype=torch.float32)
    block = triton.next_power_of_2(width)
    gelu = gelu_bias is not None
    launch(kernel, (rows,), x, x, bias, values, scale, width, BLOCK=block, GELU=gelu, LIMIT=FP8_MAX, FLOOR=MIN_AMAX)
    return values, scale


@functools.cache
def quantize_kernel_matches_reference(device: torch.device | str) -> bool:
    """Whether the activations' quantization (`quantize_activations`, `gelu_quantize_rows`)
    runs on `device` and agrees with the torch reference: every dequantized value within
    1/20 of its row's amax in fp32 (half an FP8 step at the top of the range is 1/28), scales
    within 1%. False where the kernel cannot be built (no Triton, say), so callers keep the
    torch form. Checked once per device."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(48, 1000, generator=g, device=device).to(torch.bfloat16) * 3
    bias = torch.randn(1000, generator=g, device=device).to(torch.bfloat16)
    try:
        got = [_in_one_pass(x, bias), _in_one_pass(x, None)]
    except Exception:
        return False
    exact = [F.gelu(x.float() + bias.float(), approximate="tanh"), x.float()]
    for (values, scale), want in zip(got, exact):
        amax = want.abs().amax(-1, keepdim=True)
        close_values = ((values.float() * scale - want).abs() <= amax / 20).all()
        close_scales = ((scale - amax / FP8_MAX).abs() <= 0.01 * amax / FP8_MAX).all()
        if not (close_values and close_scales):
            return False
    return True


class FP8FeedForward(nn.Module):
    """A feed-forward whose two linear layers are `FP8Linear`: the hidden activation's bias,
    GELU and row quantization are one pass (`gelu_quantize_rows`), so the 4x-wide hidden
    tensor is written once, in FP8, instead of in bf16 and read back twice."""

    def __init__(self, project_in: FP8Linear, project_out: FP8Linear):
        super().__init__()
        self.project_in, self.project_out = project_in, project_out

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.project_in.in_features)
        hidden = self.project_in.matmul_quantized(*self.project_in.quantize(rows), bias=False)
        values, scale = gelu_quantize_rows(hidden, self.project_in.bias)
        out = self.project_out.matmul_quantized(values, scale, bias=True)
        return out.reshape(*x.shape[:-1], self.project_out.out_features)


def quantize_in_one_pass(model: nn.Module) -> int:
    """Every `FP8Linear` of `model` quantizes its input with `quantize_activations` (one
    Triton pass on CUDA); returns how many. Call it where `quantize_kernel_matches_reference`."""
    layers = [m for m in model.modules() if isinstance(m, FP8Linear)]
    for layer in layers:
        layer.one_pass_quantize = True
    return len(layers)


def fuse_fp8_feed_forwards(model: nn.Module) -> int:
    """Every feed-forward whose layers are both FP8 (after `convert_to_fp8`) -> `FP8FeedForward`
    (the same weights). Returns how many. Its state_dict names change: save the original."""
    from ..models.transformer import FeedForward, GELUProjection

    count = 0
    for module in model.modules():
        if not isinstance(module, FeedForward):
            continue
        first, last = module.net[0], module.net[2]
        if (
            isinstance(first, GELUProjection)
            and isinstance(first.proj, FP8Linear)
            and isinstance(last, FP8Linear)
            and first.proj.bias is not None
        ):
            module.net = nn.Sequential(FP8FeedForward(first.proj, last))
            count += 1
    return count


def _keeps_precision(name: str, keep: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in keep)


def _fp8_ready(linear: nn.Linear) -> bool:
    return linear.in_features % FP8_ALIGNMENT == 0 and linear.out_features % FP8_ALIGNMENT == 0


def convert_to_fp8(
    model: nn.Module,
    out_dtype: torch.dtype | None = None,
    keep_precise: tuple[str, ...] = KEEP_PRECISE,
    device: torch.device | None = None,
) -> list[str]:
    """Replace, in place, every `nn.Linear` of `model` (and every layer stored as e4m3 FP8
    by an FP8 checkpoint, taken as stored) whose name matches none of the `keep_precise`
    fnmatch patterns and whose sizes FP8 kernels take (multiples of 16) by an `FP8Linear`;
    returns the replaced names.

    Call it after the weights are loaded and the model is on its device: the weights are
    quantized from whatever the layer holds then. A model kept in CPU memory for offloading
    names its run `device`: each layer is quantized there, one at a time, and comes back,
    so its numbers and kernel choices are the resident model's. The model's `state_dict`
    changes (FP8 weights plus `weight_scale`), so save the original, never the converted one."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        raise SettingsError(
            f"fp8 needs torch.float8_e4m3fn and torch._scaled_mm; torch {torch.__version__} "
            "lacks them (allowed: torch 2.4 or later)"
        )
    targets = [  # the layers the seam can swap: not one inside a wrapper (a LoRA branch)
        (name, module)
        for name, module in model.linear_layers().items()
        if (isinstance(module, nn.Linear) or _stored_fp8(module))
        and not _keeps_precision(name, keep_precise)
        and _fp8_ready(module)
    ]
    done = []
    while targets:
        # popped, so each replaced layer's weights are freed as the next is quantized: the
        # whole model is never held twice (its original weights beside their FP8 copies)
        name, linear = targets.pop(0)
        done.append(name)
        if isinstance(linear, nn.Linear):
            home = linear.weight.device
            layer = FP8Linear(linear.to(device or home), out_dtype)
            model.replace_linear(name, layer.to(home))
        else:
            bias = linear.bias.detach() if linear.bias is not None else None
            dtype = out_dtype or (bias.dtype if bias is not None else next(model.parameters()).dtype)
            model.replace_linear(name, FP8Linear.from_quantized(*linear.fp8_rows(), bias, dtype))
    return done


def _stored_fp8(module: nn.Module) -> bool:
    """A layer of an FP8 checkpoint whose weight is stored as e4m3 FP8
    (`models.quantized_linear.QuantizedLinear`): it feeds the FP8 matmuls as stored. Other
    quantized layers (GGUF blocks, e5m2) keep dequantizing per call: FP8 copies of GGUF
    weights would cost more memory than the file's types were chosen to save."""
    kinds = getattr(module, "kinds", None)
    return bool(kinds) and hasattr(module, "fp8_rows") and all(kind == "float8_e4m3fn" for kind in kinds)


def fp8_supported(device: torch.device | str) -> bool:
    """FP8 tensor cores: CUDA compute capability 8.9 (Ada) or 9.0+ (Hopper). On CPU, where
    this torch's `_scaled_mm` takes row-wise scales (slowly; torch 2.14 does, 2.11 does
    not), which the tests use."""
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_takes_row_wise_scales()
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


@functools.cache
def _cpu_takes_row_wise_scales() -> bool:
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return False
    out = _row_wise_scaled_mm(torch.ones(16, 16), torch.ones(16, 16), torch.float32)
    return out is not None and bool(torch.allclose(out, torch.full((16, 16), 16.0)))
