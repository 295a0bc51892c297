"""Multi-scale residual vector quantization with one shared codebook (VAR-style).

A latent of M tokens x C channels is quantized residually over K scales with
growing token counts. In ``"2d"`` mode the M tokens are a sqrt(M) x sqrt(M) grid:
scale k area-downsamples the residual to s_k x s_k, picks the nearest code per cell,
bicubic-upsamples the codes back and passes them through a small residual conv
("refiner"); the result is added to the running sum and subtracted from the
residual. ``"1d"`` mode does the same along the token axis (area / linear).

Any prefix of scales gives a coarser approximation of the latent, which is what
makes coarse-to-fine decoding and next-scale generation possible.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# VAR's patch sides; 24 and 32 extend the 16-side schedule by one and two scales.
DEFAULT_SIDES: dict[int, tuple[int, ...]] = {
    4: (1, 2, 3, 4),
    6: (1, 2, 3, 4, 6),
    8: (1, 2, 3, 4, 5, 6, 8),
    12: (1, 2, 3, 4, 6, 8, 10, 12),
    16: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    24: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24),
    32: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24, 32),
}


def default_scale_sizes(num_latents: int, mode: str = "2d") -> list[int]:
    """Token counts per scale: VAR's squared patch sides (2d) or doubling counts (1d)."""
    if mode == "2d":
        side = math.isqrt(num_latents)
        if side * side != num_latents:
            raise ValueError(f"2d scales need a square number of latents, got {num_latents}")
        sides = DEFAULT_SIDES.get(side)
        if sides is None:  # roughly geometric sides ending at `side`
            sides = sorted({max(1, round(side ** (i / 7))) for i in range(8)} | {side})
        return [s * s for s in sides]
    if mode == "1d":
        sizes, n = [], 1
        while n < num_latents:
            sizes.append(n)
            n *= 2
        return sizes + [num_latents]
    raise ValueError(f"unknown scale mode {mode!r} (use '2d' or '1d')")


class Refiner(nn.Module):
    """x -> (1 - ratio) x + ratio conv(x): the small per-scale residual refinement."""

    def __init__(self, dim: int, ratio: float = 0.5, mode: str = "2d"):
        super().__init__()
        conv = nn.Conv2d if mode == "2d" else nn.Conv1d
        self.conv = conv(dim, dim, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(1 - self.ratio) + self.conv(x).mul(self.ratio)


def kmeans_plus_plus(x_NC: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance."""
    n = x_NC.shape[0]
    centres = [x_NC[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    dist_N = (x_NC - centres[0]).square().sum(1)
    for _ in range(1, k):
        total = dist_N.sum()
        if total <= 0:  # fewer distinct points than centres: repeat random samples
            pick = torch.randint(n, (1,), generator=generator)
        else:
            pick = torch.multinomial(dist_N / total, 1, generator=generator)
        centres.append(x_NC[pick].squeeze(0))
        dist_N = torch.minimum(dist_N, (x_NC - centres[-1]).square().sum(1))
    return torch.stack(centres)


def kmeans(x_NC: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None,
           max_seed_points: int = 200_000) -> torch.Tensor:
    """Lloyd k-means from k-means++ seeds (seeded on at most ``max_seed_points`` samples)."""
    n = x_NC.shape[0]
    seed_pool = x_NC if n <= max_seed_points else x_NC[torch.randperm(n, generator=generator)[:max_seed_points]]
    centres_KC = kmeans_plus_plus(seed_pool, k, generator)
    for _ in range(iters):
        assign_N = torch.cat([torch.cdist(chunk, centres_KC).argmin(dim=1) for chunk in x_NC.split(65_536)])
        sums_KC = torch.zeros_like(centres_KC).index_add_(0, assign_N, x_NC)
        counts_K = torch.bincount(assign_N, minlength=k).unsqueeze(1).to(x_NC.dtype)
        empty = counts_K.squeeze(1) == 0
        centres_KC = torch.where(empty.unsqueeze(1), centres_KC, sums_KC / counts_K.clamp_min(1))
        if empty.any():  # re-seed empty clusters at random samples
            centres_KC[empty] = x_NC[torch.randint(n, (int(empty.sum()),), generator=generator)]
    return centres_KC


class MultiScaleVQ(nn.Module):
    """Residual quantizer over a schedule of scales with one shared codebook.

    Args:
        dim: code dimension C.
        codebook_size: number of codes V.
        num_latents: tokens M of the latent being quantized.
        mode: ``"2d"`` (latent as a square grid, VAR) or ``"1d"`` (along the token axis).
        scale_sizes: token counts per scale (2d: squares); default :func:`default_scale_sizes`.
        beta: commitment weight.
        refine_ratio: weight of the per-scale conv refinement (0 disables it).
        dead_code_threshold: codes whose running usage falls below this are restarted on
            residuals of the current batch (0 disables restarts).
        usage_decay: decay of the running per-code usage counter.
    """

    def __init__(self, dim: int = 32, codebook_size: int = 4096, num_latents: int = 256, mode: str = "2d",
                 scale_sizes: Sequence[int] | None = None, beta: float = 0.25, refine_ratio: float = 0.5,
                 dead_code_threshold: float = 0.01, usage_decay: float = 0.99):
        super().__init__()
        self.dim, self.codebook_size, self.num_latents, self.mode = dim, codebook_size, num_latents, mode
        self.scale_sizes = list(scale_sizes) if scale_sizes is not None else default_scale_sizes(num_latents, mode)
        if self.scale_sizes[-1] != num_latents or sorted(self.scale_sizes) != self.scale_sizes:
            raise ValueError(f"scale sizes must grow and end at {num_latents}: {self.scale_sizes}")
        if mode == "2d":
            self.side = math.isqrt(num_latents)
            if any(math.isqrt(n) ** 2 != n for n in self.scale_sizes) or self.side ** 2 != num_latents:
                raise ValueError(f"2d scales need square token counts: {self.scale_sizes}")
        self.beta, self.dead_code_threshold, self.usage_decay = beta, dead_code_threshold, usage_decay
        self.codebook = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.refiners = nn.ModuleList(
            [Refiner(dim, refine_ratio, mode) if refine_ratio > 0 else nn.Identity() for _ in self.scale_sizes]
        )
        self.register_buffer("code_usage", torch.ones(codebook_size))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def num_scales(self) -> int:
        return len(self.scale_sizes)

    @property
    def bits_per_token(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))

    # ---- layout helpers -------------------------------------------------------------------
    def _grid_shape(self, n: int) -> tuple[int, ...]:
        return (math.isqrt(n),) * 2 if self.mode == "2d" else (n,)

    def to_grid(self, x_BMC: torch.Tensor) -> torch.Tensor:
        B, M, C = x_BMC.shape
        return x_BMC.transpose(1, 2).reshape(B, C, *self._grid_shape(M))

    @staticmethod
    def from_grid(x_BC_: torch.Tensor) -> torch.Tensor:
        return x_BC_.flatten(2).transpose(1, 2)

    def downsample(self, x_BC_: torch.Tensor, n: int) -> torch.Tensor:
        size = self._grid_shape(n)
        return x_BC_ if tuple(x_BC_.shape[2:]) == size else F.interpolate(x_BC_, size=size, mode="area")

    def upsample(self, x_BC_: torch.Tensor) -> torch.Tensor:
        size = self._grid_shape(self.num_latents)
        if tuple(x_BC_.shape[2:]) == size:
            return x_BC_
        return F.interpolate(x_BC_, size=size, mode="bicubic" if self.mode == "2d" else "linear")

    # ---- codebook ---------------------------------------------------------------------------
    def nearest(self, x_NC: torch.Tensor) -> torch.Tensor:
        codes_VC = self.codebook.weight
        dist_NV = x_NC.square().sum(1, keepdim=True) - 2 * x_NC @ codes_VC.t() + codes_VC.square().sum(1)
        return dist_NV.argmin(dim=1)

    def embed(self, idx_Bn: torch.Tensor) -> torch.Tensor:
        """Token indices (B, n) -> code grid (B, C, *grid(n))."""
        B, n = idx_Bn.shape
        return self.codebook(idx_Bn).transpose(1, 2).reshape(B, self.dim, *self._grid_shape(n))

    def scale_contribution(self, k: int, idx_Bn: torch.Tensor) -> torch.Tensor:
        """What scale k's tokens add to the full-resolution latent grid."""
        return self.refiners[k](self.upsample(self.embed(idx_Bn)))

    # ---- quantization -----------------------------------------------------------------------
    def forward(self, z_BMC: torch.Tensor, num_scales: int | None = None) -> tuple[torch.Tensor, dict]:
        """Quantize ``z``; returns the straight-through quantized latent and an info dict.

        info: ``indices`` (list of (B, n_k) tensors), ``loss`` (VQ loss), ``usage`` and
        ``perplexity`` per scale (lists of floats).
        """
        with torch.autocast(device_type=z_BMC.device.type, enabled=False):
            z = self.to_grid(z_BMC.float())
            K = self.num_scales if num_scales is None else num_scales
            f_hat = torch.zeros_like(z)
            rest = z.detach().clone()
            loss = z.new_zeros(())
            indices, usage, perplexity, residuals = [], [], [], []
            for k, n in enumerate(self.scale_sizes[:K]):
                r = self.downsample(rest, n)
                r_NC = self.from_grid(r).reshape(-1, self.dim)
                idx_N = self.nearest(r_NC)
                idx_Bn = idx_N.view(z.shape[0], n)
                h = self.scale_contribution(k, idx_Bn)
                f_hat = f_hat + h
                rest = rest - h.detach()
                loss = loss + self.beta * F.mse_loss(f_hat.detach(), z) + F.mse_loss(f_hat, z.detach())
                indices.append(idx_Bn)
                counts = torch.bincount(idx_N, minlength=self.codebook_size).float()
                probs = counts / counts.sum()
                usage.append(float((counts > 0).float().mean()))
                perplexity.append(float(torch.exp(-(probs * probs.clamp_min(1e-12).log()).sum())))
                if self.training:
                    residuals.append(r_NC.detach())
                    self._track_usage(counts)
            loss = loss / max(K, 1)
            if self.training and self.dead_code_threshold > 0 and residuals:
                self._restart_dead_codes(torch.cat(residuals))
            f_hat_st = f_hat.detach() + (z - z.detach())  # straight-through to z
            return self.from_grid(f_hat_st).to(z_BMC.dtype), {
                "indices": indices, "loss": loss, "usage": usage, "perplexity": perplexity,
            }

    @torch.no_grad()
    def encode(self, z_BMC: torch.Tensor) -> list[torch.Tensor]:
        """Token indices per scale (no gradients, no codebook updates)."""
        was_training = self.training
        self.eval()
        try:
            return self.forward(z_BMC)[1]["indices"]
        finally:
            self.train(was_training)

    def indices_to_latent(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum of the first len(indices) scales' contributions, as (B, M, C)."""
        if not indices:
            raise ValueError("need at least one scale of tokens")
        if len(indices) > self.num_scales:
            raise ValueError(f"{len(indices)} scales given, the quantizer has {self.num_scales}")
        f_hat = None
        for k, idx in enumerate(indices):
            if idx.shape[1] != self.scale_sizes[k]:
                raise ValueError(f"scale {k} has {idx.shape[1]} tokens, expected {self.scale_sizes[k]}")
            h = self.scale_contribution(k, idx)
            f_hat = h if f_hat is None else f_hat + h
        return self.from_grid(f_hat)

    def step(self, f_hat: torch.Tensor | None, k: int, idx_Bn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale k's tokens to the running grid ``f_hat``; also return the next scale's input
        tokens (B, n_{k+1}, C) (the area-downsampled running sum), or None after the last scale."""
        h = self.scale_contribution(k, idx_Bn)
        f_hat = h if f_hat is None else f_hat + h
        if k + 1 >= self.num_scales:
            return f_hat, None
        return f_hat, self.from_grid(self.downsample(f_hat, self.scale_sizes[k + 1]))

    def next_scale_inputs(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing inputs for next-scale prediction: for scales 1..K-1, the running sum of
        the earlier scales downsampled to that scale, concatenated: (B, sum_{k>=1} n_k, C)."""
        f_hat, outs = None, []
        for k in range(len(indices) - 1):
            f_hat, nxt = self.step(f_hat, k, indices[k])
            outs.append(nxt)
        return torch.cat(outs, dim=1)

    # ---- codebook health --------------------------------------------------------------------
    @torch.no_grad()
    def _track_usage(self, counts_V: torch.Tensor) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts_V)
        self.code_usage.mul_(self.usage_decay).add_(counts_V, alpha=1 - self.usage_decay)

    @torch.no_grad()
    def _restart_dead_codes(self, residuals_NC: torch.Tensor) -> int:
        dead = self.code_usage < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0 or residuals_NC.shape[0] == 0:
            return 0
        pick = torch.randint(residuals_NC.shape[0], (n_dead,), device=residuals_NC.device)
        noise = 0.01 * residuals_NC.std() * torch.randn(n_dead, self.dim, device=residuals_NC.device)
        self.codebook.weight.data[dead] = residuals_NC[pick] + noise
        self.code_usage[dead] = 1.0
        _broadcast(self.codebook.weight.data)
        return n_dead

    @torch.no_grad()
    def kmeans_init(self, z_BMC: torch.Tensor, iters: int = 10, seed: int = 0) -> None:
        """Initialise the codebook by k-means on real latents (two rounds: the per-scale
        downsampled latents, then the residuals seen at every scale with that codebook)."""
        gen = torch.Generator().manual_seed(seed)
        z = self.to_grid(z_BMC.detach().float().cpu())
        samples = torch.cat([self.from_grid(self.downsample(z, n)).reshape(-1, self.dim) for n in self.scale_sizes])
        device = self.codebook.weight.device
        self.codebook.weight.data.copy_(kmeans(samples, self.codebook_size, iters, gen).to(device))
        was_training = self.training
        self.eval()
        try:
            rest, residuals = z.to(device), []
            for k, n in enumerate(self.scale_sizes):
                r = self.downsample(rest, n)
                r_NC = self.from_grid(r).reshape(-1, self.dim)
                residuals.append(r_NC)
                rest = rest - self.scale_contribution(k, self.nearest(r_NC).view(z.shape[0], n))
        finally:
            self.train(was_training)
        centres = kmeans(torch.cat(residuals).cpu(), self.codebook_size, iters, gen)
        self.codebook.weight.data.copy_(centres.to(device))
        _broadcast(self.codebook.weight.data)
        self.code_usage.fill_(1.0)
        self.initialized.fill_(True)


def _broadcast(tensor: torch.Tensor) -> None:
    """Keep every DDP rank's codebook identical after a data-dependent change (rank 0 wins)."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
