"""Loading meshes from disk into one validated :class:`trimesh.Trimesh`.

Every reason a file cannot become a usable shape raises :class:`MeshError` with a short,
human-readable reason; the preparation pipeline stores that reason in its metadata table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

#: File extensions that :func:`load_mesh` accepts (lower case, without the dot).
MESH_EXTENSIONS: tuple[str, ...] = ("obj", "ply", "stl", "off", "glb", "gltf")
#: The same as file suffixes (".obj", ...), for matching ``Path.suffix``.
MESH_SUFFIXES: frozenset[str] = frozenset(f".{ext}" for ext in MESH_EXTENSIONS)


def mesh_files(folder: str | Path) -> list[Path]:
    """The files directly in ``folder`` that :func:`load_mesh` accepts by extension, sorted by path."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in MESH_EXTENSIONS)


class MeshError(ValueError):
    """A file or mesh that cannot be turned into a valid shape; ``str(err)`` is the reason."""


def load_mesh(path: str | Path, *, validate: bool = True) -> trimesh.Trimesh:
    """Load a mesh file (OBJ, PLY, STL, OFF, GLB/GLTF) as one triangle mesh.

    Scenes (GLB/GLTF, multi-object OBJ) are flattened: every triangle-mesh node is placed
    with its scene-graph transform and all are concatenated. Materials and textures are
    not loaded. Duplicate vertices are merged (so that ``is_watertight`` is meaningful).

    Args:
        path: the mesh file.
        validate: run :func:`validate_mesh` on the result.

    Raises:
        MeshError: missing, empty or unreadable file, unsupported extension, content
            that is not a triangle mesh, or (with ``validate``) a degenerate mesh.
    """
    path = Path(path)
    if not path.exists():
        raise MeshError(f"file not found: {path}")
    if not path.is_file():
        raise MeshError(f"not a file: {path}")
    ext = path.suffix.lower().lstrip(".")
    if ext not in MESH_EXTENSIONS:
        raise MeshError(f"unsupported mesh extension '.{ext}' (supported: {', '.join(MESH_EXTENSIONS)})")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise MeshError(f"cannot read file: {err}") from err
    if size == 0:
        raise MeshError("empty file (0 bytes)")

    try:
        loaded = trimesh.load(str(path), file_type=ext, process=False, skip_materials=True)
    except MeshError:
        raise
    except ImportError as err:  # trimesh reaches for a text-encoding detector on binary junk
        raise MeshError(f"cannot parse {ext.upper()} file (neither valid binary nor text)") from err
    except Exception as err:  # noqa: BLE001 - loaders raise anything on garbage input
        raise MeshError(f"cannot parse {ext.upper()} file: {type(err).__name__}: {err}".strip()) from err

    vertices_V3, faces_F3 = _flatten(loaded)
    _check_finite_and_indices(vertices_V3, faces_F3)
    mesh = trimesh.Trimesh(vertices_V3, faces_F3, process=False)
    mesh.merge_vertices()
    if validate:
        validate_mesh(mesh)
    return mesh


def _flatten(loaded: object) -> tuple[np.ndarray, np.ndarray]:
    """Return (vertices, faces) of every triangle mesh in ``loaded`` with transforms applied."""
    if isinstance(loaded, trimesh.Trimesh):
        return np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces, dtype=np.int64)
    if isinstance(loaded, trimesh.Scene):
        parts: list[trimesh.Trimesh] = []
        other: set[str] = set()
        for node in loaded.graph.nodes_geometry:
            transform_44, geometry_name = loaded.graph[node]
            geometry = loaded.geometry.get(geometry_name)
            if isinstance(geometry, trimesh.Trimesh):
                vertices_V3 = np.asarray(geometry.vertices, dtype=np.float64)
                if not np.allclose(transform_44, np.eye(4)):
                    vertices_V3 = vertices_V3 @ transform_44[:3, :3].T + transform_44[:3, 3]
                parts.append((vertices_V3, np.asarray(geometry.faces, dtype=np.int64)))
            elif geometry is not None:
                other.add(type(geometry).__name__)
        if not parts:
            if other == {"PointCloud"}:
                raise MeshError("mesh has no faces (the file holds only points)")
            found = f" (found {', '.join(sorted(other))})" if other else ""
            raise MeshError(f"file contains no triangle mesh{found}")
        offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
        vertices_V3 = np.concatenate([v for v, _ in parts])
        faces_F3 = np.concatenate([f + o for (_, f), o in zip(parts, offsets)])
        return vertices_V3, faces_F3
    if isinstance(loaded, trimesh.PointCloud):
        raise MeshError("mesh has no faces (the file holds only points)")
    raise MeshError(f"file contains no triangle mesh (found {type(loaded).__name__})")


def _check_finite_and_indices(vertices_V3: np.ndarray, faces_F3: np.ndarray) -> None:
    if faces_F3.size == 0 or len(faces_F3) == 0:
        raise MeshError("mesh has no faces")
    if faces_F3.ndim != 2 or faces_F3.shape[1] != 3:
        raise MeshError(f"faces are not triangles (shape {faces_F3.shape})")
    if faces_F3.min() < 0 or faces_F3.max() >= len(vertices_V3):
        raise MeshError("face indices out of range")
    used_vertices_U3 = vertices_V3[np.unique(faces_F3)]
    if not np.isfinite(used_vertices_U3).all():
        raise MeshError("mesh has non-finite (NaN/inf) vertex coordinates")


def validate_mesh(
    mesh: trimesh.Trimesh,
    *,
    rel_area_tol: float = 1e-10,
    rel_thickness_tol: float = 1e-6,
) -> None:
    """Raise :class:`MeshError` when ``mesh`` cannot describe a solid.

    Checks, in order: at least one face; finite vertices; non-zero surface area
    (relative to the squared bounding-box diagonal, ``rel_area_tol``); non-zero volume,
    i.e. the vertices do not all lie in one plane (smallest principal extent relative to
    the largest below ``rel_thickness_tol``). A curved open sheet passes here and is
    caught later by the occupancy "no inside" test.
    """
    faces_F3 = np.asarray(mesh.faces)
    if len(faces_F3) == 0:
        raise MeshError("mesh has no faces")
    vertices_V3 = np.asarray(mesh.vertices, dtype=np.float64)
    _check_finite_and_indices(vertices_V3, faces_F3)
    used_U3 = vertices_V3[np.unique(faces_F3)]
    extent_3 = used_U3.max(axis=0) - used_U3.min(axis=0)
    diagonal = float(np.linalg.norm(extent_3))
    if diagonal == 0.0:
        raise MeshError("mesh has zero surface area (all vertices coincide)")
    if float(mesh.area) <= rel_area_tol * diagonal**2:
        raise MeshError("mesh has zero surface area (all faces degenerate)")
    centered_U3 = used_U3 - used_U3.mean(axis=0)
    singular_3 = np.linalg.svd(centered_U3 / diagonal, compute_uv=False)
    if singular_3.size < 3 or singular_3[2] <= rel_thickness_tol * max(singular_3[0], 1e-300):
        raise MeshError("mesh has zero volume (all vertices lie in one plane)")
