"""Tokenizer design study at matched compute: train several configurations for the same CPU budget on
the same data, score each on meshes it never saw, and print/save the table.

    python benchmarks/design_study.py --data DATA --meshes UNSEEN_MESHES --minutes 6 \
        --work /work/runs/study --out benchmarks/results/design_study.json [--only base,r128] [--jobs 2]

Matched compute: each configuration's training step is timed first (same synthetic batch, same threads,
bf16, quantized phase), and each then trains ``minutes * 60 / step_time`` steps. Step counts fixed from
one profiling pass keep the comparison fair when other work shares the machine during the runs (a
wall-clock limit would not). The two-phase schedule scales with the step count (quantization from 40%
of the steps). Scored at 256^3 with ``vat3d eval --no-baselines``: F@0.01, F@0.02, Chamfer-L1, bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: name -> (what it varies, --set overrides of the packaged `small` config)
CONFIGS: dict[str, tuple[str, dict]] = {
    "base": ("shipped small: 64 latents, 64^2 planes, V=1024, d=16, width 192x4", {}),
    "r128": ("planes 128^2 (one more upsampler stage)", {"model.plane_resolution": 128}),
    "r256": ("planes 256^2 (two more upsampler stages)", {"model.plane_resolution": 256}),
    "m144": ("144 latents (12x12, 8 scales, 374 tokens)", {"model.num_latents": 144}),
    "v4096": ("codebook 4096", {"model.codebook_size": 4096}),
    "v16384": ("codebook 16384, code dim 32", {"model.codebook_size": 16384, "model.code_dim": 32}),
    "wide": ("encoder and decoder width 256 x 6", {"model.width": 256, "model.depth": 6, "model.heads": 8,
                                                   "model.decoder_width": 256, "model.decoder_depth": 6,
                                                   "model.decoder_heads": 8}),
    "in_context": ("paper's in-context encoder, 512 points", {"model.encoder_type": "in_context",
                                                               "model.num_points": 512, "data.num_surface": 512}),
    "m256": ("256 latents (16x16, 10 scales, 680 tokens), V=32", {"model.num_latents": 256,
                                                                  "model.codebook_size": 32}),
}


def _cfg(overrides: dict) -> dict:
    from vat3d.training.common import load_config

    return load_config("small", "tokenizer", [f"{k}={v}" for k, v in overrides.items()])


def profile(names: list[str], threads: int) -> dict[str, dict]:
    """Median training-step time per configuration (bf16, quantized phase, synthetic batch)."""
    import torch

    from tokenizer import train_speed

    from vat3d.training.common import resolve_precision

    torch.set_num_threads(threads)
    out = {}
    for name in names:
        speed = train_speed(_cfg(CONFIGS[name][1]), steps=5, precision=resolve_precision())
        out[name] = speed
        print(f"{name:>10}: {speed['s_per_step']:.3f} s/step, {speed['params_M']:.2f}M params", flush=True)
    return out


def train_cmd(name: str, steps: int, data: str, run_dir: Path) -> list[str]:
    sets = dict(CONFIGS[name][1])
    sets.update({"training.max_steps": steps, "training.quantize_start_step": int(0.4 * steps),
                 "training.kl_warmup_steps": int(0.2 * steps), "training.warmup_steps": min(200, steps // 10),
                 "training.val_every_n_steps": max(50, steps // 4), "training.ckpt_every_n_steps": 100})
    cmd = [sys.executable, "-m", "vat3d", "train-tokenizer", "--config", "small", "--data", data,
           "--run-dir", str(run_dir), "--no-progress"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def eval_cmd(run_dir: Path, meshes: str, limit: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "vat3d", "eval", str(run_dir / "model"), meshes, "--no-baselines",
           "--resolution", "256", "--effort", "fast", "-o", str(run_dir / "eval")]  # amortised encoder, one pass
    return cmd + (["--limit", str(limit)] if limit else [])


def run_jobs(commands: list[tuple[str, list[str], Path]], jobs: int, threads: int) -> None:
    """Run (name, command, log) with at most ``jobs`` at a time, each on ``threads`` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1"}
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < jobs:
            name, cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            running.append((name, subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env),
                            time.time()))
            print(f"started {name}", flush=True)
        time.sleep(5)
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"finished {name} (exit {proc.returncode}) in {time.time() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--meshes", required=True, help="unseen meshes (folder) to score on")
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget per config, in minutes of "
                    "profiled step time on --threads threads")
    ap.add_argument("--only", default=",".join(CONFIGS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="score on the first N meshes only")
    ap.add_argument("--work", type=Path, default=Path("runs/design_study"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/design_study.json"))
    ap.add_argument("--stage", choices=["all", "profile", "train", "eval", "report"], default="all")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    prof_path = args.work / "profile.json"
    if not prof_path.exists() and args.stage != "profile":  # the step times of an earlier study, if all there
        known = {n: r for n, r in earlier_results(args.out).items() if "s_per_step" in r}
        if all(n in known for n in names):
            prof_path.write_text(json.dumps({n: {"s_per_step": known[n]["s_per_step"],
                                                 "params_M": known[n]["params_M"]} for n in names}, indent=1))
    if args.stage in ("all", "profile") or not prof_path.exists():
        prof = profile(names, args.threads)
        old = json.loads(prof_path.read_text()) if prof_path.exists() else {}
        prof_path.write_text(json.dumps({**old, **prof}, indent=1))
    prof = json.loads(prof_path.read_text())
    budget_s = args.minutes * 60
    steps = {n: max(50, int(budget_s / prof[n]["s_per_step"])) for n in names}
    if args.stage in ("all", "train"):
        run_jobs([(n, train_cmd(n, steps[n], args.data, args.work / n), args.work / n / "train.log")
                  for n in names if not (args.work / n / "model" / "config.json").exists()], args.jobs, args.threads)
    if args.stage in ("all", "eval"):
        run_jobs([(n, eval_cmd(args.work / n, args.meshes, args.limit), args.work / n / "eval.log")
                  for n in names if (args.work / n / "model" / "config.json").exists()
                  and not (args.work / n / "eval" / "eval.json").exists()], args.jobs, args.threads)
    report(names, prof, steps, args)


def earlier_results(out: Path) -> dict[str, dict]:
    """Rows of an earlier ``--out`` by name (run folders outside the repo may be gone since)."""
    return {r["name"]: r for r in json.loads(out.read_text())["rows"]} if out.exists() else {}


def report(names: list[str], prof: dict, steps: dict, args) -> None:
    """The table of ``names``: a configuration with no eval in ``--work`` keeps its earlier row of ``--out``
    if that one was scored (so the study can be finished in several sessions)."""
    earlier = earlier_results(args.out)
    names = names + [n for n in earlier if n not in names]
    rows = []
    for n in names:
        ev = args.work / n / "eval" / "eval.json"
        scored_before = "f@0.02" in earlier.get(n, {})
        if n not in prof or (scored_before and not ev.exists()):
            rows.append(earlier[n])
            continue
        row = {"name": n, "varies": CONFIGS[n][0], "overrides": CONFIGS[n][1], "steps": steps[n],
               "s_per_step": prof[n]["s_per_step"], "params_M": prof[n]["params_M"]}
        if ev.exists():
            summary = json.loads(ev.read_text())["summary"]
            row.update({"f@0.01": summary["fscore@0.01"], "f@0.02": summary["fscore@0.02"],
                        "chamfer_l1": summary["chamfer_l1"], "vat_bytes": summary["vat_bytes"],
                        "tokens": summary["tokens"], "shapes": summary["shapes"],
                        "vol_iou": summary["vol_iou"], "cross_scale_iou": summary["cross_scale_iou"],
                        "decode_s": summary["decode_s"], "groups": summary.get("groups", {})})
        rows.append(row)
    notes = json.loads(args.out.read_text()) if args.out.exists() else {}  # e.g. "scored_on", "not_trained"
    result = {**notes, "minutes_per_config": args.minutes, "threads": args.threads, "data": args.data,
              "meshes": args.meshes, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"| config | varies | params | s/step | steps | F@0.01 | F@0.02 | Chamfer-L1 | bytes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda k: "-" if r.get(k) is None else f"{r[k]:.3f}"
        print(f"| {r['name']} | {r['varies']} | {r['params_M']:.2f}M | {r['s_per_step']:.3f} | {r['steps']} | "
              f"{f('f@0.01')} | {f('f@0.02')} | {f('chamfer_l1')} | {r.get('vat_bytes', '-')} |")
    print("\nper input-face group, F@0.01 / F@0.02:")
    for r in rows:
        groups = r.get("groups") or {}
        print(f"  {r['name']:>10}: " + ", ".join(f"{g} ({v['shapes']}): {v['fscore@0.01']:.3f} / {v['fscore@0.02']:.3f}"
                                           for g, v in groups.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
