"""Seconds to sample one shape's tokens with a `small` next-scale generator on the CPU.

    .venv/bin/python benchmarks/generator.py [--threads 2] [--repeats 5]

Sizes: width 384, depth 8, 6 heads, codebook 4096 x 32, class-conditioned (1 condition token).
Schedules: M=256 latents (10 scales, 680 tokens) and M=64 (7 scales, 155 tokens). For each:
with and without the KV cache, without guidance (batch 1) and with CFG (doubled batch of 2),
in fp32 and under bf16 autocast. Weights are random: the cost does not depend on them.
Prints a table and writes benchmarks/results/generator.json.
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

SMALL = dict(width=384, depth=8, heads=6, mlp_ratio=4.0, codebook_size=4096, code_dim=32,
             cond_type="class", num_classes=16)


def time_generate(model: NextScaleGenerator, repeats: int, **kwargs) -> tuple[float, float]:
    """(median, min) wall-clock seconds of ``model.generate`` for one shape, after one warm-up call.
    The minimum is the better estimate on a machine shared with other jobs."""
    labels = torch.tensor([3])
    model.generate(labels, seed=0, **kwargs)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        model.generate(labels, seed=r, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generator.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"load average before: {os.getloadavg()}")
    rows = []
    for num_latents in (256, 64):
        model = NextScaleGenerator(num_latents=num_latents, **SMALL).eval()
        for cfg in (1.0, 3.0):
            for dtype_name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                for use_cache in (True, False):
                    seconds, best = time_generate(model, args.repeats, cfg_scale=cfg, use_cache=use_cache,
                                            dtype=dtype, top_k=600)
                    row = {"num_latents": num_latents, "tokens": model.num_tokens,
                           "scales": model.num_scales, "cfg": cfg != 1.0, "dtype": dtype_name,
                           "kv_cache": use_cache, "seconds_median": round(seconds, 4),
                           "seconds_min": round(best, 4)}
                    rows.append(row)
                    print(f"M={num_latents:4d} tokens={model.num_tokens:4d} cfg={str(row['cfg']):5s} "
                          f"{dtype_name} kv_cache={str(use_cache):5s} median {seconds:7.3f} s  min {best:7.3f} s", flush=True)
        params = model.num_parameters(trainable_only=True)

    result = {
        "benchmark": "seconds to sample one shape's tokens (batch 1; CFG doubles the batch)",
        "model": {**SMALL, "trainable_parameters": params},
        "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
