"""Quality / time / bytes of each encode effort and of rate control, on real meshes.

    .venv/bin/python benchmarks/rate_distortion.py --meshes /work/eval_real/meshes_nopyb \
        [--model default] [--efforts fast,balanced,best] [--best-shapes 16] [--threads 1] \
        [--targets 0.3,0.4,0.5,0.6] [--out benchmarks/results/rate_distortion.json]

For every mesh and effort: the tokens (``encode_mesh(effort=...)``, seconds per shape), and for every
prefix of 1..K scales its .vat bytes, F@0.01 / F@0.02 / Chamfer-L1 against the input (the full K
scales decoded at ``--resolution``, shorter prefixes at ``--prefix-resolution``) and its held-out IoU
on the input's own labelled points. From those:

* **effort**: mean F-scores at the full bytes and seconds per shape, per face-count group;
* **max bytes** (``--max-bytes N`` keeps the longest prefix that fits): mean F@0.02 and bytes per budget;
* **target IoU** (``--target-iou X`` keeps the shortest prefix whose held-out IoU reaches X): mean bytes,
  F@0.02 and the share of shapes that reached X.

``best`` runs on the first ``--best-shapes`` meshes only (it takes tens of seconds per shape); its rows
say how many shapes they cover, and the ``fast`` / ``balanced`` numbers on the same subset are given
beside them. Also times the whole CLI decode (``vat3d decode``, writing an OBJ, ``--faces`` default)
of the fast files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from vat3d.codec.api import decode_tokens, encode_mesh, tokens_to_bytes
from vat3d.codec.refine import EFFORTS, label_queries, prefix_scores
from vat3d.evaluation.metrics import compare_meshes
from vat3d.evaluation.report import face_group
from vat3d.geometry.io import load_mesh, mesh_files
from vat3d.geometry.normalize import Transform, normalize_mesh
from vat3d.pretrained import load_tokenizer



def evaluate_prefixes(model, tokens, gt, queries, args, frame: Transform | None = None) -> list[dict]:
    """Bytes, F-scores and held-out IoU of every prefix of ``tokens`` (box coordinates).

    ``frame``: the turn the tokens were made in (``Transform(orientation=k)``): decoded meshes are turned
    back into ``gt``'s frame (as ``vat3d eval`` does), ``queries`` into the tokens', and the bytes count
    the file's orientation byte."""
    frame = frame or Transform()
    if frame.orientation:
        rot = torch.tensor(frame.rotation.T, dtype=queries.heldout_points_H3.dtype)
        queries = dataclasses.replace(queries, train_points_Q3=queries.train_points_Q3 @ rot,
                                      heldout_points_H3=queries.heldout_points_H3 @ rot)
    K = len(tokens)
    ious = prefix_scores(model, [torch.as_tensor(t).view(1, -1) for t in tokens], queries)[0].tolist()
    out = []
    for k in range(1, K + 1):
        res = args.resolution if k == K else args.prefix_resolution
        dec = decode_tokens(model, tokens[:k], frame, resolution=res)
        scores = compare_meshes(dec, gt, n_points=args.n_points, seed=0)
        out.append({"scales": k, "bytes": len(tokens_to_bytes(model, tokens[:k], frame)), "resolution": res,
                    "heldout_iou": ious[k - 1], "fscore@0.01": scores["fscore@0.01"],
                    "fscore@0.02": scores["fscore@0.02"], "chamfer_l1": scores["chamfer_l1"]})
    return out


def mean(xs) -> float:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def summarise(rows: list[dict], effort: str, budgets, targets) -> dict:
    part = [r for r in rows if effort in r["efforts"]]
    groups = {}
    for group in sorted({face_group(r["faces"]) for r in part}) + ["all"]:
        sub = [r for r in part if group == "all" or face_group(r["faces"]) == group]
        full = [r["efforts"][effort]["prefixes"][-1] for r in sub]
        groups[group] = {"shapes": len(sub), "bytes": mean([f["bytes"] for f in full]),
                         "encode_s": mean([r["efforts"][effort]["encode_s"] for r in sub]),
                         **{k: mean([f[k] for f in full]) for k in ("fscore@0.01", "fscore@0.02", "chamfer_l1")}}
    rate = []
    for budget in budgets:
        picks = []
        for r in part:
            fits = [p for p in r["efforts"][effort]["prefixes"] if p["bytes"] <= budget]
            picks.append(fits[-1] if fits else None)
        ok = [p for p in picks if p is not None]
        rate.append({"max_bytes": budget, "fits": len(ok) / max(len(part), 1), "bytes": mean([p["bytes"] for p in ok]),
                     "fscore@0.02": mean([p["fscore@0.02"] if p else 0.0 for p in picks]),
                     "fscore@0.01": mean([p["fscore@0.01"] if p else 0.0 for p in picks])})
    target_rows = []
    for target in targets:
        picks, reached = [], 0
        for r in part:
            prefixes = r["efforts"][effort]["prefixes"]
            hit = next((p for p in prefixes if p["heldout_iou"] >= target), None)
            reached += hit is not None
            picks.append(hit or prefixes[-1])
        target_rows.append({"target_iou": target, "reached": reached / max(len(part), 1),
                            "bytes": mean([p["bytes"] for p in picks]),
                            "fscore@0.02": mean([p["fscore@0.02"] for p in picks]),
                            "fscore@0.01": mean([p["fscore@0.01"] for p in picks])})
    return {"groups": groups, "max_bytes": rate, "target_iou": target_rows}


def time_cli_decode(model_name: str, files: list[Path], threads: int) -> dict:
    """Wall seconds of ``vat3d decode`` per file (model loading excluded: one process, many files)."""
    with tempfile.TemporaryDirectory() as tmp:
        vats = Path(tmp) / "vats"
        vats.mkdir()
        model = load_tokenizer(model_name)
        for i, f in enumerate(files):
            (vats / f"{i:03d}.vat").write_bytes(encode_mesh(model, f).data)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        exe = str(Path(sys.executable).with_name("vat3d"))

        def decode(source: Path, *options: str) -> float:
            t0 = time.perf_counter()
            subprocess.run([exe, "decode", model_name, str(source), *options], env=env, capture_output=True,
                           check=True)
            return time.perf_counter() - t0

        decode(vats / "000.vat", "-o", str(Path(tmp) / "one.obj"))  # warm-up (file caches)
        single = decode(vats / "000.vat", "-o", str(Path(tmp) / "one.obj"))
        batch = decode(vats, "-o", str(Path(tmp) / "out"), "--format", "obj")
    return {"files": len(files), "batch_s_per_file": (batch - single) / max(len(files) - 1, 1) if len(files) > 1
            else batch, "one_file_process_s": single, "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--efforts", default="fast,balanced,best")
    parser.add_argument("--best-shapes", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--prefix-resolution", type=int, default=128)
    parser.add_argument("--n-points", type=int, default=20000)
    parser.add_argument("--budgets", default="64,100,150,200,256")
    parser.add_argument("--targets", default="0.3,0.4,0.5,0.6")
    parser.add_argument("--cli-decode-files", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rate_distortion.json"))
    parser.add_argument("--only-timing", action="store_true",
                        help="Only time: each effort's encoding of --limit meshes and the CLI decode of "
                             "--cli-decode-files meshes (writes --out), on an otherwise idle machine.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only_timing:
        files = mesh_files(args.meshes)
        model = load_tokenizer(args.model)
        encode_mesh(model, files[0], effort="balanced")  # warm-up
        timing = {}
        for effort in [e for e in args.efforts.split(",") if e]:
            seconds = []
            for f in files[: args.limit or 8]:
                t0 = time.perf_counter()
                encode_mesh(model, f, effort=effort)
                seconds.append(time.perf_counter() - t0)
            timing[effort] = {"shapes": len(seconds), "median_s": float(np.median(seconds)),
                              "max_s": float(max(seconds)), "mean_s": float(np.mean(seconds))}
            print(effort, timing[effort], flush=True)
        cli = time_cli_decode(args.model, files[: args.cli_decode_files], threads=args.threads) \
            if args.cli_decode_files else None
        print("cli decode", cli)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "meshes": str(args.meshes), "threads": args.threads,
                                        "encode": timing, "cli_decode": cli,
                                        "load_average_1m": os.getloadavg()[0]}, indent=2))
        return
    efforts = [e for e in args.efforts.split(",") if e]
    unknown = [e for e in efforts if e not in EFFORTS]
    if unknown:
        raise SystemExit(f"unknown efforts {unknown}: choose from {list(EFFORTS)}")
    files = mesh_files(args.meshes)[: args.limit]
    model = load_tokenizer(args.model)
    rows = []
    for i, f in enumerate(track(files, description="rate-distortion")):
        mesh = load_mesh(f)
        gt, _ = normalize_mesh(mesh)
        try:
            queries = label_queries(gt, seed=1)  # its own draw: not the encoder's (seed 0) points
        except ValueError as error:
            print(f"skipped {f.name}: {error}", flush=True)
            continue
        row = {"name": f.name, "faces": int(len(mesh.faces)), "efforts": {}}
        for effort in efforts:
            if effort == "best" and i >= args.best_shapes:
                continue
            t0 = time.perf_counter()
            shape = encode_mesh(model, gt, effort=effort)
            seconds = time.perf_counter() - t0
            row["efforts"][effort] = {"encode_s": seconds, "source": shape.source, "score": shape.score,
                                      "prefixes": evaluate_prefixes(model, shape.tokens, gt, queries, args,
                                                                    Transform(orientation=shape.transform.orientation))}
        full = {e: round(v["prefixes"][-1]["fscore@0.02"], 3) for e, v in row["efforts"].items()}
        secs = {e: round(v["encode_s"], 1) for e, v in row["efforts"].items()}
        print(f"{f.name}: F@0.02 {full}, s {secs}", flush=True)
        rows.append(row)
    budgets = [int(b) for b in args.budgets.split(",") if b]
    targets = [float(t) for t in args.targets.split(",") if t]
    summary = {e: summarise(rows, e, budgets, targets) for e in efforts}
    if "best" in efforts:  # the other efforts on best's subset, for a like-for-like comparison
        subset = [r for r in rows if "best" in r["efforts"]]
        summary["best_subset"] = {e: summarise(subset, e, budgets, targets)["groups"]["all"] for e in efforts}
    cli = time_cli_decode(args.model, files[: args.cli_decode_files], threads=max(args.threads, 1)) \
        if args.cli_decode_files else None
    result = {"model": args.model, "meshes": str(args.meshes), "shapes": len(rows), "threads": args.threads,
              "load_average_1m": os.getloadavg()[0], "settings": {k: str(v) for k, v in vars(args).items()},
              "efforts": {e: vars(EFFORTS[e]) | {"temperature": list(EFFORTS[e].temperature)} for e in efforts},
              "summary": summary, "cli_decode": cli, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    for e in efforts:
        g = summary[e]["groups"]
        print(e, {k: {m: round(v[m], 3) for m in ("shapes", "bytes", "encode_s", "fscore@0.01", "fscore@0.02")}
                  for k, v in g.items()})
    if cli:
        print("cli decode", cli)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
