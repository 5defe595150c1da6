"""Frozen configs of every published LTX-Video version, beside tiny ones for tests.

Field names are the official checkpoint metadata's (the `config` entry of the single
`.safetensors` file), so reading a config from a file is a filter, not a translation.
Each model owner edits only its own section below.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace  # noqa: F401 (replace: for users of the configs)

from ..errors import SettingsError

# The VAE's configs live in `vae_config`; they are gathered here so every config is found in one place.
from .vae_config import (
    FRAMES_PER_LATENT as FRAMES_PER_LATENT,
    LTXV_VAE_0_9_0 as LTXV_VAE_0_9_0,
    LTXV_VAE_0_9_1 as LTXV_VAE_0_9_1,
    LTXV_VAE_0_9_5 as LTXV_VAE_0_9_5,
    LTXV_VAE_BY_FAMILY as LTXV_VAE_BY_FAMILY,
    PIXELS_PER_LATENT as PIXELS_PER_LATENT,
    TINY_VAE as TINY_VAE,
    TINY_VAE_0_9_0 as TINY_VAE_0_9_0,
    TINY_VAE_0_9_1 as TINY_VAE_0_9_1,
    TINY_VAE_0_9_5 as TINY_VAE_0_9_5,
    VAE_DECODER_STRIDES as VAE_DECODER_STRIDES,
    VAE_ENCODER_STRIDES as VAE_ENCODER_STRIDES,
    VAE_SCALE as VAE_SCALE,
    VAEBlock as VAEBlock,
    VAEConfig as VAEConfig,
)

# ---------------------------------------------------------------- transformer section

# The one value each setting takes in every published checkpoint, and the only one
# `ltx_core.models.transformer` implements (Lightricks' code also knows the others).
_TRANSFORMER_CHOICES = {
    "activation_fn": ("gelu-approximate",),
    "adaptive_norm": ("single_scale_shift",),
    "standardization_norm": ("rms_norm",),
    "qk_norm": ("rms_norm",),
}

# Metadata settings that are no field of ours but change the model where they differ.
_TRANSFORMER_FIXED = {
    "positional_embedding_type": "rope",
    "only_cross_attention": False,
    "double_self_attention": False,
}

# Lightricks' `Transformer3DModel.__init__` defaults, used for a field the metadata lacks.
# in_channels, caption_channels and the two RoPE fields have none: they are required.
_LIGHTRICKS_TRANSFORMER_DEFAULTS = {
    "num_layers": 1,
    "num_attention_heads": 16,
    "attention_head_dim": 88,
    "out_channels": None,  # None: as many as in_channels
    "cross_attention_dim": None,
    "attention_bias": False,
    "activation_fn": "geglu",
    "adaptive_norm": "single_scale_shift",
    "standardization_norm": "layer_norm",
    "norm_elementwise_affine": True,
    "norm_eps": 1e-5,
    "qk_norm": None,
    "timestep_scale_multiplier": None,
    "causal_temporal_positioning": False,
    "positional_embedding_type": "rope",
    "only_cross_attention": False,
    "double_self_attention": False,
}


@dataclass(frozen=True)
class TransformerConfig:
    """The video DiT of paper 2.2, named as the metadata's `config["transformer"]`.

    Defaults are the 2B model's. `causal_temporal_positioning` is read by whoever builds
    the RoPE coordinates (`rope.pixel_coords(causal_fix=...)`), as in Lightricks' pipeline.
    """

    num_layers: int = 28
    num_attention_heads: int = 32
    attention_head_dim: int = 64
    in_channels: int = 128
    out_channels: int = 128
    caption_channels: int = 4096  # T5-XXL width
    cross_attention_dim: int = 2048
    attention_bias: bool = True
    activation_fn: str = "gelu-approximate"
    adaptive_norm: str = "single_scale_shift"
    standardization_norm: str = "rms_norm"
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    qk_norm: str = "rms_norm"
    positional_embedding_theta: float = 10000.0
    # Coordinates (seconds, pixels, pixels) that RoPE maps to fractional position 1 (2.2.1).
    positional_embedding_max_pos: tuple[int, int, int] = (20, 2048, 2048)
    timestep_scale_multiplier: float | None = 1000.0  # sigma in [0, 1] -> t in [0, 1000]
    causal_temporal_positioning: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def __post_init__(self):
        for name in (
            "num_layers",
            "num_attention_heads",
            "attention_head_dim",
            "in_channels",
            "out_channels",
            "caption_channels",
            "cross_attention_dim",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(f"transformer config: {name} is {value!r}; allowed: a positive integer")
        for name, allowed in _TRANSFORMER_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise SettingsError(
                    f"transformer config: {name} {getattr(self, name)!r} is not supported; "
                    f"allowed: {', '.join(map(repr, allowed))} (every published LTX-Video "
                    "checkpoint uses it)"
                )
        if self.cross_attention_dim != self.inner_dim:
            # The caption projection maps text to the model width, so attn2's keys and
            # values take inner_dim inputs (Lightricks' Transformer3DModel).
            raise SettingsError(
                f"transformer config: cross_attention_dim {self.cross_attention_dim} must "
                f"equal num_attention_heads * attention_head_dim = {self.inner_dim}"
            )
        if self.inner_dim % 2:  # RoPE rotates channel pairs across the full width (2.2.1)
            raise SettingsError(
                f"transformer config: num_attention_heads * attention_head_dim = {self.inner_dim} is odd; "
                "allowed: an even width (RoPE rotates channels in pairs)"
            )
        max_pos = self.positional_embedding_max_pos
        if (
            not isinstance(max_pos, tuple)
            or len(max_pos) != 3
            or not all(isinstance(v, (int, float)) and v > 0 for v in max_pos)
        ):
            raise SettingsError(
                f"transformer config: positional_embedding_max_pos is {max_pos!r}; allowed: "
                "a tuple of three positive numbers (frames, height, width)"
            )
        if not self.positional_embedding_theta > 1:
            raise SettingsError(
                f"transformer config: positional_embedding_theta is "
                f"{self.positional_embedding_theta!r}; allowed: a number above 1"
            )

    @classmethod
    def from_metadata(cls, transformer_config: dict) -> TransformerConfig:
        """From `json.loads(metadata["config"])["transformer"]` of an official file.

        Keeps our fields, fills absent ones with Lightricks' defaults, ignores settings
        that do nothing at inference (dropout, attention_type, ...), and raises
        SettingsError for a value this implementation does not support.
        """
        if not isinstance(transformer_config, dict):
            raise SettingsError(
                f"transformer metadata is a {type(transformer_config).__name__}; allowed: "
                "the dict under the checkpoint metadata's config['transformer']"
            )
        settings = {**_LIGHTRICKS_TRANSFORMER_DEFAULTS, **transformer_config}
        for name, value in _TRANSFORMER_FIXED.items():
            if settings[name] != value:
                raise SettingsError(
                    f"transformer metadata: {name} {settings[name]!r} is not supported; allowed: {value!r}"
                )
        required = ("in_channels", "caption_channels", "positional_embedding_theta", "positional_embedding_max_pos")
        missing = [name for name in required if settings.get(name) is None]
        if missing:
            raise SettingsError(
                f"transformer metadata lacks {', '.join(missing)}; an official LTX-Video file names them all"
            )
        if settings["out_channels"] is None:
            settings["out_channels"] = settings["in_channels"]
        if isinstance(settings["positional_embedding_max_pos"], list):
            settings["positional_embedding_max_pos"] = tuple(settings["positional_embedding_max_pos"])
        known = cls.__dataclass_fields__
        return cls(**{name: value for name, value in settings.items() if name in known})


# 0.9.0 and 0.9.1: time coordinates without the causal fix.
LTXV_2B_0_9_0 = TransformerConfig()
# 0.9.5, 0.9.6 and the 0.9.8 2B models: the same weights' layout, causal time coordinates.
LTXV_2B_0_9_5 = replace(LTXV_2B_0_9_0, causal_temporal_positioning=True)
# 0.9.7 and 0.9.8 13B: 48 layers, 32 heads x 128 = 4096 wide.
LTXV_13B_0_9_7 = replace(LTXV_2B_0_9_5, num_layers=48, attention_head_dim=128, cross_attention_dim=4096)
LTXV_2B = LTXV_2B_0_9_0
LTXV_13B = LTXV_13B_0_9_7
# 2 heads x 8 = 16 wide: 16 % 6 == 4, so RoPE pads as in the 13B model (4096 % 6 == 4).
TINY_TRANSFORMER = replace(
    LTXV_2B_0_9_5,
    num_layers=2,
    num_attention_heads=2,
    attention_head_dim=8,
    caption_channels=32,
    cross_attention_dim=16,
)
# A tiny transformer whose linear layers are 256 wide, the GGUF K-quants' block: quantized
# files of every type hold it (tests and dry runs of the quantized-checkpoint benchmark).
TINY_TRANSFORMER_WIDE = replace(TINY_TRANSFORMER, attention_head_dim=128, cross_attention_dim=256)


# ---------------------------------------------------------------- scheduler section


# How the unshifted sigmas are spaced (Lightricks' `RectifiedFlowScheduler.sampler`):
# "uniform" is linspace(1, 1/steps, steps); "linear-quadratic" steps linearly through the
# first half down to 1 - 0.025, then quadratically to 0.
SCHEDULE_SAMPLERS = ("uniform", "linear-quadratic")
# Lightricks' spelling in checkpoint metadata -> ours (their configs' `sampler:` is ours)
LIGHTRICKS_SAMPLERS = {"Uniform": "uniform", "LinearQuadratic": "linear-quadratic"}


@dataclass(frozen=True)
class SchedulerConfig:
    """Flow-matching sigma schedule; field names are diffusers' `scheduler_config.json`
    of `Lightricks/LTX-Video`, which LTXPipeline drives (paper 2.5.2: the shift grows
    with the token count, so larger videos spend more steps at high noise)."""

    use_dynamic_shifting: bool = True
    base_shift: float = 0.95
    max_shift: float = 2.05
    base_image_seq_len: int = 1024
    max_image_seq_len: int = 4096
    shift_terminal: float | None = 0.1
    time_shift_type: str = "exponential"
    shift: float = 1.0  # the fixed shift, used only without dynamic shifting
    # the spacing before any shift: Lightricks' RectifiedFlowScheduler `sampler`
    # (SCHEDULE_SAMPLERS; checkpoint metadata spells them as LIGHTRICKS_SAMPLERS' keys)
    sampler: str = "uniform"

    def __post_init__(self):
        if self.sampler not in SCHEDULE_SAMPLERS:
            raise ValueError(f"scheduler sampler {self.sampler!r} is unknown; allowed: {', '.join(SCHEDULE_SAMPLERS)}")
        if self.time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"time_shift_type {self.time_shift_type!r} is unknown; allowed: 'exponential' or 'linear'")
        if self.shift_terminal is not None and not 0.0 <= self.shift_terminal < 1.0:
            raise ValueError(f"shift_terminal {self.shift_terminal} must be in [0, 1) or None")


LTXV_SCHEDULER = SchedulerConfig()
