"""Sampling settings of a generator, swept against the generation metrics: CFG scale and schedule,
temperature, top-k and top-p, one factor at a time from the base setting (and a CFG x schedule grid).

    python benchmarks/sampling_sweep.py --generator default --tokenizer default --data DATA \
        [--num-samples 64] [--source procedural] --out benchmarks/results/sampling_sweep.json

The held-out shapes (and their remeshed fragmentation) are loaded once and every setting is scored
on them with the same seeds (:func:`vat3d.evaluation.generation.evaluate_generation`). The choice rule,
applied to the table: among settings with no empty shape and a caption->family match of at least 90 %
of the classifier's ceiling, the lowest 1-NNA-CD, ties to the lower fragmentation; if none passes,
the lowest 1-NNA-CD. Prints a Markdown table and the chosen setting; writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

BASE = {"cfg_scale": 3.0, "cfg_schedule": "linear", "temperature": 1.0, "top_k": 0, "top_p": 1.0}
GRID = {"cfg_scale": [1.0, 2.0, 3.0, 5.0], "cfg_schedule": ["linear", "constant"]}
ONE_AT_A_TIME = {"temperature": [0.7, 0.85], "top_k": [20, 100], "top_p": [0.8, 0.95]}


def settings_to_try(base: dict = BASE, grid: dict = GRID, single: dict = ONE_AT_A_TIME) -> list[dict]:
    """The CFG scale x schedule grid at the base temperature / top-k / top-p, then each other factor
    changed alone from the base (duplicates dropped, base first)."""
    out = [dict(base)]
    for scale in grid["cfg_scale"]:
        for schedule in grid["cfg_schedule"]:
            out.append({**base, "cfg_scale": scale, "cfg_schedule": schedule})
    for key, values in single.items():
        for value in values:
            out.append({**base, key: value})
    unique = []
    for s in out:
        if s not in unique:
            unique.append(s)
    return unique


def choose(rows: list[dict], match_share: float = 0.9) -> dict:
    """The row the module docstring's rule picks."""
    def passes(r):
        ceiling = r.get("family_match_reference")
        match_ok = (ceiling is None or math.isnan(ceiling) or r["family_match"] >= match_share * ceiling)
        return r["empty_fraction"] == 0 and match_ok

    def key(r):
        frag = r.get("fragmentation_generated")
        return (r["1-NNA-CD"], frag if frag is not None and not math.isnan(frag) else 1.0)

    passing = [r for r in rows if passes(r)]
    return min(passing or rows, key=key)


def sweep(generator, tokenizer, data, base_settings, tried: list[dict], progress=print) -> list[dict]:
    from vat3d.evaluation.generation import evaluate_generation, load_references

    refs = load_references(data, base_settings)
    rows = []
    for i, sampling in enumerate(tried):
        settings = dataclasses.replace(base_settings, **sampling)
        t0 = time.perf_counter()
        summary = evaluate_generation(generator, tokenizer, data, settings, references=refs)["summary"]
        rows.append({**sampling, **{k: summary[k] for k in (
            "MMD-CD", "COV-CD", "1-NNA-CD", "family_match", "family_match_reference", "empty_fraction",
            "degenerate_fraction", "fragmentation_generated", "fragmentation_real", "seconds_per_shape_tokens",
            "num_generated")}, "seconds": time.perf_counter() - t0})
        progress(f"[{i + 1}/{len(tried)}] {sampling}: 1-NNA {summary['1-NNA-CD']:.3f}, match "
                 f"{summary['family_match']:.3f}, fragmentation {summary['fragmentation_generated']:.3f}, "
                 f"empty {summary['empty_fraction']:.3f}")
    return rows


def markdown(rows: list[dict], chosen: dict) -> str:
    f = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
    lines = ["| CFG | schedule | temperature | top-k | top-p | 1-NNA-CD | COV-CD | MMD-CD | family match | "
             "fragmentation | empty | |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cfg_scale']:g} | {r['cfg_schedule']} | {r['temperature']:g} | {r['top_k']} | "
                     f"{r['top_p']:g} | {f(r['1-NNA-CD'])} | {f(r['COV-CD'])} | {r['MMD-CD']:.4f} | "
                     f"{f(r['family_match'])} | {f(r['fragmentation_generated'])} | {f(r['empty_fraction'])} | "
                     f"{'**chosen**' if r is chosen else ''} |")
    return "\n".join(lines)


def _finite(value):
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="default")
    ap.add_argument("--tokenizer", default="default")
    ap.add_argument("--data", required=True)
    ap.add_argument("--num-samples", type=int, default=64, help="held-out shapes (conditions) per setting")
    ap.add_argument("--source", action="append", default=None, help="only held-out shapes of this source")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--n-points", type=int, default=2048)
    ap.add_argument("--split", default="val")
    ap.add_argument("--quick", action="store_true", help="only the base setting and CFG 1 / 5 (a smoke run)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sampling_sweep.json"))
    args = ap.parse_args(argv)

    from vat3d.evaluation.generation import GenerationEvalSettings
    from vat3d.pretrained import load_generator, load_tokenizer

    generator, tokenizer = load_generator(args.generator), load_tokenizer(args.tokenizer)
    base_settings = GenerationEvalSettings(num_conditions=args.num_samples, resolution=args.resolution,
                                           n_points=args.n_points, split=args.split,
                                           sources=tuple(args.source) if args.source else None)
    tried = settings_to_try()
    if args.quick:
        tried = [BASE, {**BASE, "cfg_scale": 1.0}, {**BASE, "cfg_scale": 5.0}]
    rows = sweep(generator, tokenizer, args.data, base_settings, tried)
    chosen = choose(rows)
    table = markdown(rows, chosen)
    print(table)
    print(f"chosen: {({k: chosen[k] for k in BASE})}")
    result = {"generator": args.generator, "tokenizer": args.tokenizer, "data": args.data,
              "num_samples": args.num_samples, "sources": args.source, "resolution": args.resolution,
              "rule": "no empty shape and family match >= 0.9 x ceiling, then lowest 1-NNA-CD, then fragmentation",
              "rows": rows, "chosen": {k: chosen[k] for k in BASE}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(result), indent=1))
    args.out.with_suffix(".md").write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
