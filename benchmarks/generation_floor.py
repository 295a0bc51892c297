"""What the tokenizer lets a generator reach on held-out shapes, without generating anything.

Every held-out shape of ``--data`` (the ``val`` split, as ``vat3d eval-generation`` picks it) is
encoded and decoded by ``--tokenizer`` and meshed at ``--resolution``; its reconstruction is then
scored as if it had been generated (``vat3d.evaluation.generation.reconstruction_ceiling``):

* paired (``1-NNA-CD_reconstructed``): each reconstruction beside its own shape, the best case;
* each pair left out (``1-NNA-CD_reconstructed_unpaired``, ``family_match_reconstructed``): about what
  a generator that drew new shapes from the held-out shapes' distribution through this tokenizer
  would score. A caption that describes its shape closely lets a generator land nearer its own
  shape than that, so the truth for a perfect generator lies between the two.

Per family, the family match of the reconstructions too. Prints and saves JSON; ``--sheet PNG`` also
draws the first held-out shape of each of ``--sheet-families`` beside its reconstruction.

    .venv/bin/python benchmarks/generation_floor.py --data /work/data/gen --source procedural \\
        --out benchmarks/results/eval_generation/tokenizer_floor_all289/floor.json \
        --sheet docs/images/tokenizer_floor.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", default="default")
    parser.add_argument("--data", required=True, help="a prepared dataset (vat3d prepare)")
    parser.add_argument("--source", action="append", help="keep only held-out shapes of this source (repeatable)")
    parser.add_argument("--num-samples", type=int, default=None, help="held-out shapes used (default: all)")
    parser.add_argument("--split", default="val", help="val (held out, as eval-generation), train or all")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--n-points", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/generation_floor.json")
    parser.add_argument("--sheet", type=Path, default=None, help="a PNG: held-out shapes beside their reconstructions")
    parser.add_argument("--sheet-families", default="bracket,sheet,pipe,flange,spur_gear,vase,lamp,table",
                        help="comma-separated families drawn on the sheet (the first held-out shape of each)")
    args = parser.parse_args(argv)

    from rich.progress import track

    from vat3d.evaluation.generation import (GenerationEvalSettings, family_match, leave_one_out_family_match,
                                             load_references, mesh_points, normalize_clouds,
                                             normalized_reference_mesh, reconstructed_surface,
                                             reconstruction_ceiling)
    from vat3d.evaluation.metrics import pairwise_chamfer
    from vat3d.pretrained import load_tokenizer

    settings = GenerationEvalSettings(num_conditions=args.num_samples, n_points=args.n_points, split=args.split,
                                      resolution=args.resolution,
                                      sources=tuple(args.source) if args.source else None)
    refs = load_references(args.data, settings)
    tokenizer = load_tokenizer(args.tokenizer).eval()
    start = time.perf_counter()
    sheet_families = [f for f in args.sheet_families.split(",") if f] if args.sheet else []
    recon, sheet_rows = [], {}
    for k, ref in enumerate(track(refs, description="reconstructing")):
        mesh = reconstructed_surface(ref, tokenizer, args.resolution)
        recon.append(mesh_points(mesh, args.n_points, seed=k)[0])
        if ref["family"] in sheet_families and ref["family"] not in sheet_rows:
            sheet_rows[ref["family"]] = (normalized_reference_mesh(ref), mesh)
    seconds_reconstruct = time.perf_counter() - start
    ref_RN3 = normalize_clouds(np.stack([ref["points"] for ref in refs]), settings.normalize)
    rec_CN3 = normalize_clouds(np.stack(recon), settings.normalize)
    start = time.perf_counter()
    d_rr = pairwise_chamfer(ref_RN3, ref_RN3).numpy()
    d_rc = pairwise_chamfer(ref_RN3, rec_CN3).numpy()
    d_cc = pairwise_chamfer(rec_CN3, rec_CN3).numpy()
    seconds_chamfer = time.perf_counter() - start
    families = [ref["family"] for ref in refs]
    summary = reconstruction_ceiling(d_rc, d_rr, d_cc, families)
    summary["family_match_reference"] = leave_one_out_family_match(d_rr, families)
    unpaired = d_rc.astype(np.float64).copy()
    np.fill_diagonal(unpaired, np.inf)  # as reconstruction_ceiling: each reconstruction's own shape left out
    predicted = family_match(unpaired.T, families, families)["predicted"]
    per_family = {f: float(np.mean([p == f for p, g in zip(predicted, families) if g == f]))
                  for f in sorted(set(families)) if f}
    result = {"command": "python benchmarks/generation_floor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "tokenizer": args.tokenizer, "data": str(args.data), "num_references": len(refs),
              "resolution": args.resolution, "n_points": args.n_points, "summary": summary,
              "family_match_reconstructed_per_family": per_family,
              "seconds_reconstruct_per_shape": seconds_reconstruct / max(len(refs), 1),
              "seconds_chamfer": seconds_chamfer}
    if args.sheet and sheet_rows:
        from vat3d.renderers.raycast import save_sheet

        names = [f for f in sheet_families if f in sheet_rows]
        labels = [f"{f} ({per_family.get(f, float('nan')):.2f})" for f in names]
        result["sheet"] = str(save_sheet(args.sheet, [list(sheet_rows[f]) for f in names], row_labels=labels,
                                         col_labels=["held-out shape", "tokenizer's reconstruction"], size=160))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
