"""benchmarks/ablation.py end to end on the tiny tokenizer config: two cells x two seeds, in process."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import trimesh

from vat3d.data import prepare_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablation  # noqa: E402


def test_ablation_end_to_end(tmp_path):
    prepare_dataset("procedural:12", tmp_path / "data", num_surface=256, num_volume=256, num_near=256)
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box(extents=(1.0, 0.5, 0.3)).export(meshes / "box.obj")
    trimesh.creation.torus(0.6, 0.2).export(meshes / "torus.obj")
    out = tmp_path / "ablation.json"
    result = ablation.main(["--data", str(tmp_path / "data"), "--meshes", str(meshes), "--config", "tiny",
                            "--only", "compress+vvq,compress", "--seeds", "0,1", "--minutes", "0.000001",
                            "--min-steps", "4", "--jobs", "0", "--limit", "2", "--resolution", "24",
                            "--sheet-resolution", "20", "--work", str(tmp_path / "work"), "--out", str(out)])
    cells = result["cells"]
    assert list(cells) == ["compress+vvq", "compress"]
    for name, cell in cells.items():
        assert cell["steps"] == 4 and len(cell["runs"]) == 2 and cell["s_per_step"] > 0
        for key in ("vol_iou", "near_iou", "cross_scale_iou", "f@0.02"):
            assert cell[key]["n"] == 2 and 0 <= cell[key]["min"] <= cell[key]["mean"] <= cell[key]["max"] <= 1
        assert len(cell["usage_per_scale"]) == 4  # tiny: 4 scales
    assert cells["compress"]["paper"]["cross_scale_iou"] == 15.12
    # the cells really differ: plain VQ has no log-variance half in its Gaussian head
    plain = json.loads((tmp_path / "work" / "compress" / "seed0" / "model" / "config.json").read_text())
    assert plain["variational"] is False
    assert Path(result["sheet"]).is_file() and json.loads(out.read_text())["seeds"] == [0, 1]
    assert "compress+vvq" in ablation.markdown(result) and "72.34 / 47.32" in ablation.markdown(result)


def test_tokenizer_scaling_end_to_end(tmp_path):
    import tokenizer_scaling

    prepare_dataset("procedural:10", tmp_path / "data", num_surface=256, num_volume=256, num_near=256)
    out = tmp_path / "tok_scaling.json"
    result = tokenizer_scaling.main(["--data", str(tmp_path / "data"), "--config", "tiny", "--sizes", "32x1,64x2",
                                     "--rule", "steps", "--steps", "24", "--seeds", "0,1", "--jobs", "0",
                                     "--n-boot", "100", "--work", str(tmp_path / "work"), "--out", str(out)])
    small, large = result["points"]
    assert small["params"] < large["params"] and small["steps"] == large["steps"] == 24
    assert all(0 <= p["vol_iou"] <= 1 and len(p["runs"]) == 2 for p in result["points"])
    config = json.loads((tmp_path / "work" / "w64d2" / "seed1" / "model" / "config.json").read_text())
    assert (config["width"], config["depth"], config["decoder_width"], config["decoder_depth"]) == (64, 2, 64, 2)
    fit = result["fits"]["1-vol_iou"]
    assert fit["method"] == "seeds" and fit["b_ci"][0] <= fit["b"] <= fit["b_ci"][1]
    assert json.loads(out.read_text())["rule"] == "24 steps per size"


def test_last_validation_of_a_run_that_never_quantized(tmp_path):
    """A validation before quantization logs no cross-scale IoU: it reads as NaN, not a crash."""
    from ablation import last_validation

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "step,train/loss,val/vol_iou,val/near_iou,val/cross_scale_iou,val/usage_s01\n"
        "9,0.9,,,,\n"
        "10,,0.31,0.22,,\n")
    row = last_validation(tmp_path)
    assert row["step"] == 10 and row["vol_iou"] == 0.31 and row["near_iou"] == 0.22
    assert math.isnan(row["cross_scale_iou"]) and row["usage_per_scale"] == []
    assert last_validation(tmp_path / "missing") == {}
