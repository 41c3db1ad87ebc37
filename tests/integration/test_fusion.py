"""The feed-forward GELU fusion (engine.fusion): same results, same weights, compiles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.attention import FeedForward

from cinecloud.engine.fusion import FusedLinearGelu, fuse_gelu_epilogues

TINY_WAN = Path(__file__).resolve().parents[2] / "models" / "tiny-wan"


def test_fused_feed_forward_matches_and_keeps_its_weights() -> None:
    torch.manual_seed(0)
    ff = FeedForward(32, inner_dim=48, activation_fn="gelu-approximate")
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        ref = ff(x)
        names = list(ff.state_dict())
        assert fuse_gelu_epilogues(ff) == 1
        assert isinstance(ff.net[0], FusedLinearGelu)
        assert list(ff.state_dict()) == names
        torch.testing.assert_close(ff(x), ref, rtol=0, atol=0)
        compiled = torch.compile(ff, dynamic=False)
        torch.testing.assert_close(compiled(x), ref, rtol=1e-6, atol=1e-6)


def test_exact_gelu_is_left_alone() -> None:
    ff = FeedForward(16, inner_dim=16, activation_fn="gelu")  # not the tanh approximation
    assert fuse_gelu_epilogues(ff) == 0


@pytest.mark.skipif(not (TINY_WAN / "transformer").exists(), reason="tiny Wan not built")
def test_every_wan_block_is_fused_and_the_output_is_unchanged() -> None:
    model = WanTransformer3DModel.from_pretrained(TINY_WAN, subfolder="transformer").eval()
    cfg = model.config
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, cfg.in_channels, 3, 8, 8, generator=gen)
    text = torch.randn(1, 5, cfg.text_dim, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        ref = model(x, t, text, return_dict=False)[0]
        assert fuse_gelu_epilogues(model) == cfg.num_layers
        out = model(x, t, text, return_dict=False)[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
