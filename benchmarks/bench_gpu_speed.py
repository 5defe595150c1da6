"""Issue 6: our pipeline against diffusers' LTXPipeline on one GPU, in one process.

Both get the same random 2B transformer weights (diffusers' model, mapped into ours with
`ltx_core.keymaps`), the same VAE 0.9.1 weights, the same random prompt embeddings
(128 tokens), the same initial noise and decode noise; 768x512x121, 20 steps, guidance 3
(batched) or 1. Timed per stage (DiT steps, decode, whole after the text encoder), with
peak GPU memory, our cold start (load from safetensors + compile + graph capture), and
errors: ours bf16 vs ours fp32, ours FP8 vs ours bf16, ours vs diffusers.

Levers are measured one by one (eager vs regional compile, CUDA graphs, SDPA backend,
bias+GELU GEMM epilogue, fused projections, compiled VAE decoder blocks, batched vs
sequential CFG) and the best measured configuration is the one reported. (Channels-last
3-D convolutions in the VAE were measured in the first run and dropped: decode 0.459 s
against 0.284 s.) Every stage writes the JSON again, so a failure keeps
what came before; stages past `--budget-s` are skipped and listed.

    PYTHONUNBUFFERED=1 python benchmarks/bench_gpu_speed.py --out $OUT/gpu_speed.json
    python benchmarks/bench_gpu_speed.py --tiny --out /tmp/tiny.json     # CPU dry run
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx_core import acceleration, fused_qk_rope  # noqa: E402
from ltx_core.configs import LTXV_2B, LTXV_VAE_0_9_1, TINY_TRANSFORMER, TINY_VAE_0_9_1  # noqa: E402
from ltx_core.fp8 import KEEP_PRECISE as FP8_KEEP_PRECISE  # noqa: E402
from ltx_core.fp8 import gelu_quantize_matches_reference, gelu_quantize_rows, quantize_rows  # noqa: E402
from ltx_core.keymaps import transformer_from_diffusers, vae_from_diffusers  # noqa: E402
from ltx_core.rope import apply_rope, fractional_coords, latent_coords, pixel_coords  # noqa: E402
from ltx_core.sampler import guided_velocity, sample  # noqa: E402
from ltx_core.scheduler import flow_sigmas  # noqa: E402
from ltx_core.transformer import LTXVTransformer  # noqa: E402
from ltx_core.vae import DEFAULT_DECODE_TIME_CHUNK, CausalVideoVAE  # noqa: E402

from gpu_measure import fresh_peak, live_cuda_tensors, sync, timed  # noqa: E402  (beside this script)

GIB = 2**30
FRAME_RATE, GUIDANCE, DECODE_T, DECODE_NOISE, SEED = 25, 3.0, 0.05, 0.025, 42
# Lightricks/LTX-Video scheduler/scheduler_config.json, as tests/parity use it.
PUBLISHED_SCHEDULER = dict(
    base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096, max_shift=2.05,
    num_train_timesteps=1000, shift=1.0, shift_terminal=0.1, time_shift_type="exponential",
    use_dynamic_shifting=True,
)
# diffusers' VAE 0.9.1 layout (scripts/convert_ltx_to_diffusers.py); tiny: tests/parity.
DIFFUSERS_VAE = {
    "real": dict(block_out_channels=(128, 256, 512, 512), decoder_block_out_channels=(256, 512, 1024),
                 layers_per_block=(4, 3, 3, 3, 4), decoder_layers_per_block=(5, 6, 7, 8),
                 spatio_temporal_scaling=(True, True, True, False),
                 decoder_spatio_temporal_scaling=(True, True, True),
                 decoder_inject_noise=(True, True, True, False), upsample_residual=(True, True, True),
                 upsample_factor=(2, 2, 2), timestep_conditioning=True),
    "tiny": dict(block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(16, 32, 64),
                 layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                 decoder_spatio_temporal_scaling=(True, True, True),
                 decoder_inject_noise=(True, True, True, False), upsample_residual=(True, True, True),
                 upsample_factor=(2, 2, 2), timestep_conditioning=True),
}
# The targets (seconds, GiB).
TARGETS = dict(ours_bf16_nocfg_s=1.35, ours_bf16_cfg_s=2.5, ours_fp8_nocfg_s=1.0, ours_fp8_cfg_s=1.8,
               ours_peak_gib=8.0)


@dataclass
class Setup:
    width: int
    height: int
    frames: int
    steps: int
    text_len: int
    transformer_cfg: object
    vae_cfg: object
    vae_key: str
    device: torch.device
    compile_backend: str
    cuda_graphs: bool
    decode_time_chunk: int | None = None  # chosen by the VAE decode stage (measured)

    @property
    def latent_shape(self):
        return (self.frames - 1) // 8 + 1, self.height // 32, self.width // 32

    @property
    def tokens(self):
        f, h, w = self.latent_shape
        return f * h * w


# ---------------------------------------------------------------- bookkeeping


class Report:
    def __init__(self, path: Path, budget_s: float):
        self.path, self.budget_s, self.start = path, budget_s, time.perf_counter()
        self.data: dict = {"errors": {}, "skipped": [], "levers": {}, "stages": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str))

    @contextmanager
    def stage(self, name: str, needs_s: float = 0.0):
        """Run a stage unless the budget is spent; record its failure and carry on."""
        if self.elapsed() + needs_s > self.budget_s:
            self.data["skipped"].append(name)
            print(f"[{self.elapsed():6.1f}s] skip {name} (budget)", flush=True)
            self.save()
            yield False
            return
        print(f"[{self.elapsed():6.1f}s] {name}", flush=True)
        try:
            yield True
        except Exception as error:  # noqa: BLE001 - a failed variant must not lose the others
            self.data["errors"][name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        finally:
            self.save()


def peak_gib(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return dict(peak_allocated_gib=round(torch.cuda.max_memory_allocated(device) / GIB, 3),
                peak_reserved_gib=round(torch.cuda.max_memory_reserved(device) / GIB, 3))


def max_peak(*peaks: dict) -> dict:
    return {k: max(p[k] for p in peaks) for k in peaks[0]}


def on_cpu(run: tuple) -> tuple:
    """A clip's (frames, tokens, times) with the tensors moved off the GPU, after timing,
    so that a mode's peak is one clip's, not the sum of the repeats' outputs."""
    frames, tokens, times = run
    return frames.cpu(), tokens.cpu(), times


def module_gib(*modules) -> float:
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()]) / GIB


def error_stats(ours: torch.Tensor, reference: torch.Tensor) -> dict:
    ours, reference = ours.float().flatten(), reference.float().flatten().to(ours.device)
    diff = ours - reference
    return dict(max_abs=diff.abs().max().item(), rel_l2=(diff.norm() / reference.norm()).item(),
                ref_max_abs=reference.abs().max().item())


# ---------------------------------------------------------------- models and inputs


def randomize_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Default init plus random norms, tables and zero-initialized tensors, so no path is trivial."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1, generator=generator)
            elif "scale_shift_table" in name:
                p.normal_(0.0, 0.3, generator=generator)
            elif "per_channel_scale" in name:
                continue  # zero, as initialized: diffusers' decoder draws its injected noise from the
                # global RNG (no generator reaches it), so only zero scales give comparable frames
            elif p.abs().max() == 0:
                p.normal_(0.0, 0.02, generator=generator)


def build_diffusers(setup: Setup):
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    cfg, device = setup.transformer_cfg, setup.device
    g = torch.Generator(device=device).manual_seed(0)
    with torch.device(device):
        transformer = LTXVideoTransformer3DModel(
            in_channels=cfg.in_channels, out_channels=cfg.out_channels,
            num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
            cross_attention_dim=cfg.cross_attention_dim, num_layers=cfg.num_layers,
            caption_channels=cfg.caption_channels, norm_eps=cfg.norm_eps,
            norm_elementwise_affine=cfg.norm_elementwise_affine, attention_bias=cfg.attention_bias,
        ).eval()
        vae = AutoencoderKLLTXVideo(**DIFFUSERS_VAE[setup.vae_key]).eval()
    randomize_(transformer, g)
    randomize_(vae, g)
    with torch.no_grad():
        vae.latents_mean.normal_(0.0, 0.5, generator=g)
        vae.latents_std.uniform_(0.5, 1.5, generator=g)
    return transformer, vae


def ours_transformer(state_dict: dict, setup: Setup, dtype: torch.dtype) -> LTXVTransformer:
    with torch.device("meta"):
        model = LTXVTransformer(setup.transformer_cfg)
    sd = {k: v.to(device=setup.device, dtype=dtype) for k, v in state_dict.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def ours_vae(diffusers_vae, setup: Setup) -> CausalVideoVAE:
    with torch.device(setup.device):
        vae = CausalVideoVAE(setup.vae_cfg)
    vae.load_state_dict(vae_from_diffusers(diffusers_vae.state_dict(), setup.vae_cfg), strict=True)
    return vae.eval().requires_grad_(False).to(torch.bfloat16)


@dataclass
class Inputs:
    noise: torch.Tensor  # (1, T, 128) fp32 tokens at sigma 1
    text: torch.Tensor  # (1, L, C) bf16
    text_mask: torch.Tensor  # (1, L) long
    negative: torch.Tensor
    negative_mask: torch.Tensor
    coords: torch.Tensor  # (1, 3, T)
    sigmas: torch.Tensor
    probe: torch.Tensor  # (1, T, 128) a latent at sigma 0.5, for one-forward errors


def make_inputs(setup: Setup) -> Inputs:
    g = torch.Generator().manual_seed(SEED)
    cfg, dev = setup.transformer_cfg, setup.device
    f, h, w = setup.latent_shape
    noise = rearrange(torch.randn(1, cfg.in_channels, f, h, w, generator=g), "b c f h w -> b (f h w) c")
    text = torch.randn(1, setup.text_len, cfg.caption_channels, generator=g)
    negative = torch.randn(1, setup.text_len, cfg.caption_channels, generator=g)
    mask, negative_mask = (torch.zeros(1, setup.text_len, dtype=torch.long) for _ in range(2))
    mask[:, : setup.text_len // 4] = 1  # a padded prompt, as T5 gives it
    negative_mask[:, : max(1, setup.text_len // 16)] = 1
    coords = fractional_coords(pixel_coords(latent_coords(f, h, w, 1), causal_fix=False), FRAME_RATE)
    probe = 0.5 * torch.randn(noise.shape, generator=g) + 0.5 * noise
    return Inputs(noise.to(dev), text.to(dev, torch.bfloat16), mask.to(dev), negative.to(dev, torch.bfloat16),
                  negative_mask.to(dev), coords.to(dev), flow_sigmas(setup.steps, setup.tokens), probe.to(dev))


# ---------------------------------------------------------------- our pipeline


def our_denoise(model, inputs: Inputs, guidance: float, dtype: torch.dtype, sequential_cfg: bool = False,
                steps: int | None = None) -> torch.Tensor:
    """Noise tokens -> clean tokens with the core sampler. Text-to-video has noise mask 1
    everywhere, so every token shares the step's sigma: the model gets one timestep per
    video (B, 1), as diffusers' LTXPipeline passes, instead of (B, T)."""
    coords = {1: inputs.coords, 2: inputs.coords.repeat(2, 1, 1)}

    def model_fn(x, timesteps, text, mask):
        return model(x.to(dtype), timesteps[:, :1], text.to(dtype), mask, coords[x.shape[0]]).float()

    if sequential_cfg:
        def velocity(x, timesteps):
            v_u = model_fn(x, timesteps, inputs.negative, inputs.negative_mask)
            v_c = model_fn(x, timesteps, inputs.text, inputs.text_mask)
            return v_u + guidance * (v_c - v_u)
    else:
        velocity = guided_velocity(model_fn, inputs.text, inputs.text_mask, inputs.negative,
                                   inputs.negative_mask, guidance)
    sigmas = inputs.sigmas if steps is None else inputs.sigmas[-steps - 1:]
    mask = torch.ones(inputs.noise.shape[:2], device=inputs.noise.device)
    with torch.no_grad():
        return sample(velocity, inputs.noise, sigmas, mask)


def our_decode(vae, tokens: torch.Tensor, setup: Setup) -> torch.Tensor:
    f, h, w = setup.latent_shape
    latent = rearrange(tokens, "b (f h w) c -> b c f h w", f=f, h=h, w=w).to(torch.bfloat16)
    with torch.no_grad():
        video = vae.decode(latent, DECODE_T, DECODE_NOISE, torch.Generator().manual_seed(SEED),
                           mix_noise_denormalized=True, time_chunk=setup.decode_time_chunk)
    # in place, as `pipeline.decode_frames` does: one fp32 copy of the clip, not three
    return rearrange(video.float().div_(2).add_(0.5).clamp_(0, 1), "b c f h w -> b f h w c")


def our_generate(model, vae, inputs, setup, guidance, dtype, sequential_cfg=False):
    """Returns (frames, tokens, {dit_s, decode_s, whole_s})."""
    dev = setup.device
    sync(dev)
    t0 = time.perf_counter()
    tokens = our_denoise(model, inputs, guidance, dtype, sequential_cfg)
    sync(dev)
    t1 = time.perf_counter()
    frames = our_decode(vae, tokens, setup)
    sync(dev)
    t2 = time.perf_counter()
    return frames, tokens, dict(dit_s=t1 - t0, decode_s=t2 - t1, whole_s=t2 - t0)


# ---------------------------------------------------------------- diffusers


def diffusers_pipe(transformer, vae):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**PUBLISHED_SCHEDULER), vae=vae,
                       text_encoder=None, tokenizer=None, transformer=transformer)


def diffusers_call(pipe, inputs: Inputs, setup: Setup, guidance: float, output_type: str, steps: int | None = None):
    return pipe(
        prompt_embeds=inputs.text, prompt_attention_mask=inputs.text_mask,
        negative_prompt_embeds=inputs.negative, negative_prompt_attention_mask=inputs.negative_mask,
        width=setup.width, height=setup.height, num_frames=setup.frames, frame_rate=FRAME_RATE,
        num_inference_steps=steps or setup.steps, guidance_scale=guidance, latents=inputs.noise.clone(),
        generator=torch.Generator().manual_seed(SEED), decode_timestep=DECODE_T,
        decode_noise_scale=DECODE_NOISE, output_type=output_type, return_dict=False,
    )[0]


def diffusers_probe(transformer, inputs: Inputs, setup: Setup) -> torch.Tensor:
    f, h, w = setup.latent_shape
    with torch.no_grad():
        return transformer(
            hidden_states=inputs.probe.to(torch.bfloat16), encoder_hidden_states=inputs.text,
            timestep=torch.full((1,), 500.0, device=setup.device), encoder_attention_mask=inputs.text_mask,
            num_frames=f, height=h, width=w, rope_interpolation_scale=(8 / FRAME_RATE, 32, 32), return_dict=False,
        )[0].float()


def our_probe(model, inputs: Inputs, dtype: torch.dtype) -> torch.Tensor:
    sigma = torch.full((1, 1), 0.5, device=inputs.probe.device)  # the (B, 1) shape the sampler passes
    with torch.no_grad():
        return model(inputs.probe.to(dtype), sigma, inputs.text.to(dtype), inputs.text_mask, inputs.coords).float()


# ---------------------------------------------------------------- the run


def run(setup: Setup, report: Report, repeats: int, args_chunks: tuple[int, ...] = (8, 16, 32)) -> None:
    R, dev = report.data, setup.device
    R.update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
             torch=torch.__version__, size=f"{setup.width}x{setup.height}x{setup.frames}", steps=setup.steps,
             guidance=GUIDANCE, text_tokens=setup.text_len, latent_tokens=setup.tokens, targets=TARGETS)
    import diffusers

    R["diffusers"] = diffusers.__version__
    inputs = make_inputs(setup)
    keep = {}  # outputs compared across variants, on the CPU

    with report.stage("build diffusers models (fp32 weights kept on the CPU)") as ok:
        if ok:
            d_transformer, d_vae = build_diffusers(setup)
            fp32_state = {k: v.detach().cpu() for k, v in transformer_from_diffusers(d_transformer.state_dict()).items()}
            d_transformer.to(torch.bfloat16)
            d_vae.to(torch.bfloat16)
            ours_vae_model = ours_vae(d_vae.float(), setup)
            d_vae.to(torch.bfloat16)
            ours_vae_model.cpu()
            R["transformer_params_b"] = round(sum(v.numel() for v in fp32_state.values()) / 1e9, 3)

    with report.stage("diffusers LTXPipeline bf16") as ok:
        if ok:
            fresh_peak(dev)
            pipe = diffusers_pipe(d_transformer, d_vae)
            pipe.set_progress_bar_config(disable=True)
            diffusers_call(pipe, inputs, setup, GUIDANCE, "pt", steps=2)  # warm-up (cuDNN plans, allocator)
            d = R["stages"]["diffusers"] = {}
            for name, guidance in (("nocfg", 1.0), ("cfg", GUIDANCE)):
                frames, whole = timed(lambda: diffusers_call(pipe, inputs, setup, guidance, "pt"), dev)
                for _ in range(repeats - 1):
                    whole = min(whole, timed(lambda: diffusers_call(pipe, inputs, setup, guidance, "pt"), dev)[1])
                latents, dit = timed(lambda: diffusers_call(pipe, inputs, setup, guidance, "latent"), dev)
                d[name] = dict(whole_s=whole, dit_s=dit, decode_s=whole - dit)
                keep[f"diffusers_{name}_frames"] = frames.permute(0, 1, 3, 4, 2).cpu()  # (B, F, H, W, 3)
                keep[f"diffusers_{name}_tokens"] = latents.float().cpu()
                print(f"  diffusers {name}: {d[name]}", flush=True)
            d["peak"] = peak_gib(dev)
            d["weights_gib"] = round(module_gib(d_transformer, d_vae), 3)
            R["diffusers_nocfg_s"], R["diffusers_cfg_s"] = d["nocfg"]["whole_s"], d["cfg"]["whole_s"]
            R["diffusers_peak_gib"] = d["peak"].get("peak_allocated_gib")  # as ours: allocated tensors
            R["diffusers_peak_reserved_gib"] = d["peak"].get("peak_reserved_gib")
            keep["diffusers_probe"] = diffusers_probe(d_transformer, inputs, setup).cpu()

    with report.stage("diffusers models off the GPU") as ok:
        if ok:
            d_transformer.cpu()
            d_vae.cpu()
            del pipe, frames, latents  # the last outputs too: ours are measured without them
            fresh_peak(dev)

    with report.stage("ours fp32 reference (eager): one forward and the nocfg latents") as ok:
        if ok:
            ref = ours_transformer(fp32_state, setup, torch.float32)
            keep["fp32_probe"] = our_probe(ref, inputs, torch.float32).cpu()
            keep["fp32_nocfg_tokens"] = our_denoise(ref, inputs, 1.0, torch.float32).cpu()
            del ref
            fresh_peak(dev)

    weights_file = Path(tempfile.mkdtemp()) / "transformer_bf16.safetensors"
    with report.stage("write our bf16 weights as safetensors (for the cold start)") as ok:
        if ok:
            from safetensors.torch import save_file

            save_file({k: v.to(torch.bfloat16).contiguous() for k, v in fp32_state.items()}, str(weights_file))

    def load_from_file() -> LTXVTransformer:
        from safetensors.torch import load_file

        return ours_transformer(load_file(str(weights_file), device=str(dev)), setup, torch.bfloat16)

    def optimized(model, fp8=False, fuse=True, gelu=True, compile=True, graphs=None, **levers):
        return acceleration.optimize_transformer(
            model, compile=compile and setup.compile_backend != "none", compile_backend=setup.compile_backend,
            fp8=fp8, fuse_projections=fuse, fused_gelu=gelu,
            cuda_graphs=setup.cuda_graphs if graphs is None else graphs,
            attention=R["levers"].get("attention_choice", "default"), **levers)

    def ours_variant(tag: str, fp8: bool, fuse: bool = True, gelu: bool = True):
        """Load, optimize, first clip (cold), then warm clips nocfg and cfg; returns the model."""
        fresh_peak(dev)
        v = R["stages"][tag] = {"baseline_allocated_gib": round(torch.cuda.memory_allocated(dev) / GIB, 3)
                                if dev.type == "cuda" else None,
                                "baseline_live_tensors": live_cuda_tensors()}
        t0 = time.perf_counter()
        model = load_from_file()
        sync(dev)
        v["load_s"] = time.perf_counter() - t0
        v["load_note"] = "safetensors file written moments before: read from the page cache"
        t1 = time.perf_counter()
        fast = optimized(model, fp8=fp8, fuse=fuse, gelu=gelu)
        v["optimize_s"] = time.perf_counter() - t1
        v["levers"] = {**fast.levers, "vae_compiled": R["levers"].get("vae_compiled", False)}
        clip = lambda guidance: our_generate(fast, ours_vae_model, inputs, setup, guidance, torch.bfloat16)  # noqa: E731
        for name, guidance in (("nocfg", 1.0), ("cfg", GUIDANCE)):
            try:
                v[f"first_clip_{name}"] = clip(guidance)[2]  # compiles and captures for this batch size
            except Exception as error:  # noqa: BLE001 - fall back: graphs off, then compile off
                traceback.print_exc()
                v[f"fallback_{name}"] = f"{type(error).__name__}: {error}"[:2000]
                if fast.cuda_graphs:
                    fast = acceleration.OptimizedTransformer(model, fast.attention, cuda_graphs=False)
                else:
                    model = load_from_file()
                    fast = optimized(model, fp8=fp8, fuse=fuse, gelu=False, compile=False, graphs=False)
                v["levers"] = {**fast.levers, "cuda_graphs": fast.cuda_graphs, "fallback": True}
                v[f"first_clip_{name}"] = clip(guidance)[2]
            if name == "nocfg":
                # a user's first clip also pays the VAE's compilation, done in its own stage here
                v["cold_start_s"] = (v["load_s"] + v["optimize_s"] + v["first_clip_nocfg"]["whole_s"]
                                     + R["levers"].get("vae_compile_extra_s", 0.0))
                print(f"  {tag} cold start {v['cold_start_s']:.1f}s", flush=True)
            fresh_peak(dev)  # this mode's peak: one clip at a time, earlier clips on the CPU
            runs = [on_cpu(clip(guidance)) for _ in range(repeats)]
            v[f"peak_{name}"] = peak_gib(dev)
            v[name] = {k: min(r[2][k] for r in runs) for k in ("dit_s", "decode_s", "whole_s")}
            v[name]["runs"] = [r[2] for r in runs]
            keep[f"{tag}_{name}_frames"], keep[f"{tag}_{name}_tokens"] = runs[-1][0], runs[-1][1]
            print(f"  {tag} {name}: " + ", ".join(f"{k} {v[name][k]:.3f}" for k in ("dit_s", "decode_s", "whole_s")),
                  flush=True)
        v["peak"] = max_peak(v["peak_nocfg"], v["peak_cfg"])
        v["weights_gib"] = round(module_gib(model, ours_vae_model), 3)
        keep[f"{tag}_probe"] = our_probe(fast, inputs, torch.bfloat16).cpu()
        print(f"  {tag} memory: {v['peak']}, weights {v['weights_gib']} GiB, "
              f"baseline {v['baseline_allocated_gib']} GiB, live {v['baseline_live_tensors']}", flush=True)
        return fast, model

    def dit_lever(name: str, fast, baseline: str | None = None, label: str = "") -> None:
        """DiT steps only (20 steps, nocfg and cfg) of a variant, after a 2-step warm-up, the
        best of `repeats` runs as for the stages; beside them `{label}_dit_*_s`, the DiT times
        of the stage `baseline` it differs from."""
        lever = R["levers"][name] = {}
        for cfg_name, guidance in (("nocfg", 1.0), ("cfg", GUIDANCE)):
            our_denoise(fast, inputs, guidance, torch.bfloat16, steps=2)
            lever[f"dit_{cfg_name}_s"] = min(timed(lambda: our_denoise(fast, inputs, guidance, torch.bfloat16), dev)[1]
                                             for _ in range(repeats))
            if baseline is not None:
                lever[f"{label}_dit_{cfg_name}_s"] = R["stages"][baseline][cfg_name]["dit_s"]
        print(f"  {name}: {lever}", flush=True)

    with report.stage("SDPA backends at the real shapes (one self-attention)") as ok:
        if ok and dev.type == "cuda":
            cfg = setup.transformer_cfg
            timings = {b: acceleration.time_attention_backends(b, cfg.num_attention_heads, setup.tokens,
                                                               cfg.attention_head_dim) for b in (1, 2)}
            R["levers"]["attention_s_per_call"] = timings
            best = min(timings[1], key=timings[1].get)
            R["levers"]["attention_choice"] = best
            print(f"  attention: {timings} -> {best}", flush=True)

    with report.stage("VAE decode: eager vs compiled blocks, whole vs time-chunked layers") as ok:
        if ok:
            ours_vae_model.to(dev)
            tokens = inputs.noise
            lever = R["levers"]["vae_decode"] = {}

            def measure(name: str, chunk: int | None) -> torch.Tensor:
                """Best of 2 decodes after a warm-up; time and peak above the weights."""
                setup.decode_time_chunk = chunk
                frames, first = timed(lambda: our_decode(ours_vae_model, tokens, setup), dev)
                lever[f"{name}_first_s"] = first
                fresh_peak(dev)
                base = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
                lever[f"{name}_s"] = min(timed(lambda: our_decode(ours_vae_model, tokens, setup), dev)[1]
                                         for _ in range(2))
                if dev.type == "cuda":
                    lever[f"{name}_peak_above_weights_gib"] = (torch.cuda.max_memory_allocated(dev) - base) / GIB
                return frames

            reference = measure("eager", None)
            first_chunk = args_chunks[0]
            lever["eager_chunked_vs_whole_frames"] = error_stats(
                measure(f"eager_chunk{first_chunk}", first_chunk), reference)
            acceleration.compile_vae_decoder(ours_vae_model, backend=setup.compile_backend)
            # the default chunk compiles first, on cold caches: its first decode is the
            # compilation a user's first clip pays (`vae_compile_extra_s`)
            chunks = sorted(set(args_chunks) | {DEFAULT_DECODE_TIME_CHUNK},
                            key=lambda c: c != DEFAULT_DECODE_TIME_CHUNK)
            for chunk in chunks:
                lever[f"compiled_chunk{chunk}_vs_eager_frames"] = error_stats(
                    measure(f"compiled_chunk{chunk}", chunk), reference)
            lever["compiled_vs_eager_frames"] = error_stats(measure("compiled", None), reference)
            compiled_whole = lever["compiled_s"]
            best_chunk = min(chunks, key=lambda c: lever[f"compiled_chunk{c}_s"])
            R["levers"]["vae_compiled"] = min(compiled_whole, lever[f"compiled_chunk{best_chunk}_s"]) < lever["eager_s"]
            # time-chunked layers hold the decode's memory to a fraction (issue 6: peak
            # <= 8 GiB); the timed configuration decodes as the CLI and the node do by
            # default (`DEFAULT_DECODE_TIME_CHUNK` frames per chunk), not by whichever of
            # whole and chunked won this run by a few ms; the low-memory configuration
            # (its own stage) uses the fastest chunk
            R["levers"]["low_memory_decode_time_chunk"] = best_chunk
            setup.decode_time_chunk = DEFAULT_DECODE_TIME_CHUNK
            R["levers"]["decode_time_chunk"] = setup.decode_time_chunk
            if R["levers"]["vae_compiled"]:
                key = f"compiled_chunk{setup.decode_time_chunk}"
                R["levers"]["vae_compile_extra_s"] = lever[f"{key}_first_s"] - lever[f"{key}_s"]
            else:
                for module in ours_vae_model.modules():
                    module._compiled_call_impl = None  # back to eager
            print(f"  decode: {lever}", flush=True)
            del reference

    with report.stage("ours bf16: compile + CUDA graphs + chosen attention + GELU epilogue") as ok:
        if ok:
            bf16_fast, bf16_model = ours_variant("ours_bf16", fp8=False)
            s = R["stages"]["ours_bf16"]
            R["ours_bf16_nocfg_s"], R["ours_bf16_cfg_s"] = s["nocfg"]["whole_s"], s["cfg"]["whole_s"]
            R["cold_start_s"] = s["cold_start_s"]
            R["cold_start_without_vae_compile_s"] = s["cold_start_s"] - R["levers"].get("vae_compile_extra_s", 0.0)
            R["ours_peak_gib"] = s["peak"].get("peak_allocated_gib")
            R["ours_peak_reserved_gib"] = s["peak"].get("peak_reserved_gib")

    with report.stage("kernel profile: one bf16 forward (compiled, no graphs)", needs_s=20) as ok:
        if ok and dev.type == "cuda":
            kernel_profile("bf16", bf16_model, bf16_fast.attention, inputs, R, report.path.parent)

    with report.stage("lever: CUDA graphs off (same compiled model)", needs_s=30) as ok:
        if ok and setup.cuda_graphs:
            dit_lever("no_cuda_graphs", acceleration.OptimizedTransformer(bf16_model, bf16_fast.attention))

    with report.stage("lever: CFG as two sequential batch-1 passes", needs_s=30) as ok:
        if ok:
            seq = timed(lambda: our_denoise(bf16_fast, inputs, GUIDANCE, torch.bfloat16, sequential_cfg=True), dev)[1]
            R["levers"]["cfg_sequential_dit_s"] = seq
            R["levers"]["cfg_batched_dit_s"] = R["stages"]["ours_bf16"]["cfg"]["dit_s"]

    with report.stage("errors: ours bf16 vs ours fp32 and vs diffusers") as ok:
        if ok:
            R["bf16_probe_vs_fp32"] = error_stats(keep["ours_bf16_probe"], keep["fp32_probe"])
            R["bf16_max_abs_err_vs_fp32"] = R["bf16_probe_vs_fp32"]["max_abs"]
            R["bf16_nocfg_latents_vs_fp32"] = error_stats(keep["ours_bf16_nocfg_tokens"], keep["fp32_nocfg_tokens"])
            R["ours_vs_diffusers"] = {
                "probe_velocity": error_stats(keep["ours_bf16_probe"], keep["diffusers_probe"]),
                "nocfg_latents": error_stats(keep["ours_bf16_nocfg_tokens"], keep["diffusers_nocfg_tokens"]),
                "nocfg_frames": error_stats(keep["ours_bf16_nocfg_frames"], keep["diffusers_nocfg_frames"]),
                "cfg_frames": error_stats(keep["ours_bf16_cfg_frames"], keep["diffusers_cfg_frames"]),
                "diffusers_probe_vs_fp32": error_stats(keep["diffusers_probe"], keep["fp32_probe"]),
            }

    with report.stage("low memory: no CUDA graphs (their pool outlives the steps) + time-chunked decode") as ok:
        if ok:
            # CUDA graphs keep the captured steps' activations in a private pool that is
            # still held while the VAE decodes; without them the steps' memory is free.
            del bf16_fast
            gc.collect()
            torch.cuda.empty_cache() if dev.type == "cuda" else None
            lean = acceleration.OptimizedTransformer(bf16_model, R["levers"].get("attention_choice", "default"),
                                                     cuda_graphs=False)
            saved_chunk, setup.decode_time_chunk = setup.decode_time_chunk, R["levers"].get("low_memory_decode_time_chunk")
            v = R["stages"]["ours_bf16_low_memory"] = {"decode_time_chunk": setup.decode_time_chunk,
                                                        "cuda_graphs": False}
            for name, guidance in (("nocfg", 1.0), ("cfg", GUIDANCE)):
                our_generate(lean, ours_vae_model, inputs, setup, guidance, torch.bfloat16)  # warm-up
                fresh_peak(dev)
                runs = [on_cpu(our_generate(lean, ours_vae_model, inputs, setup, guidance, torch.bfloat16))
                        for _ in range(repeats)]
                v[f"peak_{name}"] = peak_gib(dev)
                v[name] = {k: min(r[2][k] for r in runs) for k in ("dit_s", "decode_s", "whole_s")}
                v[f"{name}_frames_vs_speed_config"] = error_stats(runs[-1][0].cpu(), keep[f"ours_bf16_{name}_frames"])
                print(f"  low memory {name}: {v[name]}", flush=True)
            v["peak"] = max_peak(v["peak_nocfg"], v["peak_cfg"])
            R["ours_low_memory_nocfg_s"], R["ours_low_memory_cfg_s"] = v["nocfg"]["whole_s"], v["cfg"]["whole_s"]
            R["ours_low_memory_peak_gib"] = v["peak"].get("peak_allocated_gib")
            print(f"  low memory peak: {v['peak']}", flush=True)
            setup.decode_time_chunk = saved_chunk
            del lean

    with report.stage("free the bf16 model") as ok:
        if ok:
            del bf16_model
            fresh_peak(dev)

    with report.stage("lever: no GELU epilogue (a fresh compiled model)", needs_s=60) as ok:
        if ok:
            dit_lever("no_gelu_epilogue", optimized(load_from_file(), gelu=False),
                      baseline="ours_bf16", label="with_epilogue")
            fresh_peak(dev)

    with report.stage("lever: unfused q/k/v projections, bf16 (a fresh model, recompiles)", needs_s=60) as ok:
        if ok:
            dit_lever("bf16_unfused_projections", optimized(load_from_file(), fuse=False),
                      baseline="ours_bf16", label="fused")
            fresh_peak(dev)

    with report.stage("lever: QK-norm + RoPE left to Inductor, bf16 (a fresh model, recompiles)", needs_s=60) as ok:
        if ok:
            dit_lever("bf16_unfused_qk_rope", optimized(load_from_file(), fused_qk_rope_kernel=False),
                      baseline="ours_bf16", label="fused")
            fresh_peak(dev)

    with report.stage("lever: eager (no compile, no graphs)", needs_s=40) as ok:
        if ok:
            dit_lever("eager", optimized(load_from_file(), gelu=False, compile=False, graphs=False))
            fresh_peak(dev)

    with report.stage("ours FP8 (row-wise _scaled_mm) + compile + CUDA graphs", needs_s=60) as ok:
        if ok:
            fp8_fast, fp8_model = ours_variant("ours_fp8", fp8=True)
            s = R["stages"]["ours_fp8"]
            R["ours_fp8_nocfg_s"], R["ours_fp8_cfg_s"] = s["nocfg"]["whole_s"], s["cfg"]["whole_s"]
            R["ours_fp8_peak_gib"] = s["peak"].get("peak_allocated_gib")
            R["fp8_probe_vs_bf16"] = error_stats(keep["ours_fp8_probe"], keep["ours_bf16_probe"])
            R["fp8_max_abs_err_vs_bf16"] = R["fp8_probe_vs_bf16"]["max_abs"]
            R["fp8_nocfg_latents_vs_bf16"] = error_stats(keep["ours_fp8_nocfg_tokens"], keep["ours_bf16_nocfg_tokens"])
            R["fp8_nocfg_frames_vs_bf16"] = error_stats(keep["ours_fp8_nocfg_frames"], keep["ours_bf16_nocfg_frames"])

    with report.stage("kernel profile: one FP8 forward (compiled, no graphs)", needs_s=20) as ok:
        if ok and dev.type == "cuda":
            kernel_profile("fp8", fp8_model, fp8_fast.attention, inputs, R, report.path.parent)

    with report.stage("lever: unfused q/k/v projections, FP8 (a fresh model, recompiles)", needs_s=60) as ok:
        if ok:
            del fp8_fast, fp8_model
            fresh_peak(dev)
            dit_lever("fp8_unfused_projections", optimized(load_from_file(), fp8=True, fuse=False),
                      baseline="ours_fp8", label="fused")
            fresh_peak(dev)

    with report.stage("lever: FP8 only in the feed-forward (attention projections bf16)", needs_s=100) as ok:
        if ok:
            fresh_peak(dev)
            ff_only = optimized(load_from_file(), fp8=True, fp8_keep_precise=FP8_KEEP_PRECISE + ("*.attn1.*", "*.attn2.*"))
            dit_lever("fp8_feed_forward_only", ff_only, baseline="ours_fp8", label="all_linears")
            del ff_only

    with report.stage("GEMM rates at the model's shapes: bf16 vs FP8 row-wise, and the quantization", needs_s=30) as ok:
        if ok and dev.type == "cuda":
            R["gemm_rates"] = gemm_rates(setup.tokens)
            R["fp8_gelu_quantize_kernel_matches_reference"] = gelu_quantize_matches_reference(dev)
            R["qk_norm_rope_us"] = qk_norm_rope_rates(setup.tokens, setup.transformer_cfg.inner_dim)
            R["fused_qk_rope_kernel_matches_reference"] = fused_qk_rope.matches_reference(
                dev, torch.bfloat16, setup.transformer_cfg.inner_dim)

    with report.stage("lever: FP8 feed-forward unfused (GELU + quantization left to Inductor)", needs_s=90) as ok:
        if ok:
            fresh_peak(dev)
            dit_lever("fp8_unfused_feed_forward", optimized(load_from_file(), fp8=True, fp8_fused_gelu=False),
                      baseline="ours_fp8", label="fused")

    summarize(R)
    report.save()


def graphed_seconds(fn, calls: int = 10) -> float:
    """GPU seconds of one `fn()`: `calls` of it captured in a CUDA graph and replayed, so the
    host's dispatch (slower than a 40 us kernel for a Python custom op) is not timed."""
    fn()  # autotuning and compilation happen here, outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return acceleration.time_cuda(graph.replay, repeats=20) / calls


def qk_norm_rope_rates(tokens: int, width: int) -> dict:
    """Microseconds of one self-attention's QK-norm + RoPE on the GPU: the Triton op against
    the reference compiled by Inductor (full-width tables, as the unfused model reads them)."""
    rows = {}
    weight = torch.rand(width, device="cuda", dtype=torch.bfloat16) + 0.5

    def unfused(q, k, cos, sin):
        q = torch.nn.functional.rms_norm(q, (width,), weight, 1e-5)
        k = torch.nn.functional.rms_norm(k, (width,), weight, 1e-5)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    compiled = torch.compile(unfused, dynamic=False)
    for batch in (1, 2):
        qkv = torch.randn(batch, tokens, 3 * width, device="cuda", dtype=torch.bfloat16)
        q, k, _ = qkv.chunk(3, dim=-1)
        angles = torch.rand(batch, tokens, width // 2, device="cuda") * 100
        cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
        full = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        rows[f"batch{batch}"] = dict(
            triton_us=round(1e6 * graphed_seconds(
                lambda: fused_qk_rope.qk_norm_rope(q, k, weight, weight, cos, sin, 1e-5)), 1),
            inductor_us=round(1e6 * graphed_seconds(lambda: compiled(q, k, *full)), 1))
        print(f"  qk-norm + rope batch {batch}: {rows[f'batch{batch}']}", flush=True)
    return rows


def gemm_rates(tokens: int) -> dict:
    rows = {}
    quantize = torch.compile(quantize_rows, dynamic=False)
    gelu_quantize_compiled = torch.compile(
        lambda x, bias: quantize_rows(torch.nn.functional.gelu(x + bias, approximate="tanh")), dynamic=False)
    for m in (tokens, 2 * tokens):
        for k, n in ((2048, 2048), (2048, 8192), (8192, 2048)):
            a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            aq, sa = quantize_rows(a)
            bq, sb = quantize_rows(b)
            sb = sb.reshape(1, -1).contiguous()
            bf16 = acceleration.time_cuda(lambda: a @ b.t(), repeats=20)
            fp8 = acceleration.time_cuda(lambda: torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb,
                                                                 out_dtype=torch.bfloat16), repeats=20)
            quant = acceleration.time_cuda(lambda: quantize(a), repeats=20)
            flop = 2 * m * n * k
            rows[f"{m}x{k}x{n}"] = dict(bf16_tflops=round(flop / bf16 / 1e12), fp8_tflops=round(flop / fp8 / 1e12),
                                        bf16_us=round(bf16 * 1e6, 1), fp8_us=round(fp8 * 1e6, 1),
                                        quantize_us=round(quant * 1e6, 1))
            if k == 8192:  # the feed-forward's hidden activation: bias + GELU + quantization
                bias = torch.randn(k, device="cuda", dtype=torch.bfloat16)
                rows[f"{m}x{k}x{n}"]["gelu_quantize_inductor_us"] = round(1e6 * acceleration.time_cuda(
                    lambda: gelu_quantize_compiled(a, bias), repeats=20), 1)
                rows[f"{m}x{k}x{n}"]["gelu_quantize_triton_us"] = round(1e6 * acceleration.time_cuda(
                    lambda: gelu_quantize_rows(a, bias), repeats=20), 1)
            print(f"  gemm {m}x{k}x{n}: {rows[f'{m}x{k}x{n}']}", flush=True)
    return rows


def kernel_profile(name: str, model, attention: str, inputs: Inputs, R: dict, out_dir: Path) -> None:
    """CUDA time per kernel kind for one batch-1 forward; the full table goes to a text file."""
    from torch.profiler import ProfilerActivity, profile

    plain = acceleration.OptimizedTransformer(model, attention)
    sigma = torch.full((1, 1), 0.5, device=inputs.probe.device)
    args = (inputs.probe.to(torch.bfloat16), sigma, inputs.text, inputs.text_mask, inputs.coords)
    plain(*args)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        plain(*args)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    (out_dir / f"kernels_{name}.txt").write_text(averages.table(sort_by="cuda_time_total", row_limit=40,
                                                                max_name_column_width=100))
    totals: dict = {}
    for event in averages:
        if "cuda" not in str(getattr(event, "device_type", "cuda")).lower():
            continue
        key = event.key.lower()
        microseconds = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        kind = ("triton" if key.startswith("triton")  # fused glue; names list the ops it absorbed
                else "attention" if any(s in key for s in ("fmha", "attention", "flash", "cudnn", "sdpa"))
                else "gemm" if any(s in key for s in ("gemm", "sm90", "cutlass", "nvjet", "f8f8", "xmma", "matmul"))
                else "other")
        totals[f"{kind}_ms"] = totals.get(f"{kind}_ms", 0.0) + microseconds / 1e3
        totals["kernels"] = totals.get("kernels", 0) + event.count
    R.setdefault("kernel_profile", {})[name] = totals
    print(f"  kernels {name}: {totals}", flush=True)


def summarize(R: dict) -> None:
    rows = []
    d = R["stages"].get("diffusers", {})
    for tag in ("diffusers", "ours_bf16", "ours_fp8"):
        s = R["stages"].get(tag)
        if not s:
            continue
        for name in ("nocfg", "cfg"):
            if name not in s:
                continue
            row = [f"{tag} {name}"] + [s[name].get(k) for k in ("dit_s", "decode_s", "whole_s")]
            base = d.get(name, {}).get("whole_s")
            row.append(base / s[name]["whole_s"] if base else None)
            rows.append(row)
    R["speedup_vs_diffusers"] = {r[0]: r[4] for r in rows}
    print("\n{:<22}{:>9}{:>9}{:>9}{:>11}".format("variant", "DiT s", "decode s", "whole s", "x diffusers"))
    for r in rows:
        print("{:<22}".format(r[0]) + "".join("{:>9.3f}".format(x) if x is not None else "{:>9}".format("-")
                                              for x in r[1:4]) + ("{:>11.2f}".format(r[4]) if r[4] else ""))
    for key in ("ours_peak_gib", "ours_fp8_peak_gib", "diffusers_peak_gib", "cold_start_s",
                "bf16_max_abs_err_vs_fp32", "fp8_max_abs_err_vs_bf16", "ours_low_memory_nocfg_s",
                "ours_low_memory_cfg_s", "ours_low_memory_peak_gib"):
        print(f"{key:<28}{R.get(key)}")
    print("levers:", json.dumps(R.get("levers"), default=str)[:1500])
    if R["errors"]:
        print("errors:", json.dumps(R["errors"])[:1500])
    print("skipped:", R["skipped"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_speed.json")
    parser.add_argument("--tiny", action="store_true", help="tiny configs and sizes (a dry run, CPU is fine)")
    parser.add_argument("--budget-s", type=float, default=470.0, help="skip optional stages past this")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode-time-chunks", default="8,16,32",
                        help="time-chunked decodes measured against the whole decode (frames per chunk)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        setup = Setup(64, 64, 9, 2, 8, TINY_TRANSFORMER, TINY_VAE_0_9_1, "tiny", device,
                      "inductor" if device.type == "cuda" else "eager", device.type == "cuda")
    else:
        setup = Setup(768, 512, 121, 20, 128, LTXV_2B, LTXV_VAE_0_9_1, "real", device, "inductor",
                      device.type == "cuda")
    report = Report(args.out, args.budget_s)
    try:
        run(setup, report, args.repeats, tuple(int(c) for c in args.decode_time_chunks.split(",")))
    except Exception as error:  # noqa: BLE001
        report.data["errors"]["run"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
        report.save()
        summarize(report.data)


if __name__ == "__main__":
    main()
