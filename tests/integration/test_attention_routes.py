"""Attention routing: CogVideoX through diffusers' dispatcher gives the same output as
diffusers' own processor, and then follows the chosen backend; FlashAttention 3 from
the forward-only build becomes diffusers' ``_flash_3`` kernel."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from cinecloud.engine.attention import (
    CogVideoXDispatchProcessor,
    dispatch_cogvideox_attention,
    enable_flash_attention_3,
    routes_attention,
)

pytestmark = pytest.mark.integration


def tiny_cogvideox(rotary: bool) -> Any:
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        max_text_seq_length=6,
        use_rotary_positional_embeddings=rotary,
        use_learned_positional_embeddings=False,
    ).eval()
    # non-trivial norms and output layers (the initial ones zero the output)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def inputs(rotary: bool) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(1)
    x = {
        "hidden_states": torch.randn(2, 3, 4, 8, 8, generator=gen),
        "encoder_hidden_states": torch.randn(2, 6, 16, generator=gen),
        "timestep": torch.tensor([10, 500]),
        "return_dict": False,
    }
    if rotary:
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        cos, sin = get_3d_rotary_pos_embed(16, ((0, 0), (4, 4)), (4, 4), 3)
        x["image_rotary_emb"] = (cos, sin)
    return x


@pytest.mark.parametrize("rotary", [False, True], ids=["plain", "rotary"])
def test_cogvideox_dispatch_matches_diffusers_processor(rotary: bool) -> None:
    model = tiny_cogvideox(rotary)
    x = inputs(rotary)
    assert not routes_attention(model)
    with torch.no_grad():
        reference = model(**x)[0]
    assert dispatch_cogvideox_attention(model) == 2
    assert routes_attention(model)
    assert dispatch_cogvideox_attention(model) == 0  # already routed
    with torch.no_grad():
        routed = model(**x)[0]
    assert reference.abs().mean() > 1e-3
    torch.testing.assert_close(routed, reference, rtol=1e-5, atol=1e-5)


def test_cogvideox_follows_the_chosen_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.models import attention_dispatch as dispatch

    model = tiny_cogvideox(False)
    dispatch_cogvideox_attention(model)
    model.set_attention_backend("_native_math")
    procs = [m.processor for m in model.modules() if hasattr(m, "processor")]
    assert procs and all(isinstance(p, CogVideoXDispatchProcessor) for p in procs)
    assert {str(p._attention_backend) for p in procs} == {"AttentionBackendName._NATIVE_MATH"}
    seen: list[Any] = []
    real = dispatch.dispatch_attention_fn

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("backend"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dispatch, "dispatch_attention_fn", spy)
    with torch.no_grad():
        model(**inputs(False))
    assert len(seen) == 2 and all(b == dispatch.AttentionBackendName._NATIVE_MATH for b in seen)


@pytest.fixture
def dispatch_state() -> Iterator[Any]:
    from diffusers.models import attention_dispatch as dispatch

    saved = (
        dispatch._CAN_USE_FLASH_ATTN_3,
        dispatch.flash_attn_3_func,
        dispatch.flash_attn_3_varlen_func,
    )
    yield dispatch
    (
        dispatch._CAN_USE_FLASH_ATTN_3,
        dispatch.flash_attn_3_func,
        dispatch.flash_attn_3_varlen_func,
    ) = saved
    sys.modules.pop("fa3_fwd_interface", None)


def test_flash_attention_3_from_the_forward_only_build(dispatch_state: Any) -> None:
    dispatch = dispatch_state
    dispatch._CAN_USE_FLASH_ATTN_3 = False
    sys.modules.pop("fa3_fwd_interface", None)
    if "fa3_fwd_interface" not in sys.modules:
        sys.modules["fa3_fwd_interface"] = None  # type: ignore[assignment]  # blocks import
    assert enable_flash_attention_3() is False
    assert dispatch._CAN_USE_FLASH_ATTN_3 is False

    def flash_attn_func(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not called here")

    module = types.ModuleType("fa3_fwd_interface")
    module.flash_attn_func = flash_attn_func  # type: ignore[attr-defined]
    sys.modules["fa3_fwd_interface"] = module
    assert enable_flash_attention_3() is True
    assert dispatch._CAN_USE_FLASH_ATTN_3 is True
    assert dispatch.flash_attn_3_func is flash_attn_func
