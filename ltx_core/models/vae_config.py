"""Frozen configs of the causal video VAE of every published LTX-Video version, beside
tiny ones for tests, and the geometry every published VAE shares (paper 2.1).

Field names are the official checkpoint metadata's; `configs` gathers these with the
transformer's and the scheduler's configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from math import prod
from typing import Any

from ..errors import CheckpointError, SettingsError

# (time, height, width) stride of each encoder block; the decoder mirrors the list in
# reverse (Lightricks `causal_video_autoencoder.Encoder` / `Decoder`).
VAE_ENCODER_STRIDES: dict[str, tuple[int, int, int]] = {
    "res_x": (1, 1, 1),
    "res_x_y": (1, 1, 1),
    "compress_time": (2, 1, 1),
    "compress_space": (1, 2, 2),
    "compress_all": (2, 2, 2),
    "compress_all_x_y": (2, 2, 2),
    "compress_time_res": (2, 1, 1),
    "compress_space_res": (1, 2, 2),
    "compress_all_res": (2, 2, 2),
}
VAE_DECODER_STRIDES: dict[str, tuple[int, int, int]] = {
    "res_x": (1, 1, 1),
    "res_x_y": (1, 1, 1),
    "compress_time": (2, 1, 1),
    "compress_space": (1, 2, 2),
    "compress_all": (2, 2, 2),
}
_VAE_CHOICES = {
    "dims": (3,),
    "norm_layer": ("pixel_norm", "group_norm", "layer_norm"),
    "latent_log_var": ("uniform", "per_channel", "constant"),
    "spatial_padding_mode": ("zeros", "reflect", "replicate", "circular"),
    "normalize_latent_channels": (False,),
}

# One block: (name, ((param, value), ...)), the metadata's `["res_x", {"num_layers": 4}]`
# frozen; a bare count (`["res_x", 4]`) means `{"num_layers": 4}`, as Lightricks reads it.
VAEBlock = tuple[str, tuple[tuple[str, Any], ...]]


def _frozen_blocks(blocks) -> tuple[VAEBlock, ...] | None:
    if blocks is None:
        return None
    frozen = []
    for name, params in blocks:
        params = {"num_layers": params} if isinstance(params, int) else dict(params)
        frozen.append((str(name), tuple(sorted(params.items()))))
    return tuple(frozen)


@dataclass(frozen=True)
class VAEConfig:
    """The causal video VAE (paper 2.1): `config["vae"]` of the official single file.

    Defaults are Lightricks' for a field the metadata leaves out
    (`CausalVideoAutoencoder.from_config`); every released file sets the fields that
    differ. `blocks` serves both halves when `encoder_blocks` / `decoder_blocks` are
    absent (0.9.0); the decoder runs its list in reverse."""

    dims: int = 3
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    blocks: tuple[VAEBlock, ...] | None = None
    encoder_blocks: tuple[VAEBlock, ...] | None = None
    decoder_blocks: tuple[VAEBlock, ...] | None = None
    encoder_base_channels: int = 128
    decoder_base_channels: int = 128
    patch_size: int = 1
    norm_layer: str = "group_norm"
    latent_log_var: str = "per_channel"
    use_quant_conv: bool = True
    causal_decoder: bool = False
    timestep_conditioning: bool = False
    # Lightricks and diffusers pad with zeros when the metadata is silent; current
    # ComfyUI's decoder uses "reflect" then. We follow Lightricks.
    spatial_padding_mode: str = "zeros"
    normalize_latent_channels: bool = False
    scaling_factor: float = 1.0  # unused: latents are normalized per channel

    def __post_init__(self):
        for name in ("blocks", "encoder_blocks", "decoder_blocks"):
            object.__setattr__(self, name, _frozen_blocks(getattr(self, name)))
        if isinstance(self.dims, list):
            object.__setattr__(self, "dims", tuple(self.dims))
        for name, allowed in _VAE_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise SettingsError(
                    f"VAE {name}={getattr(self, name)!r} is not supported; allowed: {', '.join(map(repr, allowed))}"
                )
        if self.use_quant_conv and self.latent_log_var != "per_channel":
            raise SettingsError(
                f"VAE latent_log_var={self.latent_log_var!r} requires use_quant_conv=False (as in Lightricks' code)"
            )
        self._check_blocks("encoder", self.encoder_block_list, VAE_ENCODER_STRIDES)
        self._check_blocks("decoder", self.decoder_block_list, VAE_DECODER_STRIDES)

    @staticmethod
    def _check_blocks(half: str, blocks, known: Mapping[str, Any]) -> None:
        if not blocks:
            raise SettingsError(f"VAE config has no {half} blocks: set `blocks` or `{half}_blocks`")
        for name, _ in blocks:
            if name not in known:
                raise SettingsError(f"VAE {half} block {name!r} is not supported; allowed: {', '.join(known)}")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> VAEConfig:
        """`json.loads(safetensors_metadata["config"])["vae"]` -> config. Keys that are
        not fields (`_class_name`, `double_z`, ...) are dropped after use."""
        class_name = metadata.get("_class_name", "CausalVideoAutoencoder")
        if class_name != "CausalVideoAutoencoder":
            raise CheckpointError(
                f"VAE metadata _class_name {class_name!r} is not 'CausalVideoAutoencoder' (the LTX-Video causal VAE)"
            )
        missing = [k for k in ("dims", "latent_channels") if k not in metadata]
        if missing:
            raise CheckpointError(f"VAE metadata lacks {', '.join(missing)}")
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in metadata.items() if k in names}
        if "latent_log_var" not in metadata:  # Lightricks: derived from double_z
            values["latent_log_var"] = "per_channel" if metadata.get("double_z", True) else "none"
        return cls(**values)

    def to_metadata(self) -> dict[str, Any]:
        """The inverse of `from_metadata`: JSON-ready `config["vae"]` of a single file."""
        metadata: dict[str, Any] = {"_class_name": "CausalVideoAutoencoder"}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("blocks"):
                value = None if value is None else [[n, dict(p)] for n, p in value]
            if value is not None:
                metadata[f.name] = value
        return metadata

    @property
    def encoder_block_list(self) -> tuple[VAEBlock, ...]:
        return self.encoder_blocks if self.encoder_blocks is not None else self.blocks

    @property
    def decoder_block_list(self) -> tuple[VAEBlock, ...]:
        return self.decoder_blocks if self.decoder_blocks is not None else self.blocks

    def _compression(self, axis: int) -> int:
        return prod(VAE_ENCODER_STRIDES[name][axis] for name, _ in self.encoder_block_list)

    @property
    def temporal_compression(self) -> int:
        """Pixel frames per latent frame after the first (8): F = 8 (f - 1) + 1."""
        return self._compression(0)

    @property
    def spatial_compression(self) -> int:
        """Pixels per latent cell along height and width (32)."""
        return self.patch_size * self._compression(1)

    @property
    def decoder_width(self) -> int:
        """Channels after the decoder's first convolution: the base width times every
        channel multiplier of its blocks."""
        width = self.decoder_base_channels
        for name, params in self.decoder_block_list:
            if name == "res_x_y":
                width *= dict(params).get("multiplier", 2)
            elif name == "compress_all":
                width *= dict(params).get("multiplier", 1)
        return width


# 0.9.0 (ltx-video-2b-v0.9): one `blocks` list for both halves, plain decoder.
# Source: Lightricks `ltx_video/utils/diffusers_config_mapping.py` (OURS_VAE_CONFIG),
# identical to ComfyUI `VideoVAE.guess_config(version=0)`; diffusers' 0.9.0 config
# (layers_per_block (4, 3, 3, 3, 4), block_out_channels (128, 256, 512, 512)) agrees.
LTXV_VAE_0_9_0 = VAEConfig(
    dims=3,
    in_channels=3,
    out_channels=3,
    latent_channels=128,
    blocks=(
        ("res_x", 4),
        ("compress_all", 1),
        ("res_x_y", 1),
        ("res_x", 3),
        ("compress_all", 1),
        ("res_x_y", 1),
        ("res_x", 3),
        ("compress_all", 1),
        ("res_x", 3),
        ("res_x", 4),
    ),
    norm_layer="pixel_norm",
    patch_size=4,
    latent_log_var="uniform",
    use_quant_conv=False,
    causal_decoder=False,
)

# 0.9.1 (ltx-video-2b-v0.9.1): the 0.9.0 encoder; a wider timestep-conditioned decoder
# with StyleGAN-like noise injection and residual depth-to-space upsampling (paper 2.1).
# Source: ComfyUI `VideoVAE.guess_config(version=1)`, the same JSON quoted in diffusers'
# `scripts/convert_ltx_to_diffusers.py` ("previous decoder" comment) and consistent with
# its 0.9.1 config (decoder_block_out_channels (256, 512, 1024), decoder layers
# (5, 6, 7, 8), decoder_inject_noise (True, True, True, False), upsample_factor 2).
LTXV_VAE_0_9_1 = VAEConfig(
    dims=3,
    in_channels=3,
    out_channels=3,
    latent_channels=128,
    encoder_blocks=(
        ("res_x", {"num_layers": 4}),
        ("compress_all", {}),
        ("res_x_y", 1),
        ("res_x", {"num_layers": 3}),
        ("compress_all", {}),
        ("res_x_y", 1),
        ("res_x", {"num_layers": 3}),
        ("compress_all", {}),
        ("res_x", {"num_layers": 3}),
        ("res_x", {"num_layers": 4}),
    ),
    decoder_blocks=(
        ("res_x", {"num_layers": 5, "inject_noise": True}),
        ("compress_all", {"residual": True, "multiplier": 2}),
        ("res_x", {"num_layers": 6, "inject_noise": True}),
        ("compress_all", {"residual": True, "multiplier": 2}),
        ("res_x", {"num_layers": 7, "inject_noise": True}),
        ("compress_all", {"residual": True, "multiplier": 2}),
        ("res_x", {"num_layers": 8, "inject_noise": False}),
    ),
    norm_layer="pixel_norm",
    patch_size=4,
    latent_log_var="uniform",
    use_quant_conv=False,
    causal_decoder=False,
    timestep_conditioning=True,
)

# 0.9.5 and later (0.9.5, 0.9.6, 0.9.7, 0.9.8; 2B and 13B share this VAE layout): a new
# encoder of space-to-depth residual downsamplers with channel multipliers, and a decoder
# without noise injection. Source: ComfyUI `VideoVAE.guess_config(version=2)`; diffusers'
# conversion script uses one config for "0.9.5" and "0.9.7" (block_out_channels
# (128, 256, 512, 1024, 2048), layers (4, 6, 6, 2, 2), downsample_type spatial,
# temporal, spatiotemporal, spatiotemporal; decoder layers (5, 5, 5, 5)).
LTXV_VAE_0_9_5 = VAEConfig(
    dims=3,
    in_channels=3,
    out_channels=3,
    latent_channels=128,
    encoder_blocks=(
        ("res_x", {"num_layers": 4}),
        ("compress_space_res", {"multiplier": 2}),
        ("res_x", {"num_layers": 6}),
        ("compress_time_res", {"multiplier": 2}),
        ("res_x", {"num_layers": 6}),
        ("compress_all_res", {"multiplier": 2}),
        ("res_x", {"num_layers": 2}),
        ("compress_all_res", {"multiplier": 2}),
        ("res_x", {"num_layers": 2}),
    ),
    decoder_blocks=(
        ("res_x", {"num_layers": 5, "inject_noise": False}),
        ("compress_all", {"residual": True, "multiplier": 2}),
        ("res_x", {"num_layers": 5, "inject_noise": False}),
        ("compress_all", {"residual": True, "multiplier": 2}),
        ("res_x", {"num_layers": 5, "inject_noise": False}),
        ("compress_all", {"residual": True, "multiplier": 2}),
        ("res_x", {"num_layers": 5, "inject_noise": False}),
    ),
    norm_layer="pixel_norm",
    patch_size=4,
    latent_log_var="uniform",
    use_quant_conv=False,
    causal_decoder=False,
    timestep_conditioning=True,
)
LTXV_VAE_BY_FAMILY = {"0.9.0": LTXV_VAE_0_9_0, "0.9.1": LTXV_VAE_0_9_1, "0.9.5": LTXV_VAE_0_9_5}

# Every published VAE (each LTXV_VAE_* above) compresses 8 frames and 32 x 32 pixels into
# one latent token (paper 2.1): (frames, rows, columns) of pixels per token. For code with
# no VAE at hand: RoPE coordinates, sizes checked before a model is loaded, an empty latent.
VAE_SCALE = (8, 32, 32)
FRAMES_PER_LATENT, PIXELS_PER_LATENT = VAE_SCALE[0], VAE_SCALE[1]


def _tiny_vae(cfg: VAEConfig) -> VAEConfig:
    """Same block list (so patch 4, 32x32x8 compression and the diffusers key layout
    hold), one layer per block, 8 base channels; latent_channels stays 128."""

    def one_layer(blocks):
        if blocks is None:
            return None
        return tuple(
            (name, {**dict(params), "num_layers": 1} if "num_layers" in dict(params) else dict(params))
            for name, params in blocks
        )

    return replace(
        cfg,
        blocks=one_layer(cfg.blocks),
        encoder_blocks=one_layer(cfg.encoder_blocks),
        decoder_blocks=one_layer(cfg.decoder_blocks),
        encoder_base_channels=8,
        decoder_base_channels=8,
    )


TINY_VAE_0_9_0 = _tiny_vae(LTXV_VAE_0_9_0)
TINY_VAE_0_9_1 = _tiny_vae(LTXV_VAE_0_9_1)
TINY_VAE_0_9_5 = _tiny_vae(LTXV_VAE_0_9_5)
TINY_VAE = TINY_VAE_0_9_5
