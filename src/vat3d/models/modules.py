"""Small building blocks shared by the tokenizer and the generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class FourierEmbedder(nn.Module):
    """xyz -> [xyz, sin(2^k pi xyz), cos(2^k pi xyz)] for k < num_freqs."""

    def __init__(self, num_freqs: int = 8, include_input: bool = True):
        super().__init__()
        freqs = (2.0 ** torch.arange(num_freqs, dtype=torch.float32)) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)
        self.include_input = include_input
        self.out_dim = 3 * (2 * num_freqs + int(include_input))

    def forward(self, xyz_BN3: torch.Tensor) -> torch.Tensor:
        angles_BN3F = xyz_BN3.unsqueeze(-1) * self.freqs
        parts = [angles_BN3F.sin().flatten(-2), angles_BN3F.cos().flatten(-2)]
        if self.include_input:
            parts.insert(0, xyz_BN3)
        return torch.cat(parts, dim=-1)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class Attention(nn.Module):
    """Multi-head attention on PyTorch SDPA; self-attention when ``context`` is None.

    ``qk_norm`` applies RMS-style LayerNorm to queries and keys per head (stabilises
    large models). ``kv_cache`` (a dict) lets the generator append keys/values scale by scale.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None, qk_norm: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim, elementwise_affine=True) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, elementwise_affine=True) if qk_norm else nn.Identity()
        self.dropout = dropout

    def forward(self, x_BLD: torch.Tensor, context_BSD: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, kv_cache: dict | None = None) -> torch.Tensor:
        B, L, D = x_BLD.shape
        ctx = x_BLD if context_BSD is None else context_BSD
        q = self.q(x_BLD).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if kv_cache is not None:
            if "k" in kv_cache:
                k = torch.cat([kv_cache["k"], k], dim=2)
                v = torch.cat([kv_cache["v"], v], dim=2)
            kv_cache["k"], kv_cache["v"] = k, v
        out = F.scaled_dot_product_attention(
            q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-norm transformer block: (cross-)attention then MLP, both residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, context_dim: int | None = None,
                 qk_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.cross = context_dim is not None
        self.norm1 = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(context_dim) if self.cross else None
        self.attn = Attention(dim, num_heads, context_dim=context_dim, qk_norm=qk_norm, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, kv_cache: dict | None = None) -> torch.Tensor:
        ctx = self.norm_ctx(context) if self.cross else None
        x = x + self.attn(self.norm1(x), ctx, attn_mask=attn_mask, kv_cache=kv_cache)
        return x + self.mlp(self.norm2(x))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *, checkpointing: bool = False, **kwargs) -> torch.Tensor:
    """Run blocks in order, optionally with activation checkpointing (training only)."""
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False, **kwargs)
        else:
            x = block(x, **kwargs)
    return x


def farthest_point_sample(points_BN3: torch.Tensor, num_samples: int, start: int = 0) -> torch.Tensor:
    """Indices (B, num_samples) of a deterministic farthest-point subsample."""
    B, N, _ = points_BN3.shape
    if num_samples > N:
        raise ValueError(f"cannot sample {num_samples} of {N} points")
    idx_BS = torch.empty(B, num_samples, dtype=torch.long, device=points_BN3.device)
    dist_BN = torch.full((B, N), float("inf"), device=points_BN3.device)
    current_B = torch.full((B,), start, dtype=torch.long, device=points_BN3.device)
    arange_B = torch.arange(B, device=points_BN3.device)
    for i in range(num_samples):
        idx_BS[:, i] = current_B
        chosen_B13 = points_BN3[arange_B, current_B].unsqueeze(1)
        dist_BN = torch.minimum(dist_BN, (points_BN3 - chosen_B13).square().sum(-1))
        current_B = dist_BN.argmax(dim=1)
    return idx_BS


def has_native_bf16(device: "torch.device | str" = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or
    AMX. Elsewhere (AVX2-only CPUs) bf16 is emulated and several times slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
