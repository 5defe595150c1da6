"""The speed a command-line user gets: `python -m ltx_core generate` run as a new process
for every run, its own `--timings` read back, on random weights written in the official
single-file layout (the 2B config by default) and a one-layer random T5 of the width the
transformer reads (its cost is not what is measured).

    python -m benchmarks.cli_gpu_speed [--model 2B|13B] [--repeats 2] [--tiny]

Rows: the CLI's defaults (the fused kernels on), `--compile`, `--compile --fp8`, `--fp8`
alone, `--no-fast-kernels`, each without CFG (`--cfg 1`) and with it (`--cfg 3`),
768x512x121, 20 steps, bf16. A row's seconds are the median of `after_text_s` (text encoded
to frames decoded: the latent, the steps and the decode, as the CLI process runs them) over
its processes after the first, whose caches the first filled (`first_process_after_text_s`
beside it; with one process, that one's); its peak GPU memory the largest of its processes'
(`--timings`' `peak_gpu_memory_gib`). Every process shares one TorchInductor and one Triton
cache folder, empty when the script starts, and one bytecode cache, filled first
(`compile_bytecode`). The cold start is the first process of the defaults without CFG
(seconds from its launch to its first step; the page cache already holds the files, just
written), the warm start its second; `first_step_s_by_row` has every process's, so the
compiled rows' second processes show what the filled caches give.

Writes benchmarks/results/cli_gpu_speed.json and, on a GPU, the user-path keys of
benchmarks/results/gpu_speed.json (cli_bf16_nocfg_s, cli_bf16_cfg_s, cli_fp8_nocfg_s,
cli_fp8_cfg_s, cold_start_first_step_s, warm_start_first_step_s). `--tiny`: the tiny
configs on the CPU at 64x64x9, 2 steps (the script's test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.gpu_measure import merge_results, report_header
from ltx_core.checkpoint.writing import save_single_file
from ltx_core.models import configs as C
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE

RESULTS = Path(__file__).parent / "results"
ASSETS = Path(__file__).resolve().parents[1] / "ltx_core" / "assets"
PROMPT = "A red circle slides slowly to the left over a dark blue background."
MODELS = {"2B": (C.LTXV_2B, C.LTXV_VAE_0_9_1), "13B": (C.LTXV_13B, C.LTXV_VAE_0_9_5)}
# (row name, CLI flags); the FP8 row compiles too, as the FP8 layers are meant to run
FLAG_ROWS = (
    ("default", ()),
    ("compile", ("--compile",)),
    ("fp8", ("--compile", "--fp8")),
    ("fp8_eager", ("--fp8",)),  # FP8 without the compile a one-clip process never earns back
    ("no_kernels", ("--no-fast-kernels",)),  # the defaults less the fused kernels and the timed attention
)
GUIDANCE = {"nocfg": "1", "cfg": "3"}
# gpu_speed.json's user-path keys: (flag row, guidance); FP8 as a one-clip process runs it
# fastest, `--fp8` alone (compiling costs a process more than it saves: the `fp8` row)
GPU_SPEED_KEYS = {
    "cli_bf16_nocfg_s": ("default", "nocfg"),
    "cli_bf16_cfg_s": ("default", "cfg"),
    "cli_fp8_nocfg_s": ("fp8_eager", "nocfg"),
    "cli_fp8_cfg_s": ("fp8_eager", "cfg"),
}


def write_models(folder: Path, model: str, tiny: bool) -> tuple[Path, Path]:
    """Random weights: the transformer and VAE as one official single file, and a T5 folder."""
    transformer_cfg, vae_cfg = (C.TINY_TRANSFORMER, C.TINY_VAE_0_9_1) if tiny else MODELS[model]
    torch.manual_seed(0)
    checkpoint = save_single_file(
        folder / "model.safetensors",
        LTXVTransformer(transformer_cfg),
        CausalVideoVAE(vae_cfg),
        dtype=torch.bfloat16,
    )
    return checkpoint, write_text_encoder(folder / "t5", transformer_cfg.caption_channels)


def write_text_encoder(folder: Path, width: int) -> Path:
    """A one-layer random T5 of `width`, with the shipped tokenizer, in T5's folder layout."""
    from ltx_core.models.t5 import T5EncoderModel
    from ltx_core.training.t5 import init_t5_weights, save_text_encoder, tiny_t5_config

    heads = max(1, width // 64)
    config = tiny_t5_config(d_model=width, d_kv=width // heads, d_ff=2 * width, num_layers=1, num_heads=heads)
    model = init_t5_weights(T5EncoderModel(config), torch.Generator().manual_seed(0))
    return save_text_encoder(model, folder, ASSETS / "t5-tiny" / "spiece.model")


def run_cli(
    checkpoint: Path, text_encoder: Path, flags: tuple, cfg: str, size: dict, folder: Path, env, python=()
) -> dict:
    """One CLI process; its timings and the seconds from its launch to its first step.
    `python`: options for the interpreter before `-m ltx_core` (a profiler)."""
    timings, output = folder / "timings.json", folder / "out.mp4"
    args = ["--checkpoint", str(checkpoint), "--text-encoder", str(text_encoder), "--prompt", PROMPT,
            "--width", str(size["width"]), "--height", str(size["height"]), "--frames", str(size["frames"]),
            "--steps", str(size["steps"]), "--cfg", cfg, "--dtype", size["dtype"], "--output", str(output),
            "--overwrite", "--timings", str(timings), *flags]  # fmt: skip
    launched = time.time()
    done = subprocess.run(
        [sys.executable, *python, "-m", "ltx_core", "generate", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the CLI failed ({' '.join(flags) or 'defaults'}, cfg {cfg}):\n{done.stderr[-2000:]}")
    report = json.loads(timings.read_text())
    return {
        "after_text_s": report["after_text_s"],
        "launch_to_first_step_s": round(report["epoch"]["first_step"] - launched, 3),
        "process_s": round(time.time() - launched, 3),
        "peak_gpu_memory_gib": report["peak_gpu_memory_gib"],
        "seconds_since_start": report["seconds_since_start"],
    }


def measure(args, on_row=lambda result: None) -> dict:
    """Every row's processes; `on_row` sees the result so far after each row (a run cut off
    at a time limit still leaves the rows it finished)."""
    size = (dict(width=64, height=64, frames=9, steps=2, dtype="fp32") if args.tiny
            else dict(width=768, height=512, frames=121, steps=20, dtype="bf16"))  # fmt: skip
    rows = {}
    result = {"size": size, "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint, text_encoder = write_models(folder, args.model, args.tiny)
        caches = {"TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"), "TRITON_CACHE_DIR": str(folder / "triton")}
        env = {**os.environ, **caches, "PYTHONUNBUFFERED": "1"}
        if not args.tiny:
            compile_bytecode(env, folder / "pycache")
        flag_rows = FLAG_ROWS[:1] if args.tiny else FLAG_ROWS  # compiling on the CPU is not what is measured
        for name, flags in [row for row in flag_rows if args.rows is None or row[0] in args.rows]:
            for guidance, cfg in GUIDANCE.items():
                runs = [run_cli(checkpoint, text_encoder, flags, cfg, size, folder, env) for _ in range(args.repeats)]
                rows[f"{name}_{guidance}"] = {"flags": " ".join(flags) or "(defaults)", "cfg": float(cfg),
                                              **row_summary(runs)}  # fmt: skip
                on_row(result)
        if args.profile:
            profile = args.out.with_name(f"{args.out.stem}_profile.txt")
            result["profile"] = profile_process(checkpoint, text_encoder, size, folder, env, profile)
    return result


def profile_process(checkpoint: Path, text_encoder: Path, size: dict, folder: Path, env, out: Path) -> dict:
    """One more process of the defaults without CFG, under cProfile: where a warm process
    spends its seconds, launch to exit (imports, loading, the steps' Python, the waits on
    the GPU, the mp4). The top functions go to `out` (beside the report)."""
    import io
    import pstats

    stats_file = folder / "cli.prof"
    profiler = ("-m", "cProfile", "-o", str(stats_file))
    run = run_cli(checkpoint, text_encoder, (), "1", size, folder, env, python=profiler)
    text = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=text)
    stats.sort_stats("cumulative").print_stats(25)
    stats.print_stats(r"ltx_core[/\\]", 70)  # the package's own functions, imports aside
    stats.sort_stats("tottime").print_stats(40)
    out.write_text(text.getvalue())
    return run


def compile_bytecode(env: dict, prefix: Path) -> None:
    """The installed packages' bytecode, compiled before the first process as pip compiles it
    when it installs them, into `prefix` (PYTHONPYCACHEPREFIX for every process): an image
    whose package folders hold no bytecode and take none would otherwise compile torch's
    sources in every process, seconds a user's installed environment never spends."""
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    folders = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *folders], env=env, capture_output=True)


def row_summary(runs: list[dict]) -> dict:
    """A row's seconds (the warm processes' median), the first process's, its peak memory."""
    warm = runs[1:] or runs
    return {
        "after_text_s": statistics.median(r["after_text_s"] for r in warm),
        "first_process_after_text_s": runs[0]["after_text_s"],
        "peak_gpu_memory_gib": max_or_none(r.get("peak_gpu_memory_gib") for r in runs),
        "runs": runs,
    }


def max_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="2B")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument(
        "--rows", type=lambda text: text.split(","), help="some of: default,compile,fp8,fp8_eager,no_kernels"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_gpu_speed.json")
    parser.add_argument("--profile", action="store_true", help="one more default process under cProfile")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("cli_gpu_speed times the CLI on a GPU; no CUDA device here (use --tiny)")
    unknown = set(args.rows or ()) - {name for name, _ in FLAG_ROWS}
    if unknown:
        parser.error(f"--rows: unknown {sorted(unknown)}; allowed: {[name for name, _ in FLAG_ROWS]}")
    result = measure(args, on_row=lambda partial: write_report(args, partial))
    report = write_report(args, result)
    for name, row in result["rows"].items():
        peak = row["peak_gpu_memory_gib"]
        memory = "" if peak is None else f", peak {peak:.2f} GiB"
        print(f"{name:14} {row['flags']:22} after the text encoder {row['after_text_s']:.3f} s{memory}")
    return report


def write_report(args, result: dict) -> dict:
    """cli_gpu_speed.json from the rows measured so far, and gpu_speed.json's keys once all are."""
    on_gpu = not args.tiny
    report = {
        **report_header("cli_gpu_speed", on_gpu),
        "model": "tiny" if args.tiny else args.model,
        **result,
    }
    # the start a user meets is the defaults' (the first process of the run, then the next)
    start_row = "default_nocfg" if "default_nocfg" in result["rows"] else None
    report["start_row"] = start_row
    first = result["rows"][start_row]["runs"] if start_row else [{"launch_to_first_step_s": None}]
    report["cold_start_first_step_s"] = first[0]["launch_to_first_step_s"]
    report["warm_start_first_step_s"] = first[1]["launch_to_first_step_s"] if len(first) > 1 else None
    report["first_step_s_by_row"] = {
        name: [run["launch_to_first_step_s"] for run in row["runs"]] for name, row in result["rows"].items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if on_gpu and args.model == "2B":
        update_gpu_speed(report, RESULTS / "gpu_speed.json")
    return report


def update_gpu_speed(report: dict, path: Path) -> None:
    """The user-path keys beside the benchmark's own numbers in gpu_speed.json (None for a
    row not measured in this run: an older figure is not kept beside newer ones)."""
    speed = {}
    for key, (name, guidance) in GPU_SPEED_KEYS.items():
        row = report["rows"].get(f"{name}_{guidance}")
        speed[key] = row["after_text_s"] if row else None
    for key in ("cold_start_first_step_s", "warm_start_first_step_s"):
        speed[key] = report.get(key)
    speed["cli_measured"] = {
        "date": report["date"],
        "device": report["device"],
        "file": "cli_gpu_speed.json",
        "fp8_row": "fp8_eager (--fp8 alone: the FP8 a one-clip process runs fastest)",
    }
    merge_results(path, speed)


if __name__ == "__main__":
    main()
