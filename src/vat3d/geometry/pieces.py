"""Connected pieces of a surface mesh: labels, areas, the share torn off the largest piece, dropping the
small pieces (floaters), and telling a speck from a usable shape.

Pieces are sets of faces joined by shared edges, after coincident vertices are merged, so a
marching-cubes mesh and a mesh whose triangles do not share vertex indices count alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

__all__ = ["Pieces", "surface_pieces", "torn_share", "is_speck", "drop_small_pieces"]


@dataclass
class Pieces:
    mesh: trimesh.Trimesh  # the mesh with coincident vertices merged (the labels index its faces)
    labels_F: np.ndarray  # piece of each face
    area_P: np.ndarray  # surface area of each piece

    @property
    def total_area(self) -> float:
        return float(self.area_P.sum())


def surface_pieces(mesh: trimesh.Trimesh) -> Pieces:
    """The edge-connected pieces of ``mesh`` (not empty) with their areas."""
    merged = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=False)
    merged.merge_vertices()
    area_F = np.asarray(merged.area_faces, dtype=np.float64)
    labels_F = trimesh.graph.connected_component_labels(merged.face_adjacency, node_count=len(merged.faces))
    return Pieces(merged, labels_F, np.bincount(labels_F, weights=area_F))


def _has_surface(mesh: trimesh.Trimesh | None) -> bool:
    return mesh is not None and len(mesh.faces) > 0 and len(mesh.vertices) > 0 and float(mesh.area) > 0.0


def torn_share(mesh: trimesh.Trimesh | None) -> float:
    """Share of the surface area outside the largest piece, in [0, 1): 0 for one piece, ``nan`` for an
    empty mesh. (:func:`vat3d.evaluation.metrics.fragmentation` is this statistic.)"""
    if not _has_surface(mesh):
        return float("nan")
    pieces = surface_pieces(mesh)
    total = pieces.total_area
    if total <= 0.0:
        return float("nan")
    outside = float(total - pieces.area_P.max()) / total  # 0 up to rounding for one piece
    return outside if outside > 1e-9 else 0.0


def is_speck(mesh: trimesh.Trimesh | None, *, min_faces: int = 50, min_extent: float = 0.2) -> bool:
    """A non-empty mesh that is no usable shape: under ``min_faces`` faces, or its bounding box's
    longest side under ``min_extent`` (box units; a generated shape fills most of the [-1, 1]^3 box).
    An empty mesh is not a speck."""
    if not _has_surface(mesh):
        return False
    extent = float(np.ptp(np.asarray(mesh.vertices), axis=0).max())
    return len(mesh.faces) < min_faces or extent < min_extent


def drop_small_pieces(mesh: trimesh.Trimesh, min_share: float) -> trimesh.Trimesh:
    """``mesh`` without the pieces whose area is under ``min_share`` of the whole surface's.

    The largest piece is always kept, so a non-empty mesh stays non-empty; ``min_share <= 0`` or an
    empty mesh returns ``mesh`` itself. Vertices of dropped pieces are removed too.
    """
    if not 0.0 <= min_share < 1.0:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}")
    if min_share <= 0.0 or len(mesh.faces) == 0:
        return mesh
    pieces = surface_pieces(mesh)
    total = pieces.total_area
    if total <= 0.0:
        return mesh
    keep_P = pieces.area_P >= min_share * total
    keep_P[int(np.argmax(pieces.area_P))] = True
    if keep_P.all():
        return mesh
    kept = pieces.mesh.submesh([np.flatnonzero(keep_P[pieces.labels_F])], append=True, repair=False)
    return trimesh.Trimesh(np.asarray(kept.vertices), np.asarray(kept.faces), process=False)
