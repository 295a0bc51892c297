"""Mesh geometry: loading, normalisation, surface sampling and occupancy labels."""

from vat3d.geometry.io import MESH_EXTENSIONS, MeshError, load_mesh, validate_mesh
from vat3d.geometry.normalize import Transform, compute_transform, normalize_mesh
from vat3d.geometry.occupancy import (
    NO_INSIDE_REASON,
    OccupancySamples,
    compute_occupancy,
    orientation_sign,
    sample_occupancy,
    winding_number,
    winding_number_culled,
)
from vat3d.geometry.points import sample_near_surface, sample_surface, sample_volume

__all__ = [
    "MESH_EXTENSIONS",
    "MeshError",
    "NO_INSIDE_REASON",
    "OccupancySamples",
    "Transform",
    "compute_occupancy",
    "compute_transform",
    "load_mesh",
    "normalize_mesh",
    "orientation_sign",
    "sample_near_surface",
    "sample_occupancy",
    "sample_surface",
    "sample_volume",
    "validate_mesh",
    "winding_number",
    "winding_number_culled",
]
