"""Scaling harness: train several generator sizes on the same tokens and fit L(N) = (a * N)^b.

    # quick, self-contained (a few minutes on a CPU): procedural shapes, a random tiny tokenizer
    .venv/bin/python benchmarks/scaling.py --quick

    # real tokens (vat3d tokenize), five sizes, 2000 steps each
    .venv/bin/python benchmarks/scaling.py --tokens TOKENS_DIR --sizes 64x2,128x3,192x4,256x6,384x8 --steps 2000

Every size is trained by the ``vat3d train-generator`` command line (``--config`` CONFIG with
``--set model.width=W --set model.depth=D --set model.heads=H``, the condition type of ``--cond-type``)
into ``WORK/runs/<size>``; the final ``val/loss`` (all scales) and ``val/loss_last`` (last scale) are
read from ``RUN_DIR/csv/metrics.csv`` and the parameter count from the exported ``RUN_DIR/model``.
N is the number of **non-embedding** parameters (the transformer blocks, as in Kaplan et al.) by
default (``--count total`` uses every trainable parameter). The power law is fitted in log space,
``log L = b log a + b log N``, a straight line fitted with ``scipy.optimize.curve_fit``.

``--quick`` builds its own data first: ``procedural:--shapes`` prepared shapes, a random (untrained)
tiny tokenizer and their tokens (``vat3d tokenize --views 0``). Random-tokenizer tokens are a
deterministic function of the shapes, enough to exercise the harness; use real tokens for numbers
that mean something. Results: ``benchmarks/results/scaling.json`` and ``scaling.png`` (PIL plot;
matplotlib is not a dependency).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
QUICK_TOKENIZER = dict(num_latents=16, width=64, depth=2, heads=4, num_freqs=4, code_dim=8, codebook_size=64,
                       decoder_width=64, decoder_depth=2, decoder_heads=4, plane_tokens=4, plane_resolution=16,
                       plane_channels=8, mlp_hidden=32, num_points=512)


# --------------------------------------------------------------------------- fitting


def fit_power_law(n_params, losses) -> dict:
    """Fit ``L = (a * N)^b`` by a straight line in log space: ``log L = b * log N + b * log a``.

    Returns ``a``, ``b``, the log-space ``r2`` and ``log_rmse``. Needs two or more points with
    distinct N and positive losses.
    """
    from scipy.optimize import curve_fit

    n = np.asarray(n_params, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    keep = np.isfinite(n) & np.isfinite(loss) & (n > 0) & (loss > 0)
    n, loss = n[keep], loss[keep]
    if len(n) < 2 or len(np.unique(n)) < 2:
        raise ValueError("a power-law fit needs at least two points with distinct N and positive losses")
    x, y = np.log(n), np.log(loss)

    def line(x_, slope, intercept):
        return slope * x_ + intercept

    slope0, intercept0 = np.polyfit(x, y, 1)
    with warnings.catch_warnings():  # two points: an exact fit, no covariance
        warnings.simplefilter("ignore")
        (slope, intercept), _ = curve_fit(line, x, y, p0=(slope0, intercept0))
    residual = y - line(x, slope, intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    if abs(slope) < 1e-12:
        raise ValueError("flat losses: b = 0, a is undefined")
    log_a = float(intercept / slope)  # a near-flat line puts a far out of float range: keep its log too
    return {"a": _exp(log_a), "log_a": log_a, "b": float(slope), "r2": r2,
            "log_rmse": float(np.sqrt((residual**2).mean())), "points": int(len(n))}


def _exp(x: float) -> float | None:
    """exp(x), or None where it leaves the float range (JSON has no infinity; ``log_a`` keeps the value)."""
    try:
        value = math.exp(x)
    except OverflowError:
        return None
    return value if value > 0.0 else None


def format_a(fit: dict) -> str:
    """``a`` of a fit for printing: the number, or ``e^log_a`` where it leaves the float range."""
    return f"{fit['a']:.4g}" if fit.get("a") is not None else f"e^{fit['log_a']:.4g}"


def fit_with_interval(n_params, losses_per_size, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """:func:`fit_power_law` of the mean loss per size, with a bootstrap interval for ``b`` (and ``a``).

    ``losses_per_size``: one list of losses per size (one per seed). Where some size has two or more
    seeds the bootstrap resamples seeds within each size (``method="seeds"``); with one seed per size
    it resamples the log-space residuals of the fit (``method="residuals"``: it shows how well the
    points pin the line, not the run-to-run noise). Returns the fit plus ``b_ci``, ``a_ci``,
    ``method``, ``n_boot`` and ``level``.
    """
    n = np.asarray(n_params, dtype=np.float64)
    per_size = [np.asarray(v, dtype=np.float64) for v in losses_per_size]
    if len(per_size) != len(n) or any(len(v) == 0 for v in per_size):
        raise ValueError("one non-empty list of losses per size is needed")
    means = np.array([v.mean() for v in per_size])
    fit = fit_power_law(n, means)
    rng = np.random.default_rng(seed)
    method = "seeds" if any(len(v) > 1 for v in per_size) else "residuals"
    bs, as_ = [], []
    x = np.log(n)
    intercept = fit["b"] * fit["log_a"]
    residual = np.log(means) - (fit["b"] * x + intercept)
    for _ in range(n_boot):
        if method == "seeds":
            sample = np.array([rng.choice(v, size=len(v), replace=True).mean() for v in per_size])
        else:
            sample = np.exp(fit["b"] * x + intercept + rng.choice(residual, size=len(residual), replace=True))
        try:
            boot = fit_power_law(n, sample)
        except ValueError:
            continue
        bs.append(boot["b"])
        as_.append(boot["log_a"])
    tail = (1.0 - level) / 2.0 * 100.0
    ci = lambda v: [float(np.percentile(v, tail)), float(np.percentile(v, 100.0 - tail))] if v else [None, None]  # noqa: E731
    log_a_ci = ci(as_)
    a_ci = [_exp(v) if v is not None else None for v in log_a_ci]
    return {**fit, "b_ci": ci(bs), "a_ci": a_ci, "log_a_ci": log_a_ci, "method": method, "n_boot": len(bs),
            "level": level}


def power_law(n, a: float, b: float):
    return (a * np.asarray(n, dtype=np.float64)) ** b


# --------------------------------------------------------------------------- runs


def parse_sizes(text: str) -> list[dict]:
    """``"32x1,64x2"`` (width x depth, optional ``xH`` heads) -> size dicts."""
    sizes = []
    for item in text.split(","):
        parts = [int(p) for p in item.strip().lower().split("x") if p]
        if len(parts) not in (2, 3):
            raise ValueError(f"size {item!r} must be WIDTHxDEPTH or WIDTHxDEPTHxHEADS")
        width, depth = parts[0], parts[1]
        heads = parts[2] if len(parts) == 3 else max(1, width // 32)
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of {heads} heads")
        sizes.append({"name": f"w{width}d{depth}h{heads}", "width": width, "depth": depth, "heads": heads})
    return sizes


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vat3d", *map(str, args)]


def run(cmd: list[str], log: Path, env: dict) -> float:
    """Run a command, its output to ``log``; raise with the log's tail on failure. Returns seconds."""
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        handle.write(" ".join(cmd) + "\n")
        handle.flush()
        result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - start


def quick_tokens(work: Path, shapes: int, env: dict) -> Path:
    """Prepared procedural shapes, a random tiny tokenizer and its tokens, under ``work``."""
    import torch

    from vat3d.data.prepare import prepare_dataset
    from vat3d.models.tokenizer import VATokenizer

    data, tok_dir, tokens = work / "data", work / "tokenizer", work / "tokens"
    if not (tokens / "tokens.json").is_file():
        print(f"preparing procedural:{shapes} -> {data}", flush=True)
        prepare_dataset(f"procedural:{shapes}", data, num_surface=1024, num_volume=512, num_near=512)
        if not (tok_dir / "config.json").is_file():
            torch.manual_seed(0)
            VATokenizer(**QUICK_TOKENIZER).save_pretrained(tok_dir)
        print(f"tokenizing -> {tokens}", flush=True)
        run(cli("tokenize", tok_dir, data, tokens, "--views", "0", "--no-progress"), work / "tokenize.log", env)
    return tokens


def final_losses(run_dir: Path) -> dict:
    """The last logged ``val/loss`` and ``val/loss_last`` (and the step) of a run's CSV log."""
    files = sorted(run_dir.glob("csv/**/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"no csv/metrics.csv under {run_dir}")
    last: dict = {}
    with files[-1].open() as handle:
        for row in csv.DictReader(handle):
            if row.get("val/loss") not in (None, ""):
                last = {"val_loss": float(row["val/loss"]),
                        "val_loss_last": float(row["val/loss_last"]) if row.get("val/loss_last") else float("nan"),
                        "step": int(float(row.get("step") or 0))}
    if not last:
        raise ValueError(f"{files[-1]} has no val/loss rows (did validation run?)")
    return last


def finished(run_dir: Path, steps: int) -> bool:
    """True when ``run_dir`` holds an exported model whose last validation was at its last step."""
    if not (run_dir / "model" / "config.json").is_file():
        return False
    try:
        return final_losses(run_dir)["step"] == steps - 1
    except (FileNotFoundError, ValueError):
        return False


def _train_seconds(run_dir: Path) -> float | None:
    path = run_dir / "train_seconds.txt"
    return float(path.read_text()) if path.is_file() else None


def count_parameters(model_dir: Path) -> dict:
    from vat3d.models.generator import NextScaleGenerator

    model = NextScaleGenerator.from_pretrained(model_dir)
    blocks = sum(p.numel() for p in model.blocks.parameters() if p.requires_grad)
    return {"params_total": model.num_parameters(trainable_only=True), "params_non_embedding": blocks}


# --------------------------------------------------------------------------- plot


def plot(points: list[dict], fits: dict, path: Path, count_key: str) -> Path:
    """A log-log plot (PIL) of both losses against N with their fitted lines."""
    from PIL import Image, ImageDraw, ImageFont

    W, H, left, right, top, bottom = 720, 480, 80, 20, 40, 60
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    n = np.array([p[count_key] for p in points], dtype=float)
    series = {"val/loss": ("val_loss", (31, 119, 180)), "val/loss_last": ("val_loss_last", (214, 39, 40))}
    ys = np.concatenate([[p[k] for p in points] for k, _ in series.values()])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    x_lo, x_hi = math.log10(n.min()) - 0.1, math.log10(n.max()) + 0.1
    y_lo, y_hi = math.log10(ys.min()) - 0.05, math.log10(ys.max()) + 0.05

    def xy(nv, lv):
        x = left + (math.log10(nv) - x_lo) / (x_hi - x_lo) * (W - left - right)
        y = top + (y_hi - math.log10(lv)) / (y_hi - y_lo) * (H - top - bottom)
        return x, y

    draw.rectangle([left, top, W - right, H - bottom], outline="black")
    for k in range(math.floor(x_lo), math.ceil(x_hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**k
            if x_lo <= math.log10(v) <= x_hi:
                x, _ = xy(v, 10**y_hi)
                draw.line([x, H - bottom, x, H - bottom + 5], fill="black")
                draw.text((x, H - bottom + 8), f"{v:.0e}", fill="black", font=font, anchor="ma")
    for t in np.linspace(y_lo, y_hi, 6):
        _, y = xy(10**x_lo, 10**t)
        draw.line([left - 5, y, left, y], fill="black")
        draw.text((left - 8, y), f"{10**t:.3g}", fill="black", font=font, anchor="rm")
    draw.text((W / 2, H - 20), f"N ({count_key.replace('params_', '')} parameters, log)", fill="black", font=font,
              anchor="mm")
    draw.text((10, top - 25), "validation loss (log)", fill="black", font=font)
    for i, (label, (key, color)) in enumerate(series.items()):
        for p in points:
            if np.isfinite(p[key]) and p[key] > 0:
                x, y = xy(p[count_key], p[key])
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        fit = fits.get(key)
        text = label
        if fit:
            grid = np.logspace(x_lo, x_hi, 50)
            line = [xy(g, v) for g, v in zip(grid, np.exp(fit["b"] * (fit["log_a"] + np.log(grid))))
                    if v > 0 and y_lo <= math.log10(v) <= y_hi]
            if len(line) > 1:
                draw.line(line, fill=color, width=2)
            text += f": L = ({format_a(fit)} N)^{fit['b']:.3f}  r2={fit['r2']:.3f}"
        draw.text((left + 10, top + 10 + 16 * i), text, fill=color, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=Path, help="Token folder from `vat3d tokenize`.")
    parser.add_argument("--quick", action="store_true", help="Build small procedural tokens first (no --tokens).")
    parser.add_argument("--shapes", type=int, default=256, help="--quick: procedural shapes.")
    parser.add_argument("--sizes", default=None, help="WIDTHxDEPTH[xHEADS],... (default: 4-5 sizes by mode).")
    parser.add_argument("--steps", type=int, default=None, help="Training steps per size.")
    parser.add_argument("--config", default="tiny", help="Base config of vat3d train-generator.")
    parser.add_argument("--cond-type", default="class", help="model.cond_type (class: no text/image encoders).")
    parser.add_argument("--batch-size", type=int, default=None, help="data.batch_size override.")
    parser.add_argument("--lr", type=float, default=None, help="training.lr override.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Extra --set for every run.")
    parser.add_argument("--count", choices=("non_embedding", "total"), default="non_embedding")
    parser.add_argument("--work", type=Path, default=Path("runs/scaling"), help="Runs and data go here.")
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of the training runs.")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    parser.add_argument("--fit-only", action="store_true", help="Refit from finished runs in --work.")
    parser.add_argument("--seeds", default="0", help="Training seeds per size (comma-separated); with two or more "
                        "the intervals bootstrap over seeds.")
    parser.add_argument("--rule", choices=("steps", "compute"), default="steps",
                        help="steps: every size trains --steps steps; compute: every size gets --minutes of "
                             "profiled step time (steps = minutes * 60 / its step time, at least --min-steps).")
    parser.add_argument("--minutes", type=float, default=10.0, help="--rule compute: CPU minutes per size.")
    parser.add_argument("--min-steps", type=int, default=20, help="--rule compute: fewest steps per size.")
    parser.add_argument("--n-boot", type=int, default=2000, help="Bootstrap resamples of the intervals.")
    args = parser.parse_args(argv)
    seeds = [int(x) for x in args.seeds.split(",") if x != ""]

    sizes = parse_sizes(args.sizes or ("16x1,24x1,32x1,48x2,64x2" if args.quick or not args.tokens
                                       else "64x2,128x3,192x4,256x6,384x8"))
    steps = args.steps or (200 if args.quick else 2000)
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    work = args.work
    tokens = args.tokens
    if tokens is None:
        if not args.quick:
            parser.error("give --tokens DIR (from vat3d tokenize) or --quick")
        tokens = quick_tokens(work, args.shapes, env)

    size_overrides = {}
    for size in sizes:
        overrides = [f"model.width={size['width']}", f"model.depth={size['depth']}",
                     f"model.heads={size['heads']}", f"model.cond_type={args.cond_type}"]
        if args.cond_type in ("none", "class"):
            overrides.append("model.conditioner_kwargs=null")
        if args.batch_size:
            overrides.append(f"data.batch_size={args.batch_size}")
        if args.lr:
            overrides.append(f"training.lr={args.lr}")
        size_overrides[size["name"]] = overrides + list(args.overrides)
    steps_by_size = {size["name"]: steps for size in sizes}
    profile = {}
    if args.rule == "compute" and not args.fit_only:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from generator_study import profile as profile_steps

        as_dict = lambda items: dict(o.split("=", 1) for o in items)  # noqa: E731
        # the profile is kept in WORK/profile.json, so that a later call with more seeds trains them for the
        # same steps as the first (a profile taken again would differ with the machine's load)
        profile_path = work / "profile.json"
        cached = json.loads(profile_path.read_text()) if profile_path.is_file() else {}
        missing = {n: as_dict(o) for n, o in size_overrides.items()
                   if cached.get(n, {}).get("overrides") != size_overrides[n]}
        if missing:
            fresh = profile_steps(missing, args.config, str(tokens), args.threads or 1)
            cached.update({n: {**p, "overrides": size_overrides[n]} for n, p in fresh.items()})
            work.mkdir(parents=True, exist_ok=True)
            profile_path.write_text(json.dumps(cached, indent=1))
        profile = {n: cached[n] for n in size_overrides}
        steps_by_size = {n: max(args.min_steps, int(args.minutes * 60 / p["s_per_step"])) for n, p in profile.items()}

    points = []
    for size in sizes:
        runs = []
        for seed in seeds:
            run_dir = work / "runs" / (size["name"] if seed == seeds[0] else f"{size['name']}-s{seed}")
            seconds = None
            n_steps = steps_by_size[size["name"]]
            if not args.fit_only and finished(run_dir, n_steps):
                print(f"kept {size['name']} (seed {seed}): finished {n_steps} steps earlier", flush=True)
                seconds = _train_seconds(run_dir)
            elif not args.fit_only:
                overrides = size_overrides[size["name"]] + [
                    f"training.seed={seed}", f"training.val_every_n_steps={n_steps}",
                    f"training.ckpt_every_n_steps={n_steps}"]
                cmd = cli("train-generator", "--config", args.config, "--tokens", tokens, "--run-dir", run_dir,
                          "--max-steps", n_steps, "--accelerator", "cpu", "--resume", "none", "--no-progress",
                          *[x for o in overrides for x in ("--set", o)])
                print(f"training {size['name']} (seed {seed}) for {n_steps} steps ...", flush=True)
                seconds = run(cmd, run_dir / "train.log", env)
                (run_dir / "train_seconds.txt").write_text(f"{seconds}\n")
            runs.append({"seed": seed, **final_losses(run_dir),
                         "train_seconds": None if seconds is None else round(seconds, 1)})
        point = {**size, **count_parameters(work / "runs" / size["name"] / "model"),
                 "val_loss": float(np.mean([r["val_loss"] for r in runs])),
                 "val_loss_last": float(np.mean([r["val_loss_last"] for r in runs])),
                 "steps": steps_by_size[size["name"]], "runs": runs,
                 "s_per_step": profile.get(size["name"], {}).get("s_per_step"),
                 "train_seconds": runs[0]["train_seconds"]}
        print(f"  {size['name']}: N={point['params_non_embedding']:,} (total {point['params_total']:,}) "
              f"val/loss {point['val_loss']:.4f} val/loss_last {point['val_loss_last']:.4f} over {len(runs)} seed(s)",
              flush=True)
        points.append(point)

    count_key = f"params_{args.count}"
    fits = {}
    for key in ("val_loss", "val_loss_last"):
        try:
            fits[key] = fit_with_interval([p[count_key] for p in points],
                                          [[r[key] for r in p["runs"]] for p in points], n_boot=args.n_boot)
        except ValueError as error:
            print(f"no fit for {key}: {error}")
    result = {
        "benchmark": "generator scaling: final validation loss against parameter count, L(N) = (a*N)^b",
        "tokens": str(tokens), "config": args.config, "cond_type": args.cond_type, "steps": steps,
        "rule": (f"compute-matched: {args.minutes:g} CPU-minutes of profiled step time per size"
                 if args.rule == "compute" else f"the same {steps} steps for every size"), "seeds": seeds,
        "count": count_key, "quick": bool(args.quick and args.tokens is None),
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "points": points, "fits": fits,
    }
    if result["quick"]:
        result["note"] = ("quick mode: tokens of a random (untrained) tiny tokenizer on procedural shapes and "
                          f"{steps} steps per size; it exercises the harness, the fitted exponent is not a "
                          "scaling result")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = plot(points, fits, args.out.with_suffix(".png"), count_key)
    for key, fit in fits.items():
        lo, hi = fit["b_ci"]
        interval = f"[{lo:.4f}, {hi:.4f}]" if lo is not None else "n/a"
        print(f"{key}: L = ({format_a(fit)} * N)^{fit['b']:.4f}, {fit['level']:.0%} interval of b {interval} "
              f"({fit['method']} bootstrap)   r2 {fit['r2']:.3f}")
    print(f"wrote {args.out} and {png}")
    return result


if __name__ == "__main__":
    main()
