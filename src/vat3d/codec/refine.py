"""Encode-time search: fit one shape's tokens to its own occupancy, the decoder frozen.

The amortised encoder gives a first guess in one forward pass (``effort="fast"``). At encode
time the input mesh is known, so its occupancy can be labelled (fast winding number, as
``vat3d prepare`` does) and the tokens can be searched against it:

1. **latent phase**: Adam on the encoder's pre-quantization latent ``z``, loss = BCE of the
   decoded occupancy at labelled queries, decoded through the multi-scale VQ with the
   straight-through gradient (the forward pass always decodes real tokens);
2. **code phase** (quantization-aware): at each scale, the ``candidates`` codes nearest to that
   scale's residual become a softmax choice per token, annealed from soft to hard; the decoder
   sees the mixture, and the choice is read back as the argmax.

Every candidate token set (``fast`` included) is scored on **held-out** labelled queries of the
same shape (IoU of the decoded occupancy), and the best one is returned: by that score the
result is never worse than ``fast``, and a search that collapses (to an empty shape, say) is
simply not chosen.

    queries = label_queries(normalized_mesh, seed=0)
    result = refine_tokens(model, points_BN3, normals_BN3, [queries], effort="balanced")
    result.tokens[0], result.scores[0], result.fast_scores[0]

Everything is deterministic for a seed. Shapes are refined together as a batch (one Adam state
per shape, a summed loss, so a shape's result does not depend on its batch mates).

**Orientation** (``orientations > 1``, before everything else): the amortised encoder is far from
rotation-invariant, so the shape is also tokenized turned by the first ``orientations`` of the 24
axis-aligned rotations (:data:`vat3d.geometry.normalize.ORIENTATIONS`; the box stays the box) in the
order of :data:`TURN_SEARCH_ORDER`, and the turn whose tokens decode best is kept; the file names it
in one header byte. The score needs no labels (:func:`orientation_scores`): the decoded field should
be outside just outside the surface and inside just inside, along the input's normals.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from vat3d.geometry.normalize import ORIENTATIONS
from vat3d.geometry.occupancy import sample_occupancy
from vat3d.models.modules import has_native_bf16

__all__ = ["EFFORTS", "EffortSettings", "LabelledQueries", "RefineResult", "TURN_SEARCH_ORDER",
           "best_orientation", "effort_settings", "heldout_iou", "label_queries", "orientation_scores", "refine_tokens",
           "prefix_scores"]

#: The order in which turns are tried (indices into ``ORIENTATIONS``, identity first): each next turn is
#: the one that raised the label-free pick's mean F@0.02 most on 43 held-out package meshes of the
#: training campaign's validation split (never on the unseen evaluation set; ``benchmarks/orientation.py
#: --greedy 24``, ``benchmarks/results/orientation/oracle_val43.json``). ``orientations=k`` tries the
#: first k of it; the files name turns by their index in ``ORIENTATIONS``, whatever this order is.
TURN_SEARCH_ORDER: tuple[int, ...] = (0, 14, 18, 20, 6, 1, 19, 11, 12, 10, 8, 3, 4, 9, 16, 22, 17, 7, 2, 21, 23, 5,
                                      15, 13)


@dataclass(frozen=True)
class EffortSettings:
    """How hard the encoder searches (see the module docstring).

    latent_steps / code_steps: Adam steps of the two phases (0 skips a phase).
    lr / code_lr: their learning rates (latent units; code logits).
    candidates: codes per token offered in the code phase (the nearest ones to the residual).
    temperature: (start, end) of the code phase's softmax temperature, annealed geometrically.
    queries_per_step: labelled queries drawn (without replacement) per step.
    score_every: steps between held-out scorings of the current tokens.
    num_volume / num_near: labelled queries per shape (uniform in the box / near the surface);
    heldout_fraction of them are kept for scoring only.
    precision: of the search steps' decoder passes (forward and backward): "fp32", "bf16" (autocast) or
    "auto" (bf16 where the hardware computes it natively, as decoding does). Held-out scoring, and so
    the choice of the result, is always fp32.
    orientations: how many of the 24 axis-aligned turns to try before anything else (1: none; the
    first n of :data:`TURN_SEARCH_ORDER`, identity first).
    orientation_offset: box units off the surface, along the normals, where :func:`orientation_scores`
    checks outside and inside.
    """

    latent_steps: int = 0
    code_steps: int = 0
    lr: float = 2e-2
    code_lr: float = 0.1
    candidates: int = 8
    temperature: tuple[float, float] = (1.0, 0.05)
    code_forward: str = "soft"
    queries_per_step: int = 8192
    score_every: int = 10
    score: str = "iou"
    num_volume: int = 16384
    num_near: int = 32768
    heldout_fraction: float = 0.25
    precision: str = "fp32"
    orientations: int = 1
    orientation_offset: float = 0.02

    def __post_init__(self) -> None:
        if not 1 <= self.orientations <= len(ORIENTATIONS):
            raise ValueError(f"orientations must be in [1, {len(ORIENTATIONS)}], got {self.orientations}")

    @property
    def searches(self) -> bool:
        return self.latent_steps > 0 or self.code_steps > 0


#: The named efforts of ``vat3d encode --effort`` (costs on 2 CPU cores: docs/codec.md).
EFFORTS: dict[str, EffortSettings] = {
    "fast": EffortSettings(),
    "turned": EffortSettings(orientations=6),
    "oriented": EffortSettings(orientations=len(ORIENTATIONS)),
    "balanced": EffortSettings(latent_steps=100, lr=0.05, queries_per_step=4096, precision="auto"),
    "best": EffortSettings(latent_steps=300, lr=0.05),
}


def effort_settings(effort: "str | EffortSettings") -> EffortSettings:
    if isinstance(effort, EffortSettings):
        return effort
    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {sorted(EFFORTS)} (or EffortSettings), got {effort!r}")
    return EFFORTS[effort]


# --------------------------------------------------------------------------- labelled queries


@dataclass
class LabelledQueries:
    """One shape's labelled points in the model's box: the search fits ``train``, scores ``heldout``."""

    train_points_Q3: torch.Tensor
    train_labels_Q: torch.Tensor  # float 0/1
    heldout_points_H3: torch.Tensor
    heldout_labels_H: torch.Tensor
    heldout_near_H: torch.Tensor  # bool: the point was drawn near the surface (not uniform in the box)

    def to(self, device) -> "LabelledQueries":
        return LabelledQueries(*(t.to(device) for t in (self.train_points_Q3, self.train_labels_Q,
                                                        self.heldout_points_H3, self.heldout_labels_H,
                                                        self.heldout_near_H)))


def label_queries(normalized_mesh: trimesh.Trimesh, *, num_volume: int = 16384, num_near: int = 32768,
                  heldout_fraction: float = 0.25, seed: int = 0) -> LabelledQueries:
    """Labelled volume and near-surface points of a mesh already in the ``[-1, 1]`` box, split at random.

    Raises ``MeshError`` for an open surface with no inside (as ``vat3d prepare`` does).
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    occ = sample_occupancy(normalized_mesh, num_volume=num_volume, num_near=num_near, seed=seed,
                           point_dtype=np.float32)
    points = torch.from_numpy(np.concatenate([occ.volume_points, occ.near_points]).astype(np.float32))
    labels = torch.from_numpy(np.concatenate([occ.volume_labels, occ.near_labels]).astype(np.float32))
    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed + 1))
    num_heldout = max(1, int(round(heldout_fraction * len(points))))
    held, train = order[:num_heldout], order[num_heldout:]
    near = torch.arange(len(points)) >= len(occ.volume_points)
    return LabelledQueries(points[train], labels[train], points[held], labels[held], near[held])


# --------------------------------------------------------------------------- scoring


def _iou_B(logits_BH: torch.Tensor, labels_BH: torch.Tensor, mask_BH: torch.Tensor | None = None) -> torch.Tensor:
    pred, gt = logits_BH > 0, labels_BH > 0.5
    if mask_BH is not None:
        pred, gt = pred & mask_BH, gt & mask_BH
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def _score_latent(model, latent_BMC: torch.Tensor, points_BH3: torch.Tensor, labels_BH: torch.Tensor,
                  mask_BH: torch.Tensor | None = None, chunk: int = 16384) -> torch.Tensor:
    planes = model.decoder.planes(latent_BMC)
    logits = torch.cat([model.decoder.query(planes, points_BH3[:, i:i + chunk])
                        for i in range(0, points_BH3.shape[1], chunk)], dim=1)
    return _iou_B(logits.float(), labels_BH, mask_BH)


def heldout_iou(model, indices: Sequence[torch.Tensor], queries: "LabelledQueries | Sequence[LabelledQueries]"
                ) -> torch.Tensor:
    """Held-out IoU of the shapes decoded from ``indices`` (list of (B, n_k)): (B,) floats.

    A prefix of the scales is scored as it would decode.
    """
    queries = [queries] if isinstance(queries, LabelledQueries) else list(queries)
    points, labels = _stack([q.heldout_points_H3 for q in queries]), _stack([q.heldout_labels_H for q in queries])
    device = indices[0].device
    return _score_latent(model, model.quantizer.indices_to_latent(list(indices)), points.to(device),
                         labels.to(device))


def prefix_scores(model, indices: Sequence[torch.Tensor], queries: "LabelledQueries | Sequence[LabelledQueries]"
                  ) -> torch.Tensor:
    """Held-out IoU of every prefix: (B, K) for prefixes of 1..K scales."""
    return torch.stack([heldout_iou(model, list(indices)[:k], queries) for k in range(1, len(indices) + 1)], dim=1)


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Same-length per-shape tensors -> (B, ...); shapes with more points are cut to the shortest."""
    n = min(len(t) for t in tensors)
    return torch.stack([t[:n] for t in tensors])


# --------------------------------------------------------------------------- the search


@dataclass
class RefineResult:
    """Per shape: the chosen tokens, its held-out IoU and the amortised encoder's, and where it came from."""

    tokens: list[list[torch.Tensor]]  # per shape, per scale (1, n_k)
    scores: list[float]
    fast_scores: list[float]
    sources: list[str]  # "fast", "latent@STEP" or "codes@STEP"
    seconds: float
    history: list[dict] = field(default_factory=list)  # per scoring: step, phase, scores


def _candidate_codes(quantizer, z_BMC: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Per scale, the ``count`` codes nearest to the residual of the hard residual quantization: (B, n_k, c)."""
    codes_VC = quantizer.codebook.weight.float()
    z = quantizer.to_grid(z_BMC.float())
    rest = z.clone()
    out = []
    for k, n in enumerate(quantizer.scale_sizes):
        r_NC = quantizer.from_grid(quantizer.downsample(rest, n)).reshape(-1, quantizer.dim)
        dist = torch.cdist(r_NC, codes_VC)
        top_Nc = dist.topk(min(count, codes_VC.shape[0]), dim=-1, largest=False).indices
        out.append(top_Nc.view(z.shape[0], n, -1))
        rest = rest - quantizer.scale_contribution(k, top_Nc[:, 0].view(z.shape[0], n))
    return out


def _lead_with(cand_Bnc: torch.Tensor, lead_Bn: torch.Tensor) -> torch.Tensor:
    """Candidates with ``lead`` first, then the others in their order (``lead`` taken out if among them)."""
    others = cand_Bnc != lead_Bn.unsqueeze(-1)
    order = torch.argsort((~others).to(torch.uint8), dim=-1, stable=True)
    rest = torch.gather(cand_Bnc, -1, order)[..., : cand_Bnc.shape[-1] - 1]
    return torch.cat([lead_Bn.unsqueeze(-1), rest], dim=-1)


def _soft_latent(quantizer, cands: list[torch.Tensor], logits: list[torch.Tensor], temperature: float,
                 hard: bool = False) -> torch.Tensor:
    """The latent (B, M, C) of softmax-weighted candidate codes at every scale.

    ``hard``: the forward pass takes each token's argmax code (real tokens), the gradient the softmax's.
    """
    codes_VC = quantizer.codebook.weight.float()
    f_hat = None
    for k, (cand_Bnc, logit_Bnc) in enumerate(zip(cands, logits)):
        B, n, _ = cand_Bnc.shape
        w_Bnc = torch.softmax(logit_Bnc / temperature, dim=-1)
        if hard:
            one_hot = F.one_hot(w_Bnc.argmax(-1), w_Bnc.shape[-1]).to(w_Bnc.dtype)
            w_Bnc = one_hot + w_Bnc - w_Bnc.detach()
        soft_BnC = (w_Bnc.unsqueeze(-1) * codes_VC[cand_Bnc]).sum(2)
        grid = soft_BnC.transpose(1, 2).reshape(B, quantizer.dim, *quantizer._grid_shape(n))
        h = quantizer.refiners[k](quantizer.upsample(grid))
        f_hat = h if f_hat is None else f_hat + h
    return quantizer.from_grid(f_hat)


def _draw(generators: list[torch.Generator], total: int, count: int) -> torch.Tensor:
    """Per shape, ``count`` distinct query indices out of ``total`` (its own generator): (B, count)."""
    count = min(count, total)
    return torch.stack([torch.randperm(total, generator=g)[:count] for g in generators])


@torch.no_grad()
def orientation_scores(model, points_N3: torch.Tensor, normals_N3: torch.Tensor,
                       turns: "int | Sequence[int]" = 24, *, offset: float = 0.02, batch_size: int = 8) -> torch.Tensor:
    """Label-free scores of one shape's tokens in each turn of ``turns``: (len(turns),).

    ``turns``: indices into :data:`~vat3d.geometry.normalize.ORIENTATIONS`, or an int k for the first
    k of them (index order). The shape (surface points and their outward normals, in the box) is
    turned, tokenized by the amortised encoder and decoded at ``points + offset * normals`` (should be
    outside: logit < 0) and ``points - offset * normals`` (inside: logit > 0); the score is the mean of
    the two hit rates, so 0.5 for a field that says "outside" (or "inside") everywhere.
    """
    turns = list(range(turns)) if isinstance(turns, int) else list(turns)
    rot_K33 = torch.tensor(ORIENTATIONS[turns], dtype=points_N3.dtype, device=points_N3.device)
    scores = []
    for start in range(0, len(turns), batch_size):
        r = rot_K33[start:start + batch_size]
        p_KN3, n_KN3 = points_N3 @ r.transpose(1, 2), normals_N3 @ r.transpose(1, 2)
        tokens = model.encode(p_KN3, n_KN3)
        logits = model.decode_tokens(tokens, torch.cat([p_KN3 + offset * n_KN3, p_KN3 - offset * n_KN3], 1))
        outside, inside = logits[:, : p_KN3.shape[1]], logits[:, p_KN3.shape[1]:]
        scores.append(0.5 * ((outside < 0).float().mean(1) + (inside > 0).float().mean(1)))
    return torch.cat(scores)


def best_orientation(model, points_N3: torch.Tensor, normals_N3: torch.Tensor, orientations: int = 24, *,
                     offset: float = 0.02) -> int:
    """The turn (index into ``ORIENTATIONS``) with the highest :func:`orientation_scores` among the first
    ``orientations`` of :data:`TURN_SEARCH_ORDER` (the earliest in that order among ties: identity first)."""
    if orientations <= 1:
        return 0
    turns = TURN_SEARCH_ORDER[:orientations]
    return turns[int(torch.argmax(orientation_scores(model, points_N3, normals_N3, turns, offset=offset)))]


def refine_tokens(model, points_BN3: torch.Tensor, normals_BN3: torch.Tensor | None,
                  queries: Sequence[LabelledQueries], *, effort: "str | EffortSettings" = "balanced",
                  seed: int = 0, **overrides) -> RefineResult:
    """Search the tokens of B shapes against their labelled queries (one per shape); see the module docstring.

    ``overrides`` replace fields of the effort's :class:`EffortSettings` (``latent_steps=60``...).
    """
    settings = replace(effort_settings(effort), **overrides) if overrides else effort_settings(effort)
    start = time.perf_counter()
    device = points_BN3.device
    was_training = model.training
    model.eval()
    grads = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():  # the search needs gradients even when the caller is under no_grad
            return _refine(model, points_BN3, normals_BN3, list(queries), settings, seed, device, start)
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        model.train(was_training)


def _refine(model, points_BN3, normals_BN3, queries, settings, seed, device, start) -> RefineResult:
    B = points_BN3.shape[0]
    if len(queries) != B:
        raise ValueError(f"{B} shapes but {len(queries)} query sets")
    queries = [q.to(device) for q in queries]
    train_P = _stack([q.train_points_Q3 for q in queries])
    train_L = _stack([q.train_labels_Q for q in queries])
    held_P = _stack([q.heldout_points_H3 for q in queries])
    held_L = _stack([q.heldout_labels_H for q in queries])
    held_M = _stack([q.heldout_near_H for q in queries]) if settings.score == "near_iou" else None
    quantizer = model.quantizer
    with torch.no_grad():
        z0 = model.posterior(points_BN3, normals_BN3, sample=False)["z"].float()
    fast = quantizer.encode(z0)
    best_tokens = [[t[b:b + 1].clone() for t in fast] for b in range(B)]
    fast_scores = _score_latent(model, quantizer.indices_to_latent(fast), held_P, held_L, held_M)
    best_scores = fast_scores.clone()
    sources = ["fast"] * B
    history: list[dict] = [{"phase": "fast", "step": 0, "scores": fast_scores.tolist()}]

    def consider(tokens: list[torch.Tensor], phase: str, step: int) -> None:
        scores = _score_latent(model, quantizer.indices_to_latent(tokens), held_P, held_L, held_M)
        history.append({"phase": phase, "step": step, "scores": scores.tolist()})
        for b in torch.nonzero(scores > best_scores).flatten().tolist():
            best_scores[b] = scores[b]
            best_tokens[b] = [t[b:b + 1].clone() for t in tokens]
            sources[b] = f"{phase}@{step}"

    generators = [torch.Generator().manual_seed(seed) for _ in range(B)]
    total = train_P.shape[1]
    rows = torch.arange(B, device=device).unsqueeze(1)

    if settings.precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision must be fp32, bf16 or auto, got {settings.precision!r}")
    bf16 = settings.precision == "bf16" or (settings.precision == "auto" and has_native_bf16(device))

    def batch_loss(latent_BMC: torch.Tensor) -> torch.Tensor:
        idx = _draw(generators, total, settings.queries_per_step).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.decoder.query(model.decoder.planes(latent_BMC), train_P[rows, idx])
        per_shape = F.binary_cross_entropy_with_logits(logits.float(), train_L[rows, idx], reduction="none").mean(1)
        return per_shape.sum()  # a sum: each shape's gradient is its own

    z = z0.clone()
    if settings.latent_steps > 0:
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=settings.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, settings.latent_steps) / settings.latent_steps)))
        for step in range(1, settings.latent_steps + 1):
            latent, _ = quantizer(z)
            loss = batch_loss(latent)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % settings.score_every == 0 or step == settings.latent_steps:
                consider(quantizer.encode(z.detach()), "latent", step)
        z = z.detach()

    if settings.code_steps > 0:
        # start from the best tokens found so far: their codes lead each scale's candidates
        with torch.no_grad():
            cands = _candidate_codes(quantizer, z, settings.candidates)
            start_tokens = [torch.cat([best_tokens[b][k] for b in range(B)]) for k in range(len(cands))]
            cands = [_lead_with(cand, start) for cand, start in zip(cands, start_tokens)]
        logits = [torch.zeros(c.shape, device=device) for c in cands]
        for lg in logits:
            lg[..., 0] = 2.0
            lg.requires_grad_(True)
        opt = torch.optim.Adam(logits, lr=settings.code_lr)
        t0, t1 = settings.temperature
        for step in range(1, settings.code_steps + 1):
            frac = (step - 1) / max(settings.code_steps - 1, 1)
            temperature = t0 * (t1 / t0) ** frac
            loss = batch_loss(_soft_latent(quantizer, cands, logits, temperature, settings.code_forward == "hard"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % settings.score_every == 0 or step == settings.code_steps:
                with torch.no_grad():
                    hard = [torch.gather(c, -1, lg.argmax(-1, keepdim=True)).squeeze(-1)
                            for c, lg in zip(cands, logits)]
                consider(hard, "codes", step)

    return RefineResult(tokens=best_tokens, scores=best_scores.tolist(), fast_scores=fast_scores.tolist(),
                        sources=sources, seconds=time.perf_counter() - start, history=history)
