"""Write the images the shipped i2v / first_last workflows load (workflows/input/), as the
first and last frames of one synthetic clip the shipped model knows (a trained color,
shape and motion), at the workflows' 256 x 256; and the IC-LoRA workflow's control clip,
that clip as a depth-like gray map (the shape bright on a black background). The pack copies them into ComfyUI's
input folder when they are not there yet (`nodes/registry.install_example_inputs`).

    .venv/bin/python scripts/make_example_inputs.py   # prints the clip's caption
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ltx_core.training import captions, data
from ltx_core.video import write_mp4

OUT = Path(__file__).resolve().parent.parent / "workflows" / "input"
SPEC = data.ClipSpec(
    main=data.Shape("yellow", "square", "up", "fast", x=0.5, y=0.76, size=0.14),
    background="dark blue",
    background_style="gradient",
    texture_phase=0.0,
)


def main() -> None:
    assert not data.is_heldout_triple(SPEC.main.color, SPEC.main.shape, SPEC.main.motion)
    video = data.render_clip(SPEC, 25, 256, 256)  # (3, F, H, W) in [-1, 1]
    frames = ((video + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frames[0]).save(OUT / "ltxv-example.png", optimize=True)
    Image.fromarray(frames[-1]).save(OUT / "ltxv-example-last.png", optimize=True)
    gray = torch.from_numpy(frames).float().mean(dim=-1, keepdim=True) / 255
    depth = ((gray - gray.amin()) / (gray.amax() - gray.amin())).expand(-1, -1, -1, 3)
    write_mp4(depth, OUT / "ltxv-example-control.mp4", 24.0)
    print(captions.caption(SPEC))


if __name__ == "__main__":
    main()
