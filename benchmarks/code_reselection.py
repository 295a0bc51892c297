"""Experiment (issue 13): greedy per-scale re-selection of codes by decoded loss, after the `balanced` search.

    .venv/bin/python benchmarks/code_reselection.py NEIGHBOURS SCALES CRITERION QUERIES [MESHES]
    e.g. ... 8 3 bce 8192    or    ... 8 3 iou 24576

For each token of the first SCALES scales in turn, its code and its NEIGHBOURS nearest codebook
neighbours are decoded as one batch; the code with the best CRITERION (``bce`` or ``iou``) on QUERIES
of the shape's training queries is kept. Prints, per mesh of the first 8 of MESHES (default: the unseen
real set without pybullet), the held-out IoU and F@0.02 at 256^3 before and after (after: only if the
held-out IoU rose, as the encoder's guard would choose) and saves them as JSON, after each mesh. Results of the runs in docs/codec.md are in
benchmarks/results/code_reselection/. Not part of the library: neither criterion measured better.
"""

import glob
import json
import sys
from pathlib import Path
import time

import numpy as np
import torch
import torch.nn.functional as F

from vat3d.codec.api import _surface_tensors, decode_tokens
from vat3d.codec.refine import heldout_iou, label_queries, refine_tokens
from vat3d.evaluation.metrics import compare_meshes
from vat3d.geometry.io import load_mesh
from vat3d.geometry.normalize import normalize_mesh
from vat3d.pretrained import load_tokenizer

C, NSC, CRIT, NQ = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
MESHES = sys.argv[5] if len(sys.argv) > 5 else "/work/eval_real/meshes_nopyb"
torch.set_num_threads(1)
model = load_tokenizer("default").eval()
for p in model.parameters():
    p.requires_grad_(False)
q = model.quantizer
codes_VC = q.codebook.weight.float()
neighbours_VC = torch.cdist(codes_VC, codes_VC).topk(C + 1, largest=False).indices[:, 1:]


@torch.no_grad()
def loss_of(token_sets, points_1Q3, labels_1Q):
    """Criterion (lower is better) of a batch of token sets (per scale (N, n_k)) at the queries: (N,)."""
    latent = q.indices_to_latent(token_sets)
    logits = model.decoder.query(model.decoder.planes(latent), points_1Q3.expand(latent.shape[0], -1, -1))
    labels = labels_1Q.expand(latent.shape[0], -1)
    if CRIT == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none").mean(1)
    pred, gt = logits > 0, labels > 0.5
    return -((pred & gt).sum(1).float() / (pred | gt).sum(1).clamp_min(1).float())


rows = []
for f in sorted(glob.glob(f"{MESHES}/*"))[:8]:
    gt, _ = normalize_mesh(load_mesh(f))
    points, normals = _surface_tensors(gt, model.num_points, 0)
    queries = label_queries(gt, seed=0)
    t0 = time.perf_counter()
    searched = refine_tokens(model, points, normals, [queries], effort="balanced").tokens[0]
    t1 = time.perf_counter()
    tokens = [t.clone() for t in searched]
    pick = torch.randperm(len(queries.train_points_Q3), generator=torch.Generator().manual_seed(0))[:NQ]
    P, L = queries.train_points_Q3[pick][None], queries.train_labels_Q[pick][None]
    best = loss_of(tokens, P, L)[0]
    changed = 0
    for k in range(NSC):
        for j in range(tokens[k].shape[1]):
            current = int(tokens[k][0, j])
            cand = torch.cat([torch.tensor([current]), neighbours_VC[current]])
            sets = [t.expand(len(cand), -1).clone() for t in tokens]
            sets[k][:, j] = cand
            losses = loss_of(sets, P, L)
            b = int(losses.argmin())
            if b != 0 and losses[b] < best:
                tokens[k][0, j], best, changed = cand[b], losses[b], changed + 1
    t2 = time.perf_counter()
    before, after = float(heldout_iou(model, searched, queries)[0]), float(heldout_iou(model, tokens, queries)[0])
    final = tokens if after > before else searched
    f_before = compare_meshes(decode_tokens(model, searched, None, resolution=256), gt, n_points=20000, seed=0)
    f_after = compare_meshes(decode_tokens(model, final, None, resolution=256), gt, n_points=20000, seed=0)
    rows.append((before, after, f_before["fscore@0.02"], f_after["fscore@0.02"], t1 - t0, t2 - t1))
    out = Path(__file__).parent / "results" / "code_reselection" / f"{CRIT}_{NQ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"neighbours": C, "scales": NSC, "criterion": CRIT, "queries": NQ, "columns": [
        "heldout_before", "heldout_after", "f@0.02_before", "f@0.02_after", "search_s", "reselect_s"],
        "rows": rows}, indent=1))
    print(f"{f.split('/')[-1][:30]} changed {changed} heldout {before:.4f} -> {after:.4f} F@0.02 "
          f"{f_before['fscore@0.02']:.3f} -> {f_after['fscore@0.02']:.3f}  search {t1 - t0:.1f}s reselect {t2 - t1:.1f}s",
          flush=True)
print("mean", np.array(rows).mean(0).round(4))
