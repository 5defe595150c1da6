"""The multi-scale distilled pipeline three ways on the same weights and inputs: ours, ComfyUI's
own modules and diffusers', each step of the pipeline with the library's own model.

    python -m benchmarks.multiscale_three_way [--model 13B|2B] [--repeats 2] [--comfyui DIR] [--tiny]

The 0.9.8 distilled release config (`ltxv-13b-0.9.8-distilled`, the 2B's for `--model 2B`)
at 768x512x121: its first pass at the config's downscaled size (512x320) over its seven
published timesteps, the latent upsampled x2 in space, the second pass at 1024x640 from the
upsampled latent noised to its first timestep (three steps), then the decode; no CFG or
STG (the distilled configs' guidance is 1). Each library runs its own transformer (as
`dit_three_way` builds them: ours with the fused kernels its CLI and nodes turn on on a GPU),
its own latent upsampler with the same seeded random weights (ours and our AdaIN against
the first pass, as our pipeline does; ComfyUI's `LTXVLatentUpsampler` node's steps, which
have no AdaIN; diffusers' `LTXLatentUpsamplePipeline` with `adain_factor=1`, as its docs
run the 0.9.8 upsampler) and its own VAE decode (`dit_three_way`'s decoders). Tone
mapping and the final resize, elementwise, are left out of all three.

A row's seconds are each stage of the fastest of `--repeats` whole runs (first pass,
upsample, second pass, decode) and their sum `whole_s`; its peak the GPU memory
allocated; its frames' max abs difference against ours (ComfyUI's upsampling lacks the
AdaIN, so its frames differ beyond rounding) and its upsampler's on a probe latent (ComfyUI's
against ours without the AdaIN). Models are built one library at a time (a
13B is 26 GB in bf16).

Writes benchmarks/results/multiscale_three_way.json and, with the 13B config on a GPU,
gpu_speed.json's `b13_multiscale_{ours,comfyui,diffusers}_whole_s`. `--tiny`: the tiny
config on the CPU at 96x64x9, fp32 (the script's test).
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.dit_three_way import (
    DECODERS,
    DITS,
    IMPLEMENTATIONS,
    MODELS,
    SEED,
    TEXT_TOKENS,
    VAES,
    check_three_way_args,
    comfy_on,
    official_vae,
    official_weights,
    save_report,
    three_way_parser,
)
from benchmarks.gpu_measure import report_header, sync
from benchmarks.gpu_speed_pipelines import randomize_
from ltx_core.models import configs as C
from ltx_core.models.latent_upsampler import (
    LTXV_SPATIAL_UPSCALER_0_9_7,
    TINY_SPATIAL_UPSAMPLER,
    LatentUpsampler,
)
from ltx_core.multiscale import ADAIN_FACTOR, multi_scale_settings, pass_sigmas
from ltx_core.release_config import load_preset
from ltx_core.sampling.latent_ops import adain_filter, upsample_latent

RESULTS = Path(__file__).parent / "results"
PRESETS = {"2B": "ltxv-2b-0.9.8-distilled", "13B": "ltxv-13b-0.9.8-distilled"}


# ---------------------------------------------------------------- the three upsamplers


def upsampler_weights(cfg) -> dict:
    """Seeded random upsampler weights under the official names (which all three read)."""
    torch.manual_seed(0)
    model = LatentUpsampler(cfg).eval()
    randomize_(model, torch.Generator().manual_seed(2))
    return model.state_dict()


def ours_upsampler(cfg, weights: dict, vae, device, dtype, adain: bool = True):
    with torch.device("meta"):
        model = LatentUpsampler(cfg)
    model.load_state_dict({k: v.to(device, dtype) for k, v in weights.items()}, strict=True, assign=True)
    model.eval().requires_grad_(False)

    def upsample(latent):  # our pipeline's `upsample_between_passes`
        upsampled = upsample_latent(model, vae, latent)
        return adain_filter(upsampled, latent, ADAIN_FACTOR) if adain else upsampled

    return model, upsample


def comfyui_upsampler(cfg, weights: dict, vae, device, dtype):
    """ComfyUI's LatentUpsampler as its upscale-model loader builds it, run as its
    `LTXVLatentUpsampler` node does (un-normalize with the VAE's statistics, upsample, normalize)."""
    comfy_on(device)
    import comfy.ops
    from comfy.ldm.lightricks.latent_upsampler import LatentUpsampler as ComfyLatentUpsampler

    model = ComfyLatentUpsampler.from_config(cfg.to_metadata(), operations=comfy.ops.disable_weight_init)
    model.load_state_dict({k: v.to(device, dtype) for k, v in weights.items()}, strict=True)
    model.to(device, dtype).eval().requires_grad_(False)
    statistics = vae.first_stage_model.per_channel_statistics

    def upsample(latent):
        raw = statistics.un_normalize(latent.to(device, dtype))
        return statistics.normalize(model(raw)).float()

    return model, upsample


def diffusers_upsampler(cfg, weights: dict, vae, device, dtype):
    from diffusers import LTXLatentUpsamplePipeline
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    with torch.device("meta"):
        model = LTXLatentUpsamplerModel(**cfg.to_metadata())
    model.load_state_dict({k: v.to(device, dtype) for k, v in weights.items()}, strict=True, assign=True)
    model.eval().requires_grad_(False)
    pipeline = LTXLatentUpsamplePipeline(vae=vae, latent_upsampler=model)

    def upsample(latent):
        return pipeline(latents=latent, adain_factor=1.0, output_type="latent", return_dict=False)[0].float()

    return model, upsample


UPSAMPLERS = {"ours": ours_upsampler, "comfyui": comfyui_upsampler, "diffusers": diffusers_upsampler}


# ---------------------------------------------------------------- one run


def make_inputs(cfg, settings, size: dict, device, dtype) -> dict:
    """Each pass's latent noise, the prompt's embeddings and mask, each pass's sigmas."""
    g = torch.Generator().manual_seed(SEED)
    (h1, w1), (h2, w2) = settings.pass_sizes(size["height"], size["width"])
    f = (size["frames"] - 1) // 8 + 1
    shapes = [(f, h // 32, w // 32) for h, w in ((h1, w1), (h2, w2))]
    mask = torch.zeros(1, TEXT_TOKENS, dtype=torch.long)
    mask[0, : TEXT_TOKENS // 4] = 1
    return {
        "pass_sizes": [[h1, w1], [h2, w2]],
        "text": torch.randn(1, TEXT_TOKENS, cfg.caption_channels, generator=g).to(device, dtype),
        "mask": mask.to(device),
        "noise": [torch.randn(1, cfg.in_channels, *shape, generator=g).to(device) for shape in shapes],
        "sigmas": [
            pass_sigmas(settings.first_pass, shapes[0][0] * shapes[0][1] * shapes[0][2]).to(device),
            pass_sigmas(settings.second_pass, shapes[1][0] * shapes[1][1] * shapes[1][2]).to(device),
        ],
    }


def euler(forward, x: Tensor, sigmas: Tensor, inputs: dict) -> Tensor:
    """Plain Euler steps of the flow, no guidance (the distilled passes')."""
    with torch.no_grad():
        for sigma, following in zip(sigmas[:-1], sigmas[1:]):
            x = x + (following - sigma) * forward(x, sigma.view(1), inputs["text"], inputs["mask"])
    return x


def pipeline(stages: dict, inputs: dict, device) -> tuple[dict, Tensor]:
    """One whole run: the seconds of each stage and the frames."""
    seconds, mark = {}, time.perf_counter()

    def done(name):
        nonlocal mark
        sync(device)
        now = time.perf_counter()
        seconds[name], mark = now - mark, now

    sync(device)
    mark = time.perf_counter()
    first = euler(stages["dit"], inputs["noise"][0], inputs["sigmas"][0], inputs)
    done("first_pass_s")
    with torch.no_grad():
        upsampled = stages["upsample"](first)
    done("upsample_s")
    start = inputs["sigmas"][1][0]
    second = euler(stages["dit"], start * inputs["noise"][1] + (1 - start) * upsampled, inputs["sigmas"][1], inputs)
    done("second_pass_s")
    with torch.no_grad():
        frames = stages["decode"](second)
    done("decode_s")
    return seconds, frames


def measure(name: str, cfg, vae_cfg, up_cfg, weights: dict, inputs: dict, args, device, dtype):
    """The row of one library, its frames, and its upsampler's output on a probe latent."""
    dit_model, dit = DITS[name](cfg, weights["dit"], device, dtype)
    vae, decode = DECODERS[name](vae_cfg, *weights["vae"], device, dtype)
    up_model, upsample = UPSAMPLERS[name](up_cfg, weights["upsampler"], vae, device, dtype)
    stages = {"dit": dit, "upsample": upsample, "decode": decode}
    with torch.no_grad():  # the upsampler alone, on the first pass's noise as a latent
        probes = {"upsampled": upsample(inputs["noise"][0]).cpu()}
        if name == "ours":  # as ComfyUI's node upsamples: without the AdaIN
            probes["without_adain"] = ours_upsampler(up_cfg, weights["upsampler"], vae, device, dtype, False)[1](
                inputs["noise"][0]
            ).cpu()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = [pipeline(stages, inputs, device) for _ in range(args.repeats)]
    seconds, frames = min(runs, key=lambda run: sum(run[0].values()))
    row = {key: round(value, 4) for key, value in seconds.items()}
    row["whole_s"] = round(sum(seconds.values()), 4)
    if device.type == "cuda":
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del dit_model, dit, vae, decode, up_model, upsample, stages, runs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, frames, probes


def _max_abs(a: Tensor, b: Tensor) -> float:
    return float(f"{(a - b).abs().max().item():.3e}")


def run(args) -> dict:
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    cfg = C.TINY_TRANSFORMER if args.tiny else MODELS[args.model]
    vae_cfg = C.TINY_VAE_0_9_1 if args.tiny else VAES[args.model]
    up_cfg = TINY_SPATIAL_UPSAMPLER if args.tiny else LTXV_SPATIAL_UPSCALER_0_9_7
    size = dict(width=96, height=64, frames=9) if args.tiny else dict(width=768, height=512, frames=121)
    settings = multi_scale_settings(load_preset(PRESETS["2B" if args.tiny else args.model]))
    sys.path.insert(0, str(args.comfyui))
    weights = {"dit": official_weights(cfg), "vae": official_vae(cfg, vae_cfg), "upsampler": upsampler_weights(up_cfg)}
    inputs = make_inputs(cfg, settings, size, device, dtype)
    rows, frames, probes = {}, {}, {}
    for name in IMPLEMENTATIONS:
        rows[name], frames[name], probes[name] = measure(
            name, cfg, vae_cfg, up_cfg, weights, inputs, args, device, dtype
        )
    # ComfyUI's node has no AdaIN: its upsampler is compared with ours without it
    references = {"comfyui": probes["ours"]["without_adain"], "diffusers": probes["ours"]["upsampled"]}
    for name in IMPLEMENTATIONS[1:]:
        rows[name]["frames_max_abs_diff_vs_ours"] = _max_abs(frames[name], frames["ours"])
        rows[name]["upsampled_max_abs_diff_vs_ours"] = _max_abs(probes[name]["upsampled"], references[name])
    steps = [len(sigmas) - 1 for sigmas in inputs["sigmas"]]
    return {"size": size, "pass_sizes": inputs["pass_sizes"], "pass_steps": steps, "rows": rows}


def main(argv=None) -> dict:
    parser = three_way_parser(__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS / "multiscale_three_way.json")
    args = parser.parse_args(argv)
    check_three_way_args(parser, args, "the pipeline")
    result = run(args)
    report = {
        **report_header("multiscale_three_way", not args.tiny),
        "model": "tiny" if args.tiny else args.model,
        "preset": PRESETS["2B" if args.tiny else args.model],
        **result,
    }
    speed = {f"b13_multiscale_{name}_whole_s": result["rows"][name]["whole_s"] for name in IMPLEMENTATIONS}
    return save_report(args, report, speed, "b13_multiscale_measured")


if __name__ == "__main__":
    main()
