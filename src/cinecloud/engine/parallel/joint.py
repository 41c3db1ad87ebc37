"""Context parallel for joint text-video attention (CogVideoX, HunyuanVideo).

These transformers attend over one sequence of text and video tokens in every block, and
diffusers 0.42 has no context parallel plan for them. Splitting that sequence as it
comes would go wrong: every rank holds the same text, so diffusers' Ulysses and ring
paths, which assume each rank holds a distinct slice, would attend to the text keys once
per rank. The split here:

- the video tokens (and their rotary embedding) are split along the sequence over the
  ``ring x ulysses`` ranks by diffusers' own split and gather hooks, with the plans
  below; the text stream stays whole on every rank;
- in each attention, :func:`joint_attention` gives every video query and every text
  query all the keys once (the whole video and the text) and sends each output back to
  its rank:

  1. Ulysses (degree U): the video queries, keys and values go through diffusers'
     all-to-all (sequence gathered, heads scattered), so a rank holds its Ulysses
     group's video tokens for H/U heads. The text, the same everywhere, is cut to the
     same heads in place (no message).
  2. Ring (degree R): the ring ranks' video keys and values are all-gathered, as
     diffusers' ring attention also does before its loop; then one attention call runs
     over all of them and the text. One call, rather than a loop of partial results
     merged by log-sum-exp, runs on every attention backend and takes HunyuanVideo's
     text mask as it is.
  3. The video output goes back through the reverse all-to-all (all heads, the rank's
     own tokens); the text output (H/U heads) is all-gathered over the Ulysses group,
     so every rank again holds the whole text stream. Ring ranks compute the same text
     output (the text queries are a small part of the work).

The result is the serial attention with the sums in another order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from diffusers.models._modeling_parallel import (
    ContextParallelConfig,
    ContextParallelInput,
    ContextParallelOutput,
)
from diffusers.models.attention_dispatch import _all_to_all_dim_exchange, dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb

from cinecloud.engine.attention import CogVideoXDispatchProcessor

__all__ = [
    "COGVIDEOX_PLAN",
    "HUNYUAN_PLAN",
    "JOINT_FAMILIES",
    "CogVideoXSplitProcessor",
    "HunyuanSplitProcessor",
    "JointSplit",
    "enable_joint_attention",
    "joint_attention",
]

_ROTARY_HALF = ContextParallelInput(split_dim=0, expected_dims=2)

# CogVideoX: the pipeline passes the rotary embedding (cos, sin) of the video tokens, each
# (S, D), split at the model's input; the video tokens are split where block 0 takes them
# (after the patch embedding, which adds positions to the joint sequence); the output is
# gathered after proj_out, before the unpatchify.
COGVIDEOX_PLAN: dict[str, Any] = {
    "": {"image_rotary_emb": [_ROTARY_HALF, _ROTARY_HALF]},
    "transformer_blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

# HunyuanVideo: the video tokens are split as the patch embedding makes them, and the
# rotary embedding as the model makes it; the model then builds its attention mask for the
# local video and the whole text, whose text part the processors read.
HUNYUAN_PLAN: dict[str, Any] = {
    "x_embedder": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
    "rope": {
        0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}

JOINT_FAMILIES = ("cogvideox-t2v", "hunyuan-t2v")


@dataclass(frozen=True)
class JointSplit:
    """The process groups of one rank's joint attention."""

    ulysses: Any
    ring: Any

    @classmethod
    def of(cls, config: ContextParallelConfig) -> JointSplit:
        """The groups of diffusers' context parallel config (after its ``setup``)."""
        return cls(ulysses=config._ulysses_mesh.get_group(), ring=config._ring_mesh.get_group())

    @property
    def ulysses_size(self) -> int:
        return int(dist.get_world_size(self.ulysses))

    @property
    def ring_size(self) -> int:
        return int(dist.get_world_size(self.ring))


QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _all_gather(x: torch.Tensor, dim: int, group: Any) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def _heads_of_rank(x: torch.Tensor, group: Any) -> torch.Tensor:
    """The block of heads (dim 2) that Ulysses' all-to-all leaves on this rank."""
    return x.chunk(dist.get_world_size(group), dim=2)[dist.get_rank(group)]


def _split_qkv(video: QKV, text: QKV, split: JointSplit) -> tuple[QKV, QKV]:
    """Steps 1 and 2: this rank's video queries and all the video keys and values, and the
    text, all for this rank's heads."""
    if split.ulysses_size > 1:
        video = tuple(_all_to_all_dim_exchange(x, 2, 1, split.ulysses) for x in video)  # type: ignore[assignment]
        text = tuple(_heads_of_rank(x, split.ulysses) for x in text)  # type: ignore[assignment]
    query, key, value = video
    if split.ring_size > 1:
        key, value = _all_gather(key, 1, split.ring), _all_gather(value, 1, split.ring)
    return (query, key, value), text


def joint_attention(
    video: QKV,
    text: QKV,
    *,
    text_first: bool,
    text_mask: torch.Tensor | None,
    split: JointSplit | None,
    backend: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over text and video tokens, joined as the model joins them.

    ``video`` and ``text`` are (query, key, value), each (batch, tokens, heads, head_dim):
    the rank's video tokens and the whole text. ``text_mask`` (batch, text tokens; True
    where a key counts) or None. With ``split`` the video is spread over its ranks (see
    the module); with None this is the plain attention of the tokens given. Returns the
    video output (the rank's tokens) and the text output (all of it), all heads.
    """
    if split is not None:
        video, text = _split_qkv(video, text, split)
    text_len, video_keys = text[1].shape[1], video[1].shape[1]
    q, k, v = (
        torch.cat((t, x) if text_first else (x, t), dim=1) for x, t in zip(video, text, strict=True)
    )
    mask = None
    if text_mask is not None:
        if text_mask.dtype != torch.bool:
            raise ValueError(f"the text mask must be boolean (got {text_mask.dtype})")
        ones = torch.ones(text_mask.shape[0], video_keys, dtype=torch.bool, device=text_mask.device)
        keys = (text_mask, ones) if text_first else (ones, text_mask)
        mask = torch.cat(keys, dim=1)[:, None, None, :]
    out = dispatch_attention_fn(q, k, v, attn_mask=mask, backend=backend)
    video_len = out.shape[1] - text_len
    text_out, video_out = (
        out.split([text_len, video_len], dim=1)
        if text_first
        else reversed(out.split([video_len, text_len], dim=1))
    )
    if split is not None and split.ulysses_size > 1:
        video_out = _all_to_all_dim_exchange(video_out.contiguous(), 1, 2, split.ulysses)
        text_out = _all_gather(text_out, 2, split.ulysses)
    return video_out, text_out


# ---------------------------------------------------------------- CogVideoX


class CogVideoXSplitProcessor(CogVideoXDispatchProcessor):
    """CogVideoX's joint attention (text first) with the video split across ranks."""

    def __init__(self, split: JointSplit | None, backend: Any = None) -> None:
        self.split = split
        self._attention_backend = backend

    def _attend(self, query: Any, key: Any, value: Any, mask: Any, text_len: int) -> Any:
        if mask is not None:
            raise ValueError("CogVideoX context parallel runs without an attention mask")
        lengths = [text_len, query.shape[1] - text_len]
        text, video = zip(*(x.split(lengths, dim=1) for x in (query, key, value)), strict=True)
        video_out, text_out = joint_attention(
            video,  # type: ignore[arg-type]
            text,  # type: ignore[arg-type]
            text_first=True,
            text_mask=None,
            split=self.split,
            backend=self._attention_backend,
        )
        return torch.cat([text_out, video_out], dim=1)


# ---------------------------------------------------------------- HunyuanVideo


def _project(attn: Any, x: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    """Query, key, value of ``x`` by ``attn``'s layers ``names``, as (B, S, H, D)."""
    return [getattr(attn, name)(x).unflatten(2, (attn.heads, -1)) for name in names]


def _norm(layer: Any, x: torch.Tensor) -> torch.Tensor:
    return x if layer is None else layer(x)  # type: ignore[no-any-return]


def _rotate(x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """diffusers' rotary embedding on ``x`` (B, S, H, D); ``rotary`` is (cos, sin), each
    (S, D), this rank's part."""
    out: torch.Tensor = apply_rotary_emb(x, rotary, sequence_dim=1)  # type: ignore[arg-type,assignment]
    return out


def _text_mask(mask: torch.Tensor | None, text_len: int) -> torch.Tensor | None:
    """The text keys' part (batch, text tokens) of HunyuanVideo's key mask (batch, 1, 1,
    video tokens + text tokens), which the model builds for this rank's video."""
    return None if mask is None else mask.reshape(mask.shape[0], -1)[:, -text_len:]


class HunyuanSplitProcessor:
    """diffusers' ``HunyuanVideoAttnProcessor2_0`` (video first, then text) with the
    video split across ranks: the same projections, norms, rotary embedding and output
    layers for both the dual-stream blocks (text through the ``add_*`` layers) and the
    single-stream ones (one set of layers for both); the attention is
    :func:`joint_attention`."""

    def __init__(self, split: JointSplit | None, backend: Any = None) -> None:
        self.split = split
        self._attention_backend = backend

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is None:
            raise ValueError("HunyuanVideo's joint attention needs the text stream")
        dual = attn.add_q_proj is not None
        text_names = (
            ("add_q_proj", "add_k_proj", "add_v_proj") if dual else ("to_q", "to_k", "to_v")
        )
        vq, vk, vv = _project(attn, hidden_states, ("to_q", "to_k", "to_v"))
        tq, tk, tv = _project(attn, encoder_hidden_states, text_names)
        vq, vk = _norm(attn.norm_q, vq), _norm(attn.norm_k, vk)
        if dual:
            tq, tk = _norm(attn.norm_added_q, tq), _norm(attn.norm_added_k, tk)
        else:
            tq, tk = _norm(attn.norm_q, tq), _norm(attn.norm_k, tk)
        if image_rotary_emb is not None:
            vq, vk = _rotate(vq, image_rotary_emb), _rotate(vk, image_rotary_emb)
        video_out, text_out = joint_attention(
            (vq, vk, vv),
            (tq, tk, tv),
            text_first=False,
            text_mask=_text_mask(attention_mask, encoder_hidden_states.shape[1]),
            split=self.split,
            backend=self._attention_backend,
        )
        video, text = (x.flatten(2, 3).to(vq.dtype) for x in (video_out, text_out))
        if getattr(attn, "to_out", None) is not None:
            video = attn.to_out[1](attn.to_out[0](video))
        if getattr(attn, "to_add_out", None) is not None:
            text = attn.to_add_out(text)
        return video, text


# ---------------------------------------------------------------- applying it


def _joint_layers(transformer: Any, family: str) -> list[Any]:
    """The attention layers of ``family``'s transformer blocks."""
    if family == "cogvideox-t2v":
        return [block.attn1 for block in transformer.transformer_blocks]
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    return [block.attn for block in blocks]


def enable_joint_attention(transformer: Any, family: str, config: ContextParallelConfig) -> None:
    """Give ``family``'s attention layers the split processors for ``config``'s groups."""
    if family not in JOINT_FAMILIES:
        raise ValueError(f"{family} has no joint text-video attention")
    if getattr(transformer.config, "image_condition_type", None) is not None:
        raise ValueError("context parallel runs HunyuanVideo text-to-video only")
    split = JointSplit.of(config)
    processor_class = (
        CogVideoXSplitProcessor if family == "cogvideox-t2v" else HunyuanSplitProcessor
    )
    for layer in _joint_layers(transformer, family):
        backend = getattr(layer.processor, "_attention_backend", None)
        layer.set_processor(processor_class(split, backend))
