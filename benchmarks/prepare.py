"""Benchmark ``vat3d prepare``: shapes/s and peak memory on pybullet random URDF meshes.

Runs the real command line in a subprocess per configuration (default: the first 200
``random_urdfs`` with 1 and 2 workers, default sample counts) and records

* wall time and shapes/s (start-up included),
* CPU seconds (user + sys of the command and its workers, from ``os.wait4``),
* peak RSS of the largest single process (``ru_maxrss`` of the command and its reaped
  workers) and peak RSS of the whole process tree (sampled from /proc every 50 ms).

Prints a table and writes ``benchmarks/results/prepare.json``.

    .venv/bin/python benchmarks/prepare.py                 # 200 shapes, 1 and 2 workers
    .venv/bin/python benchmarks/prepare.py --full          # + all of `pybullet`, 2 workers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"


def _tree_rss_bytes(root_pid: int) -> int:
    """Sum of VmRSS over ``root_pid`` and its descendants (Linux /proc)."""
    total, stack, seen = 0, [root_pid], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    stack.extend(int(child) for child in handle.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_prepare(source: str, workers: int, limit: int | None, extra: list[str]) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="vat3d-bench-"))
    command = [sys.executable, "-m", "vat3d", "prepare", source, str(out_dir), "--workers", str(workers), "--no-progress"]
    if limit is not None:
        command += ["--limit", str(limit)]
    command += extra
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_tree = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_tree[0] = max(peak_tree[0], _tree_rss_bytes(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    match = re.search(r"done (\d+) \| skipped (\d+) \| failed (\d+)", output)
    done, skipped, failed = (int(g) for g in match.groups()) if match else (0, 0, 0)
    inner = re.search(r"\| ([\d.]+) s \|", output)
    data_bytes = sum(p.stat().st_size for p in out_dir.rglob("*.npz"))
    shutil.rmtree(out_dir, ignore_errors=True)
    processed = done + failed
    return {
        "source": source,
        "limit": limit,
        "workers": workers,
        "extra_args": extra,
        "shapes": processed,
        "done": done,
        "failed": failed,
        "wall_s": round(wall, 2),
        "run_s": float(inner.group(1)) if inner else None,
        "shapes_per_s": round(processed / wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_max_process_mib": round(usage.ru_maxrss / 1024, 1),
        "peak_rss_tree_mib": round(peak_tree[0] / 2**20, 1),
        "npz_mib_per_shape": round(data_bytes / max(done, 1) / 2**20, 3),
        "loadavg_1min_before": round(load_before, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="random URDF meshes per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--full", action="store_true", help="also prepare all of `pybullet` with 2 workers")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("extra", nargs="*", help="extra arguments for vat3d prepare (after --)")
    args = parser.parse_args()

    runs = [run_prepare("pybullet:random", k, args.count, args.extra) for k in args.workers]
    if args.full:
        runs.append(run_prepare("pybullet:random", 2, None, args.extra))
        runs.append(run_prepare("pybullet", 2, None, args.extra))
    header = f"{'source':16s} {'limit':>5s} {'workers':>7s} {'shapes':>6s} {'wall s':>7s} {'shapes/s':>8s} {'cpu s':>7s} {'maxRSS':>7s} {'treeRSS':>7s} {'load':>5s}"
    print(header)
    for r in runs:
        print(
            f"{r['source']:16s} {str(r['limit']):>5s} {r['workers']:7d} {r['shapes']:6d} {r['wall_s']:7.1f} "
            f"{r['shapes_per_s']:8.2f} {r['cpu_s']:7.1f} {r['peak_rss_max_process_mib']:6.0f}M {r['peak_rss_tree_mib']:6.0f}M "
            f"{r['loadavg_1min_before']:5.1f}"
        )
    report = {
        "benchmark": "vat3d prepare (default settings unless extra_args)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temp = args.output.with_suffix(".json.tmp")
    temp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(temp, args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
