"""Triplane decoder: latent tokens -> three feature planes -> occupancy logits.

The quantized latents and 3*r*r learnable plane tokens go through one transformer;
the plane tokens become three r x r planes, in this fixed order and orientation:

    plane 0 "xy": width axis = x, height axis = y
    plane 1 "xz": width axis = x, height axis = z
    plane 2 "yz": width axis = y, height axis = z

A conv upsampler (shared by the three planes) lifts them to R x R with C_p
channels; a query point reads bilinear features from each plane, the three are
summed (or concatenated) and an MLP gives the occupancy logit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vat3d.models.modules import Block, run_blocks

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz
PLANE_NAMES = ("xy", "xz", "yz")


def sample_planes(planes_B3CRR: torch.Tensor, points_BQ3: torch.Tensor, aggregation: str = "sum") -> torch.Tensor:
    """Bilinear plane features at query points: (B, Q, C) for "sum", (B, Q, 3C) for "concat", in fp32.

    Sampled in fp32 whatever the planes' dtype or an enclosing autocast: rounding the coordinates to
    bf16 would move query points by up to 2e-3 (half of bf16's 2^-8 spacing just below 1), 8x the
    2.4e-4 that storing them as float16 costs (``vat3d prepare``).
    """
    B, P, C, R, _ = planes_B3CRR.shape
    planes_B3CRR, points_BQ3 = planes_B3CRR.float(), points_BQ3.float()
    feats = []
    with torch.autocast(device_type=planes_B3CRR.device.type, enabled=False):
        for p, (a, b) in enumerate(PLANE_AXES):
            grid_BQ12 = points_BQ3[..., [a, b]].unsqueeze(2)
            f_BCQ1 = F.grid_sample(planes_B3CRR[:, p], grid_BQ12, mode="bilinear", padding_mode="border",
                                   align_corners=True)
            feats.append(f_BCQ1.squeeze(-1).transpose(1, 2))
    return torch.stack(feats).sum(0) if aggregation == "sum" else torch.cat(feats, dim=-1)


def grid_plane_tables(planes_B3CRR: torch.Tensor, resolution: int) -> torch.Tensor:
    """Plane features at the coordinates of a ``resolution``-sample grid: (B, 3, G*G, C).

    Grid index ``g`` is the coordinate ``-1 + 2 g / (G - 1)``; bilinear resampling with aligned corners
    at those coordinates is what :func:`sample_planes` computes at grid points, so a lookup in this
    table replaces the per-point bilinear sampling (row ``g_b * G + g_a`` for a plane with axes (a, b)).
    """
    B, P, C, R, _ = planes_B3CRR.shape
    up = F.interpolate(planes_B3CRR.flatten(0, 1), size=(resolution, resolution), mode="bilinear",
                       align_corners=True)  # (B*3, C, G_b, G_a)
    return up.view(B, P, C, resolution * resolution).transpose(2, 3).contiguous()


def sample_grid_tables(tables_B3TC: torch.Tensor, ijk_BQ3: torch.Tensor, resolution: int,
                       aggregation: str = "sum") -> torch.Tensor:
    """Features at integer grid indices from :func:`grid_plane_tables`: like :func:`sample_planes`."""
    B, P, T, C = tables_B3TC.shape
    offset_B1 = torch.arange(B, device=ijk_BQ3.device).view(B, 1) * T
    feats = []
    for p, (a, b) in enumerate(PLANE_AXES):
        rows_BQ = ijk_BQ3[..., b] * resolution + ijk_BQ3[..., a] + offset_B1
        feats.append(F.embedding(rows_BQ, tables_B3TC[:, p].reshape(B * T, C)))
    if aggregation == "sum":
        return feats[0] + feats[1] + feats[2]
    return torch.cat(feats, dim=-1)


class ConvUpsampler(nn.Module):
    """(N, C_in, r, r) -> (N, C_out, R, R) by nearest x2 + conv stages."""

    def __init__(self, in_channels: int, out_channels: int, in_res: int, out_res: int):
        super().__init__()
        stages = round(math.log2(out_res / in_res))
        if in_res * 2**stages != out_res:
            raise ValueError(f"plane resolution {out_res} must be plane tokens {in_res} times a power of 2")
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(stages):
            nxt = max(out_channels, in_channels // 2 ** (i + 1))
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, nxt, 3, padding=1),
                       nn.GroupNorm(min(8, nxt), nxt), nn.SiLU()]
            ch = nxt
        layers.append(nn.Conv2d(ch, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last convolutions are ~2x faster on CPUs (oneDNN) and tensor cores; same values to ~1e-5
        return self.net(x.contiguous(memory_format=torch.channels_last)).contiguous()


class TriplaneDecoder(nn.Module):
    def __init__(self, latent_dim: int, num_latents: int, width: int = 256, depth: int = 6, heads: int = 8,
                 plane_tokens: int = 16, plane_resolution: int = 64, plane_channels: int = 32,
                 aggregation: str = "sum", mlp_hidden: int = 128, mlp_layers: int = 2, mlp_ratio: float = 4.0,
                 qk_norm: bool = False, gradient_checkpointing: bool = False):
        super().__init__()
        if aggregation not in ("sum", "concat"):
            raise ValueError(f"aggregation must be 'sum' or 'concat', got {aggregation!r}")
        self.r, self.aggregation, self.gradient_checkpointing = plane_tokens, aggregation, gradient_checkpointing
        self.latent_in = nn.Linear(latent_dim, width)
        self.latent_pos = nn.Parameter(torch.randn(1, num_latents, width) * 0.02)
        self.plane_queries = nn.Parameter(torch.randn(1, 3 * plane_tokens**2, width) * 0.02)
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio, qk_norm=qk_norm) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.upsampler = ConvUpsampler(width, plane_channels, plane_tokens, plane_resolution)
        in_dim = plane_channels * (3 if aggregation == "concat" else 1)
        layers: list[nn.Module] = []
        for _ in range(mlp_layers):
            layers += [nn.Linear(in_dim, mlp_hidden), nn.SiLU()]
            in_dim = mlp_hidden
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def planes(self, latents_BMC: torch.Tensor) -> torch.Tensor:
        """Latents -> planes (B, 3, C_p, R, R) in the order xy, xz, yz."""
        B, M, _ = latents_BMC.shape
        x = torch.cat([self.latent_in(latents_BMC) + self.latent_pos, self.plane_queries.expand(B, -1, -1)], 1)
        x = run_blocks(self.blocks, x, checkpointing=self.gradient_checkpointing and self.training)
        tokens = self.norm(x[:, M:])  # (B, 3 r r, D)
        grid = tokens.view(B, 3, self.r, self.r, -1).permute(0, 1, 4, 2, 3).reshape(B * 3, -1, self.r, self.r)
        planes = self.upsampler(grid)
        return planes.view(B, 3, *planes.shape[1:])

    def query(self, planes_B3CRR: torch.Tensor, points_BQ3: torch.Tensor) -> torch.Tensor:
        """Occupancy logits (B, Q) at points in the [-1, 1] box."""
        feats = sample_planes(planes_B3CRR, points_BQ3, self.aggregation)
        return self.mlp(feats).squeeze(-1)

    def query_grid(self, tables_B3TC: torch.Tensor, ijk_BQ3: torch.Tensor, resolution: int) -> torch.Tensor:
        """Occupancy logits (B, Q) at grid indices, from ``grid_plane_tables(planes, resolution)``.

        Equal (up to float rounding) to :meth:`query` at the grid's points, and several times faster
        (a table lookup instead of bilinear sampling): the path of surface extraction.
        """
        feats = sample_grid_tables(tables_B3TC, ijk_BQ3, resolution, self.aggregation)
        return self.mlp(feats).squeeze(-1)
