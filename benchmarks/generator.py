"""Seconds to sample one shape's tokens with the `small` next-scale generator on the CPU.

    .venv/bin/python benchmarks/generator.py [--threads 2] [--repeats 5] [--grid]

Default: the packaged ``small`` generator config (``configs/generator_small.yaml``: width 256, depth 6,
8 heads, text+image conditioning) on the ``small`` tokenizer's schedule (``configs/tokenizer_small.yaml``:
M=64 latents, 7 scales, 155 tokens, codebook 1024 x 16), sampling one shape from a caption and an image
with and without the KV cache, without guidance (batch 1) and with CFG 3 (doubled batch of 2), fp32.
The target is <= 1 s per shape on 2 cores. The caption embedding is cached after the warm-up call (as
for a repeated prompt); the conv image encoder runs every call.

``--grid`` adds the earlier grid: a class-conditioned width-384 / depth-8 / 6-head model with codebook
4096 x 32, at M=256 (10 scales, 680 tokens) and M=64 (155 tokens), fp32 and bf16 autocast.
Weights are random: the cost does not depend on them. Prints a table and writes
benchmarks/results/generator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from vat3d.models.generator import NextScaleGenerator

GRID = dict(width=384, depth=8, heads=6, mlp_ratio=4.0, codebook_size=4096, code_dim=32,
            cond_type="class", num_classes=16)
TOKENIZER_KEYS = ("num_latents", "scale_sizes", "scale_mode", "codebook_size", "code_dim", "refine_ratio")


def small_config() -> tuple[dict, dict]:
    """The packaged small generator's model kwargs, with the small tokenizer's quantizer keys."""
    from vat3d.training.common import load_config

    gen = dict(load_config("small", "generator").get("model", {}))
    tok = load_config("small", "tokenizer").get("model", {})
    gen.update({k: tok[k] for k in TOKENIZER_KEYS if k in tok})
    return gen, tok


def time_generate(model: NextScaleGenerator, conditions, repeats: int, **kwargs) -> tuple[float, float]:
    """(median, min) wall-clock seconds of ``model.generate`` for one shape, after one warm-up call.
    The minimum is the better estimate on a machine shared with other jobs."""
    model.generate(conditions, batch_size=1, seed=0, **kwargs)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        model.generate(conditions, batch_size=1, seed=r, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def conditions_for(model: NextScaleGenerator):
    cond_type = model.config["cond_type"]
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    if cond_type == "class":
        return torch.tensor([3])
    if cond_type == "text":
        return ["a mug with a handle"]
    if cond_type == "image":
        return image
    if cond_type in ("text+image", "multi"):
        return {"text": ["a mug with a handle"], "image": image}
    return None


def bench(name: str, model: NextScaleGenerator, repeats: int, dtypes, rows: list) -> None:
    conditions = conditions_for(model)
    for cfg in (1.0, 3.0):
        for dtype_name, dtype in dtypes:
            for use_cache in (True, False):
                seconds, best = time_generate(model, conditions, repeats, cfg_scale=cfg, cfg_schedule="constant",
                                              use_cache=use_cache, dtype=dtype, top_k=600)
                row = {"model": name, "num_latents": model.config["num_latents"], "tokens": model.num_tokens,
                       "scales": model.num_scales, "cond_type": model.config["cond_type"], "cfg": cfg != 1.0,
                       "dtype": dtype_name, "kv_cache": use_cache, "seconds_median": round(seconds, 4),
                       "seconds_min": round(best, 4)}
                rows.append(row)
                print(f"{name:14s} tokens={model.num_tokens:4d} cfg={str(row['cfg']):5s} {dtype_name} "
                      f"kv_cache={str(use_cache):5s} median {seconds:7.3f} s  min {best:7.3f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grid", action="store_true", help="Also time the width-384 grid (M=256 and M=64).")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generator.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    print(f"load average before: {load_before}")

    rows: list = []
    models = {}
    small_kwargs, _ = small_config()
    small = NextScaleGenerator(**small_kwargs).eval()
    models["small"] = {**small_kwargs, "trainable_parameters": small.num_parameters(trainable_only=True)}
    bench("small", small, args.repeats, (("fp32", None),), rows)
    if args.grid:
        for num_latents in (256, 64):
            model = NextScaleGenerator(num_latents=num_latents, **GRID).eval()
            name = f"grid-M{num_latents}"
            models[name] = {**GRID, "num_latents": num_latents,
                            "trainable_parameters": model.num_parameters(trainable_only=True)}
            bench(name, model, args.repeats, (("fp32", None), ("bf16", torch.bfloat16)), rows)

    small_rows = [r for r in rows if r["model"] == "small" and not r["cfg"]]
    summary = {f"small_seconds_per_shape_{'kv_cache' if r['kv_cache'] else 'no_cache'}": r["seconds_min"]
               for r in small_rows}
    result = {
        "benchmark": "seconds to sample one shape's tokens (batch 1; CFG doubles the batch)",
        "target": "<= 1 s per shape (small config, 2 CPU cores)",
        "summary": summary,
        "models": models,
        "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_average_before_1_5_15": [round(x, 2) for x in load_before],
        "load_average_after_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
