"""``vat3d eval``: a tokenizer against ground-truth meshes and against classical codecs.

Per shape: Chamfer-L1 and F-scores (tau 0.01/0.02/0.05, [-1,1] box) of the mesh decoded from each
prefix of scales; volume and near-surface IoU per scale; cross-scale IoU (each prefix vs the full
decoding, averaged over prefixes 2..K-1); .vat bytes and the compression ratio against binary PLY;
Draco at several quantisation levels; simplification + Draco at equal byte budgets (256 B, 512 B,
1 KB, 4 KB, and each shape's own .vat size). With ``EvalSettings.extra_bytes`` (``vat3d eval
--entropy GENERATOR``) also bits/token and bytes/shape with and without entropy coding, and the
classical pipeline at the entropy-coded size.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import trimesh

from vat3d.codec.api import decode_tokens, encode_mesh
from vat3d.codec.effort_defaults import DEFAULT_EFFORT
from vat3d.evaluation.baselines import best_under_budget, draco_roundtrip, ply_bytes
from vat3d.evaluation.metrics import compare_meshes, iou
from vat3d.geometry.io import load_mesh
from vat3d.geometry.normalize import Transform, normalize_mesh
from vat3d.geometry.occupancy import compute_occupancy
from vat3d.geometry.points import sample_near_surface, sample_volume

DEFAULT_BUDGETS = (256, 512, 1024, 4096)
DEFAULT_DRACO_QBITS = (8, 11, 14)


@dataclass
class EvalSettings:
    resolution: int = 256            # marching-cubes grid of the full decoding
    scale_resolution: int = 128      # grid for the coarser prefixes
    n_points: int = 20_000           # surface samples per mesh for Chamfer / F-score
    n_volume: int = 20_000
    n_near: int = 20_000
    budgets: Sequence[int] = DEFAULT_BUDGETS
    draco_qbits: Sequence[int] = DEFAULT_DRACO_QBITS
    baselines: bool = True
    seed: int = 0
    taus: Sequence[float] = (0.01, 0.02, 0.05)
    extra_bytes: Callable | None = field(default=None, repr=False)  # shape -> {name: bytes} (entropy coding)
    effort: str = DEFAULT_EFFORT     # encode effort of the main rows (vat3d.codec.refine)
    extra_efforts: Sequence[str] = ()  # also encode with these, full-scale metrics only (row["efforts"])


def _f(scores: dict, tau: float = 0.02) -> float:
    return float(scores[f"fscore@{tau:g}"])


@torch.no_grad()
def evaluate_shape(model, path_or_mesh, settings: EvalSettings, name: str | None = None) -> dict:
    """All metrics of one shape; ``row['meshes']`` keeps decoded meshes for the picture sheet."""
    mesh = path_or_mesh if isinstance(path_or_mesh, trimesh.Trimesh) else load_mesh(path_or_mesh)
    gt, _ = normalize_mesh(mesh)
    rng = np.random.default_rng(settings.seed)
    vol_pts = sample_volume(settings.n_volume, seed=rng)
    near_pts, _ = sample_near_surface(gt, settings.n_near, seed=rng)
    vol_gt, near_gt = compute_occupancy(gt, vol_pts), compute_occupancy(gt, near_pts)

    t0 = time.perf_counter()
    # gt is already in the box: identity-like transform, but for the turn an encoder may choose
    shape = encode_mesh(model, gt, seed=settings.seed, effort=settings.effort)
    encode_s = time.perf_counter() - t0
    frame = Transform(orientation=shape.transform.orientation)  # gt's box -> the tokens' box and back
    K = len(shape.tokens)
    indices = [torch.as_tensor(t).long().view(1, -1) for t in shape.tokens]
    row: dict = {"name": name or str(path_or_mesh), "faces": int(len(mesh.faces)), "vat_bytes": shape.num_bytes,
                 "ply_bytes": ply_bytes(mesh), "num_scales": K, "tokens": int(sum(len(t) for t in shape.tokens)),
                 "encode_s": encode_s, "scales": []}
    row["compression_ratio"] = row["ply_bytes"] / row["vat_bytes"]
    occ_vol, meshes = [], {}
    for k in range(1, K + 1):
        fn = model.occupancy_fn(indices[:k])
        v = fn(torch.from_numpy(frame.apply(vol_pts).astype(np.float32))).numpy() > 0
        n = fn(torch.from_numpy(frame.apply(near_pts).astype(np.float32))).numpy() > 0
        occ_vol.append(v)
        res = settings.resolution if k == K else settings.scale_resolution
        t0 = time.perf_counter()
        dec = decode_tokens(model, shape.tokens[:k], frame, resolution=res)
        dec_s = time.perf_counter() - t0
        scores = compare_meshes(dec, gt, n_points=settings.n_points, taus=settings.taus, seed=settings.seed)
        scale_row = {"scale": k, "tokens": int(sum(len(t) for t in shape.tokens[:k])), "resolution": res,
                     "vol_iou": iou(v, vol_gt), "near_iou": iou(n, near_gt), "decode_s": dec_s,
                     **{key: float(val) for key, val in scores.items()}}
        row["scales"].append(scale_row)
        meshes[k] = dec
    full = row["scales"][-1]
    row.update({k: full[k] for k in full if k not in ("scale", "tokens", "resolution")})
    row["efforts"] = {settings.effort: _effort_entry(shape, encode_s, full)}
    for effort in settings.extra_efforts:
        if effort in row["efforts"]:
            continue
        t0 = time.perf_counter()
        other = encode_mesh(model, gt, seed=settings.seed, effort=effort)
        seconds = time.perf_counter() - t0
        dec = decode_tokens(model, other.tokens, Transform(orientation=other.transform.orientation),
                            resolution=settings.resolution)
        scores = compare_meshes(dec, gt, n_points=settings.n_points, taus=settings.taus, seed=settings.seed)
        row["efforts"][effort] = _effort_entry(other, seconds, {k: float(v) for k, v in scores.items()})
        meshes[f"effort-{effort}"] = dec
    cross = [iou(occ_vol[k - 1], occ_vol[-1]) for k in range(2, K)]
    row["cross_scale_iou"] = float(np.mean(cross)) if cross else 1.0
    if settings.extra_bytes is not None:
        row.update(settings.extra_bytes(shape))
    if settings.baselines:
        row["draco"] = []
        for q in settings.draco_qbits:
            dec, nbytes = draco_roundtrip(gt, q)
            scores = compare_meshes(dec, gt, n_points=settings.n_points, taus=settings.taus, seed=settings.seed)
            row["draco"].append({"qbits": q, "bytes": nbytes, **{k: float(v) for k, v in scores.items()}})
        row["budget"] = []
        same_budgets = {row["vat_bytes"], *([row["entropy_bytes"]] if "entropy_bytes" in row else [])}
        for budget in sorted({*settings.budgets, *same_budgets}):
            best = best_under_budget(gt, budget, n_points=settings.n_points, taus=settings.taus, seed=settings.seed)
            meshes[f"budget{budget}"] = best.pop("mesh")
            best.pop("candidates", None)
            row["budget"].append({k: (float(v) if isinstance(v, (int, float, np.floating)) and v is not None else v)
                                  for k, v in best.items()})
    row["meshes"] = {"gt": gt, **meshes}
    return row


def _effort_entry(shape, seconds: float, scores: dict) -> dict:
    return {"vat_bytes": shape.num_bytes, "encode_s": seconds, "heldout_iou": shape.score,
            "fast_heldout_iou": shape.fast_score, "source": shape.source,
            **{k: scores[k] for k in ("fscore@0.01", "fscore@0.02", "chamfer_l1")}}


def effort_summaries(rows: list[dict]) -> dict[str, dict]:
    """Per encode effort, overall and per face-count group: bytes, seconds per shape, F@0.01/0.02, Chamfer."""
    keys = ("vat_bytes", "encode_s", "fscore@0.01", "fscore@0.02", "chamfer_l1")
    efforts = [e for e in rows[0].get("efforts", {}) if all(e in r.get("efforts", {}) for r in rows)]
    out = {}
    for effort in efforts:
        entry = {"shapes": len(rows), **{k: float(np.mean([r["efforts"][effort][k] for r in rows])) for k in keys},
                 "groups": {}}
        for group in sorted({face_group(r["faces"]) for r in rows}):
            part = [r for r in rows if face_group(r["faces"]) == group]
            entry["groups"][group] = {"shapes": len(part), **{k: float(np.mean([r["efforts"][effort][k] for r in part]))
                                                              for k in keys}}
        out[effort] = entry
    return out


#: Input meshes are reported in two groups by face count: below and from this many faces.
DENSE_FACES = 20_000


def face_group(faces: int) -> str:
    return f"<{DENSE_FACES // 1000}K" if faces < DENSE_FACES else f">={DENSE_FACES // 1000}K"


def group_summaries(rows: list[dict]) -> dict[str, dict]:
    """Per face-count group: shapes, mean bytes, F@0.01, F@0.02, Chamfer-L1, and simplification + Draco's
    F@0.02 at each shape's own .vat size (when the baselines ran)."""
    out = {}
    for group in sorted({face_group(r["faces"]) for r in rows}):
        part = [r for r in rows if face_group(r["faces"]) == group]
        entry = {"shapes": len(part), **{k: float(np.mean([r[k] for r in part]))
                                         for k in ("vat_bytes", "fscore@0.01", "fscore@0.02", "chamfer_l1")}}
        if all("budget" in r for r in part):
            same = [next(x for x in r["budget"] if x["budget_bytes"] == r["vat_bytes"]) for r in part]
            entry["simplify_draco_fscore@0.02"] = float(np.mean([x["fscore@0.02"] for x in same]))
            entry["simplify_draco_fscore@0.01"] = float(np.mean([x.get("fscore@0.01", float("nan")) for x in same]))
        out[group] = entry
    return out


def summarize(rows: list[dict]) -> dict:
    """Means over shapes (per scale too), the classical pipeline's mean best F@0.02 per budget, and
    the same per face-count group (:func:`group_summaries`)."""
    if not rows:
        return {}
    def mean(xs) -> float:
        finite = [x for x in xs if x is not None and math.isfinite(x)]
        return float(np.mean(finite)) if finite else float("nan")
    keys = ["vat_bytes", "tokens", "compression_ratio", "chamfer_l1", "fscore@0.01", "fscore@0.02", "fscore@0.05",
            "vol_iou", "near_iou", "cross_scale_iou", "encode_s", "decode_s"]
    keys += [k for k in rows[0] if k.startswith("entropy_")]
    out = {"shapes": len(rows), **{k: mean([r[k] for r in rows if k in r]) for k in keys}}
    out["groups"] = group_summaries(rows)
    out["efforts"] = effort_summaries(rows)
    K = min(r["num_scales"] for r in rows)
    out["per_scale"] = [{"scale": k, "tokens": rows[0]["scales"][k - 1]["tokens"],
                         **{m: mean([r["scales"][k - 1][m] for r in rows])
                            for m in ("vol_iou", "near_iou", "fscore@0.02", "chamfer_l1")}} for k in range(1, K + 1)]
    if "budget" in rows[0]:
        budgets = sorted({b["budget_bytes"] for r in rows for b in r["budget"]})
        out["simplify_draco"] = []
        for b in budgets:
            hits = [x for r in rows for x in r["budget"] if x["budget_bytes"] == b]
            if len(hits) == len(rows):
                out["simplify_draco"].append({"budget_bytes": b, "reachable": mean([float(x["reachable"]) for x in hits]),
                                              "fscore@0.02": mean([x["fscore@0.02"] for x in hits]),
                                              "chamfer_l1": mean([x["chamfer_l1"] for x in hits])})
        qbits = [d["qbits"] for d in rows[0]["draco"]]
        out["draco"] = [{"qbits": q, "bytes": mean([r["draco"][i]["bytes"] for r in rows]),
                         "fscore@0.02": mean([r["draco"][i]["fscore@0.02"] for r in rows])} for i, q in enumerate(qbits)]
        out["same_bytes"] = {"vat_fscore@0.02": out["fscore@0.02"],
                             "simplify_draco_fscore@0.02": mean([next(x["fscore@0.02"] for x in r["budget"]
                                                                      if x["budget_bytes"] == r["vat_bytes"]) for r in rows])}
        if all("entropy_bytes" in r for r in rows):
            out["same_bytes"]["simplify_draco_fscore@0.02_at_entropy_bytes"] = mean(
                [next(x["fscore@0.02"] for x in r["budget"] if x["budget_bytes"] == r["entropy_bytes"]) for r in rows])
    return out


def markdown_table(rows: list[dict], summary: dict) -> str:
    lines = ["| shape | faces | .vat B | ratio | F@0.01 | F@0.02 | F@0.05 | Chamfer-L1 | vol IoU | near IoU | cross-scale IoU |"
             + (" simp+Draco F@0.02 at same B |" if rows and "budget" in rows[0] else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if rows and "budget" in rows[0] else "")]
    for r in rows:
        line = (f"| {Path(r['name']).name} | {r['faces']} | {r['vat_bytes']} | {r['compression_ratio']:.0f}x | "
                f"{r['fscore@0.01']:.3f} | {r['fscore@0.02']:.3f} | {r['fscore@0.05']:.3f} | {r['chamfer_l1']:.4f} | "
                f"{r['vol_iou']:.3f} | {r['near_iou']:.3f} | {r['cross_scale_iou']:.3f} |")
        if "budget" in r:
            same = next(x for x in r["budget"] if x["budget_bytes"] == r["vat_bytes"])
            line += f" {same['fscore@0.02']:.3f} ({same['bytes'] or '-'} B) |"
        lines.append(line)
    s = summary
    lines += ["", f"Mean over {s['shapes']} shapes: {s['vat_bytes']:.0f} B per shape, F@0.02 {s['fscore@0.02']:.3f}, "
              f"Chamfer-L1 {s['chamfer_l1']:.4f}, volume IoU {s['vol_iou']:.3f}, near-surface IoU {s['near_iou']:.3f}, "
              f"cross-scale IoU {s['cross_scale_iou']:.3f}."]
    if s.get("groups"):
        has_base = all("simplify_draco_fscore@0.02" in g for g in s["groups"].values())
        lines += ["", "| input faces | shapes | .vat B | F@0.01 | F@0.02 | Chamfer-L1 |"
                  + (" simp+Draco F@0.01 / F@0.02 at same B |" if has_base else ""),
                  "|---|---|---|---|---|---|" + ("---|" if has_base else "")]
        for name, g in s["groups"].items():
            lines.append(f"| {name} | {g['shapes']} | {g['vat_bytes']:.0f} | {g['fscore@0.01']:.3f} | "
                         f"{g['fscore@0.02']:.3f} | {g['chamfer_l1']:.4f} |"
                         + (f" {g['simplify_draco_fscore@0.01']:.3f} / {g['simplify_draco_fscore@0.02']:.3f} |"
                            if has_base else ""))
    if len(s.get("efforts", {})) > 1:
        lines += ["", "Encode effort (full scales, the same decoding):", "",
                  "| effort | input faces | shapes | .vat B | encode s/shape | F@0.01 | F@0.02 | Chamfer-L1 |",
                  "|---|---|---|---|---|---|---|---|"]
        for effort, e in s["efforts"].items():
            for name, g in [("all", e), *e["groups"].items()]:
                lines.append(f"| {effort} | {name} | {g['shapes']} | {g['vat_bytes']:.0f} | {g['encode_s']:.2f} | "
                             f"{g['fscore@0.01']:.3f} | {g['fscore@0.02']:.3f} | {g['chamfer_l1']:.4f} |")
    if "per_scale" in s:
        lines += ["", "| scales | tokens | vol IoU | near IoU | F@0.02 | Chamfer-L1 |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['scale']} | {p['tokens']} | {p['vol_iou']:.3f} | {p['near_iou']:.3f} | {p['fscore@0.02']:.3f} | "
                  f"{p['chamfer_l1']:.4f} |" for p in s["per_scale"]]
    if "simplify_draco" in s:
        lines += ["", "Classical pipeline (quadric simplification + Draco), best F@0.02 within each budget:", "",
                  "| budget B | reachable | F@0.02 | Chamfer-L1 |", "|---|---|---|---|"]
        lines += [f"| {b['budget_bytes']:.0f} | {b['reachable']:.2f} | {b['fscore@0.02']:.3f} | {b['chamfer_l1']:.4f} |"
                  for b in s["simplify_draco"]]
        lines += ["", "| Draco alone, qbits | mean bytes | F@0.02 |", "|---|---|---|"]
        lines += [f"| {d['qbits']} | {d['bytes']:.0f} | {d['fscore@0.02']:.3f} |" for d in s["draco"]]
        same = s["same_bytes"]
        winner = "VAT" if same["vat_fscore@0.02"] > same["simplify_draco_fscore@0.02"] else "simplification + Draco"
        lines += ["", f"At the same bytes as each .vat file: VAT F@0.02 {same['vat_fscore@0.02']:.3f} vs simplification + "
                  f"Draco {same['simplify_draco_fscore@0.02']:.3f}: {winner} wins on these shapes."]
    if "entropy_bytes" in s:
        same = s.get("same_bytes", {})
        lines += ["", "Token coding (bytes per shape, next to the classical codecs above):", "",
                  "| coding | bits/token | bytes/shape | simp+Draco F@0.02 at these bytes |", "|---|---|---|---|",
                  f"| raw (fixed {s['entropy_raw_bits_per_token']:.0f} bits) | {s['entropy_raw_bits_per_token']:.2f} | "
                  f"{s['vat_bytes']:.0f} | {same.get('simplify_draco_fscore@0.02', float('nan')):.3f} |",
                  f"| entropy (generator prior) | {s['entropy_bits_per_token']:.2f} (ideal "
                  f"{s['entropy_ideal_bits_per_token']:.2f}) | {s['entropy_bytes']:.0f} | "
                  f"{same.get('simplify_draco_fscore@0.02_at_entropy_bytes', float('nan')):.3f} |"]
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict], out_dir: Path, sheet_scales: int = 4) -> dict:
    """Write ``eval.json``, ``eval.md`` and ``eval.png`` into ``out_dir``; returns the summary."""
    from vat3d.renderers import save_sheet

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    clean = [{k: v for k, v in r.items() if k != "meshes"} for r in rows]
    (out_dir / "eval.json").write_text(json.dumps({"summary": summary, "shapes": clean}, indent=2, default=float))
    (out_dir / "eval.md").write_text(markdown_table(rows, summary))
    if rows:
        K = rows[0]["num_scales"]
        picks = sorted({max(1, round(K * i / sheet_scales)) for i in range(1, sheet_scales + 1)})
        sheet_rows, labels = [], []
        for r in rows:
            m = r["meshes"]
            cells = [m["gt"]] + [m[k] for k in picks]
            if f"budget{r['vat_bytes']}" in m:
                cells.append(m[f"budget{r['vat_bytes']}"])
            sheet_rows.append(cells)
            labels.append(Path(r["name"]).stem[:18])
        cols = ["ground truth"] + [f"{k} scales" for k in picks] + (["simp+Draco same B"] if "budget" in rows[0] else [])
        save_sheet(out_dir / "eval.png", sheet_rows, row_labels=labels, col_labels=cols, size=160)
    return summary
