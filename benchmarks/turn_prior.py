"""Can cheap geometry predict which turns the encoder reads best? (A negative result, kept to be rerun.)

    python benchmarks/turn_prior.py --data /work/data/c6 --shapes 650 \
        --val benchmarks/results/orientation/oracle_val43.json \
        --unseen benchmarks/results/orientation/oracle_unseen21.json --unseen-root /work/eval_real/meshes_nopyb \
        --out benchmarks/results/orientation/turn_prior.json

1. For ``--shapes`` training shapes of a prepared folder (train split, shuffled with seed 0) it computes
   the label-free score of ``--effort oriented`` in all 24 turns (``vat3d.codec.refine.orientation_scores``,
   1024 surface points; resumable: WORK/train_scores.json).
2. It fits a ridge regression from features of the turned shape (bounding-box extents, centroid offset,
   variance and skewness per axis, the share of the surface facing +/- each axis; linear and with pairwise
   products) to the score's deviation from the shape's mean over turns.
3. On the stored rows of ``benchmarks/orientation.py`` studies (per-turn F@0.02 and label-free score) it
   compares candidate sets of equal size: the first k turns of ``TURN_SEARCH_ORDER``, the k turns the
   prior ranks highest, and mixtures; in each set the label-free score picks, and the mean F@0.02 of the
   picks is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vat3d.codec.refine import TURN_SEARCH_ORDER, orientation_scores
from vat3d.data.dataset import split_of
from vat3d.data.metadata import read_metadata
from vat3d.data.source_items import load_source_mesh
from vat3d.geometry.normalize import ORIENTATIONS, normalize_mesh
from vat3d.geometry.points import sample_surface
from vat3d.pretrained import load_tokenizer

ROT_K33 = np.stack(ORIENTATIONS).astype(np.float64)


def turn_features(points_N3: np.ndarray, normals_N3: np.ndarray) -> np.ndarray:
    """(24, 18) features of a shape in each turn, minus their mean over the turns."""
    out = []
    for r in ROT_K33:
        p, n = points_N3 @ r.T, normals_N3 @ r.T
        lo, hi = p.min(0), p.max(0)
        mean, var = p.mean(0), p.var(0)
        skew = ((p - mean) ** 3).mean(0) / (var ** 1.5 + 1e-9)
        out.append(np.concatenate([hi - lo, mean - (lo + hi) / 2, var, skew, np.maximum(n, 0).mean(0),
                                   np.maximum(-n, 0).mean(0)]))
    feats = np.array(out)
    return feats - feats.mean(0, keepdims=True)


def pairwise(z: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(z.shape[1])
    return np.concatenate([z, (z[:, :, None] * z[:, None, :])[:, iu[0], iu[1]]], 1)


def training_scores(model, data: Path, count: int, cache: Path) -> dict:
    rows = [r for r in read_metadata(data, status="done") if split_of(r["id"]) == "train"]
    np.random.default_rng(0).shuffle(rows)
    rows = rows[:count]
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    start = time.perf_counter()
    for row in rows:
        if row["id"] in done:
            continue
        with np.load(data / row["file"]) as shape:
            pick = np.random.default_rng(1).choice(len(shape["surface_points"]), model.num_points, replace=False)
            points, normals = shape["surface_points"][pick], shape["surface_normals"][pick]
        scores = orientation_scores(model, torch.from_numpy(points.astype(np.float32)),
                                    torch.from_numpy(normals.astype(np.float32)), len(ORIENTATIONS))
        done[row["id"]] = {"file": row["file"], "scores": scores.tolist()}
        if len(done) % 25 == 0:
            cache.write_text(json.dumps(done))
            print(f"{len(done)} shapes scored ({time.perf_counter() - start:.0f} s)", flush=True)
    cache.write_text(json.dumps(done))
    wanted = {r["id"] for r in rows}
    return {k: v for k, v in done.items() if k in wanted}


def fit(data: Path, scored: dict, ridge: float) -> dict:
    feats, targets = [], []
    for item in scored.values():
        with np.load(data / item["file"]) as shape:
            feats.append(turn_features(shape["surface_points"][:4096].astype(np.float64),
                                       shape["surface_normals"][:4096].astype(np.float64)))
        y = np.array(item["scores"])
        targets.append(y - y.mean())
    x, y = np.concatenate(feats), np.concatenate(targets)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    models = {}
    for name, expand in (("linear", lambda z: z), ("pairwise", pairwise)):
        a = expand((x - mu) / sd)
        w = np.linalg.solve(a.T @ a + ridge * len(a) / 100 * np.eye(a.shape[1]), a.T @ y)
        models[name] = (expand, w)
    return {"mu": mu, "sd": sd, "models": models}


def evaluate(prior: dict, study: Path, root: Path | None) -> dict:
    rows = json.loads(study.read_text())["rows"]
    preds = {}
    for row in rows:
        path = Path(row["name"])
        path = path if path.is_absolute() or root is None else root / path
        gt, _ = normalize_mesh(load_source_mesh(path))
        points, normals = sample_surface(gt, 4096, seed=0)
        z = (turn_features(np.asarray(points, np.float64), np.asarray(normals, np.float64)) - prior["mu"]) / prior["sd"]
        preds[row["name"]] = {name: expand(z) @ w for name, (expand, w) in prior["models"].items()}

    def mean_pick(candidates) -> float:
        picks = []
        for row in rows:
            cand = candidates(row)
            free = [row["turns"][i]["label_free"] for i in cand]
            picks.append(row["turns"][cand[int(np.argmax(free))]]["f2"])
        return round(float(np.mean(picks)), 4)

    def ranked(row, name):
        return [int(t) for t in np.argsort(-preds[row["name"]][name], kind="stable")]

    out = {"meshes": len(rows), "identity": mean_pick(lambda row: [0])}
    for k in (1, 2, 4, 6, 8):
        out[f"order_first{k}"] = mean_pick(lambda row, k=k: list(TURN_SEARCH_ORDER[:k]))
        for name in prior["models"]:
            out[f"{name}_top{k}"] = mean_pick(lambda row, k=k, name=name: ranked(row, name)[:k])
    for name in prior["models"]:
        for a, b in ((5, 1), (4, 2), (3, 3)):
            def mixed(row, a=a, b=b, name=name):
                cand = list(TURN_SEARCH_ORDER[:a])
                cand += [t for t in ranked(row, name) if t not in cand][:b]
                return cand
            out[f"{name}_order{a}+prior{b}"] = mean_pick(mixed)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, required=True, help="A prepared folder (vat3d prepare) to fit on.")
    ap.add_argument("--shapes", type=int, default=650)
    ap.add_argument("--ridge", type=float, default=1.0)
    ap.add_argument("--val", type=Path, help="A benchmarks/orientation.py result to evaluate on.")
    ap.add_argument("--unseen", type=Path, help="Another one (its rows may name meshes under --unseen-root).")
    ap.add_argument("--unseen-root", type=Path)
    ap.add_argument("--work", type=Path, default=Path("turn_prior_work"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/orientation/turn_prior.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    model = load_tokenizer(args.model).eval()
    scored = training_scores(model, args.data, args.shapes, args.work / "train_scores.json")
    prior = fit(args.data, scored, args.ridge)
    result = {"model": args.model, "training_shapes": len(scored), "ridge": args.ridge}
    for key, study, root in (("val", args.val, None), ("unseen", args.unseen, args.unseen_root)):
        if study:
            result[key] = evaluate(prior, study, root)
            print(key, json.dumps(result[key]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
