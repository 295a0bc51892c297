"""Meshes to ``.vat`` token files and back, with a trained :class:`VATokenizer`.

    shape = encode_mesh(model, "chair.obj")           # EncodedShape: tokens, transform, .vat bytes
    mesh = decode_tokens(model, shape.tokens, shape.transform)     # back in the chair's units
    mesh, k = decode_file(model, "chair.vat")           # a truncated file decodes its k complete scales

With ``generator=`` (a :class:`~vat3d.models.generator.NextScaleGenerator` trained on ``model``'s
tokens) the ``.vat`` bytes are entropy-coded with the generator as prior (see
:mod:`vat3d.codec.entropy`); such a file needs the same generator to decode.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import trimesh

from vat3d.codec.vatfile import (
    VatFile,
    VatModelMismatch,
    _read_limited,
    decode_vat,
    decode_vat_header,
    encode_vat,
    fingerprint_matches,
)
from vat3d.codec.effort_defaults import DEFAULT_EFFORT
from vat3d.codec.entropy import decode_entropy_vat, encode_entropy_vat
from vat3d.codec.fingerprint import model_fingerprint_bytes
from vat3d.geometry.io import MeshError, load_mesh
from vat3d.geometry.marching import extract_surface
from vat3d.geometry.normalize import Transform, normalize_mesh
from vat3d.geometry.occupancy import NO_INSIDE_REASON
from vat3d.geometry.points import sample_surface
from vat3d.geometry.simplify import simplify

MeshLike = "str | os.PathLike | trimesh.Trimesh"


@dataclass
class EncodedShape:
    """One shape's multi-scale tokens (list of (n_k,) int64 arrays) and its normalisation.

    ``tokens`` holds the scales the file keeps (all of them unless rate control cut a prefix).
    With an encode-time search (``effort`` other than ``"fast"``) or rate control, ``score`` is the
    held-out IoU of the kept tokens on the input's own labelled queries, ``fast_score`` that of the
    amortised encoder's full tokens, ``prefix_scores`` every prefix's, and ``source`` says which
    candidate of the search won (see :mod:`vat3d.codec.refine`).
    """

    tokens: list[np.ndarray]
    transform: Transform
    data: bytes  # the .vat file contents
    effort: str = DEFAULT_EFFORT
    seconds: float = 0.0
    score: float | None = None
    fast_score: float | None = None
    prefix_scores: list[float] | None = None
    source: str = "fast"

    @property
    def num_bytes(self) -> int:
        return len(self.data)

    @property
    def num_scales(self) -> int:
        return len(self.tokens)


def surface_input(mesh: "str | os.PathLike | trimesh.Trimesh", num_points: int, *, seed: int = 0,
                  margin: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, Transform]:
    """Load (if a path), normalise into the box and sample the surface: (1,N,3) points and normals."""
    if not isinstance(mesh, trimesh.Trimesh):
        mesh = load_mesh(mesh)
    normalized, transform = normalize_mesh(mesh, margin=margin)
    return (*_surface_tensors(normalized, num_points, seed), transform)


def _surface_tensors(normalized: trimesh.Trimesh, num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1,N,3) points and normals sampled on a mesh already in the box."""
    points, normals = sample_surface(normalized, num_points, seed=seed)
    as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).unsqueeze(0)  # noqa: E731
    return as_t(points), as_t(normals)


def encode_mesh(model, mesh: "str | os.PathLike | trimesh.Trimesh", *, num_points: int | None = None,
                seed: int = 0, margin: float = 0.05, generator=None, effort=DEFAULT_EFFORT,
                max_bytes: int | None = None, target_iou: float | None = None) -> EncodedShape:
    """Tokenize one mesh (deterministic for a given seed) and build its ``.vat`` bytes.

    ``generator``: entropy-code the tokens with this generator as prior (else raw bit-packing).
    ``effort``: ``"fast"`` (the amortised encoder), ``"turned"`` (the default: the amortised encoder in six
    axis-aligned turns, the best-scoring one kept; ``"oriented"`` tries all 24), ``"balanced"`` or
    ``"best"`` (search the tokens against the mesh's own occupancy, never worse than ``"fast"`` on held-out
    queries; an :class:`~vat3d.codec.refine.EffortSettings` also works). See :mod:`vat3d.codec.refine`. An open
    surface with no inside cannot be labelled, so it is not searched: it keeps the ``"fast"`` tokens
    (``source`` says so, ``score`` is None) and rate control by ``target_iou`` keeps all its scales.
    Rate control: ``target_iou`` keeps the shortest prefix of scales whose held-out IoU reaches it
    (all scales if none does); ``max_bytes`` keeps the longest prefix whose file fits (a
    ``ValueError`` if not even one scale fits).
    """
    return encode_meshes(model, [mesh], num_points=num_points, seed=seed, margin=margin, generator=generator,
                         effort=effort, max_bytes=max_bytes, target_iou=target_iou)[0]


def encode_meshes(model, meshes: Sequence, *, num_points: int | None = None, seed: int = 0, margin: float = 0.05,
                  generator=None, effort=DEFAULT_EFFORT, max_bytes: int | None = None, target_iou: float | None = None,
                  ) -> list[EncodedShape]:
    """:func:`encode_mesh` of several meshes, searched together as one batch (same results as one by one)."""
    from vat3d.codec.refine import effort_settings, heldout_iou, prefix_scores, refine_tokens

    settings = effort_settings(effort)
    effort_name = effort if isinstance(effort, str) else "custom"
    if target_iou is not None and not 0.0 < target_iou <= 1.0:
        raise ValueError(f"target_iou must be in (0, 1], got {target_iou}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    start = time.perf_counter()
    model.eval()
    device = next(model.parameters()).device
    loaded = [m if isinstance(m, trimesh.Trimesh) else load_mesh(m) for m in meshes]
    normalized = [normalize_mesh(m, margin=margin) for m in loaded]  # (mesh in the box, transform)
    inputs = [_surface_tensors(mesh, num_points or model.num_points, seed) for mesh, _ in normalized]
    if settings.orientations > 1:  # tokenize each shape in the axis-aligned turn its tokens keep best
        normalized, inputs = zip(*(_turn(model, mesh, transform, p, nrm, settings, device)
                                   for (mesh, transform), (p, nrm) in zip(normalized, inputs)))
    points = torch.cat([p for p, _ in inputs]).to(device)
    normals = torch.cat([n for _, n in inputs]).to(device)
    n = len(loaded)
    queries: list = [None] * n
    if settings.searches or target_iou is not None:
        queries = [_labelled_or_none(mesh, settings, seed) for mesh, _ in normalized]
    # an open surface has no inside to label: that shape keeps the amortised encoder's tokens, unscored
    searched = [b for b in range(n) if queries[b] is not None] if settings.searches else []
    per_shape: list = [None] * n
    scores, fast_scores, sources = [None] * n, [None] * n, ["fast"] * n
    if searched:
        pick = torch.tensor(searched, device=device)
        result = refine_tokens(model, points[pick], normals[pick], [queries[b] for b in searched], effort=settings,
                               seed=seed)  # a shape's result does not depend on its batch mates
        for i, b in enumerate(searched):
            per_shape[b], scores[b] = result.tokens[i], result.scores[i]
            fast_scores[b], sources[b] = result.fast_scores[i], result.sources[i]
    rest = [b for b in range(n) if per_shape[b] is None]
    if rest:
        pick = torch.tensor(rest, device=device)
        with torch.no_grad():
            full = model.encode(points[pick], normals[pick])
        for i, b in enumerate(rest):
            per_shape[b] = [t[i:i + 1] for t in full]
            if settings.searches:
                sources[b] = "fast (not searched: the mesh has no inside)"
    out = []
    for b, tokens in enumerate(per_shape):
        transform = normalized[b][1]
        prefixes = None
        keep = len(tokens)
        if target_iou is not None and queries[b] is not None:
            with torch.no_grad():
                prefixes = prefix_scores(model, tokens, queries[b])[0].tolist()
            keep = next((k + 1 for k, s in enumerate(prefixes) if s >= target_iou), keep)
        arrays = [t[0].cpu().numpy() for t in tokens]
        data = tokens_to_bytes(model, arrays[:keep], transform, generator=generator)
        while max_bytes is not None and len(data) > max_bytes:
            if keep == 1:
                raise ValueError(f"not even one scale fits in {max_bytes} B (the first scale's file is "
                                 f"{len(data)} B)")
            keep -= 1
            data = tokens_to_bytes(model, arrays[:keep], transform, generator=generator)
        score = None
        if prefixes:
            score = prefixes[keep - 1]
        elif scores[b] is not None:
            score = scores[b] if keep == len(tokens) else float(heldout_iou(model, tokens[:keep], queries[b])[0])
        out.append(EncodedShape(arrays[:keep], transform, data, effort=effort_name, score=score,
                                fast_score=fast_scores[b], prefix_scores=prefixes, source=sources[b]))
    seconds = (time.perf_counter() - start) / max(len(out), 1)
    for shape in out:
        shape.seconds = seconds
    return out


def _turn(model, mesh: trimesh.Trimesh, transform: Transform, points_1N3: torch.Tensor, normals_1N3: torch.Tensor,
          settings, device) -> tuple[tuple[trimesh.Trimesh, Transform], tuple[torch.Tensor, torch.Tensor]]:
    """One shape in its best turn: (turned mesh in the box, transform), (turned points, normals)."""
    from vat3d.codec.refine import best_orientation

    with torch.no_grad():
        k = best_orientation(model, points_1N3[0].to(device), normals_1N3[0].to(device), settings.orientations,
                             offset=settings.orientation_offset)
    if k == 0:
        return (mesh, transform), (points_1N3, normals_1N3)
    turned = transform.turned(k)
    r = turned.rotation.T
    r_t = torch.tensor(r, dtype=points_1N3.dtype)
    mesh = trimesh.Trimesh(np.asarray(mesh.vertices) @ r, np.asarray(mesh.faces), process=False)
    return (mesh, turned), (points_1N3 @ r_t, normals_1N3 @ r_t)


def _labelled_or_none(normalized_mesh: trimesh.Trimesh, settings, seed: int):
    """The search's labelled queries of a mesh in the box, or None for an open surface with no inside."""
    from vat3d.codec.refine import label_queries

    try:
        return label_queries(normalized_mesh, num_volume=settings.num_volume, num_near=settings.num_near,
                             heldout_fraction=settings.heldout_fraction, seed=seed)
    except MeshError as error:
        if str(error) != NO_INSIDE_REASON:
            raise
        return None


def tokens_to_bytes(model, tokens: Sequence, transform: Transform | None = None, *, generator=None) -> bytes:
    """``.vat`` bytes of given tokens (raw, or entropy-coded with ``generator``)."""
    transform = transform or Transform()
    meta = dict(model_fingerprint=model_fingerprint_bytes(model), codebook_size=model.codebook_size,
                scale_sizes=model.scale_sizes, center=transform.center, scale=transform.scale,
                orientation=transform.orientation)
    if generator is None:
        return encode_vat([np.asarray(t).reshape(-1) for t in tokens], **meta)
    return encode_entropy_vat(generator, tokens, **meta)


@torch.no_grad()
def decode_tokens(model, tokens: Sequence, transform: Transform | None = None, *, resolution: int = 256,
                  num_scales: int | None = None, dense: bool = False, precision: str = "fp32",
                  band: float = 0.0, faces: int | None = None, iso: float = 0.0) -> trimesh.Trimesh:
    """Tokens of the first k scales -> a mesh (original coordinates when ``transform`` is given).

    ``faces``: simplify the extracted surface to at most about this many faces (quadric edge collapse;
    ``None`` keeps marching cubes' full mesh, 10^5-10^6 faces at 256^3).

    ``dense=True`` evaluates every grid point (the reference for coarse-to-fine extraction);
    ``precision="bf16"`` runs the occupancy MLP in bfloat16 (faster on CPUs with bf16 support; ``"auto"``
    picks it where the hardware computes bf16 natively);
    ``band`` (logits) also refines cells whose corners come that close to the surface, which finds
    small fragments the coarse pass misses (see :func:`vat3d.geometry.marching.extract_surface`).
    ``iso``: the occupancy logit at which the surface is drawn (0: probability 0.5).
    """
    model.eval()
    device = next(model.parameters()).device
    tokens = list(tokens)[: num_scales or len(tokens)]
    indices = [torch.as_tensor(np.asarray(t), dtype=torch.long, device=device).reshape(1, -1) for t in tokens]
    mesh = extract_surface(model.occupancy_fn(indices, precision=precision), resolution=resolution, dense=dense,
                           band=band, iso=iso, device=device)
    if faces is not None and len(mesh.faces) > faces:
        mesh = simplify(mesh, faces)
    if transform is not None and len(mesh.vertices):
        mesh = trimesh.Trimesh(transform.invert(np.asarray(mesh.vertices)), mesh.faces, process=False,
                               metadata=dict(mesh.metadata))
    return mesh


class EntropyGeneratorRequired(ValueError):
    """An entropy-coded file was given without a generator to decode it."""


def read_tokens(model, data: bytes, *, max_scales: int | None = None, generator=None):
    """Parse ``.vat`` bytes made with ``model`` -> ``(VatFile, Transform)``.

    A file from another model is a :class:`~vat3d.codec.vatfile.VatModelMismatch` naming both
    fingerprints. Entropy-coded files need ``generator`` (the one recorded in the file; another
    one is a ``VatModelMismatch`` naming both). Truncated files give their complete leading
    scales (``complete=False`` and a :class:`~vat3d.codec.vatfile.VatTruncatedWarning`).
    """
    fingerprint = model_fingerprint_bytes(model)
    header = decode_vat_header(data)
    if header.coding == "entropy":
        if not fingerprint_matches(header.model_fingerprint, fingerprint):
            raise VatModelMismatch(header.model_fingerprint, fingerprint, "model")
        if generator is None:
            raise EntropyGeneratorRequired(
                f"the file is entropy-coded with generator {header.generator_fingerprint.hex()}: "
                "pass that generator (--entropy GENERATOR) to decode it")
        header, tokens, complete = decode_entropy_vat(generator, data, expected_fingerprint=fingerprint,
                                                      max_scales=max_scales)
        vat = VatFile(header, tokens, complete)
    else:
        vat = decode_vat(data, expected_fingerprint=fingerprint, max_scales=max_scales)
        header = vat.header
    if list(header.scale_sizes) != list(model.scale_sizes) or header.codebook_size != model.codebook_size:
        raise ValueError(f"the file's schedule {header.scale_sizes} / V={header.codebook_size} does not fit the "
                         f"model ({model.scale_sizes} / V={model.codebook_size})")
    transform = Transform(center=np.asarray(header.center, dtype=np.float64), scale=header.scale,
                          orientation=header.orientation)
    return vat, transform


def decode_file(model, path: "str | os.PathLike", *, resolution: int = 256, num_scales: int | None = None,
                generator=None, precision: str = "fp32", band: float = 0.0,
                dense: bool = False, faces: int | None = None) -> tuple[trimesh.Trimesh, int]:
    """Decode a ``.vat`` file; returns the mesh (original coordinates) and the number of scales used."""
    vat, transform = read_tokens(model, _read_limited(path), max_scales=num_scales, generator=generator)
    mesh = decode_tokens(model, vat.tokens, transform, resolution=resolution, precision=precision, band=band,
                         dense=dense, faces=faces)
    return mesh, len(vat.tokens)
