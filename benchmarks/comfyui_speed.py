"""The speed a ComfyUI user gets: the pack's text-to-video workflow against ComfyUI's own
LTXV nodes, on the same checkpoint file, in one running ComfyUI server, time from queueing
a prompt to its mp4 written.

    python -m benchmarks.comfyui_speed [--model 2B|13B] [--runs 3] [--optimizations kernels,none,compile] [--tiny]

The checkpoint is random weights in the official single-file layout (the 2B config by
default), under ComfyUI's `models/checkpoints`; both graphs encode the prompt with the
pack's T5 nodes (a one-layer random T5 of the width the transformer reads: ComfyUI caches
a node whose inputs did not change, so after the warm-up neither graph encodes again) and
write the mp4 with the pack's save node, so what differs is the model, the sampling and
the decode:

- pack: `workflows/api/t2v.json` as shipped, its checkpoint loader's `optimization` set
  to each of `--optimizations` (the first is the loader's default);
- native: CheckpointLoaderSimple, LTXVConditioning, EmptyLTXVLatentVideo, LTXVScheduler,
  KSamplerSelect (euler), SamplerCustom, VAEDecode: ComfyUI's own LTX-Video path;
- native_comfyui_save: the same, its frames written by ComfyUI's own CreateVideo and
  SaveVideo (mp4, codec auto) instead of the pack's save node: all of what a user of
  ComfyUI's own nodes runs, writing included.

768x512x121, 20 steps, CFG 3, the scheduler's defaults (paper 2.5.2's token-count shift)
on both. Each row starts with every model unloaded, runs once to warm up (loading,
compiling), then `--runs` times with a new seed each time; its seconds are the median
(queueing to ComfyUI's websocket saying the prompt is done), `node_seconds` each node
class's median, `peak_gpu_memory_gib` the server's peak over the row. The server is ComfyUI from the
host tests' setup (`tests/host/comfy_env.py`: `.comfy/ComfyUI`, from `COMFYUI_SRC` or ../shared/comfyui),
or `--comfyui DIR` on a machine without the package index (its requirements importable, as
`scripts/offline_comfyui_site.sh` packs them; `--front-end-root EMPTY_DIR` where the frontend
package is left out: nothing here opens a page).

Writes benchmarks/results/comfyui_speed.json and, on a GPU with the 2B model,
gpu_speed.json's `comfyui_pack_s`, `comfyui_native_s` and `comfyui_pack_vs_native_ratio`
(native / pack, the pack with the loader's default), and `comfyui_native_own_save_s` with
`comfyui_pack_vs_native_own_save_ratio`; `comfyui_pack_vs_native_ratio_before_save` is the
same-save ratio of each row's seconds less its save node's: random weights decode to noise,
which libx264 takes far longer to write than a real model's frames, so the shared save step
weighs more here than it does for a user. `--tiny`: the tiny configs on the CPU
at 64x64x9, 2 steps (the script's test).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import av
import torch

from benchmarks.cli_gpu_speed import MODELS, PROMPT, write_text_encoder
from benchmarks.gpu_measure import merge_results, report_header
from ltx_core.checkpoint.writing import save_single_file
from ltx_core.models import configs as C
from ltx_core.models.configs import LTXV_SCHEDULER
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from tests.host.comfy_env import ComfyServer, assert_succeeded, comfyui_version, ensure_comfyui, link_pack

RESULTS = Path(__file__).parent / "results"
PACK_WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "api" / "t2v.json"
CHECKPOINT, TEXT_ENCODER = "bench-ltxv.safetensors", "bench-t5"
PROBE_NODES = Path(__file__).parent / "comfyui_nodes"  # the per-row peak memory routes
OPTIMIZATIONS = ("none", "kernels", "compile", "compile+fp8")  # the pack loader's choices (nodes/loaders.py)
GUIDANCE, FRAME_RATE = 3.0, 24.0


def write_models(server: ComfyServer, model: str, tiny: bool) -> None:
    """Random weights in ComfyUI's model folders: one official single file, a T5 folder."""
    transformer_cfg, vae_cfg = (C.TINY_TRANSFORMER, C.TINY_VAE_0_9_1) if tiny else MODELS[model]
    torch.manual_seed(0)
    save_single_file(
        server.checkpoints_dir / CHECKPOINT,
        LTXVTransformer(transformer_cfg),
        CausalVideoVAE(vae_cfg),
        dtype=torch.bfloat16,
    )
    write_text_encoder(server.text_encoders_dir / TEXT_ENCODER, transformer_cfg.caption_channels)


def pack_graph(size: dict, optimization: str, seed: int) -> dict:
    """The shipped text-to-video workflow on the benchmark's files, size and seed."""
    graph = copy.deepcopy(json.loads(PACK_WORKFLOW.read_text()))
    by_type = {node["class_type"]: node["inputs"] for node in graph.values()}  # one node of each, but T5Encode
    by_type["LTXVCoreCheckpointLoader"].update(ckpt_name=CHECKPOINT, optimization=optimization)
    by_type["LTXVCoreT5Loader"]["text_encoder_name"] = TEXT_ENCODER
    by_type["LTXVCoreEmptyLatentVideo"].update(width=size["width"], height=size["height"], frames=size["frames"])
    by_type["LTXVCoreSampler"].update(seed=seed, steps=size["steps"], cfg=GUIDANCE, frame_rate=FRAME_RATE)
    by_type["LTXVCoreDenoisingDecode"]["seed"] = seed
    by_type["LTXVCoreSaveVideo"].update(frame_rate=FRAME_RATE, filename_prefix="bench/pack")
    positive = next(
        n["inputs"] for n in graph.values() if n["class_type"] == "LTXVCoreT5Encode" and n["inputs"]["text"]
    )
    positive["text"] = PROMPT
    return graph


def native_graph(size: dict, seed: int, comfyui_save: bool = False) -> dict:
    """ComfyUI's own LTXV text-to-video nodes on the same file, prompt and settings; the
    mp4 written by the pack's save node, or with `comfyui_save` by ComfyUI's own."""
    s = LTXV_SCHEDULER
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "t5": {"class_type": "LTXVCoreT5Loader",
               "inputs": {"text_encoder_name": TEXT_ENCODER, "dtype": "default", "device": "default"}},
        "positive": {"class_type": "LTXVCoreT5Encode", "inputs": {"t5": ["t5", 0], "text": PROMPT, "max_tokens": 128}},
        "negative": {"class_type": "LTXVCoreT5Encode", "inputs": {"t5": ["t5", 0], "text": "", "max_tokens": 128}},
        "conditioning": {"class_type": "LTXVConditioning",
                         "inputs": {"positive": ["positive", 0], "negative": ["negative", 0],
                                    "frame_rate": FRAME_RATE}},
        "latent": {"class_type": "EmptyLTXVLatentVideo",
                   "inputs": {"width": size["width"], "height": size["height"], "length": size["frames"],
                              "batch_size": 1}},
        "sigmas": {"class_type": "LTXVScheduler",
                   "inputs": {"steps": size["steps"], "max_shift": s.max_shift, "base_shift": s.base_shift,
                              "stretch": True, "terminal": s.shift_terminal, "latent": ["latent", 0]}},
        "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sample": {"class_type": "SamplerCustom",
                   "inputs": {"model": ["ckpt", 0], "add_noise": True, "noise_seed": seed, "cfg": GUIDANCE,
                              "positive": ["conditioning", 0], "negative": ["conditioning", 1],
                              "sampler": ["euler", 0], "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "LTXVCoreSaveVideo",
                 "inputs": {"images": ["decode", 0], "frame_rate": FRAME_RATE, "filename_prefix": "bench/native"}},
    }  # fmt: skip
    if comfyui_save:
        graph["video"] = {"class_type": "CreateVideo", "inputs": {"images": ["decode", 0], "fps": FRAME_RATE}}
        save = {"video": ["video", 0], "filename_prefix": "bench/native_own", "format": "mp4"}
        graph["save"] = {"class_type": "SaveVideo", "inputs": save}
    return graph


def timed_run(server: ComfyServer, graph: dict, timeout_s: float) -> dict:
    """Seconds from queueing `graph` to ComfyUI saying it is done (the mp4 written), each
    node class's seconds (from the websocket's `executing` messages), and the mp4."""
    started = time.perf_counter()
    prompt_id, events = server.run_watching(graph, timeout_s=timeout_s)
    seconds = events[-1].at - started
    entry = server.wait_for_history(prompt_id, timeout_s=60)
    assert_succeeded(entry)
    (video,) = [path for path in server.output_files(entry) if path.suffix == ".mp4"]
    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return {"seconds": round(seconds, 3), "node_seconds": node_seconds(graph, events), "mp4": video.name,
            "frames": frames}  # fmt: skip


def node_seconds(graph: dict, events: list) -> dict[str, float]:
    """Seconds each node class ran: from the `executing` message naming a node to the next
    `executing` message (ComfyUI sends one naming no node when the prompt is done)."""
    starts = [(event.data.get("node"), event.at) for event in events if event.kind == "executing"]
    spent: dict[str, float] = {}
    for (node, at), (_, until) in zip(starts, starts[1:]):
        name = graph.get(node, {}).get("class_type", str(node))  # an id ComfyUI made itself, as it is
        spent[name] = round(spent.get(name, 0.0) + until - at, 3)
    return spent


def measure_row(server: ComfyServer, make_graph, runs: int, timeout_s: float) -> dict:
    """One warm-up run, then `runs` runs with new seeds; the median and each run, and the
    row's peak GPU memory (every model unloaded before it: `comfyui_nodes/ltxv_bench_probe`)."""
    server.post("/ltxv_bench/row_start")
    warm_up = timed_run(server, make_graph(0), timeout_s)
    measured = [timed_run(server, make_graph(seed), timeout_s) for seed in range(1, runs + 1)]
    names = {name for run in measured for name in run["node_seconds"]}
    return {
        "seconds": statistics.median(r["seconds"] for r in measured),
        "node_seconds": {n: statistics.median(r["node_seconds"].get(n, 0.0) for r in measured) for n in sorted(names)},
        "warm_up_s": warm_up["seconds"],
        "peak_gpu_memory_gib": server.get("/ltxv_bench/peak_memory")["peak_gib"],
        "runs": measured,
    }


def measure(args, on_row=lambda result: None) -> dict:
    size = (dict(width=64, height=64, frames=9, steps=2) if args.tiny
            else dict(width=768, height=512, frames=121, steps=20))  # fmt: skip
    timeout_s = 600 if args.tiny else 1800
    rows = {}
    result = {"size": size, "guidance_scale": GUIDANCE, "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        extra = ("--front-end-root", str(args.front_end_root)) if args.front_end_root else ()
        server = ComfyServer(Path(tmp), root=args.comfyui, cpu=args.tiny, extra_args=extra, custom_nodes=(PROBE_NODES,))
        write_models(server, args.model, args.tiny)
        server.start()
        try:
            rows["native"] = measure_row(server, lambda seed: native_graph(size, seed), args.runs, timeout_s)
            on_row(result)
            graph = lambda seed: native_graph(size, seed, comfyui_save=True)
            rows["native_comfyui_save"] = measure_row(server, graph, args.runs, timeout_s)
            on_row(result)
            for optimization in args.optimizations:
                graph = lambda seed: pack_graph(size, optimization, seed)
                rows[f"pack_{optimization}"] = measure_row(server, graph, args.runs, timeout_s)
                on_row(result)
        finally:
            server.stop()
    return result


def write_report(args, result: dict) -> dict:
    """comfyui_speed.json from the rows so far; gpu_speed.json's keys once both are in."""
    on_gpu = not args.tiny
    report = {
        **report_header("comfyui_speed", on_gpu),
        "comfyui": comfyui_version(args.comfyui),
        "model": "tiny" if args.tiny else args.model,
        "pack_default_optimization": args.optimizations[0],
        **result,
    }
    rows = result["rows"]
    pack = rows.get(f"pack_{args.optimizations[0]}")
    if pack and "native" in rows:
        report["comfyui_pack_s"] = pack["seconds"]
        report["comfyui_native_s"] = rows["native"]["seconds"]
        report["comfyui_pack_vs_native_ratio"] = round(rows["native"]["seconds"] / pack["seconds"], 3)
        before_save = [row["seconds"] - row["node_seconds"]["LTXVCoreSaveVideo"] for row in (rows["native"], pack)]
        report["comfyui_pack_vs_native_ratio_before_save"] = round(before_save[0] / before_save[1], 3)
    if pack and "native_comfyui_save" in rows:
        own = rows["native_comfyui_save"]["seconds"]
        report["comfyui_native_own_save_s"] = own
        report["comfyui_pack_vs_native_own_save_ratio"] = round(own / pack["seconds"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if on_gpu and args.model == "2B" and "comfyui_pack_s" in report:
        keys = [k for k in report if k.startswith(("comfyui_pack_", "comfyui_native_"))]
        measured = {"date": report["date"], "device": report["device"], "comfyui": report["comfyui"],
                    "file": "comfyui_speed.json"}  # fmt: skip
        merge_results(RESULTS / "gpu_speed.json", {**{k: report[k] for k in keys}, "comfyui_measured": measured})
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="2B")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--optimizations",
        type=lambda text: text.split(","),
        default=["kernels", "none", "compile"],
        help=f"the pack loader's optimization per pack row, the default first; some of: {','.join(OPTIMIZATIONS)}",
    )
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument(
        "--comfyui",
        type=Path,
        help="an unpacked ComfyUI whose requirements this Python already has (a machine without the package "
        "index); default: the host tests' setup, installed on first use",
    )
    parser.add_argument("--front-end-root", type=Path, help="ComfyUI's --front-end-root (no frontend package)")
    parser.add_argument("--out", type=Path, default=RESULTS / "comfyui_speed.json")
    args = parser.parse_args(argv)
    unknown = set(args.optimizations) - set(OPTIMIZATIONS)
    if unknown:
        parser.error(f"--optimizations: unknown {sorted(unknown)}; allowed: {list(OPTIMIZATIONS)}")
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: at least 1")
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("comfyui_speed times ComfyUI on a GPU; no CUDA device here (use --tiny)")
    if args.comfyui is not None and not (args.comfyui / "main.py").is_file():
        parser.error(f"--comfyui {args.comfyui}: no ComfyUI there (no main.py)")
    if args.tiny:
        args.optimizations = args.optimizations[:1]  # compiling on the CPU is not what is measured
    if args.comfyui is None:
        args.comfyui = ensure_comfyui()
    else:
        link_pack(args.comfyui)
    result = measure(args, on_row=lambda partial: write_report(args, partial))
    report = write_report(args, result)
    for name, row in result["rows"].items():
        peak = row["peak_gpu_memory_gib"]
        memory = "" if peak is None else f", peak {peak:.2f} GiB"
        print(f"{name:20} {row['seconds']:.3f} s queue to mp4 (warm-up {row['warm_up_s']:.1f} s{memory})")
        print("    " + ", ".join(f"{node} {seconds:.3f} s" for node, seconds in row["node_seconds"].items()))
    if "comfyui_pack_vs_native_ratio" in report:
        print(f"native / pack: {report['comfyui_pack_vs_native_ratio']:.3f}")
    if "comfyui_pack_vs_native_own_save_ratio" in report:
        print(f"native with ComfyUI's save / pack: {report['comfyui_pack_vs_native_own_save_ratio']:.3f}")
    return report


if __name__ == "__main__":
    main()
