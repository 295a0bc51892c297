"""benchmarks/orientation.py end to end on a tiny model and two meshes: per-turn rows and a summary."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
import trimesh

from conftest import TINY_TOKENIZER
from vat3d.models.tokenizer import VATokenizer

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "orientation.py"
_spec = importlib.util.spec_from_file_location("vat3d_bench_orientation", _PATH)
orientation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(orientation)


def test_orientation_study_records_every_turn_and_resumes(tmp_path):
    torch.manual_seed(0)
    VATokenizer(**{**TINY_TOKENIZER, "num_points": 256}).save_pretrained(tmp_path / "tok")
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box(extents=(1.0, 0.5, 0.2)).export(meshes / "a.ply")
    trimesh.creation.cylinder(radius=0.3, height=1.0).export(meshes / "b.ply")
    out = tmp_path / "o.json"
    args = ["--model", str(tmp_path / "tok"), "--meshes", str(meshes), "--resolution", "16", "--n-points", "500",
            "--greedy", "3", "--out", str(out)]
    result = orientation.main(args)
    rows, summary = result["rows"], result["summary"]
    assert len(rows) == 2 and all(len(r["turns"]) == 24 for r in rows)
    assert all(0 <= t["label_free"] <= 1 and 0 <= t["f2"] <= 1 for r in rows for t in r["turns"])
    f2 = [[t["f2"] for t in r["turns"]] for r in rows]
    assert summary["oracle"] == max(f2[0]) / 2 + max(f2[1]) / 2
    assert summary["identity"] == (f2[0][0] + f2[1][0]) / 2
    assert summary["identity"] <= summary["oracle"] and summary["label_free_pick"] <= summary["oracle"]
    assert [len(g["turns"]) for g in summary["greedy_subsets"]] == [2, 3]
    assert all(g["turns"][0] == 0 for g in summary["greedy_subsets"])
    # a second call keeps the finished meshes (resumable) and gives the same summary
    assert orientation.main(args)["summary"] == summary
    assert json.loads(out.read_text())["summary"] == summary


def test_turn_prior_fits_on_prepared_shapes_and_scores_candidate_sets(tmp_path):
    _spec2 = importlib.util.spec_from_file_location("vat3d_bench_turn_prior", _PATH.with_name("turn_prior.py"))
    turn_prior = importlib.util.module_from_spec(_spec2)
    _spec2.loader.exec_module(turn_prior)
    from vat3d.data.dataset import split_of
    from vat3d.data.metadata import read_metadata
    from vat3d.data.prepare import prepare_dataset

    torch.manual_seed(0)
    VATokenizer(**{**TINY_TOKENIZER, "num_points": 256}).save_pretrained(tmp_path / "tok")
    data = tmp_path / "data"
    assert prepare_dataset("procedural:6", data, num_surface=512, num_volume=256, num_near=256).done == 6
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box(extents=(1.0, 0.5, 0.2)).export(meshes / "a.ply")
    trimesh.creation.cone(radius=0.4, height=1.0).export(meshes / "b.ply")
    study = tmp_path / "study.json"
    summary = orientation.main(["--model", str(tmp_path / "tok"), "--meshes", str(meshes), "--resolution", "16",
                                "--n-points", "300", "--greedy", "2", "--out", str(study)])["summary"]
    args = ["--model", str(tmp_path / "tok"), "--data", str(data), "--shapes", "6", "--val", str(study),
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "prior.json")]
    result = turn_prior.main(args)
    train_ids = {r["id"] for r in read_metadata(data, status="done") if split_of(r["id"]) == "train"}
    assert result["training_shapes"] == len(train_ids) > 0
    assert set(json.loads((tmp_path / "work" / "train_scores.json").read_text())) == train_ids
    val = result["val"]
    assert val["meshes"] == 2 and val["identity"] == val["order_first1"] == round(summary["identity"], 4)
    assert {"linear_top6", "pairwise_top6", "order_first6", "linear_order4+prior2"} <= set(val)
    assert all(0.0 <= v <= 1.0 for k, v in val.items() if k != "meshes")
    assert turn_prior.main(args)["val"] == val  # the training scores are reused, the fit is deterministic
