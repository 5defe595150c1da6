"""Train the shipped demo model end to end in one call: text encoder, VAE, DiT, export.

    python -m ltx_core.training.run_tiny --out OUT --vae-seconds 240 --dit-seconds 240

Writes OUT/ltxv-tiny.safetensors (official single-file layout, bf16), the fp32 weights
to resume from (OUT/resume.N.safetensors: the VAE and the DiT's EMA) and
OUT/train_log.txt. The text encoder is `--text-encoder` (the shipped `assets/t5-tiny` by
default), frozen; with `--train-text-encoder` it is first trained alone on the captions,
then with the DiT (alone only, with `--skip-dit`), and written to OUT/t5-tiny
(config.json, model.safetensors, spiece.model); `--new-text-encoder` starts it from T5's
initialization with a tokenizer trained here on the captions. The calls that made the
shipped model are in RECIPE.md beside this file, their output in tiny_training_log.txt.
`--resume DIR` continues from a previous call's fp32 weights (fresh optimizer moments,
short warm-up), `--resume ltx_core/assets/ltxv-tiny.safetensors` from the shipped bf16
weights (across sessions); `--skip-vae` keeps the resumed VAE as it is.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..checkpoint.keymaps import TRANSFORMER_PREFIX, VAE_PREFIX
from ..models.text_encoder import TextEncoder
from ..models.transformer import LTXVTransformer
from ..models.vae import CausalVideoVAE
from . import captions, data, train_dit, train_vae
from .demo_model import DEMO_CHECKPOINT, DEMO_TEXT_ENCODER, DEMO_TRANSFORMER, DEMO_VAE, save_demo_checkpoint
from .run_text import (
    add_text_arguments,
    check_text_settings,
    dit_captions,
    export_text_encoder,
    load_or_new_text_encoder,
    text_captions,
)

CLIP_SEED = 7  # the DiT's training clips: data.training_specs(CLIP_SEED, --clip-start, --clips)
EXPORT_RESERVE_S = 25.0  # --deadline-seconds keeps this much for the files written after the DiT


class Log:
    def __init__(self, path: Path):
        self.path, self.start = path, time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __call__(self, line: str) -> None:
        line = f"[{time.monotonic() - self.start:6.0f}s] {line}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


SHARD_BYTES = 15 * 2**20  # the device tool brings back files of at most 16 MiB


def save_resume_state(modules: dict[str, torch.nn.Module], folder: Path) -> list[Path]:
    """fp32 weights of every module, keys prefixed by its name, in shards under 15 MiB."""
    tensors = {
        f"{name}.{k}": v.detach().float().contiguous().cpu()
        for name, module in modules.items()
        for k, v in module.state_dict().items()
    }
    shards, current, size = [], {}, 0
    for key, value in tensors.items():
        nbytes = value.numel() * 4
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[key], size = value, size + nbytes
    shards.append(current)
    for old in folder.glob("resume.*.safetensors"):
        old.unlink()
    paths = [folder / f"resume.{i}.safetensors" for i in range(len(shards))]
    for shard, path in zip(shards, paths):
        save_file(shard, str(path))
    return paths


# Where each resumable module sits in the official single file (the shipped model).
SINGLE_FILE_PREFIXES = {"vae": VAE_PREFIX, "dit_ema": TRANSFORMER_PREFIX}


def load_resume_state(module: torch.nn.Module, name: str, source: Path) -> bool:
    """Load `name`'s weights from the resume shards in the folder `source`, or from a
    single-file checkpoint such as the shipped `ltxv-tiny.safetensors` (bf16: a later
    session resumes from what was shipped). False when there are none."""
    if source.is_file():
        prefix = SINGLE_FILE_PREFIXES[name]
        state = {k[len(prefix) :]: v for k, v in load_file(str(source)).items() if k.startswith(prefix)}
    else:
        state = {}
        for path in sorted(source.glob("resume.*.safetensors")):
            state.update({k[len(name) + 1 :]: v for k, v in load_file(str(path)).items() if k.startswith(name + ".")})
    if not state:
        return False
    module.load_state_dict(state, strict=True)
    return True


@torch.no_grad()
def vae_psnr(vae: CausalVideoVAE, videos: torch.Tensor, denoise: bool) -> float:
    """Reconstruction PSNR (dB, [0, 1] units) through the decode the pipeline uses."""
    gen = torch.Generator(videos.device).manual_seed(0)
    latent = vae.encode(videos)
    t, s = (0.05, 0.025) if denoise else (0.0, 0.0)
    recon = vae.decode(latent, timestep=t, decode_noise_scale=s, generator=gen).float()
    mse = (((recon.clamp(-1, 1) - videos) / 2) ** 2).mean()
    return float(-10 * torch.log10(mse))


@torch.no_grad()
def build_latents(
    vae: CausalVideoVAE,
    count: int,
    seed: int,
    size: dict,
    device,
    batch: int = 32,
    keyframes: bool = True,
    first: int = 0,
) -> tuple[torch.Tensor, list[str], torch.Tensor | None, torch.Tensor | None]:
    """Normalized posterior means of `count` training clips (the stream's from clip `first`
    on), their captions, and (with `keyframes`) one frame of each clip encoded alone (a
    keyframe image: the last frame or, as often, a random other one) with its pixel frame
    index; else None, None."""
    vae.eval()
    latents, texts, frame_latents, indices = [], [], [], []
    gen = torch.Generator().manual_seed(seed + first)
    frames = size["num_frames"]
    for start in range(first, first + count, batch):
        specs = data.training_specs(seed, start, min(batch, first + count - start))
        video = data.render_batch(specs, frames, size["height"], size["width"], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            latents.append(vae.encode(video).to(torch.bfloat16))
            if keyframes:
                index = torch.where(
                    torch.rand(len(specs), generator=gen) < 0.5,
                    frames - 1,
                    torch.randint(1, frames, (len(specs),), generator=gen),
                )
                frame = video[torch.arange(len(specs)), :, index.to(device)][:, :, None]  # (B, 3, 1, H, W)
                frame_latents.append(vae.encode(frame).to(torch.bfloat16))
                indices.append(index)
        texts += [captions.caption(s) for s in specs]
    if not keyframes:
        return torch.cat(latents), texts, None, None
    return torch.cat(latents), texts, torch.cat(frame_latents), torch.cat(indices).to(device)


def export_from_resume(folder: Path, path: Path = DEMO_CHECKPOINT) -> Path:
    """The shipped single file (bf16) from a run's fp32 resume shards: VAE + the DiT's EMA."""
    vae, transformer = CausalVideoVAE(DEMO_VAE), LTXVTransformer(DEMO_TRANSFORMER)
    if not (load_resume_state(vae, "vae", folder) and load_resume_state(transformer, "dit_ema", folder)):
        raise FileNotFoundError(f"no resume.N.safetensors with vae and dit_ema weights in {folder}")
    return save_demo_checkpoint(transformer, vae, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", type=Path)
    p.add_argument(
        "--text-encoder",
        type=Path,
        default=DEMO_TEXT_ENCODER,
        help="a T5 folder (default: the shipped tiny one); --new-text-encoder makes a new one instead",
    )
    add_text_arguments(p)
    p.add_argument("--skip-vae", action="store_true")
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="fine-tune the VAE decoder alone: the latent space (and a DiT trained on it) stays valid",
    )
    p.add_argument("--skip-dit", action="store_true", help="keep the resumed DiT as it is (needs --resume)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_vae_arguments(p)
    p.add_argument("--dit-seconds", type=float, default=240)
    p.add_argument("--dit-steps", type=int, default=100_000)
    p.add_argument("--dit-batch", type=int, default=256)
    p.add_argument("--dit-lr", type=float, default=5e-4)
    p.add_argument(
        "--keyframe-probability",
        type=float,
        default=0.3,
        help="share of DiT batches that carry a keyframe image as extra tokens",
    )
    p.add_argument(
        "--keyframe-first-frame-probability",
        type=float,
        default=None,
        help="in keyframe batches, the share that also give the first frame "
        "(first + last frame runs); default: as in other batches (0.3)",
    )
    p.add_argument(
        "--keyframe-loss-weight",
        type=float,
        default=1.0,
        help="loss weight of the latent frame that holds the keyframe's frame",
    )
    p.add_argument(
        "--keyframe-caption-dropout",
        type=float,
        default=None,
        help="caption dropout in keyframe batches (default: as in other batches, 0.1)",
    )
    p.add_argument(
        "--dit-oversample",
        action="append",
        default=[],
        metavar="CLASS=FACTOR",
        help="draw clips of this class FACTOR times as often in DiT batches: a motion (bounce=3), a "
        "background by name ('white=2'), or 'light' / 'dark' (every background of that kind: light=3, "
        "the half the held-out reading gets wrong most); a clip in several named classes gets the product",
    )
    p.add_argument("--clips", type=int, default=16384)
    p.add_argument(
        "--clip-start",
        type=int,
        default=0,
        help="first clip of the training stream, so that a resumed call trains on clips "
        "no earlier call saw (each call otherwise draws the same first --clips)",
    )
    p.add_argument(
        "--deadline-seconds",
        type=float,
        default=None,
        help="the whole call's time limit: the DiT stops early enough for the export to end inside it",
    )
    p.add_argument(
        "--no-resume-shards",
        action="store_true",
        help="write no resume.N.safetensors (the exported files resume too, the DiT in bf16)",
    )
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--frames", type=int, default=25)
    args = p.parse_args(argv)
    args.dit_oversample = parse_oversample(args.dit_oversample)  # fail before any GPU work
    check_training_settings(args)
    return args


def add_vae_arguments(p: argparse.ArgumentParser) -> None:
    """The VAE training options `run_vae` reads."""
    p.add_argument("--vae-seconds", type=float, default=240)
    p.add_argument("--vae-steps", type=int, default=100_000)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-crop", type=int, default=128)
    p.add_argument(
        "--vae-shape-crops",
        type=float,
        default=0.0,
        help="share of VAE clips whose crop is placed to hold the shape (the rest anywhere; 0: one crop "
        "anywhere for the whole batch, as the earlier calls ran)",
    )
    p.add_argument("--vae-frames", type=int, default=17)
    p.add_argument("--vae-lr", type=float, default=4e-4)
    p.add_argument("--vae-first-frame-weight", type=float, default=0.0)
    p.add_argument("--vae-last-frame-weight", type=float, default=0.0)


def check_training_settings(args) -> None:
    """Clear errors for keyframe and data settings out of range, before any GPU work."""
    if args.clip_start < 0:
        raise SystemExit(f"--clip-start {args.clip_start}: give a clip index of the training stream, 0 or more")
    for name in ("keyframe_probability", "keyframe_first_frame_probability", "keyframe_caption_dropout"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            raise SystemExit(f"--{name.replace('_', '-')} {value}: give a share in [0, 1]")
    if not 0 < args.keyframe_loss_weight < math.inf:
        raise SystemExit(f"--keyframe-loss-weight {args.keyframe_loss_weight}: give a weight above 0")
    check_text_settings(args)


def run_vae(args, vae: CausalVideoVAE, size: dict, log) -> train_vae.VAEState:
    """Train `vae` as the options say; when the encoder trained, recompute the exact latent
    statistics (so `encode` gives unit-scale latents again)."""
    device = torch.device(args.device)
    settings = train_vae.VAETrainSettings(
        steps=args.vae_steps,
        batch_size=args.vae_batch,
        num_frames=args.vae_frames,
        height=size["height"],
        width=size["width"],
        crop=args.vae_crop,
        shape_crop_probability=args.vae_shape_crops,
        learning_rate=args.vae_lr,
        warmup_steps=20 if args.resume else 100,
        train_encoder=not args.decoder_only,
        first_frame_weight=args.vae_first_frame_weight,
        last_frame_weight=args.vae_last_frame_weight,
    )
    state = train_vae.new_state(vae, settings)
    train_vae.train_vae(state, settings, args.vae_seconds, log=log, autocast=device.type == "cuda")
    log(f"vae trained {state.step} steps of batch {settings.batch_size}")
    vae.eval()
    if not settings.train_encoder:
        return state  # the encoder and the statistics the DiT was trained with stay as they were
    full = replace(settings, crop=None, num_frames=size["num_frames"])
    stats_videos = [train_vae.training_videos(100_000 + i, full, device) for i in range(8)]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        train_vae.final_statistics(vae, stats_videos)
    return state


def parse_oversample(items: list[str]) -> dict[str, float]:
    """["bounce=3", "light=2", ...] -> {"bounce": 3.0, "light": 2.0}; a clear error for an
    unknown class (`data.OVERSAMPLE_CLASSES`) or factor."""
    factors = {}
    for item in items:
        name, _, factor = item.partition("=")
        if name not in data.OVERSAMPLE_CLASSES:
            raise SystemExit(
                f"--dit-oversample {item!r}: the class must be one of {', '.join(data.OVERSAMPLE_CLASSES)}"
            )
        try:
            factors[name] = float(factor)
        except ValueError:
            factors[name] = math.nan
        if not 0 < factors[name] < math.inf:
            raise SystemExit(f"--dit-oversample {item!r}: give CLASS=FACTOR with a factor above 0")
    return factors


def dit_budget(args, log: Log) -> float:
    """--dit-seconds, cut so that the call ends inside --deadline-seconds."""
    if args.deadline_seconds is None:
        return args.dit_seconds
    budget = max(0.0, min(args.dit_seconds, args.deadline_seconds - log.elapsed() - EXPORT_RESERVE_S))
    if budget < args.dit_seconds:
        log(f"dit budget cut to {budget:.0f}s by --deadline-seconds {args.deadline_seconds:.0f}")
    return budget


def dit_settings(args, size: dict, resumed: bool) -> train_dit.DiTTrainSettings:
    return train_dit.DiTTrainSettings(
        steps=args.dit_steps,
        batch_size=args.dit_batch,
        learning_rate=args.dit_lr,
        warmup_steps=100 if resumed else 300,
        ema_start_step=0 if resumed else 300,
        frame_rate=size["frame_rate"],
        keyframe_probability=args.keyframe_probability,
        keyframe_first_frame_probability=args.keyframe_first_frame_probability,
        keyframe_frame_weight=args.keyframe_loss_weight,
        keyframe_caption_dropout=args.keyframe_caption_dropout,
    )


def run_dit(args, vae: CausalVideoVAE, encoder: TextEncoder, size: dict, log: Log):
    """(the DiT's training state, its captions: `FixedCaptions` or `JointCaptions`)."""
    device = torch.device(args.device)
    latents, texts, keyframes, keyframe_indices = build_latents(
        vae,
        args.clips,
        seed=CLIP_SEED,
        size=size,
        device=device,
        keyframes=args.keyframe_probability > 0,
        first=args.clip_start,
    )
    log(f"dit data: latents {tuple(latents.shape)} std {latents.float().std():.3f}")
    specs = data.training_specs(CLIP_SEED, args.clip_start, args.clips) if args.train_text_encoder else None
    captions_source = dit_captions(args, encoder, texts, specs, log)
    torch.manual_seed(0)
    model = LTXVTransformer(DEMO_TRANSFORMER).to(device)
    # the EMA weights are the only DiT weights kept: a resumed run starts from them
    resumed = args.resume is not None and load_resume_state(model, "dit_ema", args.resume)
    settings = dit_settings(args, size, resumed)
    state = train_dit.new_state(model, settings)
    weights = None
    if args.dit_oversample:  # the clips' specs again, only then: build_latents keeps just captions
        weights = data.oversample_weights(
            data.training_specs(CLIP_SEED, args.clip_start, args.clips), args.dit_oversample
        )
        log(f"dit oversampling {args.dit_oversample}: {float(weights.ne(1).float().mean()):.1%} of clips weighted")
    train_dit.train_dit(
        state,
        latents,
        captions_source,
        settings,
        dit_budget(args, log),
        log=log,
        autocast=device.type == "cuda",
        keyframes=keyframes,
        keyframe_indices=keyframe_indices,
        clip_weights=weights,
    )
    log(f"dit trained {state.step} steps of batch {settings.batch_size}")
    return state, captions_source


def train_dit_and_text(args, vae: CausalVideoVAE, encoder: TextEncoder, size: dict, log: Log):
    """(the DiT's EMA, the text encoder's training or None): the DiT trained (with the
    encoder, if asked), or resumed as it is with `--skip-dit` (the encoder then alone)."""
    if not args.skip_dit:
        state, captions_source = run_dit(args, vae, encoder, size, log)
        return state.ema, captions_source if args.train_text_encoder else None
    ema = LTXVTransformer(DEMO_TRANSFORMER)
    if args.resume is None or not load_resume_state(ema, "dit_ema", args.resume):
        raise SystemExit("--skip-dit needs --resume with DiT weights")
    if not args.train_text_encoder:
        return ema, None
    return ema, text_captions(args, encoder, data.training_specs(CLIP_SEED, args.clip_start, args.clips), log)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "train_log.txt")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    size = dict(num_frames=args.frames, height=args.height, width=args.width, frame_rate=24.0)
    log(f"device {device} {torch.cuda.get_device_name() if device.type == 'cuda' else ''}")
    encoder = load_or_new_text_encoder(args, device, log)
    vae = prepare_vae(args, size, device, log)
    ema, trained_text = train_dit_and_text(args, vae, encoder, size, log)
    if not args.no_resume_shards:
        save_resume_state({"vae": vae, "dit_ema": ema}, args.out)
    save_demo_checkpoint(copy.deepcopy(ema).cpu(), vae.cpu(), args.out / DEMO_CHECKPOINT.name)
    log(
        "saved "
        + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in sorted(args.out.glob("*.safetensors")))
    )
    if args.train_text_encoder or args.new_text_encoder:
        export_text_encoder(args, encoder, trained_text, log)


def prepare_vae(args, size: dict, device: torch.device, log: Log) -> CausalVideoVAE:
    """The VAE resumed (or new) and trained as the options say, its held-out PSNR logged."""
    torch.manual_seed(0)
    vae = CausalVideoVAE(DEMO_VAE).to(device)
    if args.resume is not None and load_resume_state(vae, "vae", args.resume):
        log("vae resumed")
    if not args.skip_vae:
        run_vae(args, vae, size, log)
    heldout = data.render_batch(data.heldout_specs(8), size["num_frames"], size["height"], size["width"], device)
    for denoise in (False, True):
        log(f"vae held-out psnr (denoising decode {denoise}): {vae_psnr(vae, heldout, denoise):.2f} dB")
    return vae


if __name__ == "__main__":
    main()
