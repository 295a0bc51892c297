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
import warnings
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vat3d.schedule import DEFAULT_SIDES, default_scale_sizes  # noqa: F401  (one rule, re-exported)


class Refiner(nn.Module):
    """x -> (1 - ratio) x + ratio conv(x): the small per-scale residual refinement."""

    def __init__(self, dim: int, ratio: float = 0.5, mode: str = "2d"):
        super().__init__()
        conv = nn.Conv2d if mode == "2d" else nn.Conv1d
        self.conv = conv(dim, dim, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in the input's dtype: the quantizer computes in fp32 whatever dtype the parameters are kept in
        # (FSDP's mixed precision hands bf16 parameters to the forward)
        conv = self.conv
        bias = conv.bias.to(x.dtype) if conv.bias is not None else None
        return x.mul(1 - self.ratio) + conv._conv_forward(x, conv.weight.to(x.dtype), bias).mul(self.ratio)


# Distances computed at once by :func:`nearest_codes`: 2^24 fp32 values (64 MiB) whatever the number of
# points; the assignment of a 1M-token k-means pool to V = 16384 codes would otherwise be a 64 GB matrix.
ASSIGN_CHUNK_ELEMENTS = 1 << 24


def nearest_codes(x_NC: torch.Tensor, codes_VC: torch.Tensor, max_elements: int = ASSIGN_CHUNK_ELEMENTS) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) of every row of ``x_NC``, in fp32.

    Rows go ``max(1, max_elements // V)`` at a time, so at most ``max_elements`` distances (one (rows, V)
    buffer, updated in place) exist at once, besides the (N,) int64 result.
    """
    x_NC, codes_VC = x_NC.float(), codes_VC.float()
    N, V = x_NC.shape[0], codes_VC.shape[0]
    codes_sq_V = codes_VC.square().sum(1)
    codes_CV = codes_VC.t()
    rows = max(1, max_elements // max(V, 1))
    if N <= rows:  # one chunk: no copy into the output buffer
        dist_NV = (x_NC @ codes_CV).mul_(-2).add_(x_NC.square().sum(1, keepdim=True)).add_(codes_sq_V)
        return dist_NV.argmin(dim=1)
    idx_N = torch.empty(N, dtype=torch.long, device=x_NC.device)
    for start in range(0, N, rows):
        x_nC = x_NC[start:start + rows]
        dist_nV = (x_nC @ codes_CV).mul_(-2).add_(x_nC.square().sum(1, keepdim=True)).add_(codes_sq_V)
        idx_N[start:start + rows] = dist_nV.argmin(dim=1)
        del dist_nV
    return idx_N


def kmeans_plus_plus(x_NC: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance.

    One pass over the points per centre (a matrix-vector product and a float64 cumulative sum searched
    for the draw) and no host syncs, so seeding thousands of centres on a GPU takes a fraction of a second.
    """
    n, device = x_NC.shape[0], x_NC.device
    x_sq_N = x_NC.square().sum(1)
    centres_KC = x_NC.new_empty(k, x_NC.shape[1])
    first = torch.randint(n, (1,), generator=generator, device=device)
    centres_KC[0] = x_NC[first].squeeze(0)
    dist_N = _sq_dist_to(x_NC, x_sq_N, centres_KC[0])
    for i in range(1, k):
        cum_N = dist_N.cumsum(0, dtype=torch.float64)
        u = torch.rand((), generator=generator, device=device, dtype=torch.float64) * cum_N[-1]
        drawn = torch.searchsorted(cum_N, u.reshape(1)).clamp_max_(n - 1)
        # fewer distinct points than centres (all distances 0): repeat random samples
        anywhere = torch.randint(n, (1,), generator=generator, device=device)
        pick = torch.where(cum_N[-1] > 0, drawn, anywhere)
        centres_KC[i] = x_NC[pick].squeeze(0)
        dist_N = torch.minimum(dist_N, _sq_dist_to(x_NC, x_sq_N, centres_KC[i]))
    return centres_KC


def _sq_dist_to(x_NC: torch.Tensor, x_sq_N: torch.Tensor, c_C: torch.Tensor) -> torch.Tensor:
    return (x_sq_N - 2 * (x_NC @ c_C) + c_C.square().sum()).clamp_min_(0)


def default_seed_points(k: int) -> int:
    """Points k-means++ seeds ``k`` centres on: 16 per centre, at least 20k, at most 200k."""
    return min(200_000, max(20_000, 16 * k))


def kmeans(x_NC: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None,
           max_seed_points: int | None = None, max_elements: int = ASSIGN_CHUNK_ELEMENTS) -> torch.Tensor:
    """Lloyd k-means from k-means++ seeds (seeded on at most ``max_seed_points`` samples, default
    :func:`default_seed_points`), on the device of ``x_NC`` (``generator`` must live there too). Memory
    beyond ``x_NC``: the (N,) assignment, the seeding pool and :func:`nearest_codes`' distances."""
    n, device = x_NC.shape[0], x_NC.device
    max_seed_points = default_seed_points(k) if max_seed_points is None else max_seed_points
    if n <= max_seed_points:
        seed_pool = x_NC
    else:
        seed_pool = x_NC[torch.randperm(n, generator=generator, device=device)[:max_seed_points]]
    centres_KC = kmeans_plus_plus(seed_pool, k, generator)
    del seed_pool
    for _ in range(iters):
        assign_N = nearest_codes(x_NC, centres_KC, max_elements)
        sums_KC = torch.zeros_like(centres_KC).index_add_(0, assign_N, x_NC)
        counts_K = torch.bincount(assign_N, minlength=k).unsqueeze(1).to(x_NC.dtype)
        empty = counts_K.squeeze(1) == 0
        centres_KC = torch.where(empty.unsqueeze(1), centres_KC, sums_KC / counts_K.clamp_min(1))
        if empty.any():  # re-seed empty clusters at random samples
            centres_KC[empty] = x_NC[torch.randint(n, (int(empty.sum()),), generator=generator, device=device)]
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
        # rows of dead-code restarts not yet written (``defer_codebook_writes``): never in a state dict
        self._pending_rows: tuple[torch.Tensor, torch.Tensor] | None = None

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
        """Nearest code of every row (fp32, chunked: see :func:`nearest_codes`)."""
        return nearest_codes(x_NC, self.codebook.weight)

    def embed(self, idx_Bn: torch.Tensor) -> torch.Tensor:
        """Token indices (B, n) -> code grid (B, C, *grid(n)), in fp32 whatever the codebook's dtype."""
        B, n = idx_Bn.shape
        codes_BnC = F.embedding(idx_Bn, self.codebook.weight.float())
        return codes_BnC.transpose(1, 2).reshape(B, self.dim, *self._grid_shape(n))

    def scale_contribution(self, k: int, idx_Bn: torch.Tensor) -> torch.Tensor:
        """What scale k's tokens add to the full-resolution latent grid."""
        return self.refiners[k](self.upsample(self.embed(idx_Bn)))

    # ---- quantization -----------------------------------------------------------------------
    def forward(self, z_BMC: torch.Tensor, num_scales: int | None = None) -> tuple[torch.Tensor, dict]:
        """Quantize ``z``; returns the straight-through quantized latent and an info dict.

        info: ``indices`` (list of (B, n_k) tensors), ``loss`` (VQ loss), ``usage`` and
        ``perplexity`` per scale (lists of detached 0-d tensors: reading them is the caller's choice,
        so a training step does not wait for the device once per scale).
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
                with torch.no_grad():
                    counts = torch.bincount(idx_N, minlength=self.codebook_size).float()
                    probs = counts / counts.sum()
                    usage.append((counts > 0).float().mean())
                    perplexity.append(torch.exp(-(probs * probs.clamp_min(1e-12).log()).sum()))
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

    def add_scale(self, f_hat: torch.Tensor | None, k: int, idx_Bn: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale k's tokens to the running grid ``f_hat``; also return the next scale's input
        tokens (B, n_{k+1}, C) (the area-downsampled running sum), or None after the last scale."""
        h = self.scale_contribution(k, idx_Bn)
        f_hat = h if f_hat is None else f_hat + h
        if k + 1 >= self.num_scales:
            return f_hat, None
        return f_hat, self.from_grid(self.downsample(f_hat, self.scale_sizes[k + 1]))

    def step(self, f_hat: torch.Tensor | None, k: int, idx_Bn: torch.Tensor):
        """Deprecated: the old name of :meth:`add_scale` (it read like a training step)."""
        warnings.warn("MultiScaleVQ.step is now MultiScaleVQ.add_scale", DeprecationWarning, stacklevel=2)
        return self.add_scale(f_hat, k, idx_Bn)

    def next_scale_inputs(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing inputs for next-scale prediction: for scales 1..K-1, the running sum of
        the earlier scales downsampled to that scale, concatenated: (B, sum_{k>=1} n_k, C)."""
        f_hat, outs = None, []
        for k in range(len(indices) - 1):
            f_hat, nxt = self.add_scale(f_hat, k, indices[k])
            outs.append(nxt)
        return torch.cat(outs, dim=1)

    # ---- codebook health --------------------------------------------------------------------
    # Codebook writes (dead-code restarts, k-means) change parameters outside the optimiser. A training
    # loop that shards or casts parameters (FSDP) cannot take them inside the forward: it sets
    # ``defer_codebook_writes`` and calls :meth:`apply_pending_codebook_update` where the full
    # parameters can be written (after the optimiser step, see vat3d.training.distributed).
    defer_codebook_writes: bool = False

    @torch.no_grad()
    def _track_usage(self, counts_V: torch.Tensor) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts_V)
        self.code_usage.mul_(self.usage_decay).add_(counts_V, alpha=1 - self.usage_decay)

    @torch.no_grad()
    def _restart_dead_codes(self, residuals_NC: torch.Tensor) -> None:
        """Codes whose running usage fell below the threshold move onto random residuals of this batch.

        Without host syncs: a candidate row is drawn for every code and the dead ones take it. The usage
        statistic is the same on every rank (all-reduced); the candidates are rank 0's (broadcast).
        """
        dead_V = self.code_usage < self.dead_code_threshold
        V = self.codebook_size
        pick_V = torch.randint(residuals_NC.shape[0], (V,), device=residuals_NC.device)
        noise_VC = torch.randn(V, self.dim, device=residuals_NC.device)
        rows_VC = residuals_NC[pick_V] + (0.01 * residuals_NC.std()) * noise_VC
        _broadcast(rows_VC)
        self.code_usage.masked_fill_(dead_V, 1.0)
        if self._pending_rows is not None:  # an update not applied yet: keep its rows unless replaced
            old_dead_V, old_rows_VC = self._pending_rows
            rows_VC = torch.where(dead_V.unsqueeze(1), rows_VC, old_rows_VC)
            dead_V = dead_V | old_dead_V
        self._pending_rows = (dead_V, rows_VC)
        if not self.defer_codebook_writes:
            self.apply_pending_codebook_update()

    def has_pending_codebook_update(self) -> bool:
        return self._pending_rows is not None

    @torch.no_grad()
    def apply_pending_codebook_update(self) -> bool:
        """Write the rows of dead-code restarts into the codebook (its full, unsharded parameter)."""
        pending = self._pending_rows
        if pending is None:
            return False
        dead_V, rows_VC = pending
        weight = self.codebook.weight
        weight.copy_(torch.where(dead_V.to(weight.device).unsqueeze(1), rows_VC.to(weight), weight))
        self._pending_rows = None
        return True

    @torch.no_grad()
    def kmeans_init(self, z_BMC: torch.Tensor | None, iters: int = 10, seed: int = 0,
                    max_elements: int = ASSIGN_CHUNK_ELEMENTS) -> None:
        """Initialise the codebook by k-means on real latents (two rounds: the per-scale downsampled
        latents, then the residuals seen at every scale with that codebook), on the codebook's device.

        In a distributed run one rank computes: it passes the pooled latents, the others pass None, and
        the codebook is broadcast from rank 0. Memory beyond ``z_BMC`` is bounded (see
        :meth:`kmeans_memory_bound`): latents go through the scales a chunk at a time, and code
        assignment never holds more than ``max_elements`` distances.
        """
        if z_BMC is not None:
            device = self.codebook.weight.device
            gen = torch.Generator(device=device).manual_seed(seed)
            was_training = self.training
            self.eval()
            try:
                samples_SC = self._over_latents(z_BMC, self._scale_samples, max_elements)
                centres_VC = kmeans(samples_SC, self.codebook_size, iters, gen, max_elements=max_elements)
                del samples_SC
                self.codebook.weight.copy_(centres_VC)
                residuals_SC = self._over_latents(z_BMC, self._scale_residuals, max_elements)
                centres_VC = kmeans(residuals_SC, self.codebook_size, iters, gen, max_elements=max_elements)
                del residuals_SC
                self.codebook.weight.copy_(centres_VC)
            finally:
                self.train(was_training)
        elif not (dist.is_available() and dist.is_initialized()):
            raise ValueError("kmeans_init needs latents (only the ranks > 0 of a distributed run pass None)")
        _broadcast(self.codebook.weight)
        self.code_usage.fill_(1.0)
        self.initialized.fill_(True)
        self._pending_rows = None

    def _over_latents(self, z_BMC: torch.Tensor, fn, max_elements: int) -> torch.Tensor:
        """``fn`` over chunks of latents (moved to the codebook's device in fp32), rows written into one
        preallocated (B * sum n_k, C) tensor. A chunk holds at most ``max_elements / GRIDS_PER_CHUNK``
        latent values (or one latent), so the grids ``fn`` makes of it stay within ``max_elements``."""
        device = self.codebook.weight.device
        B = z_BMC.shape[0]
        S = sum(self.scale_sizes)
        out_SC = torch.empty(B * S, self.dim, device=device)
        chunk = self._latents_per_chunk(max_elements)
        for start in range(0, B, chunk):
            z_bMC = z_BMC[start:start + chunk].to(device=device, dtype=torch.float32)
            out_SC[start * S:(start + z_bMC.shape[0]) * S] = fn(self.to_grid(z_bMC))
        return out_SC

    # Latent-sized tensors alive at once while a chunk goes through the scales (input, running residual,
    # upsampled codes and the refiner's temporaries, the residuals of every scale and their concatenation).
    GRIDS_PER_CHUNK = 16

    def _latents_per_chunk(self, max_elements: int) -> int:
        return max(1, max_elements // (self.GRIDS_PER_CHUNK * self.num_latents * self.dim))

    def _scale_samples(self, z_bC_: torch.Tensor) -> torch.Tensor:
        """The latent downsampled to every scale: (b * sum n_k, C), scale-major within the chunk."""
        b = z_bC_.shape[0]
        parts = [self.from_grid(self.downsample(z_bC_, n)) for n in self.scale_sizes]  # (b, n_k, C)
        return torch.cat(parts, dim=1).reshape(b * sum(self.scale_sizes), self.dim)

    def _scale_residuals(self, z_bC_: torch.Tensor) -> torch.Tensor:
        """The residual each scale quantizes, with the current codebook: (b * sum n_k, C)."""
        b, rest, parts = z_bC_.shape[0], z_bC_, []
        for k, n in enumerate(self.scale_sizes):
            r_bnC = self.from_grid(self.downsample(rest, n))
            parts.append(r_bnC)
            rest = rest - self.scale_contribution(k, self.nearest(r_bnC.reshape(-1, self.dim)).view(b, n))
        return torch.cat(parts, dim=1).reshape(b * sum(self.scale_sizes), self.dim)

    def kmeans_memory_bound(self, num_latents: int, max_elements: int = ASSIGN_CHUNK_ELEMENTS) -> int:
        """Bytes :meth:`kmeans_init` allocates beyond its input, for a pool of ``num_latents`` latents
        (B; B * M tokens), on one device: what the chunking guarantees, not a measurement.

        * the samples (then the residuals) of every scale: R = B * sum n_k rows of C fp32, their (R,)
          int64 assignment and, for seeding, an (R,) int64 permutation;
        * the k-means++ seeding pool (:func:`default_seed_points` rows), its norms, distances, a
          temporary and the float64 cumulative sum;
        * one chunk of work: ``max_elements`` fp32 distances, and the latent grids of one chunk
          (``GRIDS_PER_CHUNK`` of them, together at most ``max_elements`` values, or one latent each);
        * the centres and k-means' per-centre sums and counts (V x C, a few copies).
        """
        C, V, M, S = self.dim, self.codebook_size, self.num_latents, sum(self.scale_sizes)
        rows = num_latents * S
        samples = rows * C * 4 + rows * 8 + rows * 8
        seeds = min(rows, default_seed_points(V))
        seeding = seeds * C * 4 + seeds * (4 * 4 + 8)
        chunk_grids = self.GRIDS_PER_CHUNK * min(num_latents, self._latents_per_chunk(max_elements)) * M * C * 4
        chunk_work = max_elements * 4 + max_elements * 8 // max(V, 1) + chunk_grids
        centres = 8 * V * C * 4
        return samples + seeding + chunk_work + centres

def _broadcast(tensor: torch.Tensor) -> None:
    """Keep every DDP rank's codebook identical after a data-dependent change (rank 0 wins)."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
