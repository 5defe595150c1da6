"""The transformer, then the VAE decode, three ways on the same weights and inputs: ours
(`ltx_core`'s model, sampler and decode), ComfyUI's own (`comfy.ldm.lightricks.model.LTXVModel`,
the one its native nodes run, and its VAE as `VAEDecode` runs it: `comfy.sd.VAE.decode`) and
diffusers' (`LTXVideoTransformer3DModel`, `AutoencoderKLLTXVideo`).

    python -m benchmarks.dit_three_way [--model 2B|13B] [--repeats 2] [--comfyui DIR] [--fp8] [--tiny]

Random weights (diffusers' model, seeded, every path made non-trivial) are mapped to the
official names, which ours and ComfyUI's read as they are. Each model is built in bf16 on
the GPU in turn (a 13B is 26 GB: one at a time), runs `steps` Euler steps of 768x512x121
(6,144 tokens) from the same noise with the same prompt embeddings, without CFG and with
it (cond and uncond in one batch of two), as each library runs by default (eager; ours
with the fused kernels its CLI and nodes turn on on a GPU); a row's
seconds are the best of `--repeats`, its peak the GPU memory allocated. One forward at
sigma 0.5 is compared across the three (max abs difference against ours, relative to
ours' largest value), so the rows are known to compute the same thing. Then each
library's VAE (the release's: 0.9.1 beside the 2B, 0.9.5 beside the 13B; seeded random
weights, read from one official file's tensors and `config` metadata) decodes our
sampled latent to frames in [0, 1] in CPU memory, as each hands them to its user, at
decode timestep 0.05 without decode noise (each library draws its own); `decode_s`, its
peak and the frames' max abs difference against ours; `whole_nocfg_s` / `whole_cfg_s` =
the DiT's seconds plus the decode's.

`--fp8`: each library's FP8 as its user turns it on, the same weights: ours as the CLI's
`--fp8` (FP8 linear layers with per-row scales, the fused kernels, no compile), ComfyUI's as
its loaders' `fp8_e4m3fn_fast` weight dtype (weights cast to FP8 unscaled, its `fp8_ops`
matmuls on FP8 tensor cores), diffusers' layerwise casting (weights stored in FP8, each
layer computed in bf16); the probe also against ours in bf16 (`probe_max_abs_diff_vs_bf16`).

Writes benchmarks/results/dit_three_way.json (dit_three_way_fp8.json) and, with the 13B
config on a GPU, gpu_speed.json's `b13_ours_dit_s`, `b13_comfyui_dit_s`,
`b13_diffusers_dit_s` and the `b13_*_whole_s` beside them (`b13_*_fp8_*`; without CFG).
`--comfyui DIR`: an unpacked ComfyUI (default: the host tests' setup). `--tiny`: the tiny
config on the CPU at 64x64x9, 2 steps, fp32 (the script's test).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from benchmarks.gpu_measure import merge_results, report_header, sync
from benchmarks.gpu_speed_pipelines import FRAME_RATE, diffusers_transformer, randomize_
from ltx_core.checkpoint.keymaps import (
    TRANSFORMER_DIFFUSERS_TO_OFFICIAL,
    rename_keys,
    transformer_from_diffusers,
    vae_from_diffusers,
)
from ltx_core.checkpoint.versions import ModelConfigs
from ltx_core.checkpoint.writing import config_metadata
from ltx_core.models import configs as C
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.pipeline import decode_frames, default_decode_time_chunk
from ltx_core.sampling.scheduler import flow_sigmas
from ltx_core.speed.optimize import Speed, optimize_transformer
from tests.fixtures_checkpoints import diffusers_vae_kwargs

RESULTS = Path(__file__).parent / "results"
MODELS = {"2B": C.LTXV_2B, "13B": C.LTXV_13B}
VAES = {"2B": C.LTXV_VAE_0_9_1, "13B": C.LTXV_VAE_0_9_5}
GUIDANCE, TEXT_TOKENS, SEED = 3.0, 128, 42
DECODE_TIMESTEP = 0.05  # the denoising decode's default; its noise left out (each library draws its own)
IMPLEMENTATIONS = ("ours", "comfyui", "diffusers")


# ---------------------------------------------------------------- weights and inputs


def official_weights(cfg) -> dict:
    """Seeded random weights, on the CPU in fp32, under the official names."""
    model = diffusers_transformer(cfg)
    randomize_(model, torch.Generator().manual_seed(0))
    return transformer_from_diffusers(model.state_dict())


def official_vae(transformer_cfg, vae_cfg) -> tuple[dict, dict]:
    """Seeded random VAE weights (every path non-trivial, the injected noise's scales left
    at zero: diffusers draws that noise from the global RNG) under the official VAE names, and
    the official file's metadata, whose `config` ComfyUI reads the VAE's layout from."""
    torch.manual_seed(0)
    vae = CausalVideoVAE(vae_cfg).eval()
    g = torch.Generator().manual_seed(1)
    randomize_(vae, g)
    statistics = vae.per_channel_statistics
    with torch.no_grad():
        statistics.get_buffer("mean-of-means").normal_(0.0, 0.5, generator=g)
        statistics.get_buffer("std-of-means").uniform_(0.5, 1.5, generator=g)
    metadata = {"config": json.dumps(config_metadata(ModelConfigs(transformer_cfg, vae_cfg)))}
    return vae.state_dict(), metadata


def make_inputs(cfg, size: dict, device, dtype) -> dict:
    """Latent noise (B, C, f, h, w), prompt embeddings and masks (cond, uncond), sigmas."""
    g = torch.Generator().manual_seed(SEED)
    f, h, w = (size["frames"] - 1) // 8 + 1, size["height"] // 32, size["width"] // 32
    text = torch.randn(2, TEXT_TOKENS, cfg.caption_channels, generator=g)
    mask = torch.zeros(2, TEXT_TOKENS, dtype=torch.long)
    mask[0, : TEXT_TOKENS // 4], mask[1, :4] = 1, 1  # a padded prompt and a short negative one
    return {
        "noise": torch.randn(1, cfg.in_channels, f, h, w, generator=g).to(device),
        "probe": torch.randn(1, cfg.in_channels, f, h, w, generator=g).to(device),
        "text": text.to(device, dtype),
        "mask": mask.to(device),
        "sigmas": flow_sigmas(size["steps"], f * h * w).to(device),
    }


# ---------------------------------------------------------------- the three forwards


def ours(cfg, weights: dict, device, dtype, fp8: bool = False):
    """(B, C, f, h, w) latent, (B,) sigma, batch of prompts -> velocity, through our model."""
    with torch.device("meta"):
        model = LTXVTransformer(cfg)
    model.load_state_dict({k: v.to(device, dtype) for k, v in weights.items()}, strict=True, assign=True)
    model.eval().requires_grad_(False)
    speed = Speed.chosen(False, fp8, device, stays_put=False, kernels=True)  # the CLI's defaults (+ --fp8)
    if speed.changes_transformer:
        model = optimize_transformer(model, speed)
    coords = {}  # by latent shape: each pass of a multi-scale run has its own

    def forward(x, sigma, text, mask):
        f, h, w = x.shape[2:]
        if (f, h, w) not in coords:
            grid = pixel_coords(latent_coords(f, h, w, 1), causal_fix=False)
            coords[f, h, w] = fractional_coords(grid, FRAME_RATE).to(device)
        tokens = rearrange(x, "b c f h w -> b (f h w) c").to(dtype)
        v = model(tokens, sigma.view(-1, 1), text, mask, coords[f, h, w].expand(len(x), -1, -1))
        return rearrange(v.float(), "b (f h w) c -> b c f h w", f=f, h=h, w=w)

    return model, forward


def comfy_on(device) -> None:
    """ComfyUI told the device, as `main.py --cpu` does, before any of its modules picks one."""
    import comfy.cli_args

    comfy.cli_args.args.cpu = device.type == "cpu"


def comfyui(cfg, weights: dict, device, dtype, fp8: bool = False):
    """ComfyUI's LTXVModel, built as its loader builds it (no weight init) with our weights;
    FP8 as its `fp8_e4m3fn_fast` weight dtype builds it (`model_base`: the weights' dtype and
    `pick_operations(..., fp8_optimizations=True)`)."""
    comfy_on(device)
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    weight_dtype = torch.float8_e4m3fn if fp8 else dtype
    operations = (
        comfy.ops.pick_operations(weight_dtype, dtype, load_device=device, fp8_optimizations=True)
        if fp8
        else comfy.ops.disable_weight_init
    )

    with torch.device("meta"):
        model = LTXVModel(
            in_channels=cfg.in_channels,
            cross_attention_dim=cfg.cross_attention_dim,
            attention_head_dim=cfg.attention_head_dim,
            num_attention_heads=cfg.num_attention_heads,
            caption_channels=cfg.caption_channels,
            num_layers=cfg.num_layers,
            positional_embedding_theta=cfg.positional_embedding_theta,
            positional_embedding_max_pos=list(cfg.positional_embedding_max_pos),
            dtype=weight_dtype,
            device=device,
            operations=operations,
        )
    shapes = dict(model.state_dict(keep_vars=True))  # each tensor in the dtype ComfyUI allocates it in
    state = {k: v.to(device, shapes[k].dtype if k in shapes else dtype) for k, v in weights.items()}
    missing, _ = model.load_state_dict(state, strict=False, assign=True)
    if missing:  # its buffers beside the weights are its own; a weight not read would be a wrong model
        raise SystemExit(f"ComfyUI's LTXVModel did not get {missing[:5]} from the official names")
    model.eval().requires_grad_(False)

    def forward(x, sigma, text, mask):
        return model(x.to(dtype), sigma.to(dtype), text, mask, frame_rate=FRAME_RATE).float()

    return model, forward


def diffusers(cfg, weights: dict, device, dtype, fp8: bool = False):
    with torch.device("meta"):
        model = diffusers_transformer(cfg)
    back = {official: name for name, official in TRANSFORMER_DIFFUSERS_TO_OFFICIAL.items()}
    state = {k: v.to(device, dtype) for k, v in rename_keys(weights, back).items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    if fp8:  # its FP8: storage only, its default layers to skip (norms, embeddings) kept
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)

    def forward(x, sigma, text, mask):
        f, h, w = x.shape[2:]
        tokens = rearrange(x, "b c f h w -> b (f h w) c").to(dtype)
        v = model(hidden_states=tokens, encoder_hidden_states=text, timestep=sigma.to(dtype) * 1000,
                  encoder_attention_mask=mask, num_frames=f, height=h, width=w,
                  rope_interpolation_scale=(8 / FRAME_RATE, 32, 32), return_dict=False)[0]  # fmt: skip
        return rearrange(v.float(), "b (f h w) c -> b c f h w", f=f, h=h, w=w)

    return model, forward


# ---------------------------------------------------------------- the three decodes


def ours_decoder(vae_cfg, weights: dict, metadata: dict, device, dtype):
    """Normalized latent -> (B, F, H, W, 3) frames in CPU memory, as the CLI and the nodes decode."""
    with torch.device("meta"):
        vae = CausalVideoVAE(vae_cfg)
    vae.load_state_dict({k: v.to(device, dtype) for k, v in weights.items()}, strict=True, assign=True)
    vae.eval().requires_grad_(False)
    chunk = default_decode_time_chunk(vae)

    def decode(latent):
        return decode_frames(vae, latent, DECODE_TIMESTEP, 0.0, device=device, time_chunk=chunk).cpu()

    return vae, decode


def comfyui_decoder(vae_cfg, weights: dict, metadata: dict, device, dtype):
    """ComfyUI's VAE as its checkpoint loader builds it from an official file (`comfy.sd.VAE`
    from the tensors and the metadata) and `VAEDecode` calls it."""
    comfy_on(device)
    import comfy.sd

    vae = comfy.sd.VAE(sd=weights, metadata=metadata)
    vae.first_stage_model.decode_noise_scale = 0.0
    vae.first_stage_model.decode_timestep = DECODE_TIMESTEP

    def decode(latent):
        return vae.decode(latent).float().cpu()  # (B, F, H, W, 3), which VAEDecode flattens to an IMAGE batch

    return vae, decode


def diffusers_decoder(vae_cfg, weights: dict, metadata: dict, device, dtype):
    """diffusers' VAE, decoding as its LTXPipeline does (denormalize, then decode at the timestep)."""
    from diffusers import AutoencoderKLLTXVideo

    with torch.device("meta"):
        vae = AutoencoderKLLTXVideo(**diffusers_vae_kwargs(vae_cfg))
    names = vae_from_diffusers({k: k for k in vae.state_dict()}, vae_cfg)  # official name -> diffusers
    vae.load_state_dict({key: weights[name].to(device, dtype) for name, key in names.items()}, strict=True, assign=True)
    vae.eval().requires_grad_(False)

    def decode(latent):
        mean, std = (s.view(1, -1, 1, 1, 1).to(device, dtype) for s in (vae.latents_mean, vae.latents_std))
        z = latent.to(device, dtype) * std / vae.config.scaling_factor + mean
        timestep = torch.tensor([DECODE_TIMESTEP], device=device, dtype=dtype)
        video = vae.decode(z, timestep, return_dict=False)[0]
        return rearrange(video.float().div(2).add(0.5).clamp(0, 1), "b c f h w -> b f h w c").cpu()

    return vae, decode


DITS = {"ours": ours, "comfyui": comfyui, "diffusers": diffusers}
DECODERS = {"ours": ours_decoder, "comfyui": comfyui_decoder, "diffusers": diffusers_decoder}


def measure_decode(name: str, vae_cfg, vae: tuple[dict, dict], latent, args, device, dtype) -> tuple[dict, Tensor]:
    model, decode = DECODERS[name](vae_cfg, *vae, device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            frames = decode(latent)
            sync(device)
            times.append(time.perf_counter() - start)
    row = {"decode_s": round(min(times), 4)}
    if device.type == "cuda":
        row["decode_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model, decode
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, frames


# ---------------------------------------------------------------- timing


def sample(forward, inputs: dict, guidance: float) -> torch.Tensor:
    """Euler steps of the flow from the noise; CFG as one batch of cond and uncond."""
    x = inputs["noise"].float()
    text, mask = (inputs["text"], inputs["mask"]) if guidance != 1 else (inputs["text"][:1], inputs["mask"][:1])
    with torch.no_grad():
        for sigma, following in zip(inputs["sigmas"][:-1], inputs["sigmas"][1:]):
            v = forward(x.expand(len(text), -1, -1, -1, -1), sigma.expand(len(text)), text, mask)
            if guidance != 1:
                v = v[1:] + guidance * (v[:1] - v[1:])
            x = x + (following - sigma) * v
    return x


def measure(name: str, cfg, weights: dict, inputs: dict, args, device, dtype) -> tuple[dict, torch.Tensor]:
    model, forward = DITS[name](cfg, weights, device, dtype, fp8=args.fp8)
    row = {}
    for mode, guidance in (("nocfg", 1.0), ("cfg", GUIDANCE)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            sample(forward, inputs, guidance)
            sync(device)
            times.append(time.perf_counter() - start)
        row[f"dit_{mode}_s"] = round(min(times), 4)
        if device.type == "cuda":
            row[f"peak_{mode}_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    with torch.no_grad():
        probed = probe(forward, inputs, device)
    del model, forward
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, probed.cpu()


def ours_latent(cfg, weights: dict, inputs: dict, device, dtype) -> Tensor:
    """The latent every decode reads: ours sampled without CFG, in (B, C, f, h, w)."""
    model, forward = ours(cfg, weights, device, dtype)
    latent = sample(forward, inputs, 1.0)
    del model, forward
    gc.collect()
    return latent


def probe(forward, inputs: dict, device) -> torch.Tensor:
    """One forward at sigma 0.5 on the probe latent and the prompt."""
    return forward(inputs["probe"], torch.full((1,), 0.5, device=device), inputs["text"][:1], inputs["mask"][:1])


def run(args) -> dict:
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    cfg = C.TINY_TRANSFORMER if args.tiny else MODELS[args.model]
    size = (dict(width=64, height=64, frames=9, steps=2) if args.tiny
            else dict(width=768, height=512, frames=121, steps=20))  # fmt: skip
    sys.path.insert(0, str(args.comfyui))
    weights = official_weights(cfg)
    inputs = make_inputs(cfg, size, device, dtype)
    rows, probes = {}, {}
    for name in IMPLEMENTATIONS:
        rows[name], probes[name] = measure(name, cfg, weights, inputs, args, device, dtype)
    latent = ours_latent(cfg, weights, inputs, device, dtype)
    vae_cfg = C.TINY_VAE_0_9_1 if args.tiny else VAES[args.model]
    vae, frames = official_vae(cfg, vae_cfg), {}
    for name in IMPLEMENTATIONS:
        row, frames[name] = measure_decode(name, vae_cfg, vae, latent, args, device, dtype)
        rows[name].update(row, whole_nocfg_s=round(rows[name]["dit_nocfg_s"] + row["decode_s"], 4),
                          whole_cfg_s=round(rows[name]["dit_cfg_s"] + row["decode_s"], 4))  # fmt: skip
    for name in IMPLEMENTATIONS[1:]:
        rows[name]["frames_max_abs_diff_vs_ours"] = float(f"{(frames[name] - frames['ours']).abs().max().item():.3e}")
    scale = probes["ours"].abs().max().item()
    for name in IMPLEMENTATIONS[1:]:
        difference = (probes[name] - probes["ours"]).abs().max().item() / scale
        rows[name]["probe_max_abs_diff_vs_ours"] = float(f"{difference:.3e}")
    if args.fp8:  # what FP8 changes: each against ours in bf16
        _, forward = ours(cfg, weights, device, dtype)
        with torch.no_grad():
            reference = probe(forward, inputs, device).cpu()
        for name in IMPLEMENTATIONS:
            difference = (probes[name] - reference).abs().max().item() / reference.abs().max().item()
            rows[name]["probe_max_abs_diff_vs_bf16"] = float(f"{difference:.3e}")
    return {"size": size, "text_tokens": TEXT_TOKENS, "guidance_scale": GUIDANCE, "rows": rows}


def three_way_parser(doc: str) -> argparse.ArgumentParser:
    """The options every three-way benchmark takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="13B")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--comfyui", type=Path, help="an unpacked ComfyUI (default: the host tests' setup)")
    parser.add_argument("--tiny", action="store_true")
    return parser


def check_three_way_args(parser: argparse.ArgumentParser, args: argparse.Namespace, what: str) -> None:
    """A ComfyUI where `--comfyui` names one (else the host tests' own), a GPU unless `--tiny`."""
    if args.comfyui is not None and not (args.comfyui / "comfy").is_dir():
        parser.error(f"--comfyui {args.comfyui}: no ComfyUI there (no comfy/ folder)")
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit(f"{parser.prog} times {what} on a GPU; no CUDA device here (use --tiny)")
    if args.comfyui is None:
        from tests.host.comfy_env import ensure_comfyui

        args.comfyui = ensure_comfyui()


def main(argv=None) -> dict:
    parser = three_way_parser(__doc__)
    parser.add_argument("--fp8", action="store_true", help="each library's FP8 (see above)")
    parser.add_argument("--out", type=Path, help="default: results/dit_three_way.json (dit_three_way_fp8.json)")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / ("dit_three_way_fp8.json" if args.fp8 else "dit_three_way.json")
    check_three_way_args(parser, args, "the transformer")
    result = run(args)
    report = {
        **report_header("dit_three_way", not args.tiny),
        "model": "tiny" if args.tiny else args.model,
        "fp8": args.fp8,
        **result,
    }
    kind = "_fp8" if args.fp8 else ""
    speed = {f"b13_{name}{kind}_dit_s": result["rows"][name]["dit_nocfg_s"] for name in IMPLEMENTATIONS}
    speed |= {f"b13_{name}{kind}_whole_s": result["rows"][name]["whole_nocfg_s"] for name in IMPLEMENTATIONS}
    return save_report(args, report, speed, f"b13{kind}_measured")


def save_report(args: argparse.Namespace, report: dict, speed: dict, measured_key: str) -> dict:
    """Write the report, print its rows; a 13B run on a GPU adds `speed` and where it was
    measured (`measured_key`) to gpu_speed.json."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.tiny and args.model == "13B":
        speed[measured_key] = {"date": report["date"], "device": report["device"], "file": args.out.name}
        merge_results(RESULTS / "gpu_speed.json", speed)
    for name, row in report["rows"].items():
        print(f"{name:10} {row}")
    return report


if __name__ == "__main__":
    main()
