"""Where shapes come from: procedural generators, ``pybullet_data`` and folders of meshes.

A source is described by a string (what ``vat3d prepare SOURCE`` accepts):

* ``procedural:N`` or ``procedural:N:SEED``: N procedural shapes with seeds SEED..SEED+N-1
  (SEED defaults to 0);
* ``pybullet``: the installed ``pybullet_data`` package: the random URDF meshes and the named
  objects; ``pybullet:random`` or ``pybullet:named`` for one of the two;
* a folder: every mesh file below it (recursive; obj, ply, stl, off, glb, gltf);
* a single mesh file.

:func:`list_source` turns the string into a deterministic, sorted list of
:class:`SourceItem`. Each item has a stable, filesystem-safe ``id`` (``[A-Za-z0-9._-]+``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import trimesh

from vat3d.geometry.io import MESH_EXTENSIONS, MeshError, load_mesh, validate_mesh

_HASH_CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class SourceItem:
    """One shape to prepare (cheap to pickle: no mesh data).

    Attributes:
        id: stable, filesystem-safe identifier.
        source: "procedural", "pybullet" or "folder".
        path: absolute path of the mesh file ("" for procedural shapes).
        seed: the procedural seed (-1 for files).
        class_name: a class label when known ("" otherwise).
        family: the procedural family ("" for files).
        caption: a caption when known (procedural captions are known after generation).
    """

    id: str
    source: str
    path: str = ""
    seed: int = -1
    class_name: str = ""
    family: str = ""
    caption: str = ""


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
    """A hash of what the item's shape is made from (file bytes or generator + seed)."""
    if item.source == "procedural":
        from vat3d.data.procedural import GENERATOR_VERSION

        return hashlib.sha256(f"procedural:v{GENERATOR_VERSION}:{item.seed}".encode()).hexdigest()[:16]
    return file_hash(item.path)


def load_item(item: SourceItem) -> LoadedShape:
    """Load or generate the item's mesh (validated). Raises MeshError for bad input."""
    if item.source == "procedural":
        from vat3d.data.procedural import make_shape

        shape = make_shape(item.seed)
        validate_mesh(shape.mesh)
        return LoadedShape(mesh=shape.mesh, caption=shape.caption, family=shape.family, class_name=shape.family)
    mesh = load_mesh(item.path)
    return LoadedShape(mesh=mesh, caption=item.caption, family=item.family, class_name=item.class_name)


# --------------------------------------------------------------------------- procedural


def procedural_items(count: int, *, start_seed: int = 0) -> list[SourceItem]:
    """``count`` procedural shapes with seeds ``start_seed ... start_seed + count - 1``."""
    from vat3d.data.procedural import family_of_seed

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
            )
        )
    return items


# --------------------------------------------------------------------------- pybullet

#: Named objects of pybullet_data: relative path -> (class, caption).
PYBULLET_OBJECTS: dict[str, tuple[str, str]] = {
    "bunny.obj": ("bunny", "a bunny"),
    "duck.obj": ("duck", "a rubber duck"),
    "duck_vhacd.obj": ("duck", "a rubber duck made of convex pieces"),
    "teddy2_VHACD_CHs.obj": ("teddy", "a teddy bear made of convex pieces"),
    "objects/mug.obj": ("mug", "a mug with a handle"),
    "objects/mug_col.obj": ("mug", "a mug with a handle, collision mesh"),
    "lego/lego.obj": ("lego", "a lego brick"),
    "lego/lego_vhacd.obj": ("lego", "a lego brick made of convex pieces"),
    "sphere_smooth.obj": ("sphere", "a smooth sphere"),
    "cube.obj": ("cube", "a cube"),
    "toys/cube.obj": ("cube", "a toy cube"),
    "toys/concave_box.obj": ("concave_box", "a concave box"),
    "toys/cylinder.obj": ("cylinder", "a toy cylinder"),
    "toys/prism.obj": ("prism", "a toy prism"),
    "toys/shape_sorter.obj": ("shape_sorter", "a shape sorter toy with holes"),
    "torus/torus_textured.obj": ("torus", "a torus"),
    "domino/domino.obj": ("domino", "a domino tile"),
    "jenga/jenga.obj": ("jenga", "a jenga block"),
    "table/table.obj": ("table", "a table"),
    "table_square/table.obj": ("table", "a square table"),
    "tray/tray_textured.obj": ("tray", "a tray"),
    "tray/tray_textured2.obj": ("tray", "a tray"),
    "tray/tray_textured4.obj": ("tray", "a tray"),
    "stone.obj": ("stone", "a stone"),
    "soccerball.obj": ("soccerball", "a soccer ball"),
    "samurai_monastry.obj": ("building", "a monastery building"),
    "racecar/meshes/cone.obj": ("traffic_cone", "a traffic cone"),
    "racecar/meshes/hokuyo.obj": ("lidar", "a lidar sensor"),
    "quadruped/tmotor3.obj": ("motor", "an electric motor"),
    "kiva_shelf/meshes/pod_lowres.stl": ("shelf", "a warehouse shelf pod"),
}

#: Folders of robot and vehicle part meshes: prefix -> (class, caption).
PYBULLET_PART_FOLDERS: dict[str, tuple[str, str]] = {
    "a1/meshes/": ("a1", "a part of a Unitree A1 quadruped robot"),
    "aliengo/meshes/": ("aliengo", "a part of a Unitree Aliengo quadruped robot"),
    "bicycle/files/": ("bicycle", "a part of a bicycle"),
    "differential/": ("differential", "a part of a gear differential"),
    "franka_panda/meshes/": ("franka_panda", "a link of a Franka Panda robot arm"),
    "gripper/meshes/": ("gripper", "a part of a robot gripper"),
    "husky/meshes/": ("husky", "a part of a Husky wheeled robot"),
    "kuka_iiwa/meshes/": ("kuka_iiwa", "a link of a KUKA iiwa robot arm"),
    "laikago/": ("laikago", "a part of a Laikago quadruped robot"),
    "mini_cheetah/meshes/": ("mini_cheetah", "a part of a Mini Cheetah quadruped robot"),
    "quadruped/microtaur/": ("microtaur", "a part of a Minitaur quadruped robot"),
    "racecar/meshes/": ("racecar", "a part of a toy race car"),
    "xarm/": ("xarm", "a part of an xArm robot arm"),
    "l_finger": ("pr2_gripper", "a finger of a PR2 robot gripper"),
}


def pybullet_data_path() -> Path:
    """The installed ``pybullet_data`` folder (found through the package, never hard-coded)."""
    try:
        import pybullet_data
    except ImportError as err:  # pragma: no cover - pybullet is a dependency
        raise RuntimeError("pybullet is not installed: pip install pybullet") from err
    return Path(pybullet_data.getDataPath())


def _pybullet_random(root: Path) -> list[SourceItem]:
    items = []
    for path in sorted(root.glob("random_urdfs/*/*.obj")):
        items.append(
            SourceItem(
                id=f"pybullet-random_urdfs-{_SAFE.sub('_', path.parent.name)}",
                source="pybullet",
                path=str(path),
                class_name="random_urdf",
            )
        )
    return items


def _pybullet_named(root: Path) -> list[SourceItem]:
    chosen: dict[str, tuple[str, str]] = {}
    for relative, labels in PYBULLET_OBJECTS.items():
        if (root / relative).is_file():
            chosen[relative] = labels
    all_meshes = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower().lstrip(".") in ("obj", "stl") and p.is_file()
    )
    present = set(all_meshes)
    for relative in all_meshes:
        if relative in chosen or relative.startswith("random_urdfs/"):
            continue
        for prefix, labels in PYBULLET_PART_FOLDERS.items():
            if not relative.startswith(prefix):
                continue
            stem, ext = relative.rsplit(".", 1)
            if ext.lower() == "stl" and f"{stem}.obj" in present:
                break  # the same part as OBJ is taken instead
            chosen[relative] = labels
            break
    items, seen_ids, seen_hashes = [], set(), set()
    for relative in sorted(chosen):
        path = root / relative
        digest = file_hash(path)
        if digest in seen_hashes:  # identical copies (e.g. mirrored parts saved twice)
            continue
        seen_hashes.add(digest)
        item_id = "pybullet-" + _SAFE.sub("_", relative.rsplit(".", 1)[0].replace("/", "-"))
        if item_id in seen_ids:
            item_id = "pybullet-" + _SAFE.sub("_", relative.replace("/", "-"))
        seen_ids.add(item_id)
        class_name, caption = chosen[relative]
        items.append(
            SourceItem(id=item_id, source="pybullet", path=str(path), class_name=class_name, caption=caption)
        )
    return items


def pybullet_items(subset: str = "all") -> list[SourceItem]:
    """Meshes of the installed pybullet_data: ``subset`` is "all", "random" or "named".

    Random URDF meshes get class "random_urdf"; named objects get their object name as class
    (robot parts get the robot's name) and a short caption. Ground planes, terrain, cloth,
    the stadium, textures-only duplicates and identical copies are left out.
    """
    if subset not in ("all", "random", "named"):
        raise ValueError(f"pybullet subset must be all, random or named, got {subset!r}")
    root = pybullet_data_path()
    items: list[SourceItem] = []
    if subset in ("all", "random"):
        items += _pybullet_random(root)
    if subset in ("all", "named"):
        items += _pybullet_named(root)
    return items


# --------------------------------------------------------------------------- folders


def folder_items(root: str | Path, *, extensions: tuple[str, ...] = MESH_EXTENSIONS) -> list[SourceItem]:
    """Every mesh file below ``root`` (recursive, hidden folders skipped), sorted by path.

    The id comes from the path relative to ``root`` (see :func:`path_to_id`); the class is
    the name of the first sub-folder ("" for files directly in ``root``).
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ValueError(f"not a folder: {root}")
    items = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower().lstrip(".") not in extensions or path.is_dir():
            continue
        relative_posix = relative.as_posix()
        class_name = relative.parts[0] if len(relative.parts) > 1 else ""
        items.append(
            SourceItem(id=path_to_id(relative_posix), source="folder", path=str(path), class_name=class_name)
        )
    return items


# --------------------------------------------------------------------------- parsing


def list_source(spec: str) -> list[SourceItem]:
    """Parse a source description (see the module docstring) into sorted items."""
    if spec.startswith("procedural:"):
        fields = spec.split(":")
        if len(fields) not in (2, 3) or not all(f.strip().lstrip("-").isdigit() for f in fields[1:]):
            raise ValueError(f"expected procedural:N or procedural:N:SEED, got {spec!r}")
        count = int(fields[1])
        start = int(fields[2]) if len(fields) == 3 else 0
        if count < 0:
            raise ValueError("the number of procedural shapes must be >= 0")
        return procedural_items(count, start_seed=start)
    if spec == "pybullet" or spec.startswith("pybullet:"):
        subset = spec.split(":", 1)[1] if ":" in spec else "all"
        return pybullet_items(subset)
    path = Path(spec).expanduser()
    if path.is_dir():
        return folder_items(path)
    if path.is_file():
        resolved = path.resolve()
        return [SourceItem(id=path_to_id(resolved.name), source="folder", path=str(resolved))]
    raise ValueError(
        f"unknown source {spec!r}: expected a folder, a mesh file, procedural:N[:SEED] or pybullet[:random|:named]"
    )
