"""benchmarks/decode_sweep.py end to end on a tiny tokenizer, and the ``iso`` level of decoding."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh

from conftest import TINY_TOKENIZER
from vat3d.codec.api import decode_tokens, encode_mesh
from vat3d.models.tokenizer import VATokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import decode_sweep  # noqa: E402


def _tiny(tmp_path) -> Path:
    torch.manual_seed(0)
    return VATokenizer(**TINY_TOKENIZER, num_points=256).save_pretrained(tmp_path / "tok")


def test_lower_iso_grows_the_surface_and_a_huge_iso_is_empty(tmp_path):
    model = VATokenizer.from_pretrained(_tiny(tmp_path)).eval()
    tokens = encode_mesh(model, trimesh.creation.icosphere(subdivisions=2), seed=0).tokens
    field = model.occupancy_fn([torch.as_tensor(np.asarray(t)).long().view(1, -1) for t in tokens])
    grid = torch.as_tensor(np.stack(np.meshgrid(*[np.linspace(-0.95, 0.95, 24)] * 3, indexing="ij"), -1)
                           .reshape(-1, 3), dtype=torch.float32)
    logits = field(grid).numpy()
    high, low = (float(q) for q in np.quantile(logits, [0.7, 0.3]))  # two levels that cross the field
    meshes = [decode_tokens(model, tokens, resolution=32, iso=level) for level in (high, low)]
    assert all(len(m.faces) for m in meshes)
    # the lower level's surface encloses more of the box (volume of the closed part, or at least its extent)
    assert meshes[1].area > meshes[0].area or np.ptp(meshes[1].bounds, 0).sum() > np.ptp(meshes[0].bounds, 0).sum()
    assert len(decode_tokens(model, tokens, resolution=32, iso=1e6).faces) == 0


def test_decode_sweep_end_to_end(tmp_path):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box(extents=(1.0, 0.6, 0.3)).export(meshes / "box.ply")
    trimesh.creation.icosphere(subdivisions=2).export(meshes / "ball.ply")
    out = tmp_path / "sweep.json"
    result = decode_sweep.main(["--meshes", str(meshes), "--model", str(_tiny(tmp_path)), "--isos", "0,1e6", "--num-points", "256,512",
                                "--resolution", "32", "--n-points", "2000", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result)) and result["complete"]
    assert [r["name"] for r in result["rows"]] == ["ball.ply", "box.ply"]
    assert [(s["num_points"], s["iso"], s["band"]) for s in result["summary"]] == [
        (256, 0.0, 0.0), (256, 1e6, 0.0), (512, 0.0, 0.0), (512, 1e6, 0.0)]
    assert result["summary"][0]["all"]["n"] == 2 and result["summary"][0]["<20K"]["n"] == 2
    for entry in result["summary"][1::2]:
        assert entry["all"]["fscore@0.02"] == 0.0  # nothing above a logit of 10^6: empty meshes
