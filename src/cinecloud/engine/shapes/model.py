"""The shapes-t2v denoiser: a small spatio-temporal DiT that works directly on pixels.

A clip ``(B, 3, T, H, W)`` in [-1, 1] is cut into patches of ``patch_size_t`` frames by
``patch_size`` x ``patch_size`` pixels; each patch is one token. Every block runs joint
self-attention over all tokens of the clip (with 3D rotary positions and QK-norm),
cross-attention to the text encoder's token states, and an MLP; the timestep plus the
pooled text set each block's adaLN-Zero shift, scale and gate.

Flow-matching convention (the one ``FlowMatchEulerDiscreteScheduler`` integrates):
``x_t = (1 - sigma) * x_0 + sigma * noise`` with ``timestep = 1000 * sigma``, and the
velocity is ``dx_t / dsigma = noise - x_0``. The network itself predicts the clean clip
``x_0`` (a patch holds more values than a token has channels, and clean pixels lie on a
far simpler manifold than noise); :meth:`ShapesDiT.forward` turns that into the velocity
``(x_t - x_0) / sigma`` the scheduler steps with. :func:`flow_matching_loss` is the
matching training objective.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

__all__ = [
    "NUM_TRAIN_TIMESTEPS",
    "QKNorm",
    "ShapesDiT",
    "flow_matching_loss",
    "patchify",
    "rope_tables",
    "unpatchify",
]

NUM_TRAIN_TIMESTEPS = 1000  # timestep = sigma * 1000, as FlowMatchEulerDiscreteScheduler uses
_MIN_SIGMA = 1e-3  # only guards the division; samplers never evaluate below ~1/steps


# ---------------------------------------------------------------- patches and positions


def patchify(x: torch.Tensor, pt: int, p: int) -> torch.Tensor:
    """``(B, C, T, H, W)`` to tokens ``(B, T/pt * H/p * W/p, pt * p * p * C)``."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // pt, pt, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, (t // pt) * (h // p) * (w // p), pt * p * p * c)


def unpatchify(
    tokens: torch.Tensor, shape: tuple[int, int, int, int], pt: int, p: int
) -> torch.Tensor:
    """The inverse of :func:`patchify`; ``shape`` is ``(C, T, H, W)``."""
    c, t, h, w = shape
    b = tokens.shape[0]
    x = tokens.reshape(b, t // pt, h // p, w // p, pt, p, p, c)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, c, t, h, w)


def _axis_dims(head_dim: int) -> tuple[int, int, int]:
    """How a head's channels split between the time, height and width rotations."""
    if head_dim % 16:
        raise ValueError(
            f"head dim must be a multiple of 16 for 3D rotary positions (got {head_dim})"
        )
    time = head_dim // 4
    return time, (head_dim - time) // 2, (head_dim - time) // 2


def rope_tables(
    grid: tuple[int, int, int], head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``(N, head_dim)`` for tokens laid out time-major on ``grid``."""
    axes = [torch.arange(n, dtype=torch.float64) for n in grid]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    angles = []
    for axis, dim in enumerate(_axis_dims(head_dim)):
        freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles.append(pos[:, axis : axis + 1] * freqs[None, :])
    half = torch.cat(angles, dim=-1)  # (N, head_dim / 2): channel j pairs with j + head_dim / 2
    full = torch.cat([half, half], dim=-1)
    return full.cos().float(), full.sin().float()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


# ---------------------------------------------------------------- layers


class QKNorm(nn.RMSNorm):
    """RMSNorm whose weight follows the input's dtype (under autocast too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


class SelfAttention(nn.Module):
    """Joint attention over every token of the clip, with QK-norm and 3D rotary positions."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = QKNorm(dim // heads, eps=1e-6)
        self.norm_k = QKNorm(dim // heads, eps=1e-6)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q = _apply_rope(self.norm_q(q), cos, sin)
        k = _apply_rope(self.norm_k(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v)
        out: torch.Tensor = self.out(y.transpose(1, 2).reshape(b, n, d))
        return out


class CrossAttention(nn.Module):
    """Attention from the clip's tokens to the text tokens (padding masked out)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.norm_q = QKNorm(dim // heads, eps=1e-6)
        self.norm_k = QKNorm(dim // heads, eps=1e-6)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        q = self.norm_q(self.q(x).view(b, n, self.heads, hd).transpose(1, 2))
        k, v = self.kv(text).view(b, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, self.norm_k(k), v, attn_mask=mask)
        out: torch.Tensor = self.out(y.transpose(1, 2).reshape(b, n, d))
        return out


class DiTBlock(nn.Module):
    """Self-attention, cross-attention and MLP; adaLN-Zero modulates the first and last."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, heads)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.ada = nn.Linear(dim, 6 * dim)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).unsqueeze(1).chunk(6, dim=-1)
        x = x + gate1 * self.attn(_modulate(self.norm1(x), shift1, scale1), *rope)
        x = x + self.cross(self.norm2(x), text, mask)
        h = F.gelu(self.fc1(_modulate(self.norm3(x), shift2, scale2)))
        out: torch.Tensor = x + gate2 * self.fc2(h)
        return out


# ---------------------------------------------------------------- the model


class ShapesDiT(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Text-conditioned pixel-space video DiT; ``forward`` returns the flow velocity."""

    _supports_gradient_checkpointing = False

    @register_to_config  # type: ignore[misc,untyped-decorator]
    def __init__(
        self,
        num_frames: int = 16,
        sample_size: int = 64,
        in_channels: int = 3,
        patch_size_t: int = 2,
        patch_size: int = 8,
        hidden_size: int = 256,
        num_layers: int = 8,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 384,
        rope_theta: float = 100.0,
    ) -> None:
        super().__init__()
        if num_frames % patch_size_t or sample_size % patch_size:
            raise ValueError(
                f"num_frames must divide by {patch_size_t} and sample_size by {patch_size} "
                f"(got {num_frames}, {sample_size})"
            )
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must divide by num_heads {num_heads}")
        self.clip_shape = (in_channels, num_frames, sample_size, sample_size)  # (C, T, H, W)
        self.patch = (patch_size_t, patch_size)
        patch_dim = patch_size_t * patch_size * patch_size * in_channels
        grid = (num_frames // patch_size_t, sample_size // patch_size, sample_size // patch_size)
        cos, sin = rope_tables(grid, hidden_size // num_heads, rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

        self.patch_embed = nn.Linear(patch_dim, hidden_size)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, hidden_size)
        self.text_norm = nn.LayerNorm(text_dim, eps=1e-6)
        self.text_fc1 = nn.Linear(text_dim, hidden_size)
        self.text_fc2 = nn.Linear(hidden_size, hidden_size)
        self.pooled_fc1 = nn.Linear(text_dim, hidden_size)
        self.pooled_fc2 = nn.Linear(hidden_size, hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj_out = nn.Linear(hidden_size, patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier linears; the adaLN modulations and the output projection start at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for linear in [self.ada_out, self.proj_out, *(block.ada for block in self.layers)]:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    @property
    def layers(self) -> list[DiTBlock]:
        return [cast(DiTBlock, block) for block in self.blocks]

    @property
    def tokens_per_clip(self) -> int:
        return int(self.rope_cos.shape[0])

    def _condition(
        self, timestep: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The per-clip vector behind every adaLN: timestep embedding plus pooled text."""
        weights = mask.to(text.dtype).unsqueeze(-1)
        pooled = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        t_emb: torch.Tensor = self.time_embed(self.time_proj(timestep).to(text.dtype))
        return F.silu(t_emb + self.pooled_fc2(F.silu(self.pooled_fc1(pooled))))

    def predict_sample(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The clean clip ``x_0`` the network predicts from ``x_t``, shaped like the input."""
        b = hidden_states.shape[0]
        if tuple(hidden_states.shape[1:]) != self.clip_shape:
            raise ValueError(
                f"expected clips (B, {', '.join(map(str, self.clip_shape))}), "
                f"got {tuple(hidden_states.shape)}"
            )
        text = encoder_hidden_states
        if encoder_attention_mask is None:
            encoder_attention_mask = torch.ones(
                text.shape[:2], dtype=torch.bool, device=text.device
            )
        mask = encoder_attention_mask.bool()
        dtype = self.patch_embed.weight.dtype
        timestep = timestep.to(hidden_states.device, torch.float32).expand(b)

        text = self.text_norm(text.to(dtype))
        cond = self._condition(timestep, text, mask)
        text_tokens = self.text_fc2(F.gelu(self.text_fc1(text)))
        attn_mask = mask[:, None, None, :]
        rope = (self.rope_cos.to(dtype), self.rope_sin.to(dtype))
        x = self.patch_embed(patchify(hidden_states.to(dtype), *self.patch))
        for block in self.layers:
            x = block(x, cond, text_tokens, attn_mask, rope)
        shift, scale = self.ada_out(cond).unsqueeze(1).chunk(2, dim=-1)
        x = self.proj_out(_modulate(self.norm_out(x), shift, scale))
        return unpatchify(x, self.clip_shape, *self.patch)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """The velocity ``(x_t - x_0) / sigma`` at ``timestep = 1000 * sigma`` (input dtype)."""
        x0 = self.predict_sample(
            hidden_states, timestep, encoder_hidden_states, encoder_attention_mask
        )
        sigma = timestep.to(hidden_states.device, torch.float32) / NUM_TRAIN_TIMESTEPS
        sigma = sigma.clamp_min(_MIN_SIGMA).reshape(-1, 1, 1, 1, 1)
        velocity = ((hidden_states.float() - x0.float()) / sigma).to(hidden_states.dtype)
        if not return_dict:
            return (velocity,)
        return Transformer2DModelOutput(sample=velocity)

    def flops_per_sample(self, text_len: int = 32) -> int:
        """Forward-pass FLOPs for one clip (a multiply-add counts 2): matmuls and attention."""
        n, d = self.tokens_per_clip, self.patch_embed.out_features
        per_token = self.patch_embed.weight.numel() + self.proj_out.weight.numel()
        per_text = self.text_fc1.weight.numel() + self.text_fc2.weight.numel()
        attention = 0
        for block in self.layers:
            per_token += block.attn.qkv.weight.numel() + block.attn.out.weight.numel()
            per_token += block.cross.q.weight.numel() + block.cross.out.weight.numel()
            per_token += block.fc1.weight.numel() + block.fc2.weight.numel()
            per_text += block.cross.kv.weight.numel()
            attention += 4 * n * n * d + 4 * n * text_len * d
        return 2 * (n * per_token + text_len * per_text) + attention


def flow_matching_loss(
    model: ShapesDiT,
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    min_sigma: float = 0.05,
) -> torch.Tensor:
    """Mean squared velocity error, with the velocity's ``1 / sigma`` capped at ``1 / min_sigma``.

    With ``v = (x_t - x_0) / sigma`` the velocity error is the ``x_0`` error over sigma; the
    cap keeps nearly-clean samples from dominating the loss.
    """
    s = sigmas.float().reshape(-1, 1, 1, 1, 1)
    x_t = (1.0 - s) * x0 + s * noise
    pred = model.predict_sample(x_t, sigmas * NUM_TRAIN_TIMESTEPS, text, mask)
    return (((pred.float() - x0) / s.clamp_min(min_sigma)) ** 2).mean()
