"""The two pipelines `bench_gpu_speed` times, on the same weights and inputs: ours
(`ltx_core`'s sampler and VAE) and diffusers' `LTXPipeline`.

Both get the same random transformer weights (diffusers' model, mapped into ours with
`ltx_core.checkpoint.keymaps`), the same VAE weights, the same random prompt embeddings, initial noise
and decode noise, so their outputs can be compared as well as timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from einops import rearrange

from benchmarks.gpu_measure import sync
from ltx_core.checkpoint.keymaps import vae_from_diffusers
from ltx_core.models.rope import fractional_coords, latent_coords, pixel_coords
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.models.vae import CausalVideoVAE
from ltx_core.sampling.euler import sample
from ltx_core.sampling.guidance import Guidance, guided_velocity
from ltx_core.sampling.scheduler import flow_sigmas

# imported before any ComfyUI folder joins sys.path (dit_three_way): ComfyUI has a `tests` package too
from tests.fixtures_checkpoints import diffusers_transformer_kwargs

FRAME_RATE, GUIDANCE, DECODE_T, DECODE_NOISE, SEED = 25, 3.0, 0.05, 0.025, 42
MODES = (("nocfg", 1.0), ("cfg", GUIDANCE))  # the two guidance settings every variant is timed at
TIMES = ("dit_s", "decode_s", "whole_s")  # what `our_generate` times
# Lightricks/LTX-Video scheduler/scheduler_config.json, as tests/parity use it.
PUBLISHED_SCHEDULER = dict(
    base_image_seq_len=1024,
    base_shift=0.95,
    max_image_seq_len=4096,
    max_shift=2.05,
    num_train_timesteps=1000,
    shift=1.0,
    shift_terminal=0.1,
    time_shift_type="exponential",
    use_dynamic_shifting=True,
)
# diffusers' VAE 0.9.1 layout (scripts/convert_ltx_to_diffusers.py); tiny: tests/parity.
DIFFUSERS_VAE = {
    "real": dict(
        block_out_channels=(128, 256, 512, 512),
        decoder_block_out_channels=(256, 512, 1024),
        layers_per_block=(4, 3, 3, 3, 4),
        decoder_layers_per_block=(5, 6, 7, 8),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(True, True, True, False),
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
    ),
    "tiny": dict(
        block_out_channels=(8, 16, 32, 32),
        decoder_block_out_channels=(16, 32, 64),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(True, True, True, False),
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=True,
    ),
}


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
    return Inputs(
        noise.to(dev),
        text.to(dev, torch.bfloat16),
        mask.to(dev),
        negative.to(dev, torch.bfloat16),
        negative_mask.to(dev),
        coords.to(dev),
        flow_sigmas(setup.steps, setup.tokens),
        probe.to(dev),
    )


# ---------------------------------------------------------------- models


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


def diffusers_transformer(cfg):
    """diffusers' `LTXVideoTransformer3DModel` of our config's sizes (on the current device)."""
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(**diffusers_transformer_kwargs(cfg)).eval()


def build_diffusers(setup: Setup):
    """diffusers' transformer and VAE with seeded random weights, fp32, on the device."""
    from diffusers import AutoencoderKLLTXVideo

    cfg, device = setup.transformer_cfg, setup.device
    g = torch.Generator(device=device).manual_seed(0)
    with torch.device(device):
        transformer = diffusers_transformer(cfg)
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


# ---------------------------------------------------------------- our pipeline


def our_denoise(
    model, inputs: Inputs, guidance: float, dtype: torch.dtype, sequential_cfg: bool = False, steps: int | None = None
) -> torch.Tensor:
    """Noise tokens -> clean tokens with the core sampler. Text-to-video has noise mask 1
    everywhere, so every token shares the step's sigma: the model gets one timestep per
    video (B, 1), as diffusers' LTXPipeline passes, instead of (B, T)."""
    coords = {1: inputs.coords, 2: inputs.coords.repeat(2, 1, 1)}

    def model_fn(x, timesteps, text, mask):
        return model(x.to(dtype), timesteps[:, :1], text.to(dtype), mask, coords[x.shape[0]]).float()

    if sequential_cfg:

        def velocity(x, timesteps, sigma):
            v_u = model_fn(x, timesteps, inputs.negative, inputs.negative_mask)
            v_c = model_fn(x, timesteps, inputs.text, inputs.text_mask)
            return v_u + guidance * (v_c - v_u)
    else:
        velocity = guided_velocity(
            model_fn, inputs.text, inputs.text_mask, inputs.negative, inputs.negative_mask, Guidance(guidance)
        )
    sigmas = inputs.sigmas if steps is None else inputs.sigmas[-steps - 1 :]
    mask = torch.ones(inputs.noise.shape[:2], device=inputs.noise.device)
    with torch.no_grad():
        return sample(velocity, inputs.noise, sigmas, mask)


def our_decode(vae, tokens: torch.Tensor, setup: Setup) -> torch.Tensor:
    f, h, w = setup.latent_shape
    latent = rearrange(tokens, "b (f h w) c -> b c f h w", f=f, h=h, w=w).to(torch.bfloat16)
    with torch.no_grad():
        video = vae.decode(
            latent,
            DECODE_T,
            DECODE_NOISE,
            torch.Generator().manual_seed(SEED),
            mix_noise_denormalized=True,
            time_chunk=setup.decode_time_chunk,
        )
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


def our_probe(model, inputs: Inputs, dtype: torch.dtype) -> torch.Tensor:
    """One forward at sigma 0.5: the velocity the errors compare."""
    sigma = torch.full((1, 1), 0.5, device=inputs.probe.device)  # the (B, 1) shape the sampler passes
    with torch.no_grad():
        return model(inputs.probe.to(dtype), sigma, inputs.text.to(dtype), inputs.text_mask, inputs.coords).float()


def on_cpu(run: tuple) -> tuple:
    """A clip's (frames, tokens, times) with the tensors moved off the GPU, after timing,
    so that a mode's peak is one clip's, not the sum of the repeats' outputs."""
    frames, tokens, times = run
    return frames.cpu(), tokens.cpu(), times


# ---------------------------------------------------------------- diffusers


def diffusers_pipe(transformer, vae):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline

    return LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**PUBLISHED_SCHEDULER),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
    )


def diffusers_call(pipe, inputs: Inputs, setup: Setup, guidance: float, output_type: str, steps: int | None = None):
    return pipe(
        prompt_embeds=inputs.text,
        prompt_attention_mask=inputs.text_mask,
        negative_prompt_embeds=inputs.negative,
        negative_prompt_attention_mask=inputs.negative_mask,
        width=setup.width,
        height=setup.height,
        num_frames=setup.frames,
        frame_rate=FRAME_RATE,
        num_inference_steps=steps or setup.steps,
        guidance_scale=guidance,
        latents=inputs.noise.clone(),
        generator=torch.Generator().manual_seed(SEED),
        decode_timestep=DECODE_T,
        decode_noise_scale=DECODE_NOISE,
        output_type=output_type,
        return_dict=False,
    )[0]


def diffusers_probe(transformer, inputs: Inputs, setup: Setup) -> torch.Tensor:
    """diffusers' transformer on `our_probe`'s input."""
    f, h, w = setup.latent_shape
    with torch.no_grad():
        return transformer(
            hidden_states=inputs.probe.to(torch.bfloat16),
            encoder_hidden_states=inputs.text,
            timestep=torch.full((1,), 500.0, device=setup.device),
            encoder_attention_mask=inputs.text_mask,
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=(8 / FRAME_RATE, 32, 32),
            return_dict=False,
        )[0].float()
