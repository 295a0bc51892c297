"""Source items: what a shape is and where it comes from, the reserved robots, ids and content hashes,
loading, and the procedural and folder sources (the dispatcher is :func:`vat3d.data.sources.list_source`)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from dataclasses import dataclass, replace
from pathlib import Path

import trimesh

from vat3d.geometry.io import MESH_EXTENSIONS, MeshError, load_mesh, validate_mesh


_HASH_CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]")

#: What the sources list: the loader's formats plus Collada (read through pycollada).
SOURCE_EXTENSIONS: tuple[str, ...] = (*MESH_EXTENSIONS, "dae")

#: Licence of the procedural shapes (the project's own).
PROJECT_LICENCE = "Apache-2.0"
#: Licence of the pybullet package and its pybullet_data folder (METADATA: "License: zlib").
PYBULLET_LICENCE = "Zlib"
#: Licence recorded for a folder of meshes when none is given.
UNKNOWN_LICENCE = "unknown"

# --------------------------------------------------------------------------- reserved meshes

#: Robots reserved for independent evaluation: never trained on. A path is reserved when one
#: of its words (path components split at non-alphanumerics and at camelCase humps, lower
#: case) is a pattern, or a pattern followed by a model number: a pattern ending in a letter
#: takes a suffix starting with a digit ("xarm7", "iiwa14", "ur5e"), one ending in a digit a
#: suffix starting with a letter ("gen3lite", "ur10e"). So "kuka_iiwa/link_0.obj",
#: "UR5e/base.stl" and "FrankaPanda.obj" are reserved while "spotlight.obj", "supermarket",
#: "inspired.obj", "pandas", "urn.obj" and "gr10cm.obj" are not. CamelCase is split, so
#: "SpotLight.obj" is reserved (a false positive only costs a training mesh).
RESERVED_PATTERNS: tuple[str, ...] = (
    "kuka", "iiwa", "lbr",  # KUKA LBR iiwa
    "franka", "panda",  # Franka Emika Panda
    "xarm", "ufactory",  # UFactory xArm
    "kinova", "gen3", "jaco",  # Kinova Gen3 / Jaco
    "ur", "ur3", "ur5", "ur10", "ur16", "ur20", "ur30",  # Universal Robots arms ("ur_description")
    "spot",  # Boston Dynamics Spot
    "gr1", "fourier",  # Fourier GR1 and its hands
    "tiago",  # PAL Tiago (and Tiago Pro)
    "baxter", "sawyer", "rethink",  # Rethink Robotics
    "robotiq",  # Robotiq grippers
    "inspire",  # Inspire hands
)

#: Reserved meshes under innocent names: path prefixes (relative to the installation root of
#: a package, or to pybullet_data) with the robot they are.
RESERVED_PATHS: dict[str, str] = {
    "metaworld/assets/objects/meshes/xyz_base/": "the Sawyer arm of Meta-World",
}

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL_HUMP = re.compile(r"(?<=[a-z])(?=[A-Z])")


def path_words(path: str) -> set[str]:
    """The lower-case words of a path (split at non-alphanumerics and camelCase humps)."""
    words: set[str] = set()
    for part in re.split(r"[\\/]", path):
        words.update(_WORD.findall(part.lower()))
        words.update(_WORD.findall(_CAMEL_HUMP.sub(" ", part).lower()))
    return words


def _word_is(word: str, pattern: str) -> bool:
    if word == pattern:
        return True
    if not word.startswith(pattern):
        return False
    rest = word[len(pattern) :]
    return rest[0].isalpha() if pattern[-1].isdigit() else rest[0].isdigit()


def reserved_reason(path: str) -> str | None:
    """Why ``path`` (a relative path) is reserved for evaluation, or None when it is not."""
    normalized = path.replace("\\", "/").lstrip("/")
    for prefix, robot in RESERVED_PATHS.items():
        if normalized.startswith(prefix):
            return robot
    for word in sorted(path_words(normalized)):
        for pattern in RESERVED_PATTERNS:
            if _word_is(word, pattern):
                return f"reserved word {word!r} (pattern {pattern!r})"
    return None


def is_reserved(path: str) -> bool:
    """Whether ``path`` names a mesh reserved for independent evaluation."""
    return reserved_reason(path) is not None


@dataclass(frozen=True)
class SourceItem:
    """One shape to prepare (cheap to pickle: no mesh data).

    Attributes:
        id: stable, filesystem-safe identifier.
        source: "procedural", "pybullet", "package" or "folder".
        path: absolute path of the mesh file ("" for procedural shapes).
        seed: the procedural seed (-1 for files).
        class_name: a class label when known ("" otherwise).
        family: the procedural family ("" for files).
        caption: a caption when known (procedural captions are known after generation).
        licence: an SPDX-like licence expression ("unknown" when not known).
        package: the distribution the mesh comes from ("vat3d" for procedural shapes,
            "pybullet", a package name; "" for folders).
        package_version: that distribution's installed version ("" when none).
        relative_path: the path inside the package or folder ("" for procedural shapes).
        augment: an augmentation spec (:func:`vat3d.data.augment.parse_augment_spec`) applied
            after loading, with ``augment_seed``; "" for the shape as it is.
        parts: for unions (``parts=`` in ``augment``), the other items joined to this one.
    """

    id: str
    source: str
    path: str = ""
    seed: int = -1
    class_name: str = ""
    family: str = ""
    caption: str = ""
    licence: str = UNKNOWN_LICENCE
    package: str = ""
    package_version: str = ""
    relative_path: str = ""
    augment: str = ""
    augment_seed: int = -1
    parts: tuple["SourceItem", ...] = ()


@dataclass
class LoadedShape:
    """A loaded (not yet normalised) mesh with the labels known for it."""

    mesh: trimesh.Trimesh
    caption: str = ""
    family: str = ""
    class_name: str = ""


# --------------------------------------------------------------------------- ids, hashes


def _short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


def path_to_id(relative_path: str, *, max_length: int = 120) -> str:
    """A stable, filesystem-safe, collision-free id for a relative file path.

    ``/`` becomes ``__``; when that mapping could be ambiguous (characters outside
    ``[A-Za-z0-9._-]``, ``__`` or ``_`` next to a ``/`` in the path) or the id would be too
    long, a short hash of the path is appended (so the id never depends on other files).
    """
    relative = relative_path.replace("\\", "/").strip("/")
    slug = _SAFE.sub("_", relative.replace("/", "__"))
    ambiguous = (
        _SAFE.search(relative.replace("/", "")) is not None
        or "__" in relative
        or "_/" in relative
        or "/_" in relative
    )
    if ambiguous or len(slug) > max_length:
        return f"{slug[: max_length - 9]}-{_short_hash(relative)}"
    return slug


def file_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (first 16 hex digits). Raises MeshError when unreadable."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError as err:
        raise MeshError(f"file not found: {path}") from err
    except OSError as err:
        raise MeshError(f"cannot read file: {err.strerror or err}") from err
    return digest.hexdigest()[:16]


def content_hash(item: SourceItem) -> str:
    """A hash of what the item's shape is made from (file bytes or generator + seed; for an
    augmented item also its parts, the augmentation and its seed)."""
    if item.augment:
        from vat3d.data.augment import AUGMENT_VERSION

        pieces = [content_hash(replace(item, augment="", parts=())), *(content_hash(p) for p in item.parts)]
        text = f"augment:v{AUGMENT_VERSION}:{item.augment}:{item.augment_seed}:{','.join(pieces)}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    if item.source == "procedural":
        from vat3d.data.procedural import GENERATOR_VERSION

        return hashlib.sha256(f"procedural:v{GENERATOR_VERSION}:{item.seed}".encode()).hexdigest()[:16]
    return file_hash(item.path)


def load_item(item: SourceItem) -> LoadedShape:
    """Load or generate the item's mesh (validated). Raises MeshError for bad input."""
    if item.augment:
        from vat3d.data.augment import augment_mesh, parse_augment_spec, union_of_parts

        spec = parse_augment_spec(item.augment)
        base = load_item(replace(item, augment="", parts=()))
        mesh, caption = base.mesh, base.caption
        if item.parts:
            others = [load_item(part) for part in item.parts]
            mesh, _ = union_of_parts([mesh, *(o.mesh for o in others)], item.augment_seed, count=1 + len(others))
            names = [c for c in [caption, *(o.caption for o in others)] if c]
            caption = (f"{names[0]} joined to {', '.join(names[1:])}" if len(names) > 1 else caption)
        mesh, _ = augment_mesh(mesh, item.augment_seed, **spec.mesh_kwargs())
        validate_mesh(mesh)
        return LoadedShape(mesh=mesh, caption=caption, family=base.family, class_name=base.class_name)
    if item.source == "procedural":
        from vat3d.data.procedural import make_shape

        shape = make_shape(item.seed)
        validate_mesh(shape.mesh)
        return LoadedShape(mesh=shape.mesh, caption=shape.caption, family=shape.family, class_name=shape.family)
    mesh = load_source_mesh(item.path)
    return LoadedShape(mesh=mesh, caption=item.caption, family=item.family, class_name=item.class_name)


def load_source_mesh(path: str | Path) -> trimesh.Trimesh:
    """A mesh file of any format a source may hold: Collada (.dae) through :func:`load_collada`, the rest
    through :func:`vat3d.geometry.io.load_mesh`."""
    return load_collada(path) if str(path).lower().endswith(".dae") else load_mesh(path)


def load_collada(path: str | Path) -> trimesh.Trimesh:
    """Load a Collada (.dae) file as one validated triangle mesh (needs ``pycollada``).

    The scene's meshes are placed with their transforms and concatenated; duplicate vertices
    are merged. Raises MeshError for missing, unreadable or degenerate files.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise MeshError("empty file (0 bytes)")
    try:
        import collada  # noqa: F401 - trimesh's Collada reader needs it
    except ImportError as err:
        raise MeshError("reading .dae files needs pycollada: pip install pycollada") from err
    try:
        loaded = trimesh.load(str(path), file_type="dae", force="mesh", process=False, skip_materials=True)
    except Exception as err:  # noqa: BLE001 - loaders raise anything on garbage input
        raise MeshError(f"cannot parse DAE file: {type(err).__name__}: {err}".strip()) from err
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise MeshError("file contains no triangle mesh")
    mesh = trimesh.Trimesh(loaded.vertices, loaded.faces, process=False)
    validate_mesh(mesh)
    mesh.merge_vertices()
    return mesh


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


# --------------------------------------------------------------------------- procedural


def procedural_items(count: int, *, start_seed: int = 0) -> list[SourceItem]:
    """``count`` procedural shapes with seeds ``start_seed ... start_seed + count - 1``."""
    from vat3d.data.procedural import family_of_seed

    version = _installed_version("vat3d")
    items = []
    for seed in range(start_seed, start_seed + count):
        family = family_of_seed(seed)
        items.append(
            SourceItem(
                id=f"procedural-{family}-{seed:07d}",
                source="procedural",
                seed=seed,
                class_name=family,
                family=family,
                licence=PROJECT_LICENCE,
                package="vat3d",
                package_version=version,
            )
        )
    return items


# --------------------------------------------------------------------------- folders


def folder_items(
    root: str | Path,
    *,
    extensions: tuple[str, ...] = SOURCE_EXTENSIONS,
    licence: str = UNKNOWN_LICENCE,
    allow_reserved: bool = False,
) -> list[SourceItem]:
    """Every mesh file below ``root`` (recursive, hidden folders skipped), sorted by path.

    The id comes from the path relative to ``root`` (see :func:`path_to_id`); the class is
    the name of the first sub-folder ("" for files directly in ``root``). Every item gets
    ``licence``. Files whose path relative to ``root``, or the name of ``root`` itself, names
    a reserved robot are left out unless ``allow_reserved``.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ValueError(f"not a folder: {root}")
    if not allow_reserved and is_reserved(root.name):
        return []
    items = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower().lstrip(".") not in extensions or path.is_dir():
            continue
        relative_posix = relative.as_posix()
        if not allow_reserved and is_reserved(relative_posix):
            continue
        class_name = relative.parts[0] if len(relative.parts) > 1 else ""
        items.append(
            SourceItem(
                id=path_to_id(relative_posix),
                source="folder",
                path=str(path),
                class_name=class_name,
                licence=licence,
                relative_path=relative_posix,
            )
        )
    return items
