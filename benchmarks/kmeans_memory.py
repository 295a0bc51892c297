"""Peak memory of the codebook's k-means initialisation at the switch to quantization, measured.

The `base` tokenizer's quantizer (M = 256 latents of C = 32, 10 scales, V = 4096) on a pool of
``--tokens`` latent tokens (default 1M, the config's ``kmeans_tokens``), on the CPU: the peak RSS of a
fresh process above its RSS just before the call (Linux ``VmHWM`` after ``clear_refs``), with glibc's
mmap threshold pinned so that freed blocks return to the system and RSS follows live memory. Memory
does not depend on the number of Lloyd iterations (``--iters``, default 1 to keep the run short).
Prints and saves JSON (benchmarks/results/kmeans_memory.json).

    python benchmarks/kmeans_memory.py [--tokens 1000000] [--codebook-size 4096] [--iters 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, re, sys, time
import torch
from vat3d.models.quantizer import MultiScaleVQ

def kib(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

tokens, M, C, V, iters = map(int, sys.argv[1:])
B = tokens // M
vq = MultiScaleVQ(dim=C, codebook_size=V, num_latents=M)
vq.kmeans_init(torch.randn(max(1, B // 16), M, C), iters=1)  # warm-up: code pages, thread pools
pool = torch.randn(B, M, C)
open("/proc/self/clear_refs", "w").write("5")
base = kib("VmRSS")
start = time.perf_counter()
vq.kmeans_init(pool, iters=iters)
seconds = time.perf_counter() - start
print(json.dumps({"peak_bytes": kib("VmHWM") - base, "bound_bytes": vq.kmeans_memory_bound(B),
                  "pool_bytes": pool.numel() * 4, "seconds": seconds, "threads": torch.get_num_threads()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--num-latents", type=int, default=256)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--codebook-size", type=int, default=4096)
    parser.add_argument("--iters", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kmeans_memory.json"))
    args = parser.parse_args()
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(args.tokens), str(args.num_latents), str(args.dim),
                           str(args.codebook_size), str(args.iters)], env=env, capture_output=True, text=True,
                          check=True)
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    tokens = (args.tokens // args.num_latents) * args.num_latents
    result = {
        "pool_tokens": tokens, "dim": args.dim, "codebook_size": args.codebook_size, "iters": args.iters,
        **measured,
        "peak_GB": measured["peak_bytes"] / 1e9, "bound_GB": measured["bound_bytes"] / 1e9,
        # what one unchunked (pool tokens x V) fp32 distance matrix alone takes (the old code made ~2)
        "unchunked_distance_matrix_GB": tokens * args.codebook_size * 4 / 1e9,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
