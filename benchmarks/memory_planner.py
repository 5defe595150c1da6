"""The memory planner (`ltx_core.memory_plan`) against measured peaks, stage by stage.

Each case runs one stage the way the pipeline runs it (T5 on a prompt, `denoise` for two
steps with the guidance passes batched, `decode_frames`) on random weights of a config,
and records the planner's estimate beside the measurement:

- on CUDA (`--device cuda`): the published 2B and 13B transformers, the 0.9.1 and 0.9.5
  VAEs and a T5-XXL-sized encoder, built on the GPU in the run's dtype;
  `torch.cuda.max_memory_allocated` above what was allocated before the stage (the
  weights, the inputs), and one whole run (all three models resident, as the CLI keeps
  them) against the plan's peak;
- on the CPU (`--device cpu`): the tiny configs and the shipped model's, tensors created
  inside the stage (`memory_probe.PeakLiveBytes`: the CPU has no allocator statistic);
- on the meta device (`--device meta`): the published VAEs' decoders at full size, shapes
  only, against the planner's decoder walk (`decoder_peak`): the same accounting as on
  the CPU at the sizes a CPU could not hold.

The target is 15% (`TARGET`); the JSON lists every case with its error. Each case writes
the JSON again, so a failure keeps what came before; cases past `--budget-s` are skipped
and listed.

    PYTHONUNBUFFERED=1 python -m benchmarks.memory_planner --device cuda --out $OUT/memory_planner.json
    python -m benchmarks.memory_planner --device cpu      # both results go to results/memory_planner.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import platform
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.memory_probe import PeakLiveBytes
from ltx_core import memory_plan as planner
from ltx_core.errors import LTXVError
from ltx_core.models import configs as C
from ltx_core.models.text_encoder import TextEmbeddings
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.pipeline import Models, decode_frames, optimize_models
from ltx_core.sampling.conditioning import ConditionedLatent, condition_first_frame, empty_latent
from ltx_core.sampling.denoise import denoise
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.scheduler import flow_sigmas
from ltx_core.speed.optimize import Speed

RESULTS = Path(__file__).parent / "results" / "memory_planner.json"
TARGET = 0.15
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
TEXT_TOKENS, FRAME_RATE, STEPS = 128, 25.0, 2


@dataclass(frozen=True)
class Case:
    """One stage of one configuration at one size."""

    stage: str  # "sampling", "decode", "text", "run"
    model: str  # a key of MODELS
    width: int
    height: int
    frames: int
    guidance: bool = True
    stg: bool = False
    first_frame: bool = False
    fp8: bool = False
    time_chunk: int | None = None

    @property
    def name(self) -> str:
        levers = [
            lever
            for lever, on in (("cfg", self.guidance), ("stg", self.stg), ("image", self.first_frame), ("fp8", self.fp8))
            if on
        ]
        if self.stage in ("decode", "run"):
            levers.append(f"time_chunk={self.time_chunk}")
        return f"{self.stage} {self.model} {self.width}x{self.height}x{self.frames} {' '.join(levers)}".strip()


# name -> (transformer config, VAE config, T5 size)
MODELS = {
    "2B-0.9.5": (C.LTXV_2B_0_9_5, C.LTXV_VAE_0_9_5, planner.T5_XXL),
    "2B-0.9.1": (C.LTXV_2B_0_9_0, C.LTXV_VAE_0_9_1, planner.T5_XXL),
    "13B-0.9.7": (C.LTXV_13B_0_9_7, C.LTXV_VAE_0_9_5, planner.T5_XXL),
    "tiny": (C.TINY_TRANSFORMER, C.TINY_VAE, planner.TextEncoderSize(0, 32, 4)),
    # the shipped demo model's published shape (ltx_core/assets/ltxv-tiny.safetensors metadata)
    "shipped": (
        replace(
            C.TINY_TRANSFORMER,
            num_layers=5,
            num_attention_heads=4,
            attention_head_dim=48,
            caption_channels=256,
            cross_attention_dim=192,
            causal_temporal_positioning=False,
        ),
        C.TINY_VAE_0_9_1,
        planner.TextEncoderSize(0, 256, 4),
    ),
}

# Grouped by model (each group builds its models once), the most telling cases first.
GPU_CASES = [
    Case("sampling", "2B-0.9.5", 768, 512, 121),
    Case("sampling", "2B-0.9.5", 768, 512, 121, first_frame=True),
    Case("sampling", "2B-0.9.5", 768, 512, 121, guidance=False),
    Case("sampling", "2B-0.9.5", 1216, 704, 121),
    Case("decode", "2B-0.9.5", 768, 512, 121, time_chunk=32),
    Case("decode", "2B-0.9.5", 1216, 704, 257, time_chunk=32),
    Case("text", "2B-0.9.5", 768, 512, 121),
    Case("run", "2B-0.9.5", 768, 512, 121, time_chunk=32),
    Case("decode", "2B-0.9.1", 768, 512, 121),
    Case("decode", "2B-0.9.1", 768, 512, 121, time_chunk=32),
    Case("decode", "2B-0.9.1", 768, 512, 121, time_chunk=8),
    Case("sampling", "13B-0.9.7", 768, 512, 121),
    Case("sampling", "13B-0.9.7", 1216, 704, 121),
    Case("run", "13B-0.9.7", 768, 512, 121, time_chunk=32),
    Case("sampling", "13B-0.9.7", 1216, 704, 257),
    Case("sampling", "2B-0.9.5", 768, 512, 121, stg=True),
    Case("sampling", "2B-0.9.5", 512, 512, 257),
    Case("sampling", "2B-0.9.5", 768, 512, 121, fp8=True),
]

CPU_CASES = [
    Case("sampling", "shipped", 256, 256, 25),
    Case("sampling", "shipped", 256, 256, 25, guidance=False),
    Case("sampling", "shipped", 256, 256, 25, first_frame=True),
    Case("sampling", "shipped", 512, 320, 49),
    Case("sampling", "tiny", 256, 256, 25, stg=True),
    Case("decode", "shipped", 256, 256, 25, time_chunk=32),
    Case("decode", "shipped", 256, 256, 25),
    Case("decode", "shipped", 512, 320, 49, time_chunk=8),
    Case("decode", "tiny", 256, 256, 49, time_chunk=32),
    Case("decode", "tiny", 512, 512, 25, time_chunk=32),
    Case("text", "shipped", 256, 256, 25),
    Case("run", "shipped", 256, 256, 25, time_chunk=32),
    Case("run", "shipped", 512, 320, 49, first_frame=True, time_chunk=32),
]


META_CASES = [
    Case("decode", model, width, height, frames, time_chunk=chunk)
    for model in ("2B-0.9.1", "2B-0.9.5", "0.9.0")
    for width, height, frames, chunks in ((768, 512, 121, (None, 32, 8)), (1216, 704, 257, (32, 8)))
    for chunk in chunks
]
MODELS["0.9.0"] = (C.LTXV_2B_0_9_0, C.LTXV_VAE_0_9_0, planner.T5_XXL)


# ---------------------------------------------------------------- models with random weights


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(model_class, cfg, dtype: torch.dtype, device: torch.device):
    """The model with its own random initialisation, made directly on `device` in `dtype`
    (no fp32 copy of a 13B model first)."""
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        return model_class(cfg).eval().requires_grad_(False)


def build_t5(size: planner.TextEncoderSize, dtype: torch.dtype, device: torch.device):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=32128,
        d_model=size.width,
        d_kv=size.width // size.heads,
        d_ff=size.width * 5 // 2,
        num_layers=24,
        num_heads=size.heads,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        return T5EncoderModel(config).eval().requires_grad_(False)


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's distinct storages (tied weights once)."""
    seen = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr() or id(storage)] = storage.nbytes()  # meta storages have no address
    return sum(seen.values())


# ---------------------------------------------------------------- measuring


def measured(fn, device: torch.device):
    """(fn(), bytes it made beyond what was allocated before, seconds)."""
    gc.collect()
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - before, time.perf_counter() - start
    with PeakLiveBytes() as probe:
        out = fn()
    return out, probe.peak, time.perf_counter() - start


def workload(case: Case, dtype: str, device: torch.device, weights=None) -> planner.Workload:
    transformer, vae, t5 = MODELS[case.model]
    return planner.Workload(
        transformer,
        vae,
        case.width,
        case.height,
        case.frames,
        guidance=case.guidance,
        stg=case.stg,
        per_token_timesteps=case.first_frame,
        steps=STEPS,
        dtype=dtype,
        device=device.type,
        fp8=case.fp8,
        decode_time_chunk=case.time_chunk,
        text_tokens=TEXT_TOKENS,
        text_encoder=t5,
        weights=weights,
    )


def text_inputs(width: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator) -> TextEmbeddings:
    embeds = torch.randn(1, TEXT_TOKENS, width, generator=generator).to(device=device, dtype=dtype)
    return TextEmbeddings(embeds, torch.ones(1, TEXT_TOKENS, dtype=torch.bool, device=device))


def latent_for(case: Case, vae_cfg, device: torch.device) -> ConditionedLatent:
    geometry = SimpleNamespace(
        temporal_compression=vae_cfg.temporal_compression,
        spatial_compression=vae_cfg.spatial_compression,
        latent_channels=vae_cfg.latent_channels,
    )
    latent = empty_latent(1, case.frames, case.height, case.width, geometry, device=device)
    if case.first_frame:
        frame = torch.zeros(1, vae_cfg.latent_channels, 1, *latent.samples.shape[3:], device=device)
        latent = condition_first_frame(latent, frame, 1.0)
    return latent


def sample(transformer, case: Case, device: torch.device, dtype: torch.dtype):
    """`denoise` as `pipeline.generate` calls it, for STEPS steps."""
    generator = torch.Generator().manual_seed(0)
    cfg = getattr(transformer, "model", transformer).cfg  # a runner (FP8) holds the model
    text = text_inputs(cfg.caption_channels, dtype, device, generator)
    latent = latent_for(case, MODELS[case.model][1], device)
    sigmas = flow_sigmas(STEPS, latent.num_tokens)
    stg = dict(stg_scale=1.0, stg_blocks=(min(19, cfg.num_layers - 1),)) if case.stg else {}
    return lambda: denoise(
        transformer,
        latent,
        text,
        text if case.guidance else None,
        sigmas,
        Guidance(3.0 if case.guidance else 1.0, **stg),
        FRAME_RATE,
        generator,
        lambda *a: None,
    )


def decode(vae, case: Case, device: torch.device):
    frames, height, width = planner.Workload(
        C.TINY_TRANSFORMER, vae.cfg, case.width, case.height, case.frames
    ).latent_grid
    latent = torch.randn(1, vae.cfg.latent_channels, frames, height, width, generator=torch.Generator().manual_seed(1))
    latent = latent.to(device)

    def run():
        try:
            return decode_frames(vae, latent, 0.05, 0.025, torch.Generator().manual_seed(2), time_chunk=case.time_chunk)
        except LTXVError:  # random weights that overflow: the decoder's peak was still reached
            return None

    return run


def encode_text(t5, device: torch.device, prompts: int):
    ids = torch.randint(0, 32128, (1, TEXT_TOKENS), generator=torch.Generator().manual_seed(3)).to(device)
    return lambda: [t5(ids).last_hidden_state for _ in range(prompts)]


# ---------------------------------------------------------------- cases


class Models_:
    """The models of the current configuration, built once and freed when it changes."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype, self.key, self.parts = device, dtype, None, {}

    def get(self, model: str, part: str):
        if self.key != model:
            self.parts.clear()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.key = model
        if part not in self.parts:
            transformer, vae, t5 = MODELS[model]
            make = {
                "transformer": lambda: build(LTXVTransformer, transformer, self.dtype, self.device),
                "vae": lambda: build(CausalVideoVAE, vae, self.dtype, self.device),
                "t5": lambda: build_t5(t5, self.dtype, self.device),
            }[part]
            self.parts[part] = make()
        return self.parts[part]

    def drop(self, part: str) -> None:
        self.parts.pop(part, None)
        gc.collect()


def run_case(case: Case, models: Models_, dtype_name: str, device: torch.device) -> dict:
    dtype = DTYPES[dtype_name]
    if case.stage == "run":
        return run_whole(case, models, dtype_name, device)
    if case.stage == "sampling":
        transformer = fp8_transformer(case, models) if case.fp8 else models.get(case.model, "transformer")
        fn = sample(transformer, case, device, dtype)
        estimate = planner.sampling_bytes(workload(case, dtype_name, device))
        module = transformer.model if case.fp8 else transformer
        planned = (
            planner.fp8_transformer_bytes if case.fp8 else lambda work: planner.weight_bytes(work)["transformer"]
        )(workload(case, dtype_name, device))
        weights = tensor_bytes(module), planned
    elif case.stage == "decode" and device.type == "meta":
        vae = models.get(case.model, "vae")
        work = workload(case, dtype_name, device)
        latent = torch.empty(1, vae.cfg.latent_channels, *work.latent_grid, device=device, dtype=dtype)
        fn = lambda: vae.decode(latent, 0.05, 0.025, torch.Generator(), time_chunk=case.time_chunk)
        estimate = planner.decoder_peak(work, *work.latent_grid, case.time_chunk)
        weights = tensor_bytes(vae), planner.weight_bytes(work)["vae"]
    elif case.stage == "decode":
        vae = models.get(case.model, "vae")
        fn, estimate = decode(vae, case, device), planner.decode_bytes(workload(case, dtype_name, device))
        weights = tensor_bytes(vae), planner.weight_bytes(workload(case, dtype_name, device))["vae"]
    else:
        t5 = models.get(case.model, "t5")
        fn, estimate = encode_text(t5, device, 2), planner.text_bytes(workload(case, dtype_name, device))
        weights = tensor_bytes(t5), planner.weight_bytes(workload(case, dtype_name, device))["text_encoder"]
    _, peak, seconds = measured(fn, device)
    return {
        "measured_bytes": peak,
        "estimate_bytes": int(estimate),
        "seconds": round(seconds, 3),
        "weights_measured_bytes": weights[0],
        "weights_estimate_bytes": int(weights[1]),
    }


def fp8_transformer(case: Case, models: Models_):
    """FP8 linear layers as the CLI's --fp8 makes them, on a model of its own (they convert
    in place); without CUDA graphs, whose private pool holds no tensor of the run."""
    models.drop("transformer")
    fresh = build(LTXVTransformer, MODELS[case.model][0], models.dtype, models.device)
    return optimize_models(Models(fresh, None, None), Speed(fp8=True)).runner


def run_whole(case: Case, models: Models_, dtype_name: str, device: torch.device) -> dict:
    """All three models resident (as the CLI keeps them), then text, sampling and decode:
    the run's peak against the plan's."""
    dtype = DTYPES[dtype_name]
    t5, transformer, vae = (models.get(case.model, part) for part in ("t5", "transformer", "vae"))
    weights = planner.WeightBytes(tensor_bytes(transformer), tensor_bytes(vae), tensor_bytes(t5))
    plan = planner.estimate(workload(case, dtype_name, device, weights))
    steps = (encode_text(t5, device, 2), sample(transformer, case, device, dtype), decode(vae, case, device))

    def whole():
        for step in steps:
            step()

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if device.type == "cuda":
        whole()
        peak = torch.cuda.max_memory_allocated(device)
    else:  # the probe counts what the run makes; the weights were there before
        with PeakLiveBytes() as probe:
            whole()
        peak = probe.peak + weights.transformer + weights.vae + weights.text_encoder
    return {
        "measured_bytes": peak,
        "estimate_bytes": plan.peak_bytes,
        "peak_stage": plan.peak_stage,
        "seconds": round(time.perf_counter() - start, 3),
        "plan_seconds": round(plan.seconds, 1),
        "stages_estimate_bytes": plan.stages,
    }


def earlier_h100_decodes(path: Path = RESULTS.parent / "gpu_speed.json") -> dict:
    """The eager whole-layer VAE decode peak `bench_gpu_speed` measured on an H100 (0.9.1,
    768x512x121, bf16, above the weights) beside the planner's estimate for it (its
    time-chunked rows were of the breadth-first chunking the depth-first decode replaced)."""
    try:
        earlier = json.loads(path.read_text())
        decode = earlier["levers"]["vae_decode"]
    except (OSError, ValueError, KeyError):
        return {}
    rows = []
    for name, chunk in (("eager", None),):
        measured = decode[f"{name}_peak_above_weights_gib"] * 2**30
        work = planner.Workload(C.LTXV_2B, C.LTXV_VAE_0_9_1, 768, 512, 121, device="cuda", decode_time_chunk=chunk)
        estimate = planner.decode_bytes(work)
        rows.append(
            {
                "case": f"decode 2B-0.9.1 768x512x121 time_chunk={chunk}",
                "measured_bytes": int(measured),
                "estimate_bytes": estimate,
                "error": round(estimate / measured - 1, 4),
            }
        )
    return {"source": f"{path.name} ({earlier.get('device')}, {earlier.get('date')})", "rows": rows}


def summary(rows: list[dict]) -> dict:
    errors = [abs(r["error"]) for r in rows if r.get("error") is not None]
    return {
        "cases": len(rows),
        "max_abs_error": round(max(errors), 4) if errors else None,
        "within_target": sum(e <= TARGET for e in errors),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip the cases that start later")
    parser.add_argument("--only", help="run the cases whose name holds this text")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype_name = args.dtype or ("fp32" if device.type == "cpu" else "bf16")
    cases = {"cuda": GPU_CASES, "cpu": CPU_CASES, "meta": META_CASES}[device.type]
    cases = [c for c in cases if args.only is None or args.only in c.name]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{device.type} ({name})",
        "torch": torch.__version__,
        "dtype": dtype_name,
        "method": {
            "cuda": "torch.cuda.max_memory_allocated above the memory allocated before the stage",
            "cpu": "bytes of the tensors created inside the stage (PeakLiveBytes)",
            "meta": "bytes of the tensors created inside the VAE decoder, shapes only (PeakLiveBytes)",
        }[device.type],
        "target": TARGET,
        "steps": STEPS,
        "rows": [],
        "errors": {},
        "skipped": [],
    }
    models, started = Models_(device, DTYPES[dtype_name]), time.perf_counter()
    for case in cases:
        if time.perf_counter() - started > args.budget_s:
            result["skipped"].append(case.name)
            continue
        try:
            row = {"case": case.name, **run_case(case, models, dtype_name, device)}
        except Exception as error:
            result["errors"][case.name] = "".join(traceback.format_exception_only(error)).strip()[-2000:]
            print(f"{case.name}: FAILED {result['errors'][case.name]}", flush=True)
            continue
        if row["measured_bytes"]:
            row["error"] = round(row["estimate_bytes"] / row["measured_bytes"] - 1, 4)
        result["rows"].append(row)
        result["summary"] = summary(result["rows"])
        print(
            f"{case.name}: estimate {row['estimate_bytes'] / 2**30:.3f} GiB, measured "
            f"{(row['measured_bytes'] or 0) / 2**30:.3f} GiB, error {row.get('error')}",
            flush=True,
        )
        save(args.out, device, result)
    if device.type == "cpu":
        result["cuda_decodes_measured_earlier"] = earlier_h100_decodes()
    save(args.out, device, result)
    print(json.dumps(result.get("summary")))
    return result


def save(path: Path, device: torch.device, result: dict) -> None:
    """The results of this device type under its key, beside the other device's."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    saved = saved if isinstance(saved, dict) and "rows" not in saved else {}
    saved[device.type] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
