"""The feed-forward's GELU fused into its matmul's epilogue (CUDA).

diffusers' video transformers (Wan, LTX-Video, CogVideoX) open each feed-forward with
``GELU(approximate="tanh")``: a linear layer, then the activation as a separate pass over
the widest activation of the block (tokens x FFN width; 32,760 x 8,960 for Wan 1.3B at
480x832x81, about 2.4% of a denoising step on an H200). cuBLASLt computes the bias and the
tanh-approximated GELU in the matmul's epilogue instead (``torch._addmm_activation``); the
activation then never makes its own trip through memory. Inductor would split the call
back into a matmul and a Triton pointwise kernel, so the fused call is a custom op it
keeps whole. Elsewhere (the CPU) the op is the plain linear and GELU.

Exactness: the epilogue applies GELU to the float32 accumulator before rounding to bf16,
where the unfused path rounds first, so results differ by bf16 rounding only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FusedLinearGelu", "fuse_gelu_epilogues", "linear_gelu_tanh"]


@torch.library.custom_op("cinecloud::linear_gelu_tanh", mutates_args=())
def linear_gelu_tanh(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``gelu(x @ weight.T + bias, approximate="tanh")``, fused on CUDA."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.is_cuda:
        out = torch._addmm_activation(bias, flat, weight.t(), use_gelu=True)
    else:
        out = F.gelu(F.linear(flat, weight, bias), approximate="tanh")
    return out.reshape(*x.shape[:-1], weight.shape[0])


@linear_gelu_tanh.register_fake
def _linear_gelu_tanh_fake(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


class FusedLinearGelu(nn.Module):
    """Stands in for diffusers' ``GELU(approximate="tanh")`` and keeps its ``proj`` (so
    the weights and their names are unchanged)."""

    def __init__(self, proj: nn.Linear) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        bias = self.proj.bias
        assert bias is not None  # checked by fuse_gelu_epilogues
        return linear_gelu_tanh(hidden_states, self.proj.weight, bias)  # type: ignore[no-any-return]


def _fusable(module: nn.Module) -> bool:
    from diffusers.models.activations import GELU

    proj = getattr(module, "proj", None)
    return (
        isinstance(module, GELU)
        and module.approximate == "tanh"
        and isinstance(proj, nn.Linear)
        and proj.bias is not None
    )


def fuse_gelu_epilogues(model: nn.Module) -> int:
    """Replace each tanh-GELU projection in ``model`` by :class:`FusedLinearGelu`, in
    place; the number replaced."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if _fusable(child)
    ]
    for parent, name, child in swaps:
        setattr(parent, name, FusedLinearGelu(child.proj))  # type: ignore[arg-type]
    return len(swaps)
