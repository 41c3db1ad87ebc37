"""Attention kernels beyond torch's own, and models whose attention bypasses dispatch.

- **FlashAttention 3** (Hopper, bf16). diffusers' ``_flash_3`` backend calls FA3's
  ``flash_attn_func`` when the ``flash_attn_3`` distribution is installed. The
  forward-only build ``fa3-fwd`` (the ``cuda`` extra) ships the same kernel and the
  same function under the module name ``fa3_fwd_interface``, which diffusers does not
  look for; :func:`enable_flash_attention_3` hands that function to diffusers'
  backend, so the backend's checks, its compile-friendly custom op and its context
  parallel path all stay diffusers' own.
- **CogVideoX** calls ``F.scaled_dot_product_attention`` itself, so no backend choice
  reaches it. :class:`CogVideoXDispatchProcessor` is diffusers' processor with the one
  call routed through ``dispatch_attention_fn``; :func:`dispatch_cogvideox_attention`
  installs it.

Importing this module does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CogVideoXDispatchProcessor",
    "dispatch_cogvideox_attention",
    "enable_flash_attention_3",
    "routes_attention",
]


def enable_flash_attention_3() -> bool:
    """Make diffusers' ``_flash_3`` backend usable; whether it is.

    True when diffusers found FA3 by itself, or when ``fa3_fwd_interface`` imports (then
    its ``flash_attn_func`` becomes the backend's kernel). False off such a machine.
    """
    from diffusers.models import attention_dispatch as dispatch

    if getattr(dispatch, "_CAN_USE_FLASH_ATTN_3", False):
        return True
    try:
        fa3 = importlib.import_module("fa3_fwd_interface")
    except Exception:  # not installed, or built for another CUDA or torch
        return False
    # the module globals diffusers' backend reads at call time
    setattr(dispatch, "flash_attn_3_func", fa3.flash_attn_func)  # noqa: B010
    setattr(dispatch, "flash_attn_3_varlen_func", getattr(fa3, "flash_attn_varlen_func", None))  # noqa: B010
    setattr(dispatch, "_CAN_USE_FLASH_ATTN_3", True)  # noqa: B010
    return True


def routes_attention(model: Any) -> bool:
    """Whether ``model``'s attention goes through diffusers' backend dispatch."""
    return any(
        hasattr(getattr(m, "processor", None), "_attention_backend") for m in model.modules()
    )


class CogVideoXDispatchProcessor:
    """diffusers' ``CogVideoXAttnProcessor2_0`` with attention through the dispatcher.

    Same projections, norms, rotary embedding and output split; only the attention call
    differs: ``dispatch_attention_fn`` on (batch, sequence, heads, head_dim), so the
    backend that ``set_attention_backend`` chose runs here too.
    """

    _attention_backend: Any = None
    _parallel_config: Any = None

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any,
        attention_mask: Any = None,
        image_rotary_emb: Any = None,
    ) -> tuple[Any, Any]:
        import torch

        text_len = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch, length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query, key, value = (
            proj(hidden_states).unflatten(2, (attn.heads, -1))
            for proj in (attn.to_q, attn.to_k, attn.to_v)
        )  # (B, S, H, D), contiguous: the layout the kernels (and FA3's compiled op) expect
        if attn.norm_q is not None:  # over head_dim, so any layout
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:  # diffusers' rotary embedding wants (B, H, S, D)
            query = _rotate(query, image_rotary_emb, text_len)
            if not attn.is_cross_attention:
                key = _rotate(key, image_rotary_emb, text_len)
        out = self._attend(query, key, value, attention_mask, text_len)
        out = attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(hidden_states)))
        encoder_out, out = out.split([text_len, out.size(1) - text_len], dim=1)
        return out, encoder_out

    def _attend(self, query: Any, key: Any, value: Any, mask: Any, text_len: int) -> Any:
        """Attention over the joint sequence (the first ``text_len`` tokens are the text),
        tensors (B, S, H, D); engine.parallel.joint splits it across ranks."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        return dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )


def _rotate(x: Any, rotary: Any, text_len: int) -> Any:
    """The rotary embedding on the video tokens of ``x`` (B, S, H, D), as diffusers'
    processor applies it; returned contiguous in (B, S, H, D)."""
    from diffusers.models.embeddings import apply_rotary_emb

    x = x.transpose(1, 2).clone()
    x[:, :, text_len:] = apply_rotary_emb(x[:, :, text_len:], rotary)
    return x.transpose(1, 2).contiguous()


def dispatch_cogvideox_attention(transformer: Any) -> int:
    """Give each of a CogVideoX transformer's attention layers the dispatching processor;
    the number of layers changed (0 for other models, or when already done)."""
    from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

    changed = 0
    for module in transformer.modules():
        if isinstance(getattr(module, "processor", None), CogVideoXAttnProcessor2_0):
            module.set_processor(CogVideoXDispatchProcessor())
            changed += 1
    return changed
