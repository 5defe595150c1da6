"""Make the pictures ComfyUI's Templates dialog shows for the shipped workflows: for each
API workflow (workflows/api/NAME.json), the middle frame of the video it makes, generated
by the project CLI (`python -m ltx_core generate`) with the shipped tiny model at the
workflow's prompts, size, frames, seed, steps, CFG, frame rate, dtype, decode settings,
STG, stochastic steps, keyframes, and a long video's windows and prompt segments, saved beside its template
as example_workflows/<title>.jpg.

    .venv/bin/python scripts/make_template_thumbnails.py [NAME ...]   # minutes each on a CPU

A workflow's graph is read node by node: each decode node is one CLI run (its sampler,
latent and keyframes give the options), and ComfyUI's image batch nodes (ImageFromBatch,
ImageBatch) are applied to the frames, so `extend` runs its first clip, then the second
one guided by the first one's last frames, and joins them as the workflow does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from ltx_core import video as core_video  # noqa: E402

# the templates' titles and folders, where the tests that check them keep them
from tests.host.conftest import API_WORKFLOWS_DIR, TEMPLATE_TITLES, TEMPLATES_DIR  # noqa: E402

ASSETS = REPO_ROOT / "ltx_core" / "assets"
INPUTS = REPO_ROOT / "workflows" / "input"  # the images the workflows load by name
CLI_DTYPES = {"default": "fp32", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # default: fp32 on the CPU
JPEG_QUALITY = 90


class Workflow:
    def __init__(self, prompt: dict, work: Path):
        self.prompt, self.work, self.runs = prompt, work, 0

    def node(self, link: list) -> dict:
        return self.prompt[link[0]]

    def frames(self, link: list) -> torch.Tensor:
        """The IMAGE (frames, height, width, 3) in [0, 1] at a node output."""
        node, inputs = self.node(link), self.node(link)["inputs"]
        kind = node["class_type"]
        if kind == "LTXVCoreDenoisingDecode":
            return self.generate(inputs)
        if kind == "ImageFromBatch":
            start = inputs["batch_index"]
            return self.frames(inputs["image"])[start : start + inputs["length"]]
        if kind == "ImageBatch":
            return torch.cat([self.frames(inputs["image1"]), self.frames(inputs["image2"])])
        raise ValueError(f"no rule for a {kind} node")

    def image_file(self, link: list) -> Path:
        """A file the CLI reads as a condition: the loaded image, or the frames as an mp4."""
        node = self.node(link)
        if node["class_type"] == "LoadImage":
            return INPUTS / node["inputs"]["image"]
        path = self.work / f"condition_{link[0]}.mp4"
        core_video.write_mp4(self.frames(link), path, fps=24.0, overwrite=True)
        return path

    def text(self, link: list) -> str:
        return self.node(link)["inputs"]["text"]

    def prompt_options(self, sampler: dict) -> tuple[dict, dict, list[str]]:
        """(the T5 loader's inputs, the prompt options, repeated flags). A long-video
        sampler's first prompt line is --prompt, each `FRAME: prompt` line after it a
        --prompt-segment (the CLI reads the same form), its windows the window options."""
        if "prompts" not in sampler:
            t5_loader = self.node(self.node(sampler["positive"])["inputs"]["t5"])["inputs"]
            texts = {"--prompt": self.text(sampler["positive"]), "--negative-prompt": self.text(sampler["negative"])}
            return t5_loader, texts, []
        first, *later = [line.strip() for line in sampler["prompts"].splitlines() if line.strip()]
        options = {
            "--prompt": first, "--negative-prompt": sampler["negative_prompt"],
            "--window-frames": sampler["window_frames"], "--window-overlap": sampler["window_overlap"],
            "--window-overlap-strength": sampler["overlap_strength"], "--adain-factor": sampler["adain_factor"],
        }  # fmt: skip
        return (
            self.node(sampler["t5"])["inputs"],
            options,
            [part for line in later for part in ("--prompt-segment", line)],
        )

    def generate(self, decode: dict) -> torch.Tensor:
        sampler = self.node(decode["latent"])["inputs"]
        loader = self.node(decode["vae"])["inputs"]
        t5_loader, prompt_options, segments = self.prompt_options(sampler)
        if decode["seed"] != sampler["seed"]:
            raise ValueError("the CLI takes one seed for the noise and the decode")
        options = {
            "--checkpoint": ASSETS / loader["ckpt_name"],
            "--text-encoder": ASSETS / t5_loader["text_encoder_name"],
            "--dtype": CLI_DTYPES[loader["dtype"]], **prompt_options, "--seed": sampler["seed"],
            "--steps": sampler["steps"], "--cfg": sampler["cfg"], "--fps": sampler["frame_rate"],
            "--decode-timestep": decode["timestep"], "--decode-noise-scale": decode["decode_noise_scale"],
        }  # fmt: skip
        if "stg_scale" in sampler:
            options.update(
                {
                    f"--{key.replace('_', '-')}": sampler[key]
                    for key in ("stg_scale", "stg_blocks", "stg_mode", "stg_rescale")
                }
            )
        conditions = []
        latent = self.node(sampler["latent"])
        while latent["class_type"] != "LTXVCoreEmptyLatentVideo":
            inputs = latent["inputs"]
            if latent["class_type"] == "LTXVCoreConditionFirstFrame":
                encode = self.node(inputs["first_frame"])["inputs"]
                conditions.append(f"{self.image_file(encode['image'])}@0:{inputs['strength']}")
            elif latent["class_type"] == "LTXVCoreAddGuide":
                image = self.image_file(inputs["image"])
                conditions.append(f"{image}@{inputs['frame_index']}:{inputs['strength']}")
            else:
                raise ValueError(f"no rule for a {latent['class_type']} latent")
            latent = self.node(inputs["latent"])
        size = latent["inputs"]
        options.update({"--width": size["width"], "--height": size["height"], "--frames": size["frames"]})
        self.runs += 1
        output = self.work / f"run_{self.runs}.mp4"
        command = [sys.executable, "-m", "ltx_core", "generate", "--output", str(output), "--overwrite"]
        command += [str(part) for option, value in options.items() for part in (option, value)]
        command += [part for condition in reversed(conditions) for part in ("--condition", condition)]
        command += segments
        command.append("--stochastic-sampling" if sampler.get("stochastic", False) else "--no-stochastic-sampling")
        subprocess.run(command, check=True, cwd=REPO_ROOT)
        return core_video.read_video_frames(output)


def thumbnail(name: str) -> Path:
    prompt = json.loads((API_WORKFLOWS_DIR / f"{name}.json").read_text())
    [save] = [node for node in prompt.values() if node["class_type"] == "LTXVCoreSaveVideo"]
    with tempfile.TemporaryDirectory() as work:
        frames = Workflow(prompt, Path(work)).frames(save["inputs"]["images"])
    middle = (frames[len(frames) // 2].numpy() * 255).round().astype("uint8")
    path = TEMPLATES_DIR / f"{TEMPLATE_TITLES[name]}.jpg"
    Image.fromarray(middle).save(path, quality=JPEG_QUALITY)
    return path


def main() -> None:
    for name in sys.argv[1:] or TEMPLATE_TITLES:
        print(f"wrote {thumbnail(name).relative_to(REPO_ROOT)}", flush=True)


if __name__ == "__main__":
    main()
