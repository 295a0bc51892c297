"""Classical mesh-compression competitors: Draco, quadric simplification + Draco, and PLY sizes.

``best_under_budget`` answers "what does the classical pipeline reach in B bytes?": it searches
simplification levels x Draco position-quantisation bits for the best F-score (at ``select_tau``) among
the encodings of at most ``budget_bytes`` bytes.
"""

from __future__ import annotations

import math
from typing import Sequence

import DracoPy
import numpy as np
import trimesh

from vat3d.evaluation.metrics import (
    DEFAULT_TAUS,
    _chamfer_from_distances,
    _fscore_from_distances,
    point_to_surface_distance,
    sample_surface_points,
)
from vat3d.geometry.simplify import simplify

__all__ = ["weld", "draco_encode", "draco_roundtrip", "simplify", "best_under_budget", "ply_bytes"]

DEFAULT_QBITS: tuple[int, ...] = (6, 7, 8, 9, 10, 11, 12, 13, 14)



def weld(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy with vertices at identical positions merged (UV / normal seams split vertices, which cracks
    simplified meshes and costs Draco bytes; the geometry is unchanged)."""
    welded = trimesh.Trimesh(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces), process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    return welded


def draco_encode(mesh: trimesh.Trimesh, quantization_bits: int = 11, compression_level: int = 10) -> bytes:
    """Draco bytes of the mesh's positions and connectivity only (no normals, colours or UVs)."""
    return DracoPy.encode(
        np.asarray(mesh.vertices, dtype=np.float32),
        np.asarray(mesh.faces, dtype=np.uint32),
        quantization_bits=int(quantization_bits),
        compression_level=int(compression_level),
    )


def draco_roundtrip(
    mesh: trimesh.Trimesh, quantization_bits: int = 11, compression_level: int = 10
) -> tuple[trimesh.Trimesh, int]:
    """Encode with Draco and decode again: ``(decoded_mesh, n_bytes)``.

    ``quantization_bits`` (1-30) quantises positions over the mesh's bounding cube; ``compression_level``
    is Draco's speed/size knob (0-10, 10 smallest).
    """
    if len(mesh.faces) == 0:
        raise ValueError("cannot Draco-encode an empty mesh")
    buffer = draco_encode(mesh, quantization_bits, compression_level)
    decoded = DracoPy.decode(buffer)
    out = trimesh.Trimesh(
        np.asarray(decoded.points, dtype=np.float64), np.asarray(decoded.faces, dtype=np.int64), process=False
    )
    return out, len(buffer)


def ply_bytes(mesh: trimesh.Trimesh) -> int:
    """Size of the binary PLY export (float32 positions, int32 faces, no normals)."""
    return len(trimesh.exchange.ply.export_ply(mesh, encoding="binary", vertex_normal=False, include_attributes=False))


def _face_ladder(n_faces: int, min_faces: int, steps_per_octave: int) -> list[int]:
    """Geometric ladder of face counts from ``min_faces`` to ``n_faces`` (inclusive, ascending)."""
    if n_faces <= min_faces:
        return [n_faces]
    n_steps = max(1, math.ceil(math.log2(n_faces / min_faces) * steps_per_octave))
    ladder = np.unique(np.round(np.geomspace(min_faces, n_faces, n_steps + 1)).astype(int))
    return [int(v) for v in ladder]


def best_under_budget(
    mesh: trimesh.Trimesh,
    budget_bytes: int,
    gt_mesh: trimesh.Trimesh | None = None,
    qbits: Sequence[int] = DEFAULT_QBITS,
    taus: Sequence[float] = DEFAULT_TAUS,
    select_tau: float = 0.02,
    n_points: int = 20_000,
    compression_level: int = 10,
    min_faces: int = 4,
    steps_per_octave: int = 4,
    seed: int = 0,
    merge_vertices: bool = True,
) -> dict:
    """Best simplification + Draco encoding of ``mesh`` that fits in ``budget_bytes``.

    With ``merge_vertices`` the mesh is first welded (:func:`weld`), as a careful user of the classical
    pipeline would do. Search: simplified versions of ``mesh`` on a geometric ladder of face counts (``steps_per_octave``
    per doubling, from ``min_faces`` up to the full mesh; each simplified once and cached); for every
    ``qbits`` the largest ladder level whose Draco size fits the budget (binary search, sizes grow with
    the face count), then a bisection on the face count between that level and the next one. Each
    ``qbits``' winner is decoded and scored against ``gt_mesh`` (``mesh`` when ``None``) with
    ``n_points`` samples per surface; the best F-score at ``select_tau`` wins (ties are broken by the
    F-scores at the other taus, smallest first, then the Chamfer-L1 distance, then fewer bytes).

    Returns a dict: ``reachable`` (False when not even the coarsest level fits: the other fields are then
    ``None``/0, ``fscore@tau`` = 0), ``bytes``, ``faces``, ``qbits``, ``budget_bytes``, the F-score /
    precision / recall per tau, ``chamfer_l1``/``accuracy``/``completeness``, ``mesh`` (the decoded mesh)
    and ``candidates`` (per-qbits ``(qbits, faces, bytes, fscore@select_tau)`` rows, for inspection).
    """
    gt = mesh if gt_mesh is None else gt_mesh
    if merge_vertices:
        mesh = weld(mesh)
    gt_points = sample_surface_points(gt, n_points, seed=seed)
    ladder = _face_ladder(len(mesh.faces), min(min_faces, len(mesh.faces)), steps_per_octave)
    simplified: dict[int, trimesh.Trimesh] = {}

    def level_mesh(target: int) -> trimesh.Trimesh:
        if target not in simplified:
            simplified[target] = simplify(mesh, target)
        return simplified[target]

    def size(target: int, q: int) -> int:
        candidate = level_mesh(target)
        return len(draco_encode(candidate, q, compression_level)) if len(candidate.faces) else 0

    def fits(target: int, q: int) -> bool:
        return len(level_mesh(target).faces) > 0 and size(target, q) <= budget_bytes

    candidates: list[dict] = []
    for q in qbits:
        lo, hi = 0, len(ladder) - 1
        if not fits(ladder[lo], q):
            continue
        # Largest ladder index that fits.
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(ladder[mid], q):
                lo = mid
            else:
                hi = mid - 1
        best_target = ladder[lo]
        if lo + 1 < len(ladder):  # bisect between this level and the next (which does not fit)
            a, b = ladder[lo], ladder[lo + 1]
            while b - a > max(1, a // 32):
                mid = (a + b) // 2
                if fits(mid, q):
                    a = mid
                else:
                    b = mid
            best_target = a
        decoded, n_bytes = draco_roundtrip(level_mesh(best_target), q, compression_level)
        pred_to_gt = point_to_surface_distance(sample_surface_points(decoded, n_points, seed=seed + 1), gt)
        gt_to_pred = point_to_surface_distance(gt_points, decoded)
        scores = _fscore_from_distances(pred_to_gt, gt_to_pred, taus)
        scores.update(_chamfer_from_distances(pred_to_gt, gt_to_pred, math.inf))
        if f"fscore@{select_tau:g}" not in scores:
            scores.update(_fscore_from_distances(pred_to_gt, gt_to_pred, (select_tau,)))
        candidates.append(
            {"qbits": q, "faces": len(decoded.faces), "bytes": n_bytes, "mesh": decoded, "scores": scores}
        )

    key = f"fscore@{select_tau:g}"
    summary = [(c["qbits"], c["faces"], c["bytes"], c["scores"][key]) for c in candidates]
    if not candidates:
        out = {"reachable": False, "budget_bytes": budget_bytes, "bytes": None, "faces": 0, "qbits": None, "mesh": None}
        out.update(_fscore_from_distances(np.zeros(0), np.full(len(gt_points), math.inf), taus))
        out.update({"chamfer_l1": math.inf, "accuracy": math.inf, "completeness": math.inf, "candidates": summary})
        return out
    finer_keys = [f"fscore@{tau:g}" for tau in sorted(taus)]
    best = max(
        candidates,
        key=lambda c: (c["scores"][key], *[c["scores"][k] for k in finer_keys], -c["scores"]["chamfer_l1"], -c["bytes"]),
    )
    out = {
        "reachable": True,
        "budget_bytes": budget_bytes,
        "bytes": best["bytes"],
        "faces": best["faces"],
        "qbits": best["qbits"],
        "mesh": best["mesh"],
        "candidates": summary,
    }
    out.update(best["scores"])
    return out
