"""Parameters of the models, counted from their configs as the modules hold them (a test
compares each count with the built model's state dict)."""

from __future__ import annotations

import math

from ..models.configs import VAE_ENCODER_STRIDES, TransformerConfig, VAEConfig
from .vae_activations import upsampler
from .workload import KERNEL_VOLUME, TIMESTEP_FEATURES


def transformer_params(cfg: TransformerConfig) -> int:
    """Parameters of `LTXVTransformer(cfg)`: the blocks and what surrounds them."""
    dim = cfg.inner_dim
    linear = lambda n_in, n_out, bias=True: n_in * n_out + (n_out if bias else 0)
    outside = (
        linear(cfg.in_channels, dim)
        + linear(TIMESTEP_FEATURES, dim)
        + linear(dim, dim)
        + linear(dim, 6 * dim)
        + linear(cfg.caption_channels, dim)
        + linear(dim, dim)
        + 2 * dim
        + linear(dim, cfg.out_channels)
    )
    return outside + cfg.num_layers * block_params(cfg)


def block_params(cfg: TransformerConfig) -> int:
    """Parameters of one transformer block: what block offloading streams."""
    dim = cfg.inner_dim
    linears, _ = block_linear_params(cfg)
    # the attentions' biases and QK-norm weights, the feed-forward's biases, the
    # modulation table, the norms' weights where they have them
    attention = 2 * (3 * dim * cfg.attention_bias + dim + 2 * dim)
    rest = attention + 5 * dim + 6 * dim + (2 * dim if cfg.norm_elementwise_affine else 0)
    return linears // cfg.num_layers + rest


def block_linear_params(cfg: TransformerConfig) -> tuple[int, int]:
    """(weight parameters, output rows) of the linear layers inside the blocks: what FP8
    quantizes."""
    dim = cfg.inner_dim
    weights = 2 * (3 * dim * dim + dim * dim) + 2 * 4 * dim * dim  # two attentions, feed-forward
    rows = 2 * 4 * dim + 4 * dim + dim
    return cfg.num_layers * weights, cfg.num_layers * rows


def _conv(n_in: int, n_out: int, kernel: int = KERNEL_VOLUME) -> int:
    return n_in * n_out * kernel + n_out


def _norm(cfg: VAEConfig, channels: int) -> int:
    return 0 if cfg.norm_layer == "pixel_norm" else 2 * channels


def _resnet(cfg: VAEConfig, n_in: int, n_out: int, noise: bool = False, timestep: bool = False) -> int:
    params = _norm(cfg, n_in) + _conv(n_in, n_out) + _norm(cfg, n_out) + _conv(n_out, n_out)
    params += 2 * n_in if noise else 0
    params += 2 * n_in + _conv(n_in, n_out, 1) if n_in != n_out else 0
    return params + (4 * n_in if timestep else 0)


def _timestep_mlp(dim: int) -> int:
    return TIMESTEP_FEATURES * dim + dim + dim * dim + dim


def vae_params(cfg: VAEConfig) -> int:
    """Parameters and statistics of `CausalVideoVAE(cfg)`."""
    return (
        encoder_params(cfg)
        + decoder_params(cfg)
        + 5 * cfg.latent_channels
        + (
            (2 * cfg.latent_channels) ** 2 + 2 * cfg.latent_channels + cfg.latent_channels**2 + cfg.latent_channels
            if cfg.use_quant_conv
            else 0
        )
    )


def encoder_params(cfg: VAEConfig) -> int:
    channels = cfg.encoder_base_channels
    params = _conv(cfg.in_channels * cfg.patch_size**2, channels)
    for name, block in cfg.encoder_block_list:
        block = dict(block)
        if name == "res_x":
            params += block["num_layers"] * _resnet(cfg, channels, channels)
            continue
        if name in ("compress_time", "compress_space", "compress_all"):
            params += _conv(channels, channels)
            continue
        out = channels * block.get("multiplier", 2)
        if name == "res_x_y":
            params += _resnet(cfg, channels, out)
        elif name == "compress_all_x_y":
            params += _conv(channels, out)
        else:  # space-to-depth residual downsampler
            params += _conv(channels, out // math.prod(VAE_ENCODER_STRIDES[name]))
        channels = out
    extra = cfg.latent_channels if cfg.latent_log_var == "per_channel" else 1
    return params + _norm(cfg, channels) + _conv(channels, cfg.latent_channels + extra)


def decoder_params(cfg: VAEConfig) -> int:
    channels = cfg.decoder_width
    timestep = cfg.timestep_conditioning
    params = _conv(cfg.latent_channels, channels)
    for name, block in reversed(cfg.decoder_block_list):
        block = dict(block)
        noise = block.get("inject_noise", False)
        if name == "res_x":
            params += block["num_layers"] * _resnet(cfg, channels, channels, noise, timestep)
            params += _timestep_mlp(4 * channels) if timestep else 0
        elif name == "res_x_y":
            out = channels // block.get("multiplier", 2)
            params += _resnet(cfg, channels, out, noise)
            channels = out
        else:
            layer = upsampler(name, block, channels, 1, 1, 1)
            params += _conv(channels, channels * layer.repeats)
            channels = layer.channels_out
    params += _norm(cfg, channels) + _conv(channels, cfg.out_channels * cfg.patch_size**2)
    if timestep:
        params += 1 + _timestep_mlp(2 * channels) + 2 * channels
    return params
