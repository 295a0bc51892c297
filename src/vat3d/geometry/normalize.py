"""Normalisation into the ``[-1, 1]^3`` box: centre the bounding box, scale the longest side.

The longest bounding-box side becomes ``2 * (1 - margin)``, so with the default margin of
0.05 every shape fits ``[-0.95, 0.95]^3`` with its longest side touching both ends.

A transform may also turn the shape by one of the 24 axis-aligned rotations
(:data:`ORIENTATIONS`): these keep the bounding box a box, so the same centre and scale fit,
and an encoder may tokenize the shape in whichever turn its tokens keep best.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh


def _cube_rotations() -> np.ndarray:
    """The 24 proper rotations of the cube as (24, 3, 3) integer matrices, identity first.

    Order (fixed: ``.vat`` files store the index): axis permutations in lexicographic order
    ``(0,1,2), (0,2,1), (1,0,2), ...``, then sign patterns in the order of
    ``itertools.product((1, -1), repeat=3)``; row ``i`` of a matrix has ``sign[i]`` in column
    ``perm[i]``; only matrices with determinant +1 are kept.
    """
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3), dtype=np.int64)
            matrix[range(3), perm] = signs
            if round(np.linalg.det(matrix)) == 1:
                out.append(matrix)
    return np.stack(out)


#: The axis-aligned orientations: ``box = R @ (scale * (original - center))`` with ``R = ORIENTATIONS[i]``.
ORIENTATIONS: np.ndarray = _cube_rotations()
ORIENTATIONS.setflags(write=False)


@dataclass(frozen=True)
class Transform:
    """A uniform scale about a centre, then an axis-aligned turn: ``box = R (original - center) * scale``.

    Attributes:
        center: (3,) float64, the bounding-box centre in original units.
        scale: box units per original unit.
        orientation: index into :data:`ORIENTATIONS` (0: no turn, ``R`` is the identity).
    """

    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0
    orientation: int = 0

    def __post_init__(self) -> None:
        center_3 = np.asarray(self.center, dtype=np.float64).reshape(3)
        object.__setattr__(self, "center", center_3)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "orientation", int(self.orientation))
        if not np.isfinite(center_3).all() or not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"invalid transform: center={center_3}, scale={self.scale}")
        if not 0 <= self.orientation < len(ORIENTATIONS):
            raise ValueError(f"orientation {self.orientation} out of range [0, {len(ORIENTATIONS) - 1}]")

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) the turn ``R`` (the identity for orientation 0)."""
        return ORIENTATIONS[self.orientation]

    def turned(self, orientation: int) -> Transform:
        """The same centre and scale with another orientation."""
        return Transform(center=self.center, scale=self.scale, orientation=orientation)

    def apply(self, points_N3: np.ndarray) -> np.ndarray:
        """Original coordinates -> box coordinates."""
        points_N3 = np.asarray(points_N3)
        dtype = points_N3.dtype if np.issubdtype(points_N3.dtype, np.floating) else np.float64
        box_N3 = (points_N3 - self.center) * self.scale
        if self.orientation:
            box_N3 = box_N3 @ self.rotation.T
        return box_N3.astype(dtype, copy=False)

    def invert(self, points_N3: np.ndarray) -> np.ndarray:
        """Box coordinates -> original coordinates."""
        points_N3 = np.asarray(points_N3)
        dtype = points_N3.dtype if np.issubdtype(points_N3.dtype, np.floating) else np.float64
        if self.orientation:
            points_N3 = points_N3 @ self.rotation  # R is orthogonal: its inverse is its transpose
        return (points_N3 / self.scale + self.center).astype(dtype, copy=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"center": [float(c) for c in self.center], "scale": self.scale}
        if self.orientation:
            out["orientation"] = self.orientation
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transform:
        return cls(center=np.asarray(data["center"], dtype=np.float64), scale=float(data["scale"]),
                   orientation=int(data.get("orientation", 0)))

    def to_array(self) -> np.ndarray:
        """(4,) float64: centre xyz, scale (prepared data is never turned; a turned transform is refused)."""
        if self.orientation:
            raise ValueError("a turned transform does not fit the (4,) array form")
        return np.concatenate([self.center, [self.scale]])

    @classmethod
    def from_array(cls, array_4: np.ndarray) -> Transform:
        array_4 = np.asarray(array_4, dtype=np.float64).reshape(4)
        return cls(center=array_4[:3], scale=float(array_4[3]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return (bool(np.array_equal(self.center, other.center)) and self.scale == other.scale
                and self.orientation == other.orientation)

    def __hash__(self) -> int:
        return hash((tuple(self.center.tolist()), self.scale, self.orientation))


def compute_transform(vertices_V3: np.ndarray, *, margin: float = 0.05) -> Transform:
    """The :class:`Transform` that maps the bounding box of ``vertices_V3`` into the box."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    vertices_V3 = np.asarray(vertices_V3, dtype=np.float64)
    lo_3, hi_3 = vertices_V3.min(axis=0), vertices_V3.max(axis=0)
    longest = float((hi_3 - lo_3).max())
    if not np.isfinite(longest) or longest <= 0.0:
        raise ValueError("cannot normalise a mesh with an empty or non-finite bounding box")
    return Transform(center=(lo_3 + hi_3) / 2.0, scale=2.0 * (1.0 - margin) / longest)


def normalize_mesh(mesh: trimesh.Trimesh, *, margin: float = 0.05) -> tuple[trimesh.Trimesh, Transform]:
    """Return a normalised copy of ``mesh`` (the input is not modified) and its transform.

    Only vertices referenced by faces define the bounding box.
    """
    vertices_V3 = np.asarray(mesh.vertices, dtype=np.float64)
    faces_F3 = np.asarray(mesh.faces, dtype=np.int64)
    used_V3 = vertices_V3[np.unique(faces_F3)] if len(faces_F3) else vertices_V3
    transform = compute_transform(used_V3, margin=margin)
    normalized = trimesh.Trimesh(transform.apply(vertices_V3), faces_F3.copy(), process=False)
    return normalized, transform
