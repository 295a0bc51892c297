"""``vat3d eval`` on two procedural meshes: report files, classical baselines, entropy-coding sizes."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.cli import app
from vat3d.data.procedural import make_shape
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer


def test_eval_writes_report_with_baselines_and_entropy(tmp_path):
    torch.manual_seed(0)
    tokenizer = VATokenizer(**{**TINY_TOKENIZER, "num_points": 512}).eval()
    tokenizer.save_pretrained(tmp_path / "tok")
    torch.manual_seed(1)
    NextScaleGenerator.from_tokenizer(tokenizer, width=32, depth=2, heads=4, cond_type="none").save_pretrained(
        tmp_path / "gen")
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for seed in (0, 1):
        make_shape(seed).mesh.export(meshes / f"shape{seed}.obj")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, [str(a) for a in (
        "eval", tmp_path / "tok", meshes, "-o", out, "--resolution", "24", "--scale-resolution", "16",
        "--n-points", "1000", "--entropy", tmp_path / "gen")])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text())
    summary, shapes = report["summary"], report["shapes"]
    assert summary["shapes"] == 2 and len(shapes) == 2
    budgets = [b["budget_bytes"] for b in summary["simplify_draco"]]
    assert {256, 512, 1024, 4096} <= set(budgets)
    assert [d["qbits"] for d in summary["draco"]] == [8, 11, 14]
    assert all(d["bytes"] > 0 for d in summary["draco"])
    for row in shapes:
        assert {b["budget_bytes"] for b in row["budget"]} >= {256, 512, 1024, 4096, row["vat_bytes"],
                                                              row["entropy_bytes"]}
        assert row["entropy_raw_bits_per_token"] == 6
        assert row["entropy_raw_bytes"] == row["vat_bytes"]
        assert 0 < row["entropy_bits_per_token"] and row["entropy_bytes"] > 0
    assert "simplify_draco_fscore@0.02_at_entropy_bytes" in summary["same_bytes"]
    md = (out / "eval.md").read_text()
    assert "Draco alone" in md and "simplification + Draco" in md and "| 4096 |" in md
    assert "Token coding" in md and "bits/token" in md and "entropy (generator prior)" in md
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_summaries_split_by_face_count_with_the_baseline_at_the_same_bytes():
    from vat3d.evaluation.report import group_summaries

    def row(faces, f, base):
        return {"faces": faces, "vat_bytes": 200, "fscore@0.01": f / 2, "fscore@0.02": f, "chamfer_l1": 1 - f,
                "budget": [{"budget_bytes": 256, "fscore@0.02": 1.0, "fscore@0.01": 1.0},
                           {"budget_bytes": 200, "fscore@0.02": base, "fscore@0.01": base / 2}]}

    groups = group_summaries([row(1000, 0.5, 0.2), row(19_999, 0.7, 0.4), row(20_000, 0.1, 0.9)])
    assert set(groups) == {"<20K", ">=20K"}
    assert groups["<20K"]["shapes"] == 2 and groups["<20K"]["fscore@0.02"] == pytest.approx(0.6)
    assert groups["<20K"]["simplify_draco_fscore@0.02"] == pytest.approx(0.3)
    assert groups[">=20K"]["fscore@0.01"] == pytest.approx(0.05)
    assert groups[">=20K"]["simplify_draco_fscore@0.01"] == pytest.approx(0.45)
    no_base = group_summaries([{k: v for k, v in row(5, 0.5, 0.1).items() if k != "budget"}])
    assert "simplify_draco_fscore@0.02" not in no_base["<20K"]


def test_eval_reports_each_effort_with_its_seconds(tmp_path):
    torch.manual_seed(0)
    VATokenizer(**{**TINY_TOKENIZER, "num_points": 256}).eval().save_pretrained(tmp_path / "tok")
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    make_shape(3).mesh.export(meshes / "shape.obj")
    out = tmp_path / "report"
    args = ["eval", tmp_path / "tok", meshes, "-o", out, "--resolution", "24", "--scale-resolution", "16",
            "--n-points", "1000", "--no-baselines"]
    result = CliRunner().invoke(app, [str(a) for a in (*args, "--effort", "fast,balanced")])
    assert result.exit_code == 0, result.output
    assert "[1/1] shape.obj: " in result.output  # not a terminal: one line per shape instead of a bar
    report = json.loads((out / "eval.json").read_text())
    efforts = report["shapes"][0]["efforts"]
    assert set(efforts) == {"fast", "balanced"}
    assert efforts["balanced"]["heldout_iou"] >= efforts["balanced"]["fast_heldout_iou"]  # never worse
    assert efforts["balanced"]["encode_s"] > efforts["fast"]["encode_s"]
    assert efforts["fast"]["fscore@0.02"] == report["shapes"][0]["fscore@0.02"]  # the main rows are fast's
    assert set(report["summary"]["efforts"]) == {"fast", "balanced"}
    assert "Encode effort" in (out / "eval.md").read_text()
    bad = CliRunner().invoke(app, [str(a) for a in (*args, "--effort", "quick")])
    assert bad.exit_code != 0 and "--effort takes" in bad.output


def test_eval_scores_a_turned_encoding_in_the_input_frame(monkeypatch):
    """With an orientation search the tokens live in a turned box: the report must turn them back, so
    a shape encoded turned by k scores as the same shape pre-turned by k and encoded without a turn."""
    import numpy as np
    import trimesh

    from vat3d.codec import refine
    from vat3d.evaluation.report import EvalSettings, evaluate_shape
    from vat3d.geometry.normalize import ORIENTATIONS, normalize_mesh

    torch.manual_seed(0)
    tokenizer = VATokenizer(**{**TINY_TOKENIZER, "num_points": 512}).eval()
    gt, _ = normalize_mesh(make_shape(3).mesh)
    k = 9
    pre_turned = trimesh.Trimesh(np.asarray(gt.vertices) @ ORIENTATIONS[k].T, gt.faces, process=False)
    settings = dict(resolution=24, scale_resolution=16, n_points=2000, n_volume=2000, n_near=2000, baselines=False)
    plain = evaluate_shape(tokenizer, pre_turned, EvalSettings(**settings))
    monkeypatch.setattr(refine, "best_orientation", lambda *args, **kwargs: k)
    turned = evaluate_shape(tokenizer, gt, EvalSettings(**settings, effort="oriented"))
    assert turned["vat_bytes"] == plain["vat_bytes"] + 1
    for key in ("vol_iou", "near_iou", "chamfer_l1", "fscore@0.02"):
        assert turned[key] == pytest.approx(plain[key], abs=0.02), key
