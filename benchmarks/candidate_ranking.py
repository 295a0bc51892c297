"""Which of N drawn candidates to keep: selection rules scored on the same draws.

For every held-out caption of ``--data`` (as ``vat3d eval-generation`` picks them, with the same seeds),
``--candidates`` token sequences are drawn with the shipped sampling defaults, each is decoded and
mended (``pipelines.mend_torn``), and per draw the script keeps the torn share
(``pipelines.candidate_score``), the meshing level, 2048 surface points, and the generator's
log-likelihood of the tokens with the caption and with the null condition
(``NextScaleGenerator.log_likelihood``). Then every rule picks one draw per caption and is scored
like ``eval-generation``: family match, 1-NNA-CD, MMD-CD, COV-CD, the torn share.

Rules: the first draw; the shipped rule of ``generate_meshes`` (``pipelines.candidate_rank``: a whole draw
at the highest meshing level, else the least torn); the least torn (the rule shipped before); among the
whole draws
(torn share at most 1 %) the highest log p(x | caption), the highest pointwise mutual information
log p(x | caption) - log p(x | null), or (a control) the lowest; among the full-size draws, the highest
PMI. Also the oracle: the share of captions for which any draw is classified in its family.

The draws are saved to ``--work`` after every batch, and a rerun continues from there.

    .venv/bin/python benchmarks/candidate_ranking.py --data /work/data/gen --source procedural \\
        --work /work/runs/candidate_ranking --out benchmarks/results/candidate_ranking.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def draw(generator, tokenizer, refs, settings, candidates: int, work: Path, batch_size: int = 8) -> dict:
    """Per caption and candidate: torn score, level, points, log-likelihoods (resumable)."""
    from vat3d.evaluation.generation import mesh_points
    from vat3d.pipelines import candidate_seed, build_conditions, candidate_score, generate_tokens, mend_torn

    n, path = len(refs), work / "draws.npz"
    shape = (n, candidates)
    state = {"score": np.zeros(shape), "level": np.zeros(shape), "ll_cond": np.zeros(shape),
             "ll_null": np.zeros(shape), "points": np.zeros((*shape, settings.n_points, 3), np.float32),
             "done": 0}
    if path.exists():
        saved = dict(np.load(path))
        if saved["score"].shape == shape and list(saved["ids"]) == [r["id"] for r in refs]:
            state.update({k: saved[k] for k in state})
            state["done"] = int(saved["done"])
    start_time = time.perf_counter()
    for start in range(state["done"], n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        texts = [refs[i]["caption"] for i in idx]
        conditions = build_conditions(generator, text=texts, n=len(idx))
        for k in range(candidates):
            tokens = generate_tokens(generator, text=texts, n=len(idx), seed=candidate_seed(settings.seed + start, k),
                                     cfg_scale=settings.cfg_scale, cfg_schedule=settings.cfg_schedule,
                                     top_p=settings.top_p)
            state["ll_cond"][idx, k] = generator.log_likelihood(tokens, conditions).numpy()
            state["ll_null"][idx, k] = generator.log_likelihood(tokens).numpy()
            for j, i in enumerate(idx):
                mesh, level = mend_torn(tokenizer, [t[j:j + 1] for t in tokens], resolution=settings.resolution,
                                        mend=settings.mend, mend_share=settings.mend_share)
                state["score"][i, k], state["level"][i, k] = candidate_score(mesh), level
                state["points"][i, k] = mesh_points(mesh, settings.n_points, seed=settings.seed + i)[0]
        state["done"] = idx[-1] + 1
        np.savez(path, **state, ids=np.array([r["id"] for r in refs]))
        print(f"drawn {state['done']}/{n} captions ({time.perf_counter() - start_time:.0f} s)", flush=True)
    return state


def rules(state: dict, mend_share: float, iso: float = 0.0) -> dict[str, np.ndarray]:
    from vat3d.pipelines import candidate_rank

    score, level = state["score"], state["level"]
    n, k_max = score.shape
    pmi = state["ll_cond"] - state["ll_null"]
    least_torn = np.array([min(range(k_max), key=lambda k: (score[i, k], -level[i, k], k)) for i in range(n)])

    def best_of(value, allowed):  # the highest value among the allowed draws, else the least torn
        out = least_torn.copy()
        for i in range(n):
            ok = np.flatnonzero(allowed[i])
            if len(ok):
                out[i] = ok[np.argmax(value[i, ok])]
        return out

    def by_rank(tiebreak_NK):  # the shipped candidate_rank, then the smallest tie-break
        return np.array([min(range(k_max), key=lambda k: (*candidate_rank(score[i, k], level[i, k], iso, mend_share),
                                                          tiebreak_NK[i, k])) for i in range(n)])

    whole = score <= mend_share
    draw_index = np.broadcast_to(np.arange(k_max), score.shape)
    return {"first draw": np.zeros(n, int), "whole at the highest level (shipped)": by_rank(draw_index),
            "least torn (before)": least_torn,
            "whole, max log p(x|caption)": best_of(state["ll_cond"], whole),
            "whole, max PMI": best_of(pmi, whole),
            "whole, min PMI (control)": best_of(-pmi, whole),
            "full-size, max PMI": best_of(pmi, score < 1.0),
            # the shipped rule with a likelihood instead of the draw's index as the last tie-break
            "whole at the highest level, then max log p(x|caption)": by_rank(-state["ll_cond"]),
            "whole at the highest level, then max PMI": by_rank(-pmi)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="default")
    parser.add_argument("--tokenizer", default="default")
    parser.add_argument("--data", required=True)
    parser.add_argument("--source", action="append")
    parser.add_argument("--num-samples", type=int, default=None, help="held-out captions (default: all)")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--split", default="val", help="val (held out, as eval-generation), train or all")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--n-points", type=int, default=2048)
    parser.add_argument("--work", type=Path, required=True, help="folder for the draws (resumable)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/candidate_ranking.json")
    args = parser.parse_args(argv)

    from vat3d.evaluation.generation import (GenerationEvalSettings, generation_metrics,
                                             leave_one_out_family_match, load_references, normalize_clouds)
    from vat3d.evaluation.metrics import pairwise_chamfer
    from vat3d.pretrained import load_generator, load_tokenizer

    settings = GenerationEvalSettings(num_conditions=args.num_samples, split=args.split,
                                      resolution=args.resolution, n_points=args.n_points,
                                      sources=tuple(args.source) if args.source else None)
    refs = [r for r in load_references(args.data, settings) if r["caption"]]
    generator, tokenizer = load_generator(args.generator).eval(), load_tokenizer(args.tokenizer).eval()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    state = draw(generator, tokenizer, refs, settings, args.candidates, args.work)
    seconds_draw = time.perf_counter() - start

    n, k_max = state["score"].shape
    families = [r["family"] for r in refs]
    ref_RN3 = normalize_clouds(np.stack([r["points"] for r in refs]), settings.normalize)
    flat_XN3 = normalize_clouds(state["points"].reshape(n * k_max, settings.n_points, 3), settings.normalize)
    cache = args.work / "chamfer.npz"  # the distances take longer than the draws: kept for reruns
    ids = np.array([r["id"] for r in refs])
    saved = dict(np.load(cache)) if cache.exists() else {}
    if saved and list(saved["ids"]) == list(ids) and saved["d_rx"].shape == (n, n * k_max):
        d_rr, d_rx = saved["d_rr"], saved["d_rx"]
    else:
        d_rr = pairwise_chamfer(ref_RN3, ref_RN3).numpy()
        d_rx = pairwise_chamfer(ref_RN3, flat_XN3).numpy()
        np.savez(cache, d_rr=d_rr, d_rx=d_rx, ids=ids)
    d_rx = d_rx.reshape(n, n, k_max)  # reference, caption, draw
    predicted = np.array(families)[d_rx.argmin(axis=0)]
    right_NK = predicted == np.array(families)[:, None]
    result = {"command": "python benchmarks/candidate_ranking.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "num_captions": n, "candidates": k_max,
              "settings": {"cfg_scale": settings.cfg_scale, "cfg_schedule": settings.cfg_schedule,
                           "top_p": settings.top_p, "mend": list(settings.mend), "resolution": settings.resolution},
              "family_match_reference": leave_one_out_family_match(d_rr, families),
              "family_match_per_draw": right_NK.mean(axis=0).tolist(),
              "family_match_any_draw": float(right_NK.any(axis=1).mean()),
              "seconds_draw": seconds_draw, "rules": {}}
    rows = np.arange(n)
    for name, chosen in rules(state, settings.mend_share, settings.iso).items():
        kept = flat_XN3[rows * k_max + chosen]
        metrics = generation_metrics(d_rx[:, rows, chosen], d_rr, pairwise_chamfer(kept, kept).numpy())
        metrics.update(family_match=float(right_NK[rows, chosen].mean()),
                       torn=float(np.mean(state["score"][rows, chosen] % 1.0)),
                       mended=float(np.mean(state["level"][rows, chosen] < 0)))
        result["rules"][name] = metrics
        print(name, {key: round(value, 4) for key, value in metrics.items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
