"""The fused kernels the CLI and the nodes turn on by default on a GPU (`--fast-kernels`, the
loaders' 'kernels'), each turned off in turn, on the same weights and inputs.

    python -m benchmarks.kernel_levers [--repeats 3] [--tiny]

The 2B config with random weights in bf16, 768x512x121, 20 steps, without and with CFG
(cond and uncond in one batch), as the CLI runs it: eager, the timed attention backend, CUDA
graphs with FP8 only (as `Speed.chosen` gives). Rows: `kernels` (every fused part on: the
default), one row per part off (`FusedParts`: the feed-forward's GELU epilogue, QK-norm +
RoPE, the modulated norms and gated residuals), and `torch_layers` (PyTorch's own layers and
attention default: `--no-fast-kernels`); then `fp8` (the kernels and FP8 linear layers:
`--fp8`) and `fp8_torch_quantize` (the same with each layer's input quantized by PyTorch
ops, not the one-pass kernel); on a GPU `kernels_cuda_graphs` (the default with its forward
replayed as CUDA graphs) and `fp8_no_cuda_graphs`, the graphs lever on and off. Each row
builds a fresh model from the same weights; its seconds are the best of `--repeats`
(`*_first_s`: the first, which pays a CUDA graph's capture as a one-clip process does),
after two warm-up steps without CFG; its sampled tokens are compared with `torch_layers`'
(relative L2 and max abs difference: bf16 rounding, not a different video).

Writes benchmarks/results/kernel_levers.json. `--tiny`: the tiny config on the CPU at
64x64x9, 2 steps, fp32 (the script's test; no kernel runs there).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.gpu_measure import fresh_peak, report_header, timed
from benchmarks.gpu_speed_pipelines import GUIDANCE, Setup, make_inputs, our_denoise
from ltx_core.models.configs import LTXV_2B, LTXV_VAE_0_9_1, TINY_TRANSFORMER, TINY_VAE_0_9_1
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.speed.optimize import FusedParts, Speed, optimize_transformer

RESULTS = Path(__file__).parent / "results" / "kernel_levers.json"


@dataclass(frozen=True)
class Row:
    """One model to time: FP8 or not, the `FusedParts` switched off (None: no optimization
    at all), CUDA graphs (None: as `Speed.chosen` gives, with FP8 only), the attention
    backend, and whether only a GPU can run it."""

    fp8: bool = False
    parts_off: dict | None = field(default_factory=dict)
    graphs: bool | None = None
    attention: str = "auto"
    gpu_only: bool = False


ROWS = {
    "kernels": Row(),
    "no_gelu_epilogue": Row(parts_off={"gelu_epilogue": False}),
    "no_qk_norm_rope": Row(parts_off={"qk_norm_rope": False}),
    "no_modulation": Row(parts_off={"modulation": False}),
    "torch_layers": Row(parts_off=None),
    "fp8": Row(fp8=True),
    "fp8_torch_quantize": Row(fp8=True, parts_off={"fp8_quantize": False}),
    # the CUDA graphs lever on and off; a row's first run pays each batch size's capture,
    # as a one-clip process would
    "kernels_cuda_graphs": Row(graphs=True, gpu_only=True),
    "fp8_no_cuda_graphs": Row(fp8=True, graphs=False, gpu_only=True),
}


def build(setup: Setup, weights: dict, dtype: torch.dtype, row: Row):
    """A fresh model from `weights` with `row`'s levers (graphs only on a GPU)."""
    with torch.device("meta"):
        model = LTXVTransformer(setup.transformer_cfg)
    model.load_state_dict({k: v.to(setup.device, dtype) for k, v in weights.items()}, assign=True)
    model.eval().requires_grad_(False)
    if row.parts_off is None:
        return model, {}
    graphs = (row.fp8 if row.graphs is None else row.graphs) and setup.device.type == "cuda"
    speed = Speed(fp8=row.fp8, attention=row.attention, cuda_graphs=graphs)
    fast = optimize_transformer(model, speed, FusedParts(**row.parts_off))
    return fast, fast.levers


def measure_row(setup: Setup, inputs, weights: dict, dtype, row: Row, repeats: int) -> tuple[dict, torch.Tensor]:
    model, levers = build(setup, weights, dtype, row)
    our_denoise(model, inputs, 1.0, dtype, steps=2)  # first-call costs (plans, allocator) out of the timing
    fresh_peak(setup.device)
    row = {"levers": {k: v for k, v in levers.items() if k not in ("compile", "fp8")}}
    tokens = None
    for name, guidance in (("nocfg", 1.0), ("cfg", GUIDANCE)):
        runs = [timed(lambda: our_denoise(model, inputs, guidance, dtype), setup.device) for _ in range(repeats)]
        row[f"dit_{name}_s"] = round(min(seconds for _, seconds in runs), 4)
        row[f"dit_{name}_first_s"] = round(runs[0][1], 4)
        tokens = runs[0][0] if tokens is None else tokens
    if setup.device.type == "cuda":
        row["peak_gib"] = round(torch.cuda.max_memory_allocated(setup.device) / 2**30, 3)
    return row, tokens.float().cpu()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.tiny
    if not on_gpu and not args.tiny:
        raise SystemExit("kernel_levers times the fused kernels on a GPU; no CUDA device here (use --tiny)")
    device = torch.device("cuda" if on_gpu else "cpu")
    if args.tiny:
        setup = Setup(64, 64, 9, 2, 8, TINY_TRANSFORMER, TINY_VAE_0_9_1, "tiny", device, "eager", False)
    else:
        setup = Setup(768, 512, 121, 20, 128, LTXV_2B, LTXV_VAE_0_9_1, "real", device, "none", False)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    torch.manual_seed(0)
    weights = LTXVTransformer(setup.transformer_cfg).to(dtype).state_dict()  # random, kept in CPU memory
    inputs = make_inputs(setup)
    rows, tokens = {}, {}
    for name, row in ROWS.items():
        if row.gpu_only and not on_gpu:
            continue
        rows[name], tokens[name] = measure_row(setup, inputs, weights, dtype, row, args.repeats)
        fresh_peak(setup.device)  # the row's model is gone: its memory back before the next
        print(name, json.dumps(rows[name]), flush=True)
    reference = tokens["torch_layers"]
    for name, row in rows.items():
        difference = tokens[name] - reference
        row["tokens_vs_torch_layers"] = {
            "rel_l2": round(float(difference.norm() / reference.norm()), 5),
            "max_abs": round(float(difference.abs().max()), 4),
        }
    size = {"width": setup.width, "height": setup.height, "frames": setup.frames, "steps": setup.steps}
    report = {**report_header("kernel_levers", on_gpu), "size": size, "dtype": str(dtype), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
