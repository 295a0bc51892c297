"""Encode- and decode-time settings against quality: surface points given to the encoder, the iso
level of the surface and the refinement band.

The encoder is the amortised one (``effort=fast``); ``--num-points`` changes how many surface samples
it reads (the model was trained with ``model.num_points``; the cross-attention front end takes any
number, and more samples average out the sampling noise of its attention). The other settings only
change how the occupancy field becomes a mesh.

An undertrained field is unsure on thin parts: their logits stay below 0 (probability 0.5), so
marching cubes at ``iso=0`` drops them. A lower iso keeps them and thickens everything else; this
measures the trade on real meshes, per face-count group:

    .venv/bin/python benchmarks/decode_sweep.py --meshes /work/eval_real/meshes_nopyb \
        [--model default] [--num-points 1024,4096] [--isos 0,-0.5,-1,-1.5,-2] [--bands 0] [--limit N] \
        [--out benchmarks/results/decode_sweep.json]

Per mesh and setting: F@0.01, F@0.02, Chamfer-L1 (exact point-to-surface distances in the [-1, 1]
box, ``vat3d.evaluation.metrics.compare_meshes``) and decode seconds at ``--resolution``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.progress import track

from vat3d.codec.api import decode_tokens, encode_mesh
from vat3d.evaluation.metrics import compare_meshes
from vat3d.evaluation.report import face_group
from vat3d.geometry.io import MESH_EXTENSIONS, load_mesh, mesh_files
from vat3d.geometry.normalize import normalize_mesh
from vat3d.pretrained import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def sweep(model, paths, isos, bands, *, num_points=(None,), resolution: int = 256, n_points: int = 20_000,
          on_row=None) -> list[dict]:
    """Rows per mesh; ``on_row(rows)`` is called after each mesh (the script saves partial results).
    ``num_points``: encoder inputs to try (None: the model's own ``num_points``)."""
    rows = []
    for path in track(paths, description="decode sweep"):
        mesh = load_mesh(path)
        gt, _ = normalize_mesh(mesh)
        row = {"name": Path(path).name, "faces": int(len(mesh.faces)), "group": face_group(len(mesh.faces)),
               "settings": []}
        for points in num_points:
            t0 = time.perf_counter()
            shape = encode_mesh(model, gt, seed=0, num_points=points)
            encode_s = time.perf_counter() - t0
            for band in bands:
                for iso in isos:
                    t0 = time.perf_counter()
                    dec = decode_tokens(model, shape.tokens, None, resolution=resolution, iso=iso, band=band)
                    seconds = time.perf_counter() - t0
                    scores = compare_meshes(dec, gt, n_points=n_points, seed=0)
                    row["settings"].append({"num_points": points or model.num_points, "iso": iso, "band": band,
                                            "vat_bytes": shape.num_bytes, "encode_s": encode_s, "decode_s": seconds,
                                            **{k: float(scores[k]) for k in ("fscore@0.01", "fscore@0.02",
                                                                             "chamfer_l1")}})
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean metrics per setting (encoder points, iso, band) and face-count group (``all`` too)."""
    out = []
    for j, setting in enumerate(rows[0]["settings"]):
        entry = {"num_points": setting["num_points"], "iso": setting["iso"], "band": setting["band"]}
        for group in ("<20K", ">=20K", "all"):
            sel = [r["settings"][j] for r in rows if group == "all" or r["group"] == group]
            if not sel:
                continue
            entry[group] = {"n": len(sel), **{k: float(np.mean([s[k] for s in sel]))
                                              for k in ("fscore@0.01", "fscore@0.02", "chamfer_l1", "encode_s",
                                                        "decode_s")}}
        out.append(entry)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meshes", required=True, type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--num-points", default="", help="encoder inputs to try, e.g. 1024,4096 (default: the model's)")
    ap.add_argument("--isos", default="0,-0.5,-1,-1.5,-2")
    ap.add_argument("--bands", default="0")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--n-points", type=int, default=20_000)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode_sweep.json")
    args = ap.parse_args(argv)
    paths = mesh_files(args.meshes)[: args.limit]
    if not paths:
        raise SystemExit(f"no meshes ({', '.join(MESH_EXTENSIONS)}) in {args.meshes}")
    model = load_tokenizer(args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(rows: list[dict]) -> dict:
        result = {"model": args.model, "meshes": str(args.meshes), "resolution": args.resolution,
                  "complete": len(rows) == len(paths), "summary": summarize(rows), "rows": rows}
        args.out.write_text(json.dumps(result, indent=1))
        return result

    num_points = [int(x) for x in _floats(args.num_points)] or [None]
    rows = sweep(model, paths, _floats(args.isos), _floats(args.bands), num_points=num_points,
                 resolution=args.resolution, n_points=args.n_points, on_row=save)
    result = save(rows)
    for entry in result["summary"]:
        groups = "  ".join(f"{g}: F@0.01 {entry[g]['fscore@0.01']:.3f} F@0.02 {entry[g]['fscore@0.02']:.3f} "
                           f"CD {entry[g]['chamfer_l1']:.4f} {entry[g]['decode_s']:.2f}s"
                           for g in ("<20K", ">=20K", "all") if g in entry)
        print(f"points {entry['num_points']} iso {entry['iso']:+.2f} band {entry['band']:.1f}  {groups}")
    return result


if __name__ == "__main__":
    main()
