"""A small model at the 2B width on the GPU, optimized beside an unoptimized copy: what the
CUDA tests of the speed levers compare (run on the GPU)."""

from __future__ import annotations

from dataclasses import replace

import torch

from ltx_core.models.configs import LTXV_2B
from ltx_core.models.transformer import LTXVTransformer
from ltx_core.speed.optimize import Speed, optimize_transformer
from tests.test_fp8 import tiny_inputs


@torch.no_grad()
def velocity_gap_at_2b_width(speed: Speed) -> tuple[dict, float]:
    """Two blocks of the 2B config in bf16 on CUDA, optimized with `speed`, and the same
    weights unoptimized: the optimized runner's levers, and the relative L2 difference of
    their velocities on one small video (bf16 rounding is about 1e-2)."""
    cfg = replace(LTXV_2B, num_layers=2, caption_channels=64)
    torch.manual_seed(0)
    plain = LTXVTransformer(cfg).cuda().to(torch.bfloat16).eval()
    fast_model = LTXVTransformer(cfg).cuda().to(torch.bfloat16).eval()
    fast_model.load_state_dict(plain.state_dict())
    fast = optimize_transformer(fast_model, speed)
    latent, sigma, text, mask, coords = (t.cuda() for t in tiny_inputs(cfg, frames=4, height=8, width=8))
    inputs = (latent.to(torch.bfloat16), sigma, text.to(torch.bfloat16), mask, coords)
    got, expected = fast(*inputs).float(), plain(*inputs).float()
    return fast.levers, float((got - expected).norm() / expected.norm())
