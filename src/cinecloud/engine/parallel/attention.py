"""Context (sequence) parallel attention through diffusers' own machinery.

diffusers 0.42 splits a transformer's sequence with hooks (``apply_context_parallel`` and
a per-model plan of where to split and gather) and runs Ulysses, ring, or both combined
(``_templated_context_parallel_attention``) inside its attention dispatch. We use those
parts as they are, with two gaps filled here:

1. ``ModelMixin.enable_parallelism`` cannot run on a CPU-only machine: it picks the device
   as ``torch.device(accelerator, rank % torch.accelerator.device_count())``, and with no
   accelerator the count is 0, so it divides by zero. :func:`enable_context_parallel`
   does the same steps itself (config setup on our mesh, processors, split hooks) with
   the rank's real device.
2. Ring attention merges partial results by their log-sum-exp, so its attention op must
   return one. The backends that do (cuDNN, flash, sage) run on CUDA only, and the
   ``native`` backend refuses ``return_lse``. On the CPU the native backend is given a
   forward op that returns it (:func:`_cpu_forward_op`, torch's CPU flash kernel); the
   Ulysses path is the same as diffusers' either way.

Only self-attention is split. Cross-attention runs whole on every rank: its query is the
rank's slice of the video tokens and its keys are the full text, which is exact, and it
keeps text masks out of the ring (which would reuse a local mask for remote keys).
LTX-Video's own plan also splits the text; ours (:data:`LTX_PLAN`) does not.

CogVideoX and HunyuanVideo attend over text and video together, and diffusers has no plan
for them: :mod:`.joint` has ours (its own processors, diffusers' split hooks).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks.context_parallel import apply_context_parallel
from diffusers.models import attention_dispatch
from diffusers.models._modeling_parallel import (
    ContextParallelConfig,
    ContextParallelInput,
    ContextParallelOutput,
)
from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallelConfig

from cinecloud.engine.parallel.joint import (
    COGVIDEOX_PLAN,
    HUNYUAN_PLAN,
    JOINT_FAMILIES,
    enable_joint_attention,
)
from cinecloud.engine.parallel.ranks import RankGroup

__all__ = ["LTX_PLAN", "enable_context_parallel", "split_plan"]

# LTX-Video: split the video tokens and their rotary embedding; keep the text whole.
LTX_PLAN: dict[str, Any] = {
    "": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3)},
    "rope": {
        0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
        1: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}


def split_plan(family: str, transformer: Any) -> dict[str, Any]:
    """Where ``family``'s transformer is split and gathered along the sequence."""
    if family == "ltx-t2v":
        return LTX_PLAN
    if family == "cogvideox-t2v":
        return COGVIDEOX_PLAN
    if family == "hunyuan-t2v":
        return HUNYUAN_PLAN
    if family == "wan-t2v":
        # diffusers' Wan plan splits block 0's input and the rotary embedding, gathers
        # at proj_out, and keeps the text whole (Wan's processor skips cross-attention).
        plan: dict[str, Any] = transformer._cp_plan
        return plan
    raise ValueError(f"context parallel is not available for {family}")


def _self_attention_processors(transformer: Any) -> list[Any]:
    """The processors of the transformer's self-attention layers (``attn1``)."""
    found = [m.attn1.processor for m in transformer.modules() if hasattr(m, "attn1")]
    if not found:
        raise ValueError(f"{type(transformer).__name__} has no attn1 layers to split")
    return found


def enable_context_parallel(transformer: Any, family: str, ranks: RankGroup) -> None:
    """Split ``transformer``'s sequence over the ring and Ulysses ranks of ``ranks``."""
    plan = ranks.plan
    config = DiffusersParallelConfig(
        context_parallel_config=ContextParallelConfig(
            ring_degree=plan.ring, ulysses_degree=plan.ulysses, mesh=ranks.mesh
        )
    )
    config.setup(ranks.rank, ranks.world_size, torch.device(ranks.device), mesh=ranks.mesh)
    assert config.context_parallel_config is not None
    if family in JOINT_FAMILIES:  # text and video attended together: our own split
        enable_joint_attention(transformer, family, config.context_parallel_config)
    else:
        for processor in _self_attention_processors(transformer):
            backend = getattr(processor, "_attention_backend", None)
            if backend not in (None, "native"):
                raise ValueError(f"context parallel runs on the native attention (got {backend})")
            processor._parallel_config = config
        if not ranks.device.startswith("cuda"):
            _use_cpu_forward_op()
    transformer._parallel_config = config
    apply_context_parallel(
        transformer, config.context_parallel_config, split_plan(family, transformer)
    )


# ---------------------------------------------------------------- the CPU attention op


def _cpu_forward_op(
    ctx: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    _save_ctx: bool = True,
    _parallel_config: Any = None,
) -> Any:
    """diffusers' native forward op, plus the log-sum-exp that ring attention merges by.

    Tensors are (batch, sequence, heads, dim); the log-sum-exp is (batch, sequence, heads).
    """
    if not return_lse:
        return attention_dispatch._native_attention_forward_op(
            ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
            return_lse, _save_ctx=_save_ctx, _parallel_config=_parallel_config,
        )  # fmt: skip
    if attn_mask is not None:
        raise ValueError("ring attention with an attention mask is not supported")
    q, k, v = (x.transpose(1, 2).contiguous() for x in (query, key, value))
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, dropout_p, is_causal, scale=scale
    )
    return out.transpose(1, 2).contiguous(), lse.transpose(1, 2).contiguous()


_NATIVE = attention_dispatch.AttentionBackendName.NATIVE
_native_original = attention_dispatch._AttentionBackendRegistry._backends[_NATIVE]


def _native_on_cpu(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    _parallel_config: Any = None,
) -> Any:
    """The native backend, with :func:`_cpu_forward_op` under context parallel."""
    if _parallel_config is None:
        return _native_original(
            query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse
        )
    if attn_mask is not None and attn_mask.ndim == 2:
        attn_mask = attn_mask[:, None, None, :]  # as the native backend reshapes it
    return attention_dispatch._templated_context_parallel_attention(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse,
        forward_op=_cpu_forward_op,
        backward_op=attention_dispatch._native_attention_backward_op,
        _parallel_config=_parallel_config,
    )  # fmt: skip


def _use_cpu_forward_op() -> None:
    """Route the native backend through :func:`_native_on_cpu` in this process.

    The registry is diffusers' process-wide table; the replacement behaves exactly as the
    original whenever no parallel config is passed.
    """
    attention_dispatch._AttentionBackendRegistry._backends[_NATIVE] = _native_on_cpu
