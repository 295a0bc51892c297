"""How much does the turn of a shape matter to the amortised encoder, and does the label-free score find it?

    python benchmarks/orientation.py --meshes /work/eval_real/meshes_nopyb --every 3 \
        --out benchmarks/results/orientation/oracle_unseen21.json
    python benchmarks/orientation.py --files LIST.txt --out benchmarks/results/orientation/oracle_val43.json

Every mesh is normalised into the box and turned by each of the 24 axis-aligned rotations
(``vat3d.geometry.normalize.ORIENTATIONS``); each turn is tokenized by the amortised encoder, decoded
(``--resolution``) and scored against the turned mesh (F@0.01 / F@0.02). Beside each turn's quality it
records the two scores an encoder could pick by: the label-free one of ``--effort oriented``
(``vat3d.codec.refine.orientation_scores``) and the IoU at labelled points (winding numbers).
The summary gives the mean F@0.02 of the identity, of the per-mesh best turn (the oracle), and of each
pick; ``--greedy N`` also lists the greedily best subsets of 1..N turns for the label-free pick (to
choose a cheaper subset on one set of meshes and check it on another, never on the same one).
Resumable: meshes already in ``--out`` are skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from vat3d.codec.api import decode_tokens, encode_meshes
from vat3d.codec.refine import label_queries, orientation_scores
from vat3d.data.source_items import load_source_mesh
from vat3d.evaluation.metrics import compare_meshes
from vat3d.geometry.io import mesh_files
from vat3d.geometry.normalize import ORIENTATIONS, normalize_mesh
from vat3d.geometry.points import sample_surface
from vat3d.pretrained import load_tokenizer


def study_mesh(model, path: Path, resolution: int, n_points: int) -> dict:
    gt, _ = normalize_mesh(load_source_mesh(path))
    points, normals = sample_surface(gt, model.num_points, seed=0)
    free = orientation_scores(model, torch.from_numpy(points.astype(np.float32)),
                              torch.from_numpy(normals.astype(np.float32)), len(ORIENTATIONS)).tolist()
    try:
        lq = label_queries(gt, num_volume=4096, num_near=8192, heldout_fraction=0.5, seed=0)
        queries = torch.cat([lq.train_points_Q3, lq.heldout_points_H3])
        labels = torch.cat([lq.train_labels_Q, lq.heldout_labels_H]) > 0.5
    except Exception:  # noqa: BLE001 - an open surface has no inside: no labelled score
        queries = None
    turned = [trimesh.Trimesh(np.asarray(gt.vertices) @ r.T, gt.faces, process=False) for r in ORIENTATIONS]
    turns = []
    for rotation, mesh, shape, score in zip(ORIENTATIONS, turned, encode_meshes(model, turned), free):
        iou = None
        if queries is not None:
            indices = [torch.as_tensor(t).reshape(1, -1) for t in shape.tokens]
            with torch.no_grad():
                inside = model.occupancy_fn(indices)(queries @ torch.tensor(rotation.T, dtype=torch.float32)) > 0
            iou = float((inside & labels).sum() / (inside | labels).sum().clamp_min(1))
        decoded = decode_tokens(model, shape.tokens, resolution=resolution)
        metrics = compare_meshes(decoded, normalize_mesh(mesh)[0], n_points=n_points)
        turns.append({"f1": metrics["fscore@0.01"], "f2": metrics["fscore@0.02"], "label_free": score, "iou": iou})
    return {"name": str(path), "faces": int(len(gt.faces)), "turns": turns}


def pick(rows: list[dict], key: str, subset: list[int] | None = None) -> float:
    subset = subset or list(range(len(ORIENTATIONS)))
    chosen = []
    for row in rows:
        scores = [row["turns"][i][key] or 0.0 for i in subset]
        chosen.append(row["turns"][subset[int(np.argmax(scores))]]["f2"])
    return float(np.mean(chosen))


def summarise(rows: list[dict], greedy: int) -> dict:
    f2 = np.array([[t["f2"] for t in row["turns"]] for row in rows])
    out = {"meshes": len(rows), "identity": float(f2[:, 0].mean()), "oracle": float(f2.max(1).mean()),
           "mean_turn": float(f2.mean()), "label_free_pick": pick(rows, "label_free"),
           "labelled_iou_pick": pick(rows, "iou"), "greedy_subsets": []}
    subset = [0]
    for _ in range(greedy - 1):
        subset.append(max((i for i in range(len(ORIENTATIONS)) if i not in subset),
                          key=lambda i: pick(rows, "label_free", subset + [i])))
        out["greedy_subsets"].append({"turns": list(subset), "label_free_pick": pick(rows, "label_free", subset)})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--meshes", type=Path, help="A folder of meshes (sorted).")
    ap.add_argument("--files", type=Path, help="A text file of mesh paths, one per line (.dae works).")
    ap.add_argument("--every", type=int, default=1, help="Take every N-th mesh of --meshes.")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--n-points", type=int, default=20000)
    ap.add_argument("--greedy", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/orientation/oracle.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.files:
        files = [Path(line.strip()) for line in args.files.read_text().splitlines() if line.strip()]
    elif args.meshes:
        files = mesh_files(args.meshes)[:: args.every]
    else:
        raise SystemExit("give --meshes or --files")
    model = load_tokenizer(args.model).eval()
    rows = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    done = {row["name"] for row in rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path in files:
        if str(path) in done:
            continue
        t0 = time.perf_counter()
        row = study_mesh(model, path, args.resolution, args.n_points)
        rows.append(row)
        f2 = [t["f2"] for t in row["turns"]]
        print(f"{path.name[:48]:48s} identity {f2[0]:.3f} best {max(f2):.3f} label-free pick "
              f"{pick([row], 'label_free'):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        args.out.write_text(json.dumps({"model": args.model, "resolution": args.resolution, "rows": rows}))
    result = {"model": args.model, "resolution": args.resolution, "summary": summarise(rows, args.greedy),
              "rows": rows}
    args.out.write_text(json.dumps(result))
    s = result["summary"]
    print(f"{s['meshes']} meshes: identity {s['identity']:.3f}, mean over turns {s['mean_turn']:.3f}, oracle "
          f"{s['oracle']:.3f}, label-free pick {s['label_free_pick']:.3f}, labelled-IoU pick {s['labelled_iou_pick']:.3f}")
    return result


if __name__ == "__main__":
    main()
