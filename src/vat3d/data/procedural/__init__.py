"""Procedural shapes: parametric families with holes, thin parts and several parts.

Every shape is a pure function of an integer seed: ``make_shape(seed)`` picks the family
``FAMILIES[seed % len(FAMILIES)]`` (so consecutive seeds are balanced across families)
and draws the family's parameters from a generator seeded with ``(seed, family)``.
Solids are built with manifold3d's exact boolean operations, so every mesh is closed and
outward-oriented. Shapes are built Z-up and returned **Y-up** (glTF / Objaverse
convention); units are arbitrary (about one unit across) since the pipeline normalises.
Captions are short English phrases derived from the parameters.

The first 19 families (box ... snowman) are simple objects; the others are mechanical parts
(plates with bolt holes, extruded L/T/U/I/Z/box profiles, revolved vases, knobs, pulleys and
flanges, L brackets, robot-arm links, involute spur/helical gears, internal ring gears, gear
pairs and rack-and-pinions), thin shells (open boxes and trays, cups and tubes, bent sheet
metal, bent pipes, pipe tees; walls down to 1.5 % of the shape's size) and organic shapes
(noise-displaced rocks, metaball blobs and tubers, bones), built from CrossSection profiles
(extruded or revolved), booleans, ``warp`` displacements and swept tube meshes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import trimesh
from manifold3d import Manifold

from vat3d.data.procedural._base import (
    ProceduralShape,
    _PARAM_STREAM,
    _Params,
)
from vat3d.data.procedural.basic import (
    _make_arch,
    _make_blocks,
    _make_bottle,
    _make_bowl,
    _make_box,
    _make_capsule,
    _make_chair,
    _make_cone,
    _make_cylinder,
    _make_dumbbell,
    _make_gear,
    _make_lamp,
    _make_mug,
    _make_ring,
    _make_shelf,
    _make_snowman,
    _make_sphere,
    _make_table,
    _make_torus,
)
from vat3d.data.procedural.mechanical import (
    _make_bracket,
    _make_flange,
    _make_gear_pair,
    _make_internal_gear,
    _make_knob,
    _make_link,
    _make_plate,
    _make_profile,
    _make_pulley,
    _make_spur_gear,
    _make_vase,
)
from vat3d.data.procedural.shells import (
    _make_can,
    _make_pipe,
    _make_sheet,
    _make_tee,
    _make_tray,
)
from vat3d.data.procedural.organic import (
    _make_blob,
    _make_bone,
    _make_rock,
)

#: Bump when any family's geometry or the seed -> family mapping changes: it is part of the
#: content hash of a shape. Versions 2-3 added the mechanical and organic families (19 -> 38).
GENERATOR_VERSION = 3

_BUILDERS: dict[str, Callable[[_Params], tuple[Manifold, str]]] = {
    "box": _make_box,
    "sphere": _make_sphere,
    "cylinder": _make_cylinder,
    "cone": _make_cone,
    "torus": _make_torus,
    "capsule": _make_capsule,
    "mug": _make_mug,
    "table": _make_table,
    "chair": _make_chair,
    "bottle": _make_bottle,
    "lamp": _make_lamp,
    "gear": _make_gear,
    "ring": _make_ring,
    "bowl": _make_bowl,
    "dumbbell": _make_dumbbell,
    "shelf": _make_shelf,
    "arch": _make_arch,
    "blocks": _make_blocks,
    "snowman": _make_snowman,
    # mechanical parts and organic shapes (generator version 2)
    "plate": _make_plate,
    "profile": _make_profile,
    "vase": _make_vase,
    "knob": _make_knob,
    "pulley": _make_pulley,
    "flange": _make_flange,
    "bracket": _make_bracket,
    "link": _make_link,
    "spur_gear": _make_spur_gear,
    "internal_gear": _make_internal_gear,
    "gear_pair": _make_gear_pair,
    "tray": _make_tray,
    "can": _make_can,
    "sheet": _make_sheet,
    "pipe": _make_pipe,
    "tee": _make_tee,
    "rock": _make_rock,
    "blob": _make_blob,
    "bone": _make_bone,
}

#: The procedural families, in the order ``make_shape`` cycles through them.
FAMILIES: list[str] = list(_BUILDERS)


def family_of_seed(seed: int) -> str:
    """The family ``make_shape(seed)`` builds."""
    return FAMILIES[int(seed) % len(FAMILIES)]


def _to_trimesh(solid: Manifold) -> trimesh.Trimesh:
    mesh = solid.to_mesh64() if hasattr(solid, "to_mesh64") else solid.to_mesh()
    vertices_V3 = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
    faces_F3 = np.asarray(mesh.tri_verts, dtype=np.int64)
    return trimesh.Trimesh(vertices_V3, faces_F3, process=False)


def make_family(family: str, seed: int) -> ProceduralShape:
    """Build a shape of ``family`` with parameters drawn from ``seed`` (deterministic)."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, zlib.crc32(family.encode()), _PARAM_STREAM]
    params = _Params(np.random.default_rng(np.random.SeedSequence(entropy)))
    solid, caption = _BUILDERS[family](params)
    if solid.is_empty():
        raise RuntimeError(f"procedural {family} with seed {seed} produced an empty solid")
    z_up_to_y_up = solid.rotate((-90.0, 0.0, 0.0))
    return ProceduralShape(
        mesh=_to_trimesh(z_up_to_y_up),
        family=family,
        params=dict(params.values),
        caption=" ".join(caption.split()),
        seed=int(seed),
    )


def make_shape(seed: int) -> ProceduralShape:
    """The procedural shape of ``seed``: family ``FAMILIES[seed % len(FAMILIES)]``."""
    return make_family(family_of_seed(seed), seed)
