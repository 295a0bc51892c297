"""Dataset preparation: bad inputs, resume after SIGKILL, sharding, idempotence, sources."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from vat3d.cli import app
from vat3d.data import list_source, load_prepared, prepare_dataset, read_metadata
from vat3d.data.metadata import COLUMNS, metadata_files
from vat3d.data.prepare import select_items, shard_of
from vat3d.data.sources import path_to_id, pybullet_data_path

SMALL = {"num_surface": 256, "num_volume": 2048, "num_near": 2048}
SMALL_ARGS = ["--num-surface", "256", "--num-volume", "2048", "--num-near", "2048", "--no-progress"]


def _arrays(out_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """id -> raw stored arrays of every done shape."""
    return {row["id"]: load_prepared(out_dir / row["file"], decode=False) for row in read_metadata(out_dir, status="done")}


def _assert_same_dataset(a: Path, b: Path) -> None:
    rows_a, rows_b = read_metadata(a), read_metadata(b)
    assert [r["id"] for r in rows_a] == [r["id"] for r in rows_b]
    assert [r["status"] for r in rows_a] == [r["status"] for r in rows_b]
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for item_id, stored in arrays_a.items():
        other = arrays_b[item_id]
        assert stored.keys() == other.keys()
        for key in stored:
            assert np.array_equal(stored[key], other[key]), (item_id, key)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    root = tmp_path / "meshes"
    (root / "good").mkdir(parents=True)
    trimesh.creation.box(extents=(1, 2, 3)).export(root / "good" / "box.obj")
    trimesh.creation.icosphere(subdivisions=2).export(root / "good" / "ball.ply")
    (root / "empty.obj").write_bytes(b"")
    (root / "notamesh.stl").write_text("dear diary, today I did not write a mesh\n")
    (root / "garbage.glb").write_bytes(bytes(range(256)) * 4)
    (root / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (root / "nan.obj").write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\nf 1 2 4\nf 2 3 4\n")
    (root / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n")
    (root / "collinear.off").write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n2 0 0\n3 0 0\n3 0 1 2\n3 1 2 3\n")
    u, v = np.meshgrid(np.linspace(-1, 1, 12), np.linspace(-1, 1, 12))
    sheet_vertices = np.stack([u.ravel(), v.ravel(), 0.3 * np.sin(2 * u.ravel()) * np.cos(v.ravel())], axis=1)
    idx = np.arange(144).reshape(12, 12)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], axis=-1).reshape(-1, 4)
    sheet = trimesh.Trimesh(sheet_vertices, np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]), process=False)
    sheet.export(root / "sheet.obj")
    os.symlink(root / "does-not-exist.obj", root / "broken.obj")
    shutil.copy(pybullet_data_path() / "random_urdfs" / "168" / "168.obj", root / "pybullet168.obj")
    return root


EXPECTED_FAILURES = {
    "empty.obj": "0 bytes",
    "notamesh.stl": "no triangle mesh",
    "garbage.glb": "cannot parse",
    "points.obj": "no faces",
    "nan.obj": "non-finite",
    "flat.obj": "zero volume",
    "collinear.off": "zero surface area",
    "sheet.obj": "mesh has no inside (open surface)",
    "broken.obj": "not found",
    "pybullet168.obj": "non-finite",
}


def test_bad_inputs_fail_with_reasons_and_run_goes_on(messy_folder: Path, tmp_path: Path):
    before = _tree_digest(messy_folder)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", str(messy_folder), str(out), *SMALL_ARGS])
    assert result.exit_code == 0, result.output
    assert "failed 10" in result.output

    rows = {row["id"]: row for row in read_metadata(out)}
    assert set(rows) == {path_to_id(n) for n in EXPECTED_FAILURES} | {"good__box.obj", "good__ball.ply"}
    for name, reason in EXPECTED_FAILURES.items():
        row = rows[path_to_id(name)]
        assert row["status"] == "failed" and reason in row["error"], (name, row["error"])
        assert row["file"] == ""
    for item_id in ("good__box.obj", "good__ball.ply"):
        row = rows[item_id]
        assert row["status"] == "done" and row["error"] == "" and row["class"] == "good"
        assert row["watertight"] is True and 0.0 < row["inside_fraction"] < 1.0
        assert (out / row["file"]).is_file()
    assert all(set(COLUMNS) <= set(row) for row in rows.values())
    assert (out / "metadata.csv").read_text().splitlines()[0].split(",") == COLUMNS
    assert _tree_digest(messy_folder) == before, "inputs must never be modified"

    strict = runner.invoke(app, ["prepare", str(messy_folder), str(out), *SMALL_ARGS, "--strict"])
    assert strict.exit_code == 1, strict.output
    # failures are remembered, not recomputed; only the missing file is looked for again
    assert "skipped 11" in strict.output and "failed 1 (+9 failed in earlier runs)" in strict.output


# --------------------------------------------------------------------------- resume


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path):
    source = "procedural:40"
    counts = {"num_surface": 512, "num_volume": 4096, "num_near": 4096}
    args = ["--num-surface", "512", "--num-volume", "4096", "--num-near", "4096", "--no-progress"]
    reference = tmp_path / "reference"
    prepare_dataset(source, reference, **counts)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vat3d", "prepare", source, str(out), "--workers", "2", *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(list(out.glob("shapes/*/*.npz"))) < 5:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    written = len(list(out.glob("shapes/*/*.npz")))
    assert process.returncode == -signal.SIGKILL
    assert 5 <= written < 40, "the run must be killed mid-way"

    shard_file = metadata_files(out)[0]
    with open(shard_file, "a") as handle:  # a torn, unterminated row as from a crash mid-write
        handle.write('{"id": "procedural-box-00000')
    rows_before = len(read_metadata(out, status="done"))

    result = CliRunner().invoke(app, ["prepare", source, str(out), "--workers", "2", *args])
    assert result.exit_code == 0, result.output
    assert f"skipped {rows_before}" in result.output
    _assert_same_dataset(out, reference)
    assert not list(out.rglob("*.tmp")), "no temporary files left behind"


def test_rerun_is_idempotent_and_notices_changes(tmp_path: Path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):
        trimesh.creation.box(extents=(1, 1 + k, 1)).export(inputs / f"b{k}.obj")
    out = tmp_path / "out"
    first = prepare_dataset(str(inputs), out, **SMALL)
    assert (first.done, first.skipped) == (3, 0)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}

    second = prepare_dataset(str(inputs), out, **SMALL)
    assert (second.done, second.skipped) == (0, 3)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == stamps

    trimesh.creation.icosphere().export(inputs / "b1.obj")  # new content for one id
    third = prepare_dataset(str(inputs), out, **SMALL)
    assert (third.done, third.skipped) == (1, 2)

    fourth = prepare_dataset(str(inputs), out, **{**SMALL, "num_volume": 1024})  # new settings
    assert (fourth.done, fourth.skipped) == (3, 0)
    assert all(row["n_volume"] == 1024 for row in read_metadata(out))
    assert len(load_prepared(out / read_metadata(out)[0]["file"])["volume_labels"]) == 1024

    fifth = prepare_dataset(str(inputs), out, **{**SMALL, "num_volume": 1024}, overwrite=True)
    assert fifth.done == 3


# --------------------------------------------------------------------------- shards


def test_two_shards_equal_one_run(tmp_path: Path):
    source = "procedural:24:100"
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    prepare_dataset(source, whole, **SMALL)
    a = prepare_dataset(source, sharded, shard="0/2", **SMALL)
    b = prepare_dataset(source, sharded, shard=(1, 2), **SMALL)
    assert a.total + b.total == 24 and a.total > 0 and b.total > 0
    assert [p.name for p in metadata_files(sharded)] == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
    _assert_same_dataset(sharded, whole)


def test_shard_selection_is_a_partition():
    items = list_source("procedural:100")
    shards = [select_items(items, shard=(i, 3)) for i in range(3)]
    ids = [item.id for shard in shards for item in shard]
    assert sorted(ids) == sorted(item.id for item in items)
    assert all(shard_of(item.id, 3) == i for i, shard in enumerate(shards) for item in shard)
    assert [item.id for item in select_items(items, limit=10)] == [item.id for item in items[:10]]
    with pytest.raises(ValueError):
        select_items(items, shard="3/3")


def test_cli_limit_and_shard_options(tmp_path: Path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prepare", "procedural:40", str(out), "--limit", "6", "--shard", "1/2", *SMALL_ARGS])
    assert result.exit_code == 0, result.output
    expected = [i.id for i in select_items(list_source("procedural:40"), limit=6, shard="1/2")]
    assert [row["id"] for row in read_metadata(out)] == sorted(expected)
    bad = CliRunner().invoke(app, ["prepare", "procedural:4", str(out), "--shard", "2/2", *SMALL_ARGS])
    assert bad.exit_code != 0
    unknown = CliRunner().invoke(app, ["prepare", "nowhere:at/all", str(out), *SMALL_ARGS])
    assert unknown.exit_code != 0


# --------------------------------------------------------------------------- sources


def test_pybullet_source():
    items = list_source("pybullet")
    ids = [item.id for item in items]
    assert len(ids) == len(set(ids)) and len(ids) > 1100
    random_items = [item for item in items if item.class_name == "random_urdf"]
    assert len(random_items) == 1000
    named = {item.class_name for item in items if item.class_name != "random_urdf"}
    assert {"bunny", "duck", "teddy", "mug", "lego", "sphere", "cube"} <= named
    assert all(Path(item.path).is_file() and str(pybullet_data_path()) in item.path for item in items)
    assert list_source("pybullet:random") == random_items


def test_prepare_pybullet_items(tmp_path: Path):
    wanted = {"pybullet-random_urdfs-000", "pybullet-random_urdfs-168", "pybullet-duck"}
    items = [item for item in list_source("pybullet") if item.id in wanted]
    summary = prepare_dataset(items, tmp_path / "pb", **SMALL)
    assert (summary.done, summary.failed) == (2, 1)
    rows = {row["id"]: row for row in read_metadata(tmp_path / "pb")}
    assert rows["pybullet-random_urdfs-168"]["error"] == "mesh has non-finite (NaN/inf) vertex coordinates"
    assert rows["pybullet-random_urdfs-000"]["class"] == "random_urdf"
    duck = load_prepared(tmp_path / "pb" / rows["pybullet-duck"]["file"])
    assert duck["meta"]["class"] == "duck" and duck["meta"]["caption"] == "a rubber duck"
    assert 0.05 < duck["volume_labels"].mean() < 0.5


def test_procedural_rows_carry_caption_and_family(tmp_path: Path):
    prepare_dataset("procedural:3", tmp_path / "p", **SMALL)
    for row in read_metadata(tmp_path / "p"):
        assert row["status"] == "done" and row["caption"] and row["family"] == row["class"]
        data = load_prepared(tmp_path / "p" / row["file"])
        assert data["meta"]["caption"] == row["caption"]
        assert data["surface_points"].shape == (256, 3) and data["volume_points"].shape == (2048, 3)
        assert np.abs(data["surface_points"]).max() <= 0.951


def test_licence_and_package_reach_the_metadata_table(tmp_path: Path):
    folder = tmp_path / "two"
    folder.mkdir()
    trimesh.creation.box(extents=(1, 2, 3)).export(folder / "box.obj")
    trimesh.creation.icosphere(subdivisions=1).export(folder / "ball.ply")
    out = tmp_path / "out"
    for source in (str(folder), "procedural:2"):
        result = CliRunner().invoke(app, ["prepare", source, str(out), *SMALL_ARGS])
        assert result.exit_code == 0, result.output
    rows = read_metadata(out, status="done")
    assert len(rows) == 4
    by_source = {row["source"]: row for row in rows}
    assert by_source["folder"]["licence"] == "unknown" and by_source["folder"]["package"] == ""
    assert by_source["procedural"]["licence"] == "Apache-2.0" and by_source["procedural"]["package"] == "vat3d"
    header = (out / "metadata.csv").read_text().splitlines()[0].split(",")
    assert {"licence", "package", "package_version"} <= set(header)
    meta = load_prepared(out / by_source["procedural"]["file"])["meta"]
    assert meta["licence"] == "Apache-2.0"
    pybullet_item = next(item for item in list_source("pybullet:named") if item.id == "pybullet-duck")
    prepare_dataset([pybullet_item], out, **SMALL)
    duck = {row["id"]: row for row in read_metadata(out)}["pybullet-duck"]
    assert duck["licence"] == "Zlib" and duck["package"] == "pybullet" and duck["package_version"]


def test_limit_threads_pins_pools_already_loaded():
    """Worker initializers run after numpy is imported: environment variables no longer reach its
    thread pools, threadpoolctl does."""
    import torch  # noqa: F401 - its OpenMP pool and numpy's BLAS exist before the limit
    from threadpoolctl import threadpool_info, threadpool_limits

    from vat3d.data.prepare import limit_threads

    before = {(p["user_api"], p["prefix"]): p["num_threads"] for p in threadpool_info()}
    torch_threads = torch.get_num_threads()
    try:
        threadpool_limits(limits=2)  # the tests run with one thread: start above the limit
        torch.set_num_threads(2)
        assert any(p["num_threads"] == 2 for p in threadpool_info())
        limit_threads(1)
        assert all(p["num_threads"] == 1 for p in threadpool_info())
        assert torch.get_num_threads() == 1
    finally:
        for (api, prefix), n in before.items():
            threadpool_limits(limits={prefix: n})
        torch.set_num_threads(torch_threads)
