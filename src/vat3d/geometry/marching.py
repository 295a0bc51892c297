"""Surface extraction from occupancy fields: grids, marching cubes and coarse-to-fine evaluation.

Conventions
-----------
* The field lives in the ``[-1, 1]^3`` box. A grid of resolution ``R`` has ``R`` samples per axis,
  grid index ``i`` maps to the coordinate ``-1 + i * 2 / (R - 1)`` (so both box faces are sampled
  and the voxel size is ``2 / (R - 1)``).
* Values are indexed ``values_RRR[i, j, k]`` for the point ``(x_i, y_j, z_k)`` ("ij" indexing), which
  is also the order of :func:`grid_points`; ``occupancy(grid_points(R)).reshape(R, R, R)`` is a grid.
* Occupancy logits are *positive inside* the shape. Extracted meshes have outward-facing normals.

Coarse-to-fine extraction (:func:`extract_surface`) evaluates the field on a coarse grid in full, then
refines stage by stage (doubling the resolution: 64 -> 128 -> 256 for the default 256^3): at each stage
only the samples inside coarser cells whose corners straddle the iso are evaluated, every other sample
is filled with a constant of the sign of its coarser cell, and the evaluated band grows wherever an
evaluated sample and a filled neighbour disagree in sign (the surface leaves the band there). When the
coarse grid sees every sign change of the field (no feature thinner than about one coarse cell, no tiny
component that falls between coarse samples), the fine grid agrees in sign with the dense grid
everywhere and equals it wherever marching cubes reads values, so the mesh is identical to the dense
one. The grids of successive levels are not nested, so every sample of the earlier levels also acts as
a witness: a coarser cell that holds a witness of the other sign is refined even if its corners agree.
Thin features can still be missed: raise ``coarse_resolution``, set ``band`` (refine cells whose
corners come close to the iso), or use ``dense=True`` for fields with such detail.

A field may also answer queries by grid index (``grid_evaluator``, see :func:`extract_surface`); the
tokenizer's field uses this to read its triplanes pre-interpolated at the grid's coordinates instead of
bilinear sampling at arbitrary points.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Literal, NamedTuple

import numpy as np
import torch
import trimesh
from scipy import ndimage
from skimage import measure

__all__ = [
    "grid_coordinates",
    "grid_points",
    "marching_cubes_grid",
    "evaluate_points",
    "extract_surface",
]

logger = logging.getLogger(__name__)

OccupancyFn = Callable[[object], object]


def grid_coordinates(resolution: int) -> np.ndarray:
    """The ``resolution`` 1-D sample positions ``-1 + i * 2 / (resolution - 1)`` (float32)."""
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    index_R = np.arange(resolution, dtype=np.float64)
    return (-1.0 + index_R * (2.0 / (resolution - 1))).astype(np.float32)


def grid_points(resolution: int) -> np.ndarray:
    """All ``resolution^3`` grid points as a ``(R^3, 3)`` float32 array in "ij" (x-major) order.

    ``values.reshape(R, R, R)[i, j, k]`` is then the value at ``(x_i, y_j, z_k)``. A 512^3 grid is
    1.6 GB of points: :func:`extract_surface` never materialises it and builds points chunk by chunk.
    """
    axis_R = grid_coordinates(resolution)
    x, y, z = np.meshgrid(axis_R, axis_R, axis_R, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def _index_to_points(flat_index_P: np.ndarray, resolution: int) -> np.ndarray:
    """Grid coordinates (P, 3) float32 of flat "ij" grid indices."""
    axis_R = grid_coordinates(resolution)
    i, j, k = np.unravel_index(flat_index_P, (resolution,) * 3)
    return np.stack([axis_R[i], axis_R[j], axis_R[k]], axis=1)


def _empty_mesh() -> trimesh.Trimesh:
    return trimesh.Trimesh(
        vertices=np.zeros((0, 3), dtype=np.float64), faces=np.zeros((0, 3), dtype=np.int64), process=False
    )


def _outward_fraction(
    values_RRR: np.ndarray, vertices_idx_V3: np.ndarray, faces_F3: np.ndarray, max_faces: int = 4096
) -> float:
    """Fraction of (a subset of) faces whose normal points from higher to lower values (inside -> outside).

    Each face centroid is probed a quarter voxel in front of and behind the face by trilinear interpolation.
    """
    step = max(1, len(faces_F3) // max_faces)
    tri_F33 = vertices_idx_V3[faces_F3[::step]].astype(np.float64)
    normal_F3 = np.cross(tri_F33[:, 1] - tri_F33[:, 0], tri_F33[:, 2] - tri_F33[:, 0])
    norm_F = np.linalg.norm(normal_F3, axis=1)
    keep_F = norm_F > 1e-12
    if not keep_F.any():
        return 1.0
    normal_F3 = normal_F3[keep_F] / norm_F[keep_F, None]
    centroid_F3 = tri_F33[keep_F].mean(axis=1)
    front = ndimage.map_coordinates(values_RRR, (centroid_F3 + 0.25 * normal_F3).T, order=1, mode="nearest")
    back = ndimage.map_coordinates(values_RRR, (centroid_F3 - 0.25 * normal_F3).T, order=1, mode="nearest")
    return float(np.mean(front < back))


def marching_cubes_grid(
    values_RRR: np.ndarray | torch.Tensor, iso: float = 0.0, mask_RRR: np.ndarray | None = None
) -> trimesh.Trimesh:
    """Extract the ``iso``-level surface of a grid of occupancy logits covering ``[-1, 1]^3``.

    Args:
        values_RRR: ``(R, R, R)`` values in "ij" order (see the module docstring), positive inside.
        iso: iso-value.
        mask_RRR: optional boolean grid of samples; marching cubes skips cells whose corners are not
            ``True`` (faster when the surface lies in a known band; every corner of every cell that
            crosses the iso must be ``True``).

    Returns:
        A ``trimesh.Trimesh`` (built with ``process=False``: vertices are not merged or reordered) whose
        vertices are ``-1 + index * 2 / (R - 1)`` and whose faces face outward (from higher to lower
        values). An empty mesh when the iso is not crossed.
    """
    if isinstance(values_RRR, torch.Tensor):
        values_RRR = values_RRR.detach().cpu().numpy()
    values_RRR = np.asarray(values_RRR, dtype=np.float32)
    if values_RRR.ndim != 3 or len(set(values_RRR.shape)) != 1:
        raise ValueError(f"expected a cubic (R, R, R) grid, got shape {values_RRR.shape}")
    if np.isnan(values_RRR).any():
        raise ValueError("the occupancy grid contains NaN values")
    if not (np.any(values_RRR > iso) and np.any(values_RRR < iso)):
        return _empty_mesh()
    resolution = values_RRR.shape[0]
    # "ascent" orients triangles outward for fields that are larger inside (checked below).
    vertices_idx_V3, faces_F3, _, _ = measure.marching_cubes(
        values_RRR, level=iso, gradient_direction="ascent", mask=mask_RRR
    )
    if len(faces_F3) == 0:
        return _empty_mesh()
    if _outward_fraction(values_RRR, vertices_idx_V3, faces_F3) < 0.5:
        logger.warning("marching cubes produced inward-facing triangles; flipping them")
        faces_F3 = faces_F3[:, ::-1]
    vertices_V3 = -1.0 + vertices_idx_V3.astype(np.float64) * (2.0 / (resolution - 1))
    return trimesh.Trimesh(vertices=vertices_V3, faces=np.ascontiguousarray(faces_F3, dtype=np.int64), process=False)


def evaluate_points(
    occupancy_fn: OccupancyFn,
    points_P3: np.ndarray,
    *,
    chunk_size: int = 262_144,
    input_kind: Literal["torch", "numpy"] = "torch",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Evaluate ``occupancy_fn`` on ``points_P3`` in chunks; returns float32 logits ``(P,)``.

    Args:
        occupancy_fn: maps ``(n, 3)`` float32 points to ``(n,)`` (or ``(n, 1)``) logits. It receives a
            ``torch.Tensor`` on ``device`` (``input_kind="torch"``, run under ``torch.no_grad()``) or a
            ``np.ndarray`` (``input_kind="numpy"``); it may return either a tensor or an array.
        points_P3: points, float32.
        chunk_size: at most this many points per call (bounds memory).
        input_kind: what ``occupancy_fn`` receives.
        device: torch device for ``input_kind="torch"``.
    """
    out_P = np.empty(len(points_P3), dtype=np.float32)
    for start in range(0, len(points_P3), chunk_size):
        out_P[start : start + chunk_size] = _evaluate_chunk(
            occupancy_fn, points_P3[start : start + chunk_size], input_kind=input_kind, device=device
        )
    return out_P


def _evaluate_chunk(
    occupancy_fn: OccupancyFn, points_n3: np.ndarray, *, input_kind: str, device: str | torch.device
) -> np.ndarray:
    points_n3 = np.ascontiguousarray(points_n3, dtype=np.float32)
    if input_kind == "torch":
        with torch.no_grad():
            logits = occupancy_fn(torch.from_numpy(points_n3).to(device))
    elif input_kind == "numpy":
        logits = occupancy_fn(points_n3)
    else:
        raise ValueError(f"input_kind must be 'torch' or 'numpy', got {input_kind!r}")
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    logits_n = np.asarray(logits, dtype=np.float32).reshape(-1)
    if logits_n.shape[0] != points_n3.shape[0]:
        raise ValueError(f"occupancy_fn returned {logits_n.shape[0]} values for {points_n3.shape[0]} points")
    return logits_n


def _evaluate_flat_indices(
    occupancy_fn: OccupancyFn,
    flat_index_P: np.ndarray,
    resolution: int,
    *,
    chunk_size: int,
    input_kind: str,
    device: str | torch.device,
) -> np.ndarray:
    """Evaluate grid samples given by flat indices, building their coordinates one chunk at a time."""
    out_P = np.empty(len(flat_index_P), dtype=np.float32)
    for start in range(0, len(flat_index_P), chunk_size):
        points_n3 = _index_to_points(flat_index_P[start : start + chunk_size], resolution)
        out_P[start : start + chunk_size] = _evaluate_chunk(
            occupancy_fn, points_n3, input_kind=input_kind, device=device
        )
    return out_P


def _any_corner(mask_CCC: np.ndarray) -> np.ndarray:
    """Boolean ``(C-1,)*3`` mask of grid cells with at least one of their 8 corners ``True``."""
    n = tuple(c - 1 for c in mask_CCC.shape)
    out = np.zeros(n, dtype=bool)
    for di, dj, dk in np.ndindex(2, 2, 2):
        out |= mask_CCC[di : di + n[0], dj : dj + n[1], dk : dk + n[2]]
    return out


def _straddling_cells(values_CCC: np.ndarray, iso: float) -> np.ndarray:
    """Boolean ``(C-1,)*3`` mask of grid cells whose 8 corners are not all on one side of ``iso``."""
    above_CCC = values_CCC > iso
    return _any_corner(above_CCC) & _any_corner(~above_CCC)


def extract_surface(
    occupancy_fn: OccupancyFn,
    resolution: int = 256,
    *,
    coarse_resolution: int | None = None,
    iso: float = 0.0,
    chunk_size: int = 262_144,
    dense: bool = False,
    dilation: int = 0,
    band: float = 0.0,
    fill_magnitude: float = 1e4,
    input_kind: Literal["torch", "numpy"] = "torch",
    device: str | torch.device = "cpu",
) -> trimesh.Trimesh:
    """Mesh the ``iso``-level set of an occupancy field on a ``resolution^3`` grid over ``[-1, 1]^3``.

    Args:
        occupancy_fn: points -> logits, positive inside (see :func:`evaluate_points` for the calling
            convention; ``input_kind`` picks torch tensors or numpy arrays). If it also has a
            ``grid_evaluator(resolution)`` method (as :meth:`VATokenizer.occupancy_fn
            <vat3d.models.tokenizer.VATokenizer.occupancy_fn>` does), that is used instead: it returns
            a function from ``(n, 3)`` int64 grid indices ``(i, j, k)`` (a torch tensor on ``device``) to
            ``(n,)`` logits, which lets a field answer grid queries faster than arbitrary points.
        resolution: final grid resolution (256 by default; 512 works, the 512^3 float32 grid is 0.5 GB).
        coarse_resolution: resolution of the coarsest pass, evaluated in full (ignored when ``dense``);
            ``None`` means ``clip(resolution // 4, 16, 64)`` (64 for 256^3 and 512^3). Features thinner
            than one coarse cell may be missed; raise it to be safer.
        iso: iso-value of the surface.
        chunk_size: points per evaluation call.
        dense: evaluate every fine grid point (the reference; no coarse pass).
        dilation: extra margin, in cells of the coarser grid, refined around the surface at each stage
            (0 is exact under the assumption below; a margin only costs time).
        band: also refine, at each stage, the cells with a corner within ``band`` of the iso (in the
            field's units): features thinner than a coarse cell usually pull nearby samples close to the
            iso, so this finds most of what the coarse grid cannot see, at some cost. 0 (default) is
            fastest; for the tokenizer's logits 0.25 found every component of the dense mesh on 20
            unseen shapes at ~1.5x the time (``benchmarks/codec.py``).
        fill_magnitude: fine samples that are not evaluated get ``iso +/- fill_magnitude`` with the
            sign of the coarser field around them.
        input_kind: ``"torch"`` (default) or ``"numpy"`` inputs for ``occupancy_fn``.
        device: torch device of the input points.

    Returns:
        The mesh (see :func:`marching_cubes_grid`). ``mesh.metadata["extraction"]`` records
        ``points_evaluated`` (all levels), ``grown_points`` (of those, evaluated because the surface
        left the band of a coarser stage), ``witness_cells`` (coarser cells refined because a sample of
        an earlier stage saw a sign there that the stage in between missed), ``dense_points``
        (``resolution^3``), ``refined_fraction`` (fine samples evaluated / ``resolution^3``), ``levels``
        (the grid resolutions), ``eval_seconds``, ``marching_seconds`` and the settings. Assumption of
        the coarse pass: every sign change of the field is visible on the coarse grid (see the module
        docstring).
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    t0 = time.perf_counter()
    n_fine = resolution**3
    if coarse_resolution is None:
        coarse_resolution = int(np.clip(resolution // 4, 16, 64))
    dense = dense or coarse_resolution >= resolution
    levels = [resolution] if dense else _level_resolutions(coarse_resolution, resolution)
    evaluators = {r: _grid_evaluator(occupancy_fn, r, chunk_size=chunk_size, input_kind=input_kind, device=device)
                  for r in levels}
    values_RRR = _evaluate_full_grid(evaluators[levels[0]], levels[0], chunk_size=chunk_size)
    points_evaluated = levels[0] ** 3
    fine_evaluated, mask_RRR, grown, witnessed = points_evaluated, None, 0, 0
    # Samples of the levels before the previous one: a sign they saw must not get lost in between.
    witnesses: list[tuple[int, np.ndarray, np.ndarray]] = []
    previous = (levels[0], np.arange(levels[0] ** 3, dtype=np.int64), values_RRR.reshape(-1) > iso)
    for r in levels[1:]:
        refined = _refine_level(
            evaluators[r], values_RRR, r, iso=iso, dilation=dilation, band=band,
            fill_magnitude=fill_magnitude, witnesses=witnesses,
        )
        values_RRR, mask_RRR, fine_evaluated = refined.values_RRR, refined.mask_RRR, refined.evaluated
        points_evaluated += fine_evaluated
        grown += refined.grown
        witnessed += refined.witness_cells
        if r != levels[-1]:
            witnesses.append(previous)
            flat_P = np.flatnonzero(refined.evaluated_RRR)
            previous = (r, flat_P, values_RRR.reshape(-1)[flat_P] > iso)
    t1 = time.perf_counter()
    mesh = marching_cubes_grid(values_RRR, iso=iso, mask_RRR=mask_RRR)
    t2 = time.perf_counter()
    stats = {
        "resolution": resolution,
        "coarse_resolution": None if dense else coarse_resolution,
        "levels": levels,
        "dense": bool(dense),
        "dilation": dilation,
        "band": band,
        "points_evaluated": int(points_evaluated),
        "grown_points": int(grown),
        "witness_cells": int(witnessed),
        "dense_points": int(n_fine),
        "refined_fraction": float(fine_evaluated / n_fine),
        "grid_evaluator": hasattr(occupancy_fn, "grid_evaluator") and input_kind == "torch",
        "eval_seconds": t1 - t0,
        "marching_seconds": t2 - t1,
    }
    mesh.metadata["extraction"] = stats
    logger.info(
        "extract_surface R=%d levels=%s: %d points evaluated (%.1f%% of dense), eval %.2fs, marching cubes %.2fs",
        resolution, levels, points_evaluated, 100.0 * points_evaluated / n_fine, t1 - t0, t2 - t1,
    )
    return mesh


def _level_resolutions(coarse_resolution: int, resolution: int) -> list[int]:
    """Grid resolutions from the coarse one, doubling, to the final one: 64 -> [64, 128, 256] for 256."""
    levels = [coarse_resolution]
    while 2 * levels[-1] < resolution:
        levels.append(2 * levels[-1])
    return levels + [resolution]


GridFn = Callable[[np.ndarray], np.ndarray]  # flat "ij" indices (P,) int64 -> logits (P,) float32


def _grid_evaluator(
    occupancy_fn: OccupancyFn, resolution: int, *, chunk_size: int, input_kind: str, device: str | torch.device
) -> GridFn:
    """A function from flat grid indices of a ``resolution^3`` grid to float32 logits, chunked."""
    make = getattr(occupancy_fn, "grid_evaluator", None)
    if make is None or input_kind != "torch":
        return lambda flat_P: _evaluate_flat_indices(
            occupancy_fn, flat_P, resolution, chunk_size=chunk_size, input_kind=input_kind, device=device
        )
    index_fn = make(resolution)

    def evaluate(flat_P: np.ndarray) -> np.ndarray:
        out_P = np.empty(len(flat_P), dtype=np.float32)
        for start in range(0, len(flat_P), chunk_size):
            flat_n = torch.from_numpy(np.ascontiguousarray(flat_P[start : start + chunk_size], dtype=np.int64))
            ijk_n3 = torch.stack([flat_n // resolution**2, (flat_n // resolution) % resolution, flat_n % resolution], 1)
            with torch.no_grad():
                logits = index_fn(ijk_n3.to(device))
            logits_n = logits.detach().float().cpu().numpy().reshape(-1)
            if logits_n.shape[0] != len(flat_n):
                raise ValueError(f"grid evaluator returned {logits_n.shape[0]} values for {len(flat_n)} points")
            out_P[start : start + chunk_size] = logits_n
        return out_P

    return evaluate


def _evaluate_full_grid(evaluate: GridFn, resolution: int, *, chunk_size: int) -> np.ndarray:
    """Every sample of a ``resolution^3`` grid; returns ``(R, R, R)`` float32 values."""
    n_points = resolution**3
    out_P = np.empty(n_points, dtype=np.float32)
    step = max(chunk_size, 1)
    for start in range(0, n_points, step):
        out_P[start : start + step] = evaluate(np.arange(start, min(start + step, n_points), dtype=np.int64))
    return out_P.reshape((resolution,) * 3)


class _RefinedLevel(NamedTuple):
    values_RRR: np.ndarray  # the fine grid: evaluated samples, sign-filled elsewhere
    evaluated_RRR: np.ndarray  # which fine samples were evaluated
    evaluated: int  # how many
    grown: int  # of those, added by growth
    witness_cells: int  # coarse cells refined because of a witness
    mask_RRR: np.ndarray  # marching-cubes mask: every corner of every fine cell that can cross the iso


def _refine_level(
    evaluate: GridFn,
    coarse_CCC: np.ndarray,
    resolution: int,
    *,
    iso: float,
    dilation: int,
    fill_magnitude: float,
    band: float = 0.0,
    witnesses: list[tuple[int, np.ndarray, np.ndarray]] = (),
) -> _RefinedLevel:
    """One coarse-to-fine step: the ``resolution^3`` grid from a coarser (composite) grid.

    Fine samples inside coarse cells that straddle the iso are evaluated; every other sample gets
    ``iso +/- fill_magnitude`` with the sign of its (non-straddling) coarse cell. Then the band grows:
    wherever an evaluated sample and a filled 6-neighbour disagree in sign, the surface leaves the
    evaluated band, so the neighbour's coarse cell is evaluated too; repeated until no such pair is
    left. After that, every fine cell that the composite grid shows as crossing the iso has all the
    corners on which marching cubes places vertices evaluated, and the mesh equals the dense one
    (given the module's assumption that the coarse grid sees every sign change).

    Returns a :class:`_RefinedLevel`.
    """
    C, R = coarse_CCC.shape[0], resolution
    n_cells = C - 1
    # Coarse cell containing each fine sample (the last fine sample belongs to the last cell).
    cell_R = np.minimum((np.arange(R) * n_cells) // (R - 1), n_cells - 1)
    bounds = np.searchsorted(cell_R, np.arange(n_cells + 1))  # fine rows of coarse cell c: bounds[c]:bounds[c+1]
    plane_index = np.ix_(cell_R, cell_R)

    def to_fine(cells_ccc: np.ndarray) -> np.ndarray:
        """Per-cell values expanded to the fine grid (one broadcast copy per coarse slab: fast at 512^3)."""
        out_RRR = np.empty((R,) * 3, dtype=cells_ccc.dtype)
        for c in range(n_cells):
            out_RRR[bounds[c] : bounds[c + 1]] = cells_ccc[c][plane_index]
        return out_RRR

    active_ccc = _straddling_cells(coarse_CCC, iso)
    if band > 0:  # cells with a corner this close to the iso may hide a feature between their corners
        active_ccc |= _any_corner(np.abs(coarse_CCC - iso) < band)
    if dilation > 0 and active_ccc.any():
        active_ccc = ndimage.binary_dilation(active_ccc, structure=np.ones((3, 3, 3), bool), iterations=dilation)
    active_ccc = np.ascontiguousarray(active_ccc)  # updated in place through flat views below
    # A non-straddling coarse cell has all 8 corners on one side; its first corner gives that side.
    above_ccc = coarse_CCC[:-1, :-1, :-1] > iso
    n_witnessed = 0
    for r, flat_W, above_W in witnesses:
        ijk = np.unravel_index(flat_W, (r,) * 3)
        i, j, k = (np.minimum((x * n_cells) // (r - 1), n_cells - 1) for x in ijk)
        cell_W = (i * n_cells + j) * n_cells + k
        lost = ~active_ccc.reshape(-1)[cell_W] & (above_ccc.reshape(-1)[cell_W] != above_W)
        if lost.any():
            cells = np.unique(cell_W[lost])
            active_ccc.reshape(-1)[cells] = True
            n_witnessed += len(cells)
    fill_ccc = np.where(above_ccc, iso + fill_magnitude, iso - fill_magnitude)
    values_RRR = to_fine(fill_ccc.astype(np.float32))
    values_P, evaluated_P = values_RRR.reshape(-1), to_fine(active_ccc).reshape(-1)
    new_P = np.flatnonzero(evaluated_P)
    active_flat = active_ccc.reshape(-1)
    offsets_b = np.arange(int(np.max(np.diff(bounds))))
    n_evaluated, n_initial = 0, len(new_P)
    while len(new_P):
        values_P[new_P] = evaluate(new_P)
        n_evaluated += len(new_P)
        leaving_Q = _sign_disagreements(new_P, values_P, evaluated_P, R, iso)
        if not len(leaving_Q):
            break
        # Evaluate the whole coarse cell of every such neighbour (cells own disjoint fine samples).
        i, j, k = (cell_R[a] for a in np.unravel_index(leaving_Q, (R,) * 3))
        cell_Q = (i * n_cells + j) * n_cells + k
        cell_Q = cell_Q[~active_flat[cell_Q]]
        active_flat[cell_Q] = True
        cells_K3 = np.stack(np.unravel_index(np.flatnonzero(np.bincount(cell_Q, minlength=0)), (n_cells,) * 3), 1)
        rows = [bounds[cells_K3[:, a], None] + offsets_b[None] for a in range(3)]  # (K, block) each
        keep = [rows[a] < bounds[cells_K3[:, a] + 1, None] for a in range(3)]
        rows = [np.minimum(r, R - 1) for r in rows]
        flat = (rows[0][:, :, None, None] * R + rows[1][:, None, :, None]) * R + rows[2][:, None, None, :]
        inside = keep[0][:, :, None, None] & keep[1][:, None, :, None] & keep[2][:, None, None, :]
        new_P = flat[inside]
        evaluated_P[new_P] = True
    # A fine cell that crosses the iso has an evaluated corner; its corners lie in coarse cells c and
    # c + 1 (per axis) of its first corner's cell c. Mark every corner of such cells (whichever corner
    # marching cubes checks): coarse cells within one of an active cell, on both sides.
    active_ccc = active_flat.reshape((n_cells,) * 3)
    mask_ccc = active_ccc.copy()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for dk in (-1, 0, 1):
                dst = tuple(slice(max(0, -d), n_cells - max(0, d)) for d in (di, dj, dk))
                src = tuple(slice(max(0, d), n_cells - max(0, -d)) for d in (di, dj, dk))
                mask_ccc[dst] |= active_ccc[src]
    return _RefinedLevel(values_RRR, evaluated_P.reshape((R,) * 3), n_evaluated, n_evaluated - n_initial, n_witnessed,
                         to_fine(mask_ccc))


def _sign_disagreements(
    new_P: np.ndarray, values_P: np.ndarray, evaluated_P: np.ndarray, resolution: int, iso: float
) -> np.ndarray:
    """Unevaluated 6-neighbours of the samples ``new_P`` whose (filled) sign differs (repeats possible)."""
    R = resolution
    above_P = values_P[new_P] > iso
    ijk = np.unravel_index(new_P, (R,) * 3)
    out = []
    for axis, stride in enumerate((R * R, R, 1)):
        for step in (-1, 1):
            ok = (ijk[axis] > 0) if step < 0 else (ijk[axis] < R - 1)
            q = new_P[ok] + step * stride
            hit = ~evaluated_P[q] & ((values_P[q] > iso) != above_P[ok])
            out.append(q[hit])
    return np.concatenate(out)
