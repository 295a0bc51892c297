"""Seedable point sampling: on the surface (area-weighted), in the box, near the surface."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trimesh

RandomLike = int | np.random.Generator | np.random.SeedSequence | None


def as_generator(seed: RandomLike) -> np.random.Generator:
    """A :class:`numpy.random.Generator` from a seed, a seed sequence or a generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def sample_surface(
    mesh: trimesh.Trimesh,
    num_points: int,
    *,
    seed: RandomLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``num_points`` points uniformly by area on the surface of ``mesh``.

    Args:
        mesh: a triangle mesh with non-zero area.
        num_points: how many points.
        seed: an int, a seed sequence or a Generator (the same seed gives the same points).

    Returns:
        ``(points_N3, normals_N3)``, float64; the normals are the unit normals of the
        sampled faces (following the face winding).
    """
    rng = as_generator(seed)
    vertices_V3 = np.asarray(mesh.vertices, dtype=np.float64)
    faces_F3 = np.asarray(mesh.faces, dtype=np.int64)
    corners_F33 = vertices_V3[faces_F3]
    edge1_F3 = corners_F33[:, 1] - corners_F33[:, 0]
    edge2_F3 = corners_F33[:, 2] - corners_F33[:, 0]
    cross_F3 = np.cross(edge1_F3, edge2_F3)
    double_area_F = np.linalg.norm(cross_F3, axis=1)
    cumulative_F = np.cumsum(double_area_F)
    total = cumulative_F[-1] if len(cumulative_F) else 0.0
    if not total > 0.0:
        raise ValueError("cannot sample the surface of a mesh with zero area")

    face_N = np.searchsorted(cumulative_F, rng.random(num_points) * total, side="right")
    face_N = np.minimum(face_N, len(faces_F3) - 1)
    uv_N2 = rng.random((num_points, 2))
    flip_N = uv_N2.sum(axis=1) > 1.0
    uv_N2[flip_N] = 1.0 - uv_N2[flip_N]
    points_N3 = (
        corners_F33[face_N, 0]
        + uv_N2[:, :1] * edge1_F3[face_N]
        + uv_N2[:, 1:] * edge2_F3[face_N]
    )
    normals_N3 = cross_F3[face_N] / double_area_F[face_N, None]
    return points_N3, normals_N3


def sample_volume(
    num_points: int,
    *,
    seed: RandomLike = None,
    bound: float = 1.0,
) -> np.ndarray:
    """``num_points`` points uniform in the cube ``[-bound, bound]^3`` (float64, (N, 3))."""
    rng = as_generator(seed)
    return rng.uniform(-bound, bound, size=(num_points, 3))


def sample_near_surface(
    mesh: trimesh.Trimesh,
    num_points: int,
    *,
    sigmas: Sequence[float] = (0.005, 0.02),
    seed: RandomLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Surface samples displaced by isotropic Gaussian noise, split evenly over ``sigmas``.

    Returns:
        ``(points_N3, sigma_N)``: the points (float64) grouped by sigma in the order of
        ``sigmas`` (the first groups get one extra point when ``num_points`` does not
        divide evenly) and the sigma used for each point.
    """
    rng = as_generator(seed)
    counts = split_counts(num_points, len(sigmas))
    surface_N3, _ = sample_surface(mesh, num_points, seed=rng)
    sigma_N = np.repeat(np.asarray(sigmas, dtype=np.float64), counts)
    points_N3 = surface_N3 + rng.normal(size=(num_points, 3)) * sigma_N[:, None]
    return points_N3, sigma_N


def split_counts(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal counts, larger ones first."""
    if parts <= 0:
        raise ValueError("need at least one part")
    base, extra = divmod(int(total), parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
