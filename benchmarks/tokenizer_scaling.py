"""Tokenizer scaling at a fixed token budget: reconstruction IoU against tokenizer parameters.

    python benchmarks/tokenizer_scaling.py --data DATA --sizes 96x2,128x3,192x4,256x6 --minutes 15 \
        --seeds 0,1 --work /work/runs/tok_scaling --out benchmarks/results/tokenizer_scaling.json

Every size sets the encoder and decoder width x depth (heads = width / 32) of the packaged ``--config``
(``small``: 64 latents, 7 scales, 155 tokens, codebook 1024); the token budget and everything else stay
as they are. Steps per size follow ``--rule``: ``compute`` (default) gives every size ``--minutes`` of
profiled step time (``benchmarks/tokenizer.py``'s ``train_speed``), ``steps`` the same ``--steps``.
The score is the last validation's volume and near-surface IoU of the held-out split; the fit is the
reconstruction error ``1 - IoU = (a N)^b`` over parameters N, with the bootstrap interval of
``benchmarks/scaling.py`` (over seeds when there are two or more). ``--jobs 0`` trains in this process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablation import last_validation, run_all  # noqa: E402


def parse_sizes(text: str) -> list[dict]:
    sizes = []
    for item in text.split(","):
        width, depth = (int(p) for p in item.strip().lower().split("x"))
        heads = max(1, width // 32)
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of {heads} heads")
        sizes.append({"name": f"w{width}d{depth}", "width": width, "depth": depth, "heads": heads})
    return sizes


def size_overrides(size: dict) -> dict:
    return {"model.width": size["width"], "model.depth": size["depth"], "model.heads": size["heads"],
            "model.decoder_width": size["width"], "model.decoder_depth": size["depth"],
            "model.decoder_heads": size["heads"]}


def train_args(config: str, overrides: dict, steps: int, seed: int, data: str, run_dir: Path) -> list[str]:
    sets = {**overrides, "training.max_steps": steps, "training.seed": seed,
            "training.quantize_start_step": int(0.4 * steps), "training.kl_warmup_steps": int(0.2 * steps),
            "training.warmup_steps": min(200, max(1, steps // 10)),
            "training.val_every_n_steps": max(1, steps // 4), "training.ckpt_every_n_steps": max(1, steps // 4)}
    args = ["train-tokenizer", "--config", config, "--data", data, "--run-dir", str(run_dir), "--no-progress"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default="small")
    ap.add_argument("--sizes", default="96x2,128x3,192x4,256x6")
    ap.add_argument("--rule", choices=("compute", "steps"), default="compute")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--min-steps", type=int, default=50)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("runs/tokenizer_scaling"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tokenizer_scaling.json"))
    args = ap.parse_args(argv)
    import torch

    from scaling import fit_with_interval
    from tokenizer import train_speed

    from vat3d.training.common import load_config, resolve_precision

    sizes = parse_sizes(args.sizes)
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    prof_path = args.work / "profile.json"
    prof = json.loads(prof_path.read_text()) if prof_path.exists() else {}
    for size in sizes:
        if size["name"] not in prof:
            cfg = load_config(args.config, "tokenizer", [f"{k}={v}" for k, v in size_overrides(size).items()])
            prof[size["name"]] = train_speed(cfg, steps=3, precision=resolve_precision(cfg["training"].get("precision")))
            print(f"{size['name']}: {prof[size['name']]['s_per_step']:.3f} s/step, "
                  f"{prof[size['name']]['params_M']:.3f}M params", flush=True)
    prof_path.write_text(json.dumps(prof, indent=1))
    steps = {s["name"]: (max(args.min_steps, int(args.minutes * 60 / prof[s["name"]]["s_per_step"]))
                         if args.rule == "compute" else args.steps) for s in sizes}
    runs = [(s, seed, args.work / s["name"] / f"seed{seed}") for s in sizes for seed in seeds]
    run_all([(f"{s['name']}/seed{seed}", train_args(args.config, size_overrides(s), steps[s["name"]], seed,
                                                    args.data, d), d / "train.log")
             for s, seed, d in runs if not (d / "model" / "config.json").exists()], args.jobs, args.threads)
    points = []
    for size in sizes:
        vals = [last_validation(args.work / size["name"] / f"seed{seed}") for seed in seeds]
        points.append({**size, "params": int(prof[size["name"]]["params_M"] * 1e6), "steps": steps[size["name"]],
                       "s_per_step": prof[size["name"]]["s_per_step"], "runs": vals,
                       "vol_iou": sum(v["vol_iou"] for v in vals) / len(vals),
                       "near_iou": sum(v["near_iou"] for v in vals) / len(vals)})
    fits = {}
    for key in ("vol_iou", "near_iou"):
        try:
            fits[f"1-{key}"] = fit_with_interval([p["params"] for p in points],
                                                 [[1.0 - v[key] for v in p["runs"]] for p in points],
                                                 n_boot=args.n_boot)
        except ValueError as error:
            print(f"no fit for 1-{key}: {error}")
    result = {"benchmark": "tokenizer scaling at a fixed token budget: 1 - IoU = (a N)^b",
              "config": args.config, "rule": (f"compute-matched, {args.minutes:g} profiled CPU-minutes per size"
                                              if args.rule == "compute" else f"{args.steps} steps per size"),
              "seeds": seeds, "data": args.data, "points": points, "fits": fits}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("| size | params | steps | vol IoU | near IoU |\n|---|---|---|---|---|")
    for p in points:
        print(f"| {p['name']} | {p['params']:,} | {p['steps']} | {p['vol_iou']:.3f} | {p['near_iou']:.3f} |")
    for key, fit in fits.items():
        print(f"{key}: (a N)^b with b = {fit['b']:.4f}, interval {fit['b_ci']} ({fit['method']})")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
