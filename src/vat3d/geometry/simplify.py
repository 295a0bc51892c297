"""Quadric edge-collapse simplification (fast-simplification) to a face budget.

Used by decoding (``vat3d decode --faces``: a 256^3 decode gives 10^5-10^6 faces, far more than the
shape needs) and by the simplification + Draco baseline.
"""

from __future__ import annotations

import fast_simplification
import numpy as np
import trimesh

__all__ = ["clean_mesh", "simplify"]


def clean_mesh(vertices_V3: np.ndarray, faces_F3: np.ndarray) -> trimesh.Trimesh:
    """A mesh without unreferenced vertices (Draco and byte counts should not pay for them)."""
    mesh = trimesh.Trimesh(np.asarray(vertices_V3, dtype=np.float64), np.asarray(faces_F3, dtype=np.int64),
                           process=False)
    if len(mesh.faces):
        mesh.remove_unreferenced_vertices()
    return mesh


def simplify(mesh: trimesh.Trimesh, target_faces: int, aggressiveness: float = 7.0) -> trimesh.Trimesh:
    """Simplify to about ``target_faces`` faces (a clean copy when the mesh has no more already)."""
    if target_faces >= len(mesh.faces):
        return clean_mesh(mesh.vertices, mesh.faces)
    vertices_V3, faces_F3 = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float64),
        np.asarray(mesh.faces, dtype=np.int32),
        target_count=max(int(target_faces), 1),
        agg=aggressiveness,
    )
    return clean_mesh(vertices_V3, faces_F3)
