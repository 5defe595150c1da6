"""Would FP8 attention close issue 6's FP8 gap? cuDNN's FP8 SDPA forward (through the
optional `nvidia-cudnn-frontend` package) against the bf16 cuDNN SDPA the DiT runs, at the
2B model's self-attention shape (32 heads x 64, 6144 tokens, batch 1 and 2), on one GPU.

Per-tensor FP8 scales for q, k, v (amax / 448), P scaled by 448, output in bf16 (cuDNN
9.19 allows that on Blackwell only, and says so) and in FP8. Prints and writes
milliseconds per call, TFLOP/s and the error against bf16 SDPA on the same inputs:

    pip install nvidia-cudnn-frontend      # not a dependency of the pack
    python benchmarks/probe_fp8_attention.py --out $OUT/fp8_attention_probe.json

Last result: benchmarks/results/fp8_attention_probe.json (README, GPU speed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HEAD_DIM, TOKENS = 32, 64, 6144
FP8_MAX = 448.0


def events_ms(fn, repeats: int = 20) -> float:
    """Mean GPU milliseconds of `fn()` over `repeats` back-to-back calls (the host stays ahead)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def error(got: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (got.float() - ref.float())
    return dict(max_abs=diff.abs().max().item(), rel_l2=(diff.norm() / ref.float().norm()).item(),
                ref_max_abs=ref.float().abs().max().item())


def cudnn_fp8_attention(batch: int, out_fp8: bool):
    """A built cuDNN FP8 SDPA graph for (batch, HEADS, TOKENS, HEAD_DIM), BSHD strides;
    returns run(q8, k8, v8, descales) -> O (B, S, H, D)."""
    import cudnn

    b, h, s, d = batch, HEADS, TOKENS, HEAD_DIM
    io = cudnn.data_type.FP8_E4M3
    graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT)
    stride = (s * h * d, d, h * d, 1)  # (B, H, S, D) dims over a (B, S, H, D) tensor
    q = graph.tensor(uid=0, dim=(b, h, s, d), stride=stride, data_type=io)
    k = graph.tensor(uid=1, dim=(b, h, s, d), stride=stride, data_type=io)
    v = graph.tensor(uid=2, dim=(b, h, s, d), stride=stride, data_type=io)
    scalar = lambda uid: graph.tensor(uid=uid, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1),  # noqa: E731
                                      data_type=cudnn.data_type.FLOAT)
    dq, dk, dv, ds, ss, so = (scalar(u) for u in (5, 6, 7, 8, 9, 10))
    o, _stats, _amax_s, amax_o = graph.sdpa_fp8(q=q, k=k, v=v, descale_q=dq, descale_k=dk, descale_v=dv,
                                                descale_s=ds, scale_s=ss, scale_o=so, generate_stats=False,
                                                attn_scale=1.0 / math.sqrt(d), use_causal_mask=False)
    o_type = io if out_fp8 else cudnn.data_type.BFLOAT16
    o.set_uid(3).set_output(True).set_dim((b, h, s, d)).set_stride(stride).set_data_type(o_type)
    amax_o.set_uid(12).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(
        cudnn.data_type.FLOAT)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    workspace = torch.empty(graph.get_workspace_size(), device="cuda", dtype=torch.uint8)
    handle = cudnn.create_handle()
    out = torch.empty(b, s, h, d, device="cuda", dtype=torch.float8_e4m3fn if out_fp8 else torch.bfloat16)
    amax = torch.empty(1, 1, 1, 1, device="cuda", dtype=torch.float32)

    def run(q8, k8, v8, scales: dict) -> torch.Tensor:
        pack = {0: q8, 1: k8, 2: v8, 3: out, 12: amax, 5: scales["dq"], 6: scales["dk"], 7: scales["dv"],
                8: scales["ds"], 9: scales["ss"], 10: scales["so"]}
        graph.execute(pack, workspace, handle=handle)
        return out

    return run


def per_tensor_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = FP8_MAX / x.abs().amax().float().clamp(min=1e-12)
    return (x.float() * scale).to(torch.float8_e4m3fn), (1.0 / scale).reshape(1, 1, 1, 1)


def probe(batch: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(batch)
    # q and k as the DiT gives them (RMS-normed, so entries ~ N(0, 1)); v from a projection
    q, k, v = (torch.randn(batch, TOKENS, HEADS, HEAD_DIM, generator=g, device="cuda").to(torch.bfloat16)
               for _ in range(3))
    flop = 4 * batch * HEADS * TOKENS * TOKENS * HEAD_DIM
    row = {}
    heads_first = [t.transpose(1, 2) for t in (q, k, v)]
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = F.scaled_dot_product_attention(*heads_first).transpose(1, 2)
        row["bf16_cudnn_ms"] = events_ms(lambda: F.scaled_dot_product_attention(*heads_first))
    row["bf16_tflops"] = flop / row["bf16_cudnn_ms"] / 1e9
    (q8, dq), (k8, dk), (v8, dv) = per_tensor_fp8(q), per_tensor_fp8(k), per_tensor_fp8(v)
    one = torch.ones(1, 1, 1, 1, device="cuda")
    for out_fp8 in (False, True):
        name = "fp8_out_fp8" if out_fp8 else "fp8_out_bf16"
        try:
            run = cudnn_fp8_attention(batch, out_fp8)
            # P in [0, 1] is stored times 448; an FP8 output is stored at the scale of v's range
            so = one * (FP8_MAX / v.abs().amax().float()) if out_fp8 else one
            scales = dict(dq=dq, dk=dk, dv=dv, ss=one * FP8_MAX, ds=one / FP8_MAX, so=so)
            got = run(q8, k8, v8, scales).float()
            if out_fp8:
                got = got / so.reshape(())
            row[f"{name}_vs_bf16"] = error(got, ref)
            row[f"{name}_ms"] = events_ms(lambda: run(q8, k8, v8, scales))
            row[f"{name}_tflops"] = flop / row[f"{name}_ms"] / 1e9
            row[f"{name}_speedup"] = row["bf16_cudnn_ms"] / row[f"{name}_ms"]
        except Exception as exc:  # noqa: BLE001 - report what cuDNN refused, go on
            traceback.print_exc()
            row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:1500]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fp8_attention_probe.json"))
    args = parser.parse_args()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cudnn_backend": torch.backends.cudnn.version(), "shape": f"{HEADS}x{HEAD_DIM}, {TOKENS} tokens"}
    try:
        import cudnn

        result["cudnn_frontend"] = getattr(cudnn, "__version__", "?")
        result["cudnn_frontend_backend"] = cudnn.backend_version()
    except Exception as exc:  # noqa: BLE001
        result["cudnn_frontend_error"] = f"{type(exc).__name__}: {exc}"
    for batch in (1, 2):
        result[f"batch{batch}"] = probe(batch)
        print(f"batch {batch}: {json.dumps(result[f'batch{batch}'], indent=1)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
