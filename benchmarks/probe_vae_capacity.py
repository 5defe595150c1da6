"""How high can the demo VAE's whole-clip round trip go on the last frame (issue 7)?

A first + last frame run hands the last frame in as an image, but the decoder gives it
back as the 8th frame of the clip's last latent frame, so the whole clip's VAE round trip
bounds what any DiT can reach there (`eval_first_last.py`: 27.6 dB for the shipped VAE,
under the 28 dB target). This probe trains a VAE for a time budget and measures that
bound on the same held-out clips:

- `--from-shipped`: fine-tune the shipped VAE (`--resume DIR`: a previous probe's VAE);
  `--decoder-only` keeps its encoder (and so the latent space a DiT was trained on), else
  encoder and decoder both train and the latent statistics are recomputed;
- neither: a VAE of the demo layout with `--encoder-channels` / `--decoder-channels`
  base widths, from scratch (a wider VAE than the shipped 16 / 12);
- `--vae-seconds 0`: no training, the bound of the weights as they are.

Training is `run_tiny`'s (`run_vae`, its `--vae-*` options; here batch 32 and 480 s by
default), so a probe's recipe carries over to the shipped model's training as it is.

Writes OUT/vae_capacity.json (date, device, settings, training log tail, per-clip and
mean round-trip PSNR of the first frame, the last frame and all frames, before and after)
and the VAE's fp32 weights as OUT/resume.N.safetensors shards (`run_tiny --resume` reads
them; each under the device tool's 16 MiB).

    python benchmarks/probe_vae_capacity.py --out OUT --vae-seconds 480 [--from-shipped]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_first_last import clip_round_trip, ground_truth, mean_db, psnr, seeded  # noqa: E402

from ltx_core.training import data  # noqa: E402
from ltx_core.training.demo_model import DEMO_CHECKPOINT, DEMO_SIZE, DEMO_VAE  # noqa: E402
from ltx_core.training.run_tiny import add_vae_arguments, load_resume_state, run_vae, save_resume_state  # noqa: E402
from ltx_core.vae import CausalVideoVAE  # noqa: E402


@torch.no_grad()
def clip_bounds(vae: CausalVideoVAE, count: int) -> list[dict]:
    """`eval_first_last.clip_round_trip` (posterior mean, decode at t = 0.05 without decode
    noise) of `count` held-out clips; the decoder's injected noise is seeded per clip, so
    the same weights give the same bound."""
    vae.eval()
    rows = []
    for index, spec in enumerate(data.heldout_specs(count)):
        truth = ground_truth(spec)
        recon = clip_round_trip(vae, truth, 0.05, seeded(index)).cpu()
        rows.append({"prompt": data.caption(spec), "first_db": psnr(recon[0], truth[0]),
                     "last_db": psnr(recon[-1], truth[-1]), "all_db": psnr(recon, truth)})
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    """`run_tiny`'s VAE options (defaults: batch 32, 480 s) and the probe's own."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--from-shipped", action="store_true")
    p.add_argument("--resume", type=Path, help="a previous probe's OUT folder (its resume shards)")
    p.add_argument("--decoder-only", action="store_true")
    p.add_argument("--encoder-channels", type=int, default=DEMO_VAE.encoder_base_channels)
    p.add_argument("--decoder-channels", type=int, default=DEMO_VAE.decoder_base_channels)
    p.add_argument("--count", type=int, default=16, help="held-out clips the bound is measured on")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_vae_arguments(p)
    p.set_defaults(vae_batch=32, vae_seconds=480)
    args = p.parse_args(argv)
    if args.decoder_only and not (args.from_shipped or args.resume):
        raise SystemExit("--decoder-only keeps a trained encoder: give --from-shipped or --resume")
    # run_vae reads `resume` (a short warm-up for trained weights) as the source of the weights
    args.resume = args.resume or (DEMO_CHECKPOINT if args.from_shipped else None)
    return args


def load_vae(args: argparse.Namespace, device: torch.device) -> CausalVideoVAE:
    """The demo layout at the asked widths: the source's weights, or fresh (seeded) ones."""
    cfg = replace(DEMO_VAE, encoder_base_channels=args.encoder_channels,
                  decoder_base_channels=args.decoder_channels)
    torch.manual_seed(0)
    vae = CausalVideoVAE(cfg).to(device)
    if args.resume is not None and not load_resume_state(vae, "vae", args.resume):
        raise SystemExit(f"no VAE weights in {args.resume}")
    return vae.float()


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    log_lines: list[str] = []

    def log(line: str) -> None:
        log_lines.append(line)
        print(line, flush=True)

    vae = load_vae(args, device)
    params = sum(p.numel() for p in vae.parameters())
    log(f"vae {params / 1e6:.2f} M parameters, widths {args.encoder_channels} / {args.decoder_channels}")
    before = clip_bounds(vae, args.count) if args.resume is not None else None
    start = time.time()
    steps = 0
    if args.vae_seconds > 0:  # 0: the bound of the weights as they are
        steps = run_vae(args, vae, DEMO_SIZE, log).step
    train_seconds = time.time() - start
    after = clip_bounds(vae, args.count)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "parameters": params},
        "train_seconds": round(train_seconds, 1),
        "steps": steps,
        "log_tail": log_lines[-6:],
        "before": {"means": mean_db(before), "rows": before} if before else None,
        "after": {"means": mean_db(after), "rows": after},
    }
    (args.out / "vae_capacity.json").write_text(json.dumps(result, indent=2) + "\n")
    save_resume_state({"vae": vae}, args.out)
    print(json.dumps({k: result[k] and result[k]["means"] for k in ("before", "after")}, indent=2))


if __name__ == "__main__":
    main()
