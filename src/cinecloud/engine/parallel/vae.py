"""Parallel VAE decode: the latent split in horizontal bands, one per rank.

Each rank decodes its band of rows, and the bands are gathered into the video. To give
the same pixels as a whole decode, every convolution that looks at neighbouring rows
first takes those rows from the ranks above and below (a halo exchange; at the top and
bottom of the image, zero rows or copies of the edge row, as the convolution's own
padding gives), each group norm takes its statistics over the whole frame (each band's
sums, added over the ranks), and each block that mixes all positions of a frame (the Wan
decoder's attention, HunyuanVideo's middle block) runs on the whole frame gathered,
keeping its own band. Everything else in the Wan, LTX-Video, CogVideoX and HunyuanVideo
decoders works on one position (per-pixel norms, activations) or maps rows to rows
(nearest upsampling, pixel shuffle), so bands stay bands. The result equals the serial
decode up to float rounding (convolutions on a band may sum in another order).

A decoder with a layer this cannot split (batch or instance norm, strided or dilated row
convolutions, noise injection) is refused when the plan is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_hunyuan_video import (
    HunyuanVideoCausalConv3d,
    HunyuanVideoMidBlock3D,
)
from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock, WanCausalConv3d
from torch import nn

__all__ = ["RowBands", "enable_parallel_vae"]

# Blocks that mix all positions of a frame: run on the whole frame. HunyuanVideo's middle
# block attends over all positions of all frames (at the latent size, so it is small).
_WHOLE_FRAME_BLOCKS: tuple[type[nn.Module], ...] = (WanAttentionBlock, HunyuanVideoMidBlock3D)
_UNSPLITTABLE: tuple[type[nn.Module], ...] = (
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


class RowBands:
    """The bands of rows of one decode: this rank's, the exchange of halos, the gather."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's band of ``x``'s rows (dim -2); bands differ by at most one row."""
        if x.shape[-2] < self.size:
            raise ValueError(
                f"parallel VAE decode needs at least {self.size} latent rows (got {x.shape[-2]})"
            )
        return x.tensor_split(self.size, dim=-2)[self.rank].contiguous()

    def _gather_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return parts

    def halo(self, x: torch.Tensor, rows: int, *, replicate: bool = False) -> torch.Tensor:
        """``x`` with ``rows`` rows of the bands above and below; at the image edges zeros,
        or with ``replicate`` copies of the edge row."""
        if x.shape[-2] < rows:
            raise ValueError(f"a band of {x.shape[-2]} rows cannot lend a halo of {rows}")
        edges = torch.cat([x[..., :rows, :], x[..., -rows:, :]], dim=-2)
        parts = self._gather_all(edges)
        zeros = torch.zeros_like(x[..., :rows, :])
        top, bottom = (x[..., :1, :], x[..., -1:, :]) if replicate else (zeros, zeros)
        shape = (*x.shape[:-2], rows, x.shape[-1])
        above = parts[self.rank - 1][..., rows:, :] if self.rank > 0 else top.expand(shape)
        below = (
            parts[self.rank + 1][..., :rows, :]
            if self.rank < self.size - 1
            else bottom.expand(shape)
        )
        return torch.cat([above, x, below], dim=-2)

    def total(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` added over the ranks (a copy)."""
        out = x.clone()
        dist.all_reduce(out, group=self.group)
        return out

    def gather(self, x: torch.Tensor, total_in: int, local_in: int) -> torch.Tensor:
        """The whole image from every rank's band ``x``; bands were ``split`` from
        ``total_in`` rows (this one had ``local_in``) and scaled alike."""
        scale, left = divmod(x.shape[-2], local_in)
        if left:
            raise RuntimeError(f"a band of {local_in} rows decoded to {x.shape[-2]} rows")
        sizes = [len(r) * scale for r in torch.arange(total_in).tensor_split(self.size)]
        widest = max(sizes)
        pad = widest - x.shape[-2]
        padded = torch.cat([x, x[..., :pad, :]], dim=-2) if pad else x
        parts = self._gather_all(padded)
        return torch.cat([p[..., :n, :] for p, n in zip(parts, sizes, strict=True)], dim=-2)

    def whole(self, x: torch.Tensor, block: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``block`` run on the whole frame; this rank's band of its output."""
        sizes = self._gather_sizes(x.shape[-2])
        widest = max(sizes)
        pad = widest - x.shape[-2]
        padded = torch.cat([x, x[..., :pad, :]], dim=-2) if pad else x
        parts = self._gather_all(padded)
        full = torch.cat([p[..., :n, :] for p, n in zip(parts, sizes, strict=True)], dim=-2)
        out = block(full)
        start = sum(sizes[: self.rank])
        return out[..., start : start + x.shape[-2], :].contiguous()

    def _gather_sizes(self, rows: int) -> list[int]:
        parts = self._gather_all(torch.tensor([rows], dtype=torch.int64))
        return [int(p.item()) for p in parts]


def _row_halo(conv: nn.Module, padding: int) -> int:
    """How many rows ``conv`` reads beyond a band (its row padding); checks it can split."""
    kernel = conv.kernel_size[-2]  # type: ignore[index]
    stride, dilation = conv.stride[-2], conv.dilation[-2]  # type: ignore[index]
    if stride != 1 or dilation != 1 or kernel != 2 * padding + 1:
        raise ValueError(f"parallel VAE decode cannot split {type(conv).__name__} (rows k{kernel})")
    if getattr(conv, "padding_mode", "zeros") != "zeros":
        raise ValueError("parallel VAE decode needs zero padding in the decoder convolutions")
    return padding


def _split_causal_conv(conv: WanCausalConv3d, bands: RowBands) -> None:
    pad = [int(n) for n in conv._padding]
    rows = _row_halo(conv, pad[2])
    if rows == 0:
        return
    pad[2] = pad[3] = 0
    conv._padding = tuple(pad)  # type: ignore[assignment]
    forward = conv.forward

    def banded(x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        halo_cache = None if cache_x is None else bands.halo(cache_x, rows)
        return forward(bands.halo(x, rows), halo_cache)  # type: ignore[no-any-return]

    conv.forward = banded  # type: ignore[method-assign]


def _split_conv(conv: nn.Conv2d | nn.Conv3d, bands: RowBands) -> None:
    padding = conv.padding
    if isinstance(padding, str):
        raise ValueError(f"parallel VAE decode needs numeric padding (got {padding!r})")
    rows = _row_halo(conv, int(padding[-2]))
    if rows == 0:
        return
    conv.padding = (*padding[:-2], 0, padding[-1])
    forward = conv.forward

    def banded(x: torch.Tensor) -> torch.Tensor:
        return forward(bands.halo(x, rows))

    conv.forward = banded  # type: ignore[method-assign,assignment]


def _split_replicate_conv(conv: HunyuanVideoCausalConv3d, bands: RowBands) -> None:
    """HunyuanVideo's causal convolution pads rows, columns and frames itself (copies of
    the edge, or zeros); the rows come from the neighbours instead."""
    left, right, row_pad, _, front, back = conv.time_causal_padding
    if any(int(n) for n in conv.conv.padding):  # type: ignore[union-attr]
        raise ValueError("parallel VAE decode needs HunyuanVideo's convolutions unpadded")
    rows = _row_halo(conv.conv, row_pad)
    if rows == 0:
        return
    mode, replicate = conv.pad_mode, conv.pad_mode == "replicate"
    if mode not in ("replicate", "constant"):
        raise ValueError(f"parallel VAE decode cannot split {mode} padding")

    def banded(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (left, right, 0, 0, front, back), mode=mode)
        return conv.conv(bands.halo(x, rows, replicate=replicate))  # type: ignore[no-any-return]

    conv.forward = banded  # type: ignore[method-assign,assignment]


def _split_group_norm(norm: nn.GroupNorm, bands: RowBands) -> None:
    """Group norm with the statistics of the whole frame: the sums of every band, added
    (two passes, in float64, for the mean and then the variance)."""

    def banded(x: torch.Tensor) -> torch.Tensor:
        groups = x.reshape(x.shape[0], norm.num_groups, -1).double()
        count = bands.total(torch.tensor(float(groups.shape[-1]), dtype=torch.float64))
        mean = bands.total(groups.sum(-1, keepdim=True)) / count
        var = bands.total((groups - mean).square().sum(-1, keepdim=True)) / count
        out = ((groups - mean) * torch.rsqrt(var + norm.eps)).to(x.dtype).reshape(x.shape)
        if norm.affine:
            view = (1, -1) + (1,) * (x.ndim - 2)
            out = out * norm.weight.reshape(view) + norm.bias.reshape(view)
        return out

    norm.forward = banded  # type: ignore[method-assign,assignment]


def _split_whole(block: nn.Module, bands: RowBands) -> None:
    forward = block.forward

    def banded(x: torch.Tensor) -> torch.Tensor:
        return bands.whole(x, forward)

    block.forward = banded  # type: ignore[method-assign]


def _check_decoder(decoder: nn.Module) -> None:
    for module in decoder.modules():
        if isinstance(module, _UNSPLITTABLE) or getattr(module, "inject_noise", False):
            raise ValueError(f"parallel VAE decode cannot split {type(module).__name__}")


def enable_parallel_vae(vae: Any, group: Any) -> RowBands:
    """Make ``vae.decode`` decode in bands across ``group`` (every rank calls it with the
    same latents and gets the whole video). Tiling is turned off: bands replace it."""
    decoder = vae.decoder
    _check_decoder(decoder)
    bands = RowBands(group)
    done: set[int] = set()
    for module in list(decoder.modules()):
        if id(module) in done:
            continue  # runs on the whole frame with its block, or with its outer layer
        if isinstance(module, _WHOLE_FRAME_BLOCKS):
            _split_whole(module, bands)
            done.update(id(m) for m in module.modules())
        elif isinstance(module, HunyuanVideoCausalConv3d):
            _split_replicate_conv(module, bands)
            done.update(id(m) for m in module.modules())
        elif isinstance(module, nn.GroupNorm):
            _split_group_norm(module, bands)
        elif isinstance(module, WanCausalConv3d):
            _split_causal_conv(module, bands)
        elif isinstance(module, nn.Conv2d | nn.Conv3d):
            _split_conv(module, bands)
    decode = vae.decode

    def banded_decode(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        vae.use_tiling = False
        local = bands.split(z)
        output = decode(local, *args, **kwargs)
        video = output[0] if isinstance(output, tuple) else output.sample
        whole = bands.gather(video, z.shape[-2], local.shape[-2])
        return (whole,) if isinstance(output, tuple) else type(output)(sample=whole)

    vae.decode = banded_decode
    return bands
