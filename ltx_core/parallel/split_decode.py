"""The VAE decode split along time across ranks, with the same frames as one process.

Each rank decodes a run of consecutive latent frames. The decoder's 3-D convolutions
pad time by repeating the edge frame; inside the clip that edge must be the neighbour's
real frames instead, so before every time convolution each rank sends its border frames
to its neighbours, point to point (one frame each side for the released non-causal
decoders, two in front for a causal one), and pads with theirs. Everything else in the
decoder is per position (pixel/layer norm, 1x1 shortcuts, depth-to-space) or per video
(the timestep embedding, the injected noise, drawn per (H, W) and shared by all frames),
so the pieces equal the single-process decode. Each temporal upsampler drops the first frame of the
clip (latent frame 0 holds one pixel frame, paper 2.1): only rank 0 owns it.

    vae = TimeSplitVAE(vae)            # group: the default one (all ranks)
    video = vae.decode(latent, ...)    # as CausalVideoVAE.decode, on every rank
"""

from __future__ import annotations

import contextlib
from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import SettingsError
from ..models.vae_layers import CausalConv3d, DepthToSpaceUpsample, depth_to_space
from .collectives import communicate, gather_along


def time_split(frames: int, parts: int, min_frames: int) -> list[int] | None:
    """Latent frames per rank, as even as possible (the first ranks take the rest); None
    when the clip is too short for every rank to hold `min_frames`."""
    if frames < parts * min_frames:
        return None
    base, rest = divmod(frames, parts)
    return [base + (1 if rank < rest else 0) for rank in range(parts)]


def exchange_borders(x: Tensor, front: int, back: int, group: dist.ProcessGroup | None) -> tuple[Tensor, Tensor]:
    """(the previous rank's last `front` frames, the next rank's first `back` frames) of
    x (B, C, F, H, W), point to point; at the clip's ends the edge frame repeated, as
    `CausalConv3d` pads."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    peer = partial(dist.get_global_rank, group) if group is not None else (lambda r: r)
    before = x[:, :, :1].expand(-1, -1, front, -1, -1)
    after = x[:, :, -1:].expand(-1, -1, back, -1, -1)
    ops = []
    if front and rank > 0:
        before = x.new_empty(*x.shape[:2], front, *x.shape[3:])  # dense: the collectives write so
        ops.append(dist.P2POp(dist.irecv, before, peer(rank - 1), group))
    if front and rank < size - 1:
        ops.append(dist.P2POp(dist.isend, x[:, :, x.shape[2] - front :].contiguous(), peer(rank + 1), group))
    if back and rank > 0:
        ops.append(dist.P2POp(dist.isend, x[:, :, :back].contiguous(), peer(rank - 1), group))
    if back and rank < size - 1:
        after = x.new_empty(*x.shape[:2], back, *x.shape[3:])
        ops.append(dist.P2POp(dist.irecv, after, peer(rank + 1), group))
    if ops:
        for request in communicate(dist.batch_isend_irecv, ops):
            communicate(request.wait)
    return before, after


def _halo_conv(conv: CausalConv3d, group: dist.ProcessGroup | None, x: Tensor, causal: bool = True) -> Tensor:
    """`CausalConv3d.forward` on a time shard: the neighbours' border frames where the
    single-process conv sees them, the replicated edge frame only at the clip's ends."""
    pad = conv.time_kernel_size - 1
    front, back = (pad, 0) if causal else (pad // 2, pad // 2)
    if x.shape[2] < max(front, back):
        raise RuntimeError(
            f"a time shard of {x.shape[2]} frames cannot lend the {max(front, back)} border frames "
            "its neighbour's convolution needs"
        )
    before, after = exchange_borders(x, front, back, group)
    return conv.conv(torch.cat([before, x, after], dim=2))


def _upsample_keeping_first(block: DepthToSpaceUpsample, x: Tensor, causal: bool = True) -> Tensor:
    """`DepthToSpaceUpsample.forward` for ranks past 0: their first frame is not the clip's."""
    out = depth_to_space(block.conv(x, causal), block.stride)
    return block._add_residual(out, x) if block.residual else out


@contextlib.contextmanager
def _time_sharded(decoder: nn.Module, group: dist.ProcessGroup | None):
    """Swap the decoder's time convolutions and upsamplers for their sharded forms."""
    patched = []
    for module in decoder.modules():
        if isinstance(module, nn.GroupNorm):
            raise SettingsError(
                "this VAE's decoder uses group norm, whose statistics span all frames; "
                "the time-split decode takes pixel- or layer-norm decoders (every released VAE)"
            )
        if isinstance(module, CausalConv3d):
            if module.conv.stride[0] != 1:
                raise SettingsError("the time-split decode takes decoders without strided time convolutions")
            module.forward = partial(_halo_conv, module, group)
            patched.append(module)
        elif isinstance(module, DepthToSpaceUpsample) and module.stride[0] == 2 and dist.get_rank(group) > 0:
            module.forward = partial(_upsample_keeping_first, module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # the class's forward shows through again


def gather_frames(video: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """Concatenate the ranks' (B, C, F_r, H, W) pieces in time; F_r may differ (rank 0
    holds the clip's first, single-frame latent)."""
    counts = gather_along(torch.tensor([video.shape[2]], device=video.device), 0, group).tolist()
    padded = torch.nn.functional.pad(video, (0, 0, 0, 0, 0, max(counts) - video.shape[2]))
    pieces = gather_along(padded, 0, group).split(video.shape[0])
    return torch.cat([piece[:, :, :count] for piece, count in zip(pieces, counts)], dim=2)


class TimeSplitVAE:
    """A `CausalVideoVAE` whose `decode` splits the latent's frames across `group`'s ranks
    (default: all) and returns the whole video on every rank; everything else is the
    VAE's own. A clip with fewer latent frames than ranks (two per rank for a causal
    decoder) is decoded whole on every rank."""

    def __init__(self, vae: nn.Module, group: dist.ProcessGroup | None = None):
        self.vae = vae
        self.group = group

    def __getattr__(self, name):  # encode, cfg, spatial_compression, ... are the VAE's
        if name == "vae":
            raise AttributeError(name)
        return getattr(self.vae, name)

    def parameters(self):  # the pipeline reads device and dtype from here
        return self.vae.parameters()

    def decode(self, latent: Tensor, *args, **kwargs) -> Tensor:
        """As `CausalVideoVAE.decode` (same noise, same frames)."""
        decoder = self.vae.decoder
        whole = decoder.forward
        decoder.forward = partial(self._decode_shard, whole)
        try:
            return self.vae.decode(latent, *args, **kwargs)
        finally:
            del decoder.forward

    def _decode_shard(
        self,
        whole,
        z: Tensor,
        timestep: Tensor | None = None,
        generator: torch.Generator | None = None,
        time_chunk: int | None = None,
    ) -> Tensor:
        """Decoder.forward on this rank's frames of the raw latent z, gathered."""
        if time_chunk is not None:  # its windows would read past the shard, where the neighbours' frames are
            raise SettingsError(
                "time_chunk does not combine with the time-split decode across ranks, "
                "which already splits the decode in time; leave it None"
            )
        decoder, group = self.vae.decoder, self.group
        sizes = time_split(z.shape[2], dist.get_world_size(group), 2 if decoder.causal else 1)
        if sizes is None:
            return whole(z, timestep, generator)
        rank = dist.get_rank(group)
        start = sum(sizes[:rank])
        with _time_sharded(decoder, group):
            piece = whole(z[:, :, start : start + sizes[rank]], timestep, generator)
        return gather_frames(piece, group)
