"""Lightricks' release configs: the `configs/*.yaml` files of its LTX-Video repository, which
hold each release's published inference settings, read as its `inference.py` reads them.

The official script hands the whole file to its pipeline as keyword arguments, so a field
means what the pipeline's `__call__` makes of it, and a field it leaves out takes that
call's default. A "multi-scale" file runs two passes: `first_pass` at the requested size
times `downscale_factor` (to the latent grid), then the spatial upscaler doubles the latent,
and `second_pass` re-noises it to its first sigma and denoises it at twice the first size.
The top-level pass fields are shared by both passes, each pass's own overriding them; a
"base" file is one pass made of the top-level fields.

Relative model paths resolve next to the YAML (the official script looks in its working
folder and then on the Hugging Face Hub); the raw value is kept, so a flag can override
it. No torch here: the command line reads a config before it imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from .errors import SettingsError
from .models.configs import SchedulerConfig
from .preflight import STG_MODES

# one pass and two chained ones, with their value checks; PassSettings is read from here too
from .release_passes import (
    MultiScaleSettings,
    PassSettings,
    _check_bool,
    _check_fraction,
    _is_number,
    multi_scale_sizes,
)

PIPELINE_TYPES = ("base", "multi-scale")
SAMPLERS = ("from_checkpoint", "uniform", "linear-quadratic")
PRECISIONS = ("bfloat16", "float8_e4m3fn", "mixed_precision")
# The official script's short names of the STG modes, which it also accepts in any case.
STG_MODE_ALIASES = {
    "stg_av": "attention_values",
    "stg_as": "attention_skip",
    "stg_r": "residual",
    "stg_t": "transformer_block",
}

# What the pipeline's `__call__` takes per pass; with the official defaults (PassSettings).
PASS_FIELDS = (
    "timesteps",
    "num_inference_steps",
    "skip_initial_inference_steps",
    "skip_final_inference_steps",
    "guidance_scale",
    "stg_scale",
    "rescaling_scale",
    "guidance_timesteps",
    "skip_block_list",
    "cfg_star_rescale",
    "tone_map_compression_ratio",
    "stochastic_sampling",
)
MULTI_SCALE_FIELDS = ("downscale_factor", "spatial_upscaler_model_path", "first_pass", "second_pass")
PROMPT_ENHANCER_FIELDS = (
    "prompt_enhancement_words_threshold",
    "prompt_enhancer_image_caption_model_name_or_path",
    "prompt_enhancer_llm_model_name_or_path",
)
TOP_FIELDS = (
    "pipeline_type",
    "checkpoint_path",
    "precision",
    "text_encoder_model_name_or_path",
    "sampler",
    "stg_mode",
    "decode_timestep",
    "decode_noise_scale",
    *MULTI_SCALE_FIELDS,
    *PASS_FIELDS,
    *PROMPT_ENHANCER_FIELDS,
)
# Settings of the official script's command line that a config cannot hold (`seed` would be
# swallowed unused by the pipeline's **kwargs; a size would clash with the script's own).
COMMAND_LINE_FIELDS = (
    "seed",
    "prompt",
    "negative_prompt",
    "height",
    "width",
    "num_frames",
    "frame_rate",
    "output_path",
    "offload_to_cpu",
    "input_media_path",
    "image_cond_noise_scale",
    "conditioning_media_paths",
    "conditioning_strengths",
    "conditioning_start_frames",
)

ASSETS = Path(__file__).resolve().parent / "assets" / "release_configs"
# Every YAML of the official configs/ folder, by its file name: "ltxv-13b-0.9.8-distilled".
PRESETS: Mapping[str, Path] = MappingProxyType({path.stem: path for path in sorted(ASSETS.glob("*.yaml"))})


# ---------------------------------------------------------------- the whole file


@dataclass(frozen=True)
class ReleaseConfig:
    """A release config as the official script uses it (`load_release_config`).

    `first_pass` is the only pass of a "base" config; `second_pass`, `downscale_factor` and
    the spatial upscaler belong to "multi-scale" ones. `*_path` are resolved, `*_path_raw`
    as written. `decode_noise_scale` left out is `decode_timestep`, as in the official
    pipeline. `notes` say what was read but is ignored, and why.
    """

    pipeline_type: str
    checkpoint_path: Path
    checkpoint_path_raw: str
    precision: str
    text_encoder_model_name_or_path: str
    first_pass: PassSettings
    second_pass: PassSettings | None = None
    downscale_factor: float | None = None
    spatial_upscaler_model_path: Path | None = None
    spatial_upscaler_model_path_raw: str | None = None
    text_encoder_path: Path | None = None  # a folder of that name next to the YAML; None: a Hub repo id
    sampler: str | None = "from_checkpoint"
    stochastic_sampling: bool = False
    stg_mode: str = "attention_values"
    decode_timestep: float = 0.0
    decode_noise_scale: float | None = None
    source: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        _check_choice("pipeline_type", self.pipeline_type, PIPELINE_TYPES)
        _check_choice("precision", self.precision, PRECISIONS)
        # the official script: no sampler is the checkpoint's, and "Uniform" is "uniform"
        sampler = self.sampler or "from_checkpoint"
        sampler = sampler.lower() if isinstance(sampler, str) else sampler
        object.__setattr__(self, "sampler", _check_choice("sampler", sampler, SAMPLERS))
        object.__setattr__(self, "stg_mode", _stg_mode(self.stg_mode))
        _check_bool("stochastic_sampling", self.stochastic_sampling)
        _check_fraction("decode_timestep", self.decode_timestep, "the VAE decoder's noise level")
        if self.decode_noise_scale is None:
            object.__setattr__(self, "decode_noise_scale", self.decode_timestep)
        _check_fraction("decode_noise_scale", self.decode_noise_scale, "the noise mixed in before decoding")
        for name in ("checkpoint_path_raw", "text_encoder_model_name_or_path"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise SettingsError(
                    f"{name.removesuffix('_raw')} {getattr(self, name)!r} is not allowed; allowed: a file name or path"
                )
        if self.pipeline_type == "multi-scale":
            self._check_multi_scale()
        else:
            self._check_base()

    def _check_multi_scale(self) -> None:
        for name in ("second_pass", "downscale_factor", "spatial_upscaler_model_path"):
            if getattr(self, name) is None:
                raise SettingsError(f"{name} is missing; a multi-scale config needs {', '.join(MULTI_SCALE_FIELDS)}")
        self.multi_scale()  # the factor and how the passes chain

    def _check_base(self) -> None:
        for name in ("second_pass", "downscale_factor", "spatial_upscaler_model_path"):
            if getattr(self, name) is not None:
                raise SettingsError(f"{name} is read only when pipeline_type is multi-scale, not base")

    @property
    def passes(self) -> tuple[PassSettings, ...]:
        return (self.first_pass,) if self.second_pass is None else (self.first_pass, self.second_pass)

    @property
    def is_multi_scale(self) -> bool:
        return self.pipeline_type == "multi-scale"

    def multi_scale(self) -> MultiScaleSettings | None:
        """The two passes as the multi-scale pipeline runs them; None for a base config."""
        if not self.is_multi_scale:
            return None
        return MultiScaleSettings(self.first_pass, self.second_pass, self.downscale_factor, self.stg_mode)

    def pass_sizes(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """(height, width) each pass runs at for a requested size (the official script's
        size padded to the latent grid); see `release_passes.multi_scale_sizes`."""
        if self.downscale_factor is None:
            return ((height, width),)
        return multi_scale_sizes(height, width, self.downscale_factor)

    def scheduler(self, checkpoint: SchedulerConfig) -> SchedulerConfig:
        """The schedule the passes' sigmas come from: the checkpoint's for "from_checkpoint";
        otherwise the official script builds `RectifiedFlowScheduler(sampler=...)`, whose
        default is no shifting at all, so the spacing is used as it is."""
        if self.sampler == "from_checkpoint":
            return checkpoint
        return SchedulerConfig(use_dynamic_shifting=False, shift=1.0, shift_terminal=None, sampler=self.sampler)


# ---------------------------------------------------------------- reading a file


def load_release_config(path) -> ReleaseConfig:
    """A release config file, relative model paths resolved next to it."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"release config {path} does not exist or is not a file")
    return parse_release_config(path.read_text(encoding="utf-8"), str(path), path.resolve().parent)


def release_config_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def load_preset(name: str, model_dir=".") -> ReleaseConfig:
    """A shipped official config by name; its model file names resolve in `model_dir`."""
    if name not in PRESETS:
        raise SettingsError(f"release config {name!r} is not known; known: {', '.join(PRESETS)}")
    return parse_release_config(
        PRESETS[name].read_text(encoding="utf-8"), str(PRESETS[name]), Path(model_dir).resolve()
    )


def parse_release_config(text: str, source: str, base_dir: Path) -> ReleaseConfig:
    """A config's YAML text; every error names `source`."""
    try:
        fields = yaml.safe_load(text)
        if not isinstance(fields, dict):
            raise SettingsError(f"holds {type(fields).__name__}, not a mapping of fields")
        return _build(fields, Path(base_dir), source)
    except yaml.YAMLError as error:
        raise SettingsError(f"release config {source} is not valid YAML: {error}") from None
    except SettingsError as error:
        raise SettingsError(f"release config {source}: {error}") from None


def _build(fields: dict, base_dir: Path, source: str) -> ReleaseConfig:
    _refuse_unknown(fields, TOP_FIELDS, "")
    notes = _enhancer_notes(fields)
    pipeline_type = _check_choice("pipeline_type", fields.get("pipeline_type", "base"), PIPELINE_TYPES)
    first, second = _passes(fields, pipeline_type, notes)
    checkpoint, checkpoint_raw = _model_path(fields, "checkpoint_path", base_dir, required=True)
    upscaler, upscaler_raw = _model_path(fields, "spatial_upscaler_model_path", base_dir, required=False)
    text_encoder = _required(fields, "text_encoder_model_name_or_path")
    return ReleaseConfig(
        pipeline_type=pipeline_type,
        checkpoint_path=checkpoint,
        checkpoint_path_raw=checkpoint_raw,
        precision=_required(fields, "precision"),
        text_encoder_model_name_or_path=text_encoder,
        first_pass=first,
        second_pass=second,
        downscale_factor=fields.get("downscale_factor"),
        spatial_upscaler_model_path=upscaler,
        spatial_upscaler_model_path_raw=upscaler_raw,
        text_encoder_path=_local_folder(text_encoder, base_dir),
        sampler=fields.get("sampler"),
        stochastic_sampling=fields.get("stochastic_sampling", False),
        stg_mode=fields.get("stg_mode", "attention_values"),
        decode_timestep=fields.get("decode_timestep", 0.0),
        decode_noise_scale=fields.get("decode_noise_scale"),
        source=source,
        notes=tuple(notes),
    )


def _passes(fields: dict, pipeline_type: str, notes: list[str]) -> tuple[PassSettings, PassSettings | None]:
    shared = {name: fields[name] for name in PASS_FIELDS if name in fields}
    if pipeline_type == "base":
        for name in MULTI_SCALE_FIELDS:
            if name in fields:
                raise SettingsError(f"{name} is read only when pipeline_type is multi-scale, not base")
        single = _pass_settings(shared, "", notes)
        if single.skip_initial_inference_steps:
            notes.append(
                "skip_initial_inference_steps needs an input video to denoise (video-to-video): "
                "the official pipeline refuses it otherwise"
            )
        return single, None
    first = _pass_settings(_pass_fields(fields, "first_pass", shared), "first_pass", notes)
    second = _pass_settings(_pass_fields(fields, "second_pass", shared), "second_pass", notes)
    if first.tone_map_compression_ratio:
        notes.append(
            "first_pass.tone_map_compression_ratio is ignored: the official pipeline tone-maps only "
            "the latent it decodes, the second pass's"
        )
    return first, second


def _refuse_unknown(fields: dict, known: tuple[str, ...], scope: str) -> None:
    for name in fields:
        if name in known:
            continue
        hint = ""
        if name in COMMAND_LINE_FIELDS:
            hint = f" ({name} is a setting of the official script's command line, not of its config)"
        elif scope and name in TOP_FIELDS:
            hint = f" ({name} is a top-level field)"
        where = f"{scope}." if scope else ""
        raise SettingsError(
            f"unknown field '{where}{name}'{hint}; the known fields of {scope or 'a config'}: {', '.join(known)}"
        )


def _pass_fields(fields: dict, name: str, shared: dict) -> dict:
    """A multi-scale pass: the top-level pass fields, overridden by the pass's own, as the
    official `LTXMultiScalePipeline` updates the call's arguments with each pass's dict."""
    own = fields.get(name)
    if own is None:
        raise SettingsError(f"{name} is missing; a multi-scale config needs {', '.join(MULTI_SCALE_FIELDS)}")
    if not isinstance(own, dict):
        raise SettingsError(f"{name} {own!r} is not allowed; allowed: a mapping of pass fields")
    _refuse_unknown(own, PASS_FIELDS, name)
    return {**shared, **own}


def _pass_settings(values: dict, name: str, notes: list[str]) -> PassSettings:
    where = f"{name}." if name else ""
    values = dict(values)
    if values.get("timesteps") is not None:
        # the official pipeline takes the published sigmas and ignores the step counts
        given = [
            field
            for field in ("num_inference_steps", "skip_initial_inference_steps", "skip_final_inference_steps")
            if values.pop(field, None) is not None
        ]
        if given:
            notes.append(f"{where}{', '.join(given)} ignored: {where}timesteps are given, as in the official pipeline")
    values = _cfg_at_least_one(values, where, notes)
    try:
        return PassSettings(**values)
    except SettingsError as error:
        raise SettingsError(f"{where}{error}" if where else str(error)) from None


def _cfg_at_least_one(values: dict, where: str, notes: list[str]) -> dict:
    """The official pipeline runs CFG only above 1, so a scale in [0, 1) means no CFG; this
    core's guidance would run CFG with it, so it is read as 1, and a note says so."""
    scale = values.get("guidance_scale")
    items = scale if isinstance(scale, list) else [scale]
    raised = [1.0 if _is_number(v) and 0 <= v < 1 else v for v in items]
    if scale is None or raised == items:
        return values
    values["guidance_scale"] = raised if isinstance(scale, list) else raised[0]
    notes.append(
        f"{where}guidance_scale {scale} read as {values['guidance_scale']}: the official pipeline runs "
        "classifier-free guidance only above 1"
    )
    return values


def _enhancer_notes(fields: dict) -> list[str]:
    read = [name for name in PROMPT_ENHANCER_FIELDS if name in fields]
    if not read:
        return []
    threshold = fields.get("prompt_enhancement_words_threshold")
    official = (
        f"the official script rewrites prompts under {threshold} words with an image captioner and an LLM"
        if _is_number(threshold) and threshold > 0
        else "enhancement is off in this file"
    )
    return [
        f"{', '.join(read)} read and ignored: this project ships no prompt-enhancer models, so prompts are "
        f"used as written ({official})"
    ]


def _model_path(fields: dict, name: str, base_dir: Path, required: bool) -> tuple[Path | None, str | None]:
    raw = _required(fields, name) if required else fields.get(name)
    if raw is None:
        return None, None
    if not isinstance(raw, str) or not raw.strip():
        raise SettingsError(f"{name} {raw!r} is not allowed; allowed: a file name or path")
    return base_dir / raw, raw  # an absolute raw path stays as it is


def _local_folder(name: str, base_dir: Path) -> Path | None:
    # a Hub repo id ("PixArt-alpha/PixArt-XL-2-1024-MS") also reads as a relative path
    candidate = base_dir / name if isinstance(name, str) else None
    return candidate if candidate is not None and candidate.is_dir() else None


def _required(fields: dict, name: str):
    if fields.get(name) is None:
        raise SettingsError(f"{name} is missing; the official script needs it and has no default")
    return fields[name]


# ---------------------------------------------------------------- value checks


def _check_choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SettingsError(f"{name} {value!r} is not known; allowed: {', '.join(allowed)}")
    return value


def _stg_mode(value) -> str:
    mode = value.lower() if isinstance(value, str) else value
    mode = STG_MODE_ALIASES.get(mode, mode)
    if mode not in STG_MODES:
        raise SettingsError(
            f"stg_mode {value!r} is not known; allowed: {', '.join(STG_MODES)} "
            f"(or the official short names {', '.join(STG_MODE_ALIASES)})"
        )
    return mode
