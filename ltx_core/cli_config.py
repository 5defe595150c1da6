"""Lightricks' release configs on the command line: `--config FILE.yaml` or `--preset NAME`.

The config's settings become the run's defaults and flags given on the command line win:
the parser is built again with the config's values as its defaults (argparse's
`set_defaults`), so only what the command line leaves out comes from the file. A base
config is one pass: the sampling flags given (--steps, --cfg, --stg-*) replace its
values. A multi-scale config sets those per pass in the file, so there they are refused
rather than applied to two passes they were not written for. The config's notes (what
it holds that this project reads but does not use) go to stderr.

Model paths in the config resolve next to the YAML (a preset's in the working folder),
--checkpoint / --upsampler override them; every path, the upsampler's header and the
checkpoint's allowed timesteps (distilled models' metadata) are checked before any
weight is read. No torch at module level: the command line reads a config first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import SettingsError
from .release_config import ReleaseConfig, load_preset, load_release_config, release_config_names
from .release_passes import MultiScaleSettings, PassSettings


class _Unset:
    """The default a per-pass flag gets while a config is read, so a given flag shows."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()
# The flags a config sets per pass: their dest -> (flag, the PassSettings field).
PASS_FLAGS = {
    "steps": ("--steps", "num_inference_steps"),
    "cfg": ("--cfg", "guidance_scale"),
    "stg_scale": ("--stg-scale", "stg_scale"),
    "stg_blocks": ("--stg-blocks", "skip_block_list"),
    "stg_rescale": ("--stg-rescale", "rescaling_scale"),
}
# The official `precision` -> the --dtype it runs in here, and what differs.
PRECISION_DTYPES = {"bfloat16": "bf16", "mixed_precision": "bf16", "float8_e4m3fn": "bf16"}
PRECISION_NOTES = {
    "mixed_precision": "precision mixed_precision (fp32 weights under bf16 autocast) runs with bf16 weights here "
                       "(--dtype bf16); --dtype fp32 keeps every weight in fp32",
    "float8_e4m3fn": "precision float8_e4m3fn (Lightricks' Q8 kernels) runs in bf16 here; add --fp8 for this "
                     "project's FP8 linear layers (a CUDA GPU of compute capability 8.9+)",
}  # fmt: skip


def add_config_flags(generate: argparse.ArgumentParser) -> None:
    group = generate.add_argument_group("Lightricks' release configs (the published settings of each model)")
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="an official config file (configs/*.yaml "
        "of Lightricks/LTX-Video): its settings are the defaults, flags given win; its model paths "
        "resolve next to it",
    )
    source.add_argument(
        "--preset",
        choices=release_config_names(),
        metavar="NAME",
        help="a shipped official "
        "config by name, its model files looked up in the working folder: " + ", ".join(release_config_names()),
    )
    group.add_argument(
        "--upsampler",
        type=Path,
        help="the spatial upscaler a multi-scale config runs between its "
        "passes (default: the config's spatial_upscaler_model_path)",
    )
    group.add_argument(
        "--stochastic-sampling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Lightricks' stochastic steps, each re-noising its estimate (default: the config's; on for the "
        "shipped tiny model, whose plain steps draw no shape from some noise draws; else off)",
    )


# ---------------------------------------------------------------- reading the config


def apply_release_config(args: argparse.Namespace, argv: list[str], build_parser) -> argparse.Namespace:
    """`args` with the config's settings as defaults, parsed again from `argv` by
    `build_parser(defaults)`; `release` (None without a config) and `given` (the sampling
    flags given) set."""
    args.release, args.given = None, {}
    if getattr(args, "command", None) != "generate" or (args.config is None and args.preset is None):
        return args
    release = load_release_config(args.config) if args.config is not None else load_preset(args.preset, Path.cwd())
    configured = build_parser({**config_defaults(release), **dict.fromkeys(PASS_FLAGS, UNSET)}).parse_args(argv)
    configured.given = {dest: value for dest in PASS_FLAGS if (value := getattr(configured, dest)) is not UNSET}
    for dest in PASS_FLAGS:  # the flag, or the command line's own default, for the checks and the metadata
        setattr(configured, dest, getattr(args, dest))
    configured.release = release
    if release.is_multi_scale and configured.given:
        flags = ", ".join(PASS_FLAGS[dest][0] for dest in configured.given)
        raise SettingsError(
            f"{flags} cannot be applied to a multi-scale config, which sets them per pass "
            f"(first_pass, second_pass in {release.source}); edit a copy of the file and pass it "
            "with --config"
        )
    return configured


def config_defaults(release: ReleaseConfig) -> dict:
    """The flags' defaults a config gives (argparse dests)."""
    defaults = dict(
        checkpoint=release.checkpoint_path,
        dtype=PRECISION_DTYPES[release.precision],
        stg_mode=release.stg_mode,
        decode_timestep=release.decode_timestep,
        decode_noise_scale=release.decode_noise_scale,
        upsampler=release.spatial_upscaler_model_path,
    )
    if release.text_encoder_path is not None:  # a folder of that name next to the YAML
        defaults["text_encoder"] = release.text_encoder_path
    return defaults


def _print_notes(release: ReleaseConfig | None) -> None:
    if release is None or os.environ.get("RANK", "0") != "0":  # once per run, not per rank
        return
    for note in (*release.notes, *filter(None, [PRECISION_NOTES.get(release.precision)])):
        print(f"note: {note}", file=sys.stderr)


# ---------------------------------------------------------------- the run's passes, before torch


def check_config_run(args: argparse.Namespace) -> None:
    """The config's paths and passes with the flags applied: `config_pass` (a base
    config's one pass), `multi_scale` (a multi-scale config's two) and `pass_sizes` set."""
    release = args.release
    args.config_pass, args.multi_scale, args.pass_sizes = None, None, ((args.height, args.width),)
    if args.upsampler is not None and (release is None or not release.is_multi_scale):
        raise SettingsError("--upsampler is read only with a multi-scale release config (--config or --preset)")
    if release is None:
        return
    _require_config_path(args.checkpoint, release.checkpoint_path, "checkpoint_path", "--checkpoint", release)
    _check_text_encoder(args, release)
    if release.is_multi_scale:
        _require_config_path(
            args.upsampler, release.spatial_upscaler_model_path, "spatial_upscaler_model_path", "--upsampler", release
        )
    try:
        if release.is_multi_scale:
            args.multi_scale = _multi_scale(release, args)
            args.pass_sizes = args.multi_scale.pass_sizes(args.height, args.width)
        else:
            args.config_pass = _base_pass(release, args)
    except SettingsError as error:
        raise SettingsError(f"release config {release.source} with the flags given: {error}") from None


def _require_config_path(path: Path, configured: Path, field: str, flag: str, release: ReleaseConfig) -> None:
    if path.exists():
        return
    if path == configured:
        raise SettingsError(
            f"{field} {str(path)!r} of release config {release.source} does not exist; put the "
            f"file there or pass {flag}"
        )
    raise SettingsError(f"{flag} {str(path)!r} does not exist")


def _check_text_encoder(args: argparse.Namespace, release: ReleaseConfig) -> None:
    if args.text_encoder is None and not (args.checkpoint / "text_encoder").is_dir():
        raise SettingsError(
            f"release config {release.source} names the text encoder "
            f"{release.text_encoder_model_name_or_path!r}, which is no folder next to it; pass "
            "--text-encoder (the T5 v1.1 XXL encoder folder or .safetensors file)"
        )


def _base_pass(release: ReleaseConfig, args: argparse.Namespace) -> PassSettings:
    """The base config's pass with the sampling flags given in place of its values."""
    changes = {PASS_FLAGS[dest][1]: value for dest, value in args.given.items()}
    if "num_inference_steps" in changes:  # --steps: the scheduler's steps instead of published timesteps
        changes["timesteps"] = None
    if args.stochastic_sampling is not None:
        changes["stochastic_sampling"] = args.stochastic_sampling
    return replace(release.first_pass, **changes)


def _multi_scale(release: ReleaseConfig, args: argparse.Namespace) -> MultiScaleSettings:
    settings = replace(release.multi_scale(), stg_mode=args.stg_mode)
    if args.stochastic_sampling is None:
        return settings
    flag = args.stochastic_sampling  # a run-level switch, as the config's top-level field is
    return replace(
        settings,
        first_pass=replace(settings.first_pass, stochastic_sampling=flag),
        second_pass=replace(settings.second_pass, stochastic_sampling=flag),
    )


def request_sampling(args: argparse.Namespace) -> dict:
    """The `pipeline.Request` sampling settings: a base config's pass, else the flags (a
    multi-scale run samples with its passes' own, `args.multi_scale`)."""
    p = getattr(args, "config_pass", None)
    if p is None:
        return dict(
            steps=args.steps,
            guidance_scale=args.cfg,
            stg_scale=args.stg_scale,
            stg_blocks=args.stg_blocks if args.stg_scale > 0 else (),
            stg_mode=args.stg_mode,
            stg_rescale=args.stg_rescale,
            stochastic_sampling=bool(args.stochastic_sampling),
        )
    return dict(
        steps=p.num_inference_steps,
        sigmas=p.timesteps,
        skip_initial_steps=p.skip_initial_inference_steps,
        skip_final_steps=p.skip_final_inference_steps,
        guidance_scale=p.guidance_scale,
        stg_scale=p.stg_scale,
        stg_blocks=(p.skip_block_list or ()) if p.uses_stg else (),
        stg_mode=args.stg_mode,
        stg_rescale=p.rescaling_scale,
        guidance_timesteps=p.guidance_timesteps,
        cfg_star_rescale=p.cfg_star_rescale,
        stochastic_sampling=p.stochastic_sampling,
    )


@dataclass(frozen=True)
class PlannedSampling:
    """What the memory plan needs of the sampling: the largest pass's size, the steps of
    all passes, whether any step runs CFG or STG."""

    width: int
    height: int
    steps: int
    guidance: bool
    stg: bool


def planned_sampling(args: argparse.Namespace) -> PlannedSampling:
    passes = getattr(args, "multi_scale", None)
    if passes is not None:  # the second pass runs at twice the first's size: the larger one
        (height, width) = args.pass_sizes[-1]
        return PlannedSampling(
            width,
            height,
            sum(p.steps for p in passes.passes),
            any(p.uses_cfg for p in passes.passes),
            any(p.uses_stg for p in passes.passes),
        )
    p = getattr(args, "config_pass", None)
    if p is not None:
        return PlannedSampling(args.width, args.height, p.steps, p.uses_cfg, p.uses_stg)
    return PlannedSampling(args.width, args.height, args.steps, args.cfg != 1.0, args.stg_scale > 0)


# ---------------------------------------------------------------- with torch, before the weights


def check_before_loading(args: argparse.Namespace, request, info, sources) -> None:
    """The upsampler's header (a spatial one) and the checkpoint's allowed timesteps; then,
    every check passed, the config's notes (so a refused run prints its error alone)."""
    if args.multi_scale is not None:
        from .checkpoint.upsampler import inspect_latent_upsampler

        cfg, _ = inspect_latent_upsampler(args.upsampler)
        if not cfg.spatial_upsample or cfg.temporal_upsample:
            raise SettingsError(
                f"--upsampler {str(args.upsampler)!r} is not a spatial upscaler ({cfg}); the "
                "multi-scale pipeline doubles the first pass in space only: pass "
                "ltxv-spatial-upscaler-*.safetensors"
            )
    allowed = allowed_inference_steps(sources)
    if allowed is not None:
        for where, sigmas in _run_sigmas(args, request, run_scheduler(args, info.configs.scheduler)):
            _check_allowed(where, sigmas, allowed)
    _print_notes(args.release)


def allowed_inference_steps(sources) -> list[float] | None:
    """The checkpoint metadata's `allowed_inference_steps` (distilled models), else None."""
    for header, _ in sources["transformer"].locations.values():
        try:
            return json.loads(header.metadata["config"]).get("allowed_inference_steps")
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
    return None


def _run_sigmas(args: argparse.Namespace, request, scheduler):
    from .models.configs import FRAMES_PER_LATENT, PIXELS_PER_LATENT
    from .multiscale import pass_sigmas

    def tokens(size):
        return (
            ((request.num_frames - 1) // FRAMES_PER_LATENT + 1)
            * (size[0] // PIXELS_PER_LATENT)
            * (size[1] // PIXELS_PER_LATENT)
        )

    if args.multi_scale is None:
        return [("the run", request.sigma_schedule(tokens(args.pass_sizes[0]), scheduler))]
    return [
        (name, pass_sigmas(settings, tokens(size), scheduler))
        for name, settings, size in zip(("first_pass", "second_pass"), args.multi_scale.passes, args.pass_sizes)
    ]


def _check_allowed(where: str, sigmas, allowed: list[float]) -> None:
    # the official pipeline's check: each timestep rounded to 4 places (the final 0 is no step)
    for sigma in sigmas[:-1].tolist():
        if round(sigma, 4) not in allowed:
            raise SettingsError(
                f"timestep {round(sigma, 4)} of {where} is not one this checkpoint allows (its "
                f"metadata's allowed_inference_steps: {allowed}); a distilled model runs only its "
                "published timesteps: use its release config (--preset NAME or --config)"
            )


def run_scheduler(args: argparse.Namespace, checkpoint_scheduler):
    """The checkpoint's scheduler, or the one a config's `sampler` asks for."""
    return checkpoint_scheduler if args.release is None else args.release.scheduler(checkpoint_scheduler)


def with_release_scheduler(models, args: argparse.Namespace):
    """`models` with the config's scheduler where its `sampler` is not the checkpoint's."""
    if args.release is None or args.release.sampler == "from_checkpoint":
        return models
    return replace(models, scheduler=run_scheduler(args, models.scheduler))


def load_upsampler(args: argparse.Namespace, dtype, device):
    if args.multi_scale is None:
        return None
    from .checkpoint.upsampler import load_latent_upsampler

    return load_latent_upsampler(args.upsampler, dtype, device)


def generate_multiscale(models, upsampler, request, settings, callback=None):
    from .multiscale import generate_multiscale as run

    return run(models, upsampler, request, settings, callback=callback)
