"""Generator size / condition study at matched compute: train several generator configurations for the
same CPU budget on the same tokens, score each on held-out captions, and print/save the table.

    python benchmarks/generator_study.py --tokens TOKENS --data DATA --minutes 20 \
        --work /work/runs/gen_study --out benchmarks/results/generator_study.json [--only small,small_seq]

Matched compute: each configuration's training step is timed first on real batches of TOKENS (same
batch size, same threads, the config's precision), then each trains ``minutes * 60 / step_time``
steps (step counts fixed from one profiling pass stay fair when other work shares the machine; a
wall-clock limit would not). Scored with ``vat3d eval-generation`` on the held-out split of DATA:
MMD / COV / 1-NNA (Chamfer), caption->family match against its ceiling, fragmentation beside the
held-out shapes', empty and degenerate rates, seconds per shape. ``--stage`` runs one part; a
configuration whose model or evaluation already exists is not redone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TEXT = "model.conditioner_kwargs.text"
#: name -> (what it varies, --set overrides of the packaged generator config)
CONFIGS: dict[str, tuple[str, dict]] = {
    "small": ("small: width 256 x 6, 8 heads; text pooled to 2 tokens", {f"{TEXT}.features": "pooled",
                                                                        f"{TEXT}.num_tokens": 2}),
    "small_seq": ("small; text as 16 word-piece tokens", {f"{TEXT}.features": "tokens", f"{TEXT}.max_length": 16}),
    "narrow_seq": ("width 192 x 4, 6 heads; text tokens", {"model.width": 192, "model.depth": 4, "model.heads": 6,
                                                          f"{TEXT}.features": "tokens", f"{TEXT}.max_length": 16}),
    "deep_seq": ("width 256 x 10, 8 heads; text tokens", {"model.depth": 10, f"{TEXT}.features": "tokens",
                                                         f"{TEXT}.max_length": 16}),
    "wide_seq": ("width 384 x 8, 8 heads; text tokens", {"model.width": 384, "model.depth": 8, "model.heads": 8,
                                                        f"{TEXT}.features": "tokens", f"{TEXT}.max_length": 16}),
}


def _cfg(config: str, overrides: dict) -> dict:
    from vat3d.training.common import load_config

    return load_config(config, "generator", [f"{k}={v}" for k, v in overrides.items()])


def profile(configs: dict[str, dict], config: str, tokens: str, threads: int, steps: int = 6) -> dict[str, dict]:
    """Median training-step time on real batches of ``tokens`` per named set of overrides of ``config``."""
    import torch

    from vat3d.data.tokens import read_token_info
    from vat3d.pretrained import load_tokenizer
    from vat3d.training.common import build_optimizer, resolve_precision
    from vat3d.training.generator_module import GeneratorDataModule, GeneratorModule

    torch.set_num_threads(threads)
    info = read_token_info(tokens)
    tokenizer = load_tokenizer(info["tokenizer"])
    out = {}
    for name, overrides in configs.items():
        cfg = _cfg(config, overrides)
        cond_type = cfg["model"].get("cond_type", "class")
        data_kwargs = dict(cond_type=cond_type, batch_size=cfg["data"]["batch_size"], num_workers=0,
                           tokenizer_fingerprint=info["tokenizer_fingerprint"])
        # a class-conditioned model takes the data's class vocabulary, as `vat3d train-generator` gives it
        class_names = GeneratorDataModule(tokens, **data_kwargs).dataset("all").class_names if cond_type == "class" else None
        torch.manual_seed(0)
        module = GeneratorModule(cfg["model"], cfg.get("training"), tokenizer=tokenizer, class_names=class_names).train()
        data = GeneratorDataModule(tokens, **data_kwargs, class_names=class_names, max_steps=steps + 2)
        data.setup("fit")
        optimizer = build_optimizer(module.model, module.cfg)["optimizer"]
        precision = resolve_precision(cfg.get("training", {}).get("precision", "auto"))
        times = []
        for i, batch in enumerate(data.train_dataloader()):
            if i >= steps + 2:
                break
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = module._step(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        s = sorted(times)[len(times) // 2]
        out[name] = {"s_per_step": s, "params_M": module.model.num_parameters(trainable_only=True) / 1e6,
                     "precision": precision}
        print(f"{name:>11}: {s:.3f} s/step, {out[name]['params_M']:.2f}M params ({precision})", flush=True)
    return out


def train_cmd(name: str, config: str, steps: int, tokens: str, run_dir: Path) -> list[str]:
    sets = dict(CONFIGS[name][1])
    sets.update({"training.max_steps": steps, "training.warmup_steps": min(100, max(1, steps // 10)),
                 "training.val_every_n_steps": max(1, steps // 4), "training.ckpt_every_n_steps": max(1, steps // 4)})
    cmd = [sys.executable, "-m", "vat3d", "train-generator", "--config", config, "--tokens", tokens,
           "--run-dir", str(run_dir), "--no-progress"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def eval_cmd(run_dir: Path, tokenizer: str, data: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "vat3d", "eval-generation", str(run_dir / "model"), "--tokenizer", tokenizer,
            "--data", data, "-o", str(run_dir / "eval"), *extra]


def run_jobs(commands: list[tuple[str, list[str], Path]], jobs: int, threads: int) -> None:
    """Run (name, command, log) with at most ``jobs`` at a time, each on ``threads`` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < jobs:
            name, cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            running.append((name, subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env),
                            time.time(), log))
            print(f"started {name}", flush=True)
        time.sleep(1)
        for item in list(running):
            name, proc, t0, log = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"finished {name} (exit {proc.returncode}) in {time.time() - t0:.0f} s", flush=True)
                if proc.returncode != 0:
                    print(log.read_text()[-2000:], file=sys.stderr)


def _last_val_loss(run_dir: Path) -> float | None:
    import csv

    path = run_dir / "csv" / "metrics.csv"
    if not path.exists():
        return None
    losses = [float(r["val/loss"]) for r in csv.DictReader(path.open()) if r.get("val/loss")]
    return losses[-1] if losses else None


SCORE_KEYS = ("MMD-CD", "COV-CD", "1-NNA-CD", "family_match", "family_match_reference", "empty_fraction",
              "degenerate_fraction", "fragmentation_generated", "fragmentation_real", "fragmentation_reconstructed",
              "fragmentation_ratio", "seconds_per_shape_tokens", "num_generated")


def report(names: list[str], prof: dict, steps: dict, args) -> dict:
    earlier = {r["name"]: r for r in json.loads(args.out.read_text())["rows"]} if args.out.exists() else {}
    rows = []
    for n in names + [n for n in earlier if n not in names]:
        ev = args.work / n / "eval" / "eval_generation.json"
        if n not in prof or ("1-NNA-CD" in earlier.get(n, {}) and not ev.exists()):
            rows.append(earlier[n])  # run folders outside the repo may be gone since
            continue
        row = {"name": n, "varies": CONFIGS[n][0], "overrides": CONFIGS[n][1], "steps": steps[n],
               "s_per_step": prof[n]["s_per_step"], "params_M": prof[n]["params_M"],
               "val_loss": _last_val_loss(args.work / n)}
        if ev.exists():
            summary = json.loads(ev.read_text())["summary"]
            row.update({k: summary.get(k) for k in SCORE_KEYS})
        rows.append(row)
    result = {"minutes_per_config": args.minutes, "threads": args.threads, "config": args.config,
              "tokens": args.tokens, "data": args.data, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    f = lambda r, k: "-" if r.get(k) is None else f"{r[k]:.3f}"  # noqa: E731
    print("| config | varies | params | s/step | steps | val loss | 1-NNA-CD | COV-CD | family match (ceiling) | "
          "fragmentation (real) | empty |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['varies']} | {r['params_M']:.2f}M | {r['s_per_step']:.3f} | {r['steps']} | "
              f"{f(r, 'val_loss')} | {f(r, '1-NNA-CD')} | {f(r, 'COV-CD')} | {f(r, 'family_match')} "
              f"({f(r, 'family_match_reference')}) | {f(r, 'fragmentation_generated')} ({f(r, 'fragmentation_real')}) | "
              f"{f(r, 'empty_fraction')} |")
    print(f"wrote {args.out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True, help="token folder (vat3d tokenize) to train on")
    ap.add_argument("--data", required=True, help="the prepared folder the tokens came from (its val split scores)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer of the tokens (default: the one TOKENS records)")
    ap.add_argument("--config", default="small", help="packaged generator config the overrides apply to")
    ap.add_argument("--minutes", type=float, default=20.0,
                    help="training budget per config, in minutes of profiled step time on --threads threads")
    ap.add_argument("--min-steps", type=int, default=50)
    ap.add_argument("--only", default=",".join(CONFIGS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-args", default="--source procedural",
                    help="extra vat3d eval-generation options, one string")
    ap.add_argument("--work", type=Path, default=Path("runs/generator_study"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/generator_study.json"))
    ap.add_argument("--stage", choices=["all", "profile", "train", "eval", "report"], default="all")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    if args.tokenizer is None:
        args.tokenizer = json.loads((Path(args.tokens) / "tokens.json").read_text())["tokenizer"]
    args.work.mkdir(parents=True, exist_ok=True)
    prof_path = args.work / "profile.json"
    prof = json.loads(prof_path.read_text()) if prof_path.exists() else {}
    missing = [n for n in names if n not in prof]
    if args.stage == "profile" or missing:
        todo = names if args.stage == "profile" else missing
        prof.update(profile({n: CONFIGS[n][1] for n in todo}, args.config, args.tokens, args.threads))
        prof_path.write_text(json.dumps(prof, indent=1))
    steps = {n: max(args.min_steps, int(args.minutes * 60 / prof[n]["s_per_step"])) for n in names}
    if args.stage in ("all", "train"):
        run_jobs([(n, train_cmd(n, args.config, steps[n], args.tokens, args.work / n), args.work / n / "train.log")
                  for n in names if not (args.work / n / "model" / "config.json").exists()], args.jobs, args.threads)
    if args.stage in ("all", "eval"):
        run_jobs([(n, eval_cmd(args.work / n, args.tokenizer, args.data, args.eval_args.split()),
                   args.work / n / "eval.log") for n in names
                  if (args.work / n / "model" / "config.json").exists()
                  and not (args.work / n / "eval" / "eval_generation.json").exists()], args.jobs, args.threads)
    return report(names, prof, steps, args)


if __name__ == "__main__":
    main()
