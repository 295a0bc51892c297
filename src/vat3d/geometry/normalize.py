"""Normalisation into the ``[-1, 1]^3`` box: centre the bounding box, scale the longest side.

The longest bounding-box side becomes ``2 * (1 - margin)``, so with the default margin of
0.05 every shape fits ``[-0.95, 0.95]^3`` with its longest side touching both ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh


@dataclass(frozen=True)
class Transform:
    """A uniform scale about a centre: ``box = (original - center) * scale``.

    Attributes:
        center: (3,) float64, the bounding-box centre in original units.
        scale: box units per original unit.
    """

    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0

    def __post_init__(self) -> None:
        center_3 = np.asarray(self.center, dtype=np.float64).reshape(3)
        object.__setattr__(self, "center", center_3)
        object.__setattr__(self, "scale", float(self.scale))
        if not np.isfinite(center_3).all() or not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"invalid transform: center={center_3}, scale={self.scale}")

    def apply(self, points_N3: np.ndarray) -> np.ndarray:
        """Original coordinates -> box coordinates."""
        points_N3 = np.asarray(points_N3)
        dtype = points_N3.dtype if np.issubdtype(points_N3.dtype, np.floating) else np.float64
        return ((points_N3 - self.center) * self.scale).astype(dtype, copy=False)

    def invert(self, points_N3: np.ndarray) -> np.ndarray:
        """Box coordinates -> original coordinates."""
        points_N3 = np.asarray(points_N3)
        dtype = points_N3.dtype if np.issubdtype(points_N3.dtype, np.floating) else np.float64
        return (points_N3 / self.scale + self.center).astype(dtype, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"center": [float(c) for c in self.center], "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transform:
        return cls(center=np.asarray(data["center"], dtype=np.float64), scale=float(data["scale"]))

    def to_array(self) -> np.ndarray:
        """(4,) float64: centre xyz, scale."""
        return np.concatenate([self.center, [self.scale]])

    @classmethod
    def from_array(cls, array_4: np.ndarray) -> Transform:
        array_4 = np.asarray(array_4, dtype=np.float64).reshape(4)
        return cls(center=array_4[:3], scale=float(array_4[3]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return bool(np.array_equal(self.center, other.center)) and self.scale == other.scale

    def __hash__(self) -> int:
        return hash((tuple(self.center.tolist()), self.scale))


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
