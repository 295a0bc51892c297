"""Tokenizer speed on this machine: training steps/s and peak RSS of a config, encode and decode
latency per shape (dense vs coarse-to-fine extraction). Prints a table and saves JSON.

    python benchmarks/tokenizer.py --config small [--model runs/x/model] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch
import trimesh

from vat3d.codec.api import decode_tokens, encode_mesh
from vat3d.models.tokenizer import VATokenizer
from vat3d.training.common import build_optimizer, load_config
from vat3d.training.tokenizer_module import DATA_DEFAULTS, TRAINING_DEFAULTS


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_speed(cfg: dict, steps: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = VATokenizer(**cfg["model"]).train()
    data = {**DATA_DEFAULTS, **cfg.get("data", {})}
    B = data["batch_size"]
    opt = build_optimizer(model, {**TRAINING_DEFAULTS, **cfg.get("training", {})})["optimizer"]
    nrm = torch.nn.functional.normalize(torch.randn(B, data["num_surface"], 3), dim=-1)
    pts = nrm * 0.6
    q = torch.rand(B, data["num_volume"] + data["num_near"], 3) * 2 - 1
    labels = (q.norm(dim=-1) < 0.6).float()
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            out = model(pts, nrm, q, quantize=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"].float(), labels) + out["vq_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    s = sorted(times)[len(times) // 2]
    return {"batch_size": B, "num_points": data["num_surface"], "queries": q.shape[1], "precision": precision,
            "s_per_step": s, "steps_per_s": 1 / s, "samples_per_hour": 3600 * B / s,
            "params_M": model.num_parameters() / 1e6}


def codec_speed(model: VATokenizer, resolution: int, repeats: int = 3) -> dict:
    mesh = trimesh.creation.torus(0.6, 0.25)
    encode_mesh(model, mesh)  # warm-up
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        shape = encode_mesh(model, mesh)
        t.append(time.perf_counter() - t0)
    out = {"encode_s": sorted(t)[len(t) // 2], "vat_bytes": shape.num_bytes}
    for dense in (False, True):
        t = []
        for _ in range(repeats if not dense else 1):
            t0 = time.perf_counter()
            decode_tokens(model, shape.tokens, resolution=resolution, dense=dense)
            t.append(time.perf_counter() - t0)
        out[f"decode_{'dense' if dense else 'coarse_to_fine'}_{resolution}_s"] = sorted(t)[len(t) // 2]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="small")
    parser.add_argument("--model", default=None, help="a trained tokenizer folder for the codec timings")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/tokenizer.json")
    args = parser.parse_args()
    cfg = load_config(args.config, "tokenizer")
    result = {"config": args.config, "machine": {"cpus": torch.get_num_threads(), "torch": torch.__version__,
                                                 "platform": platform.platform()}}
    result["train_bf16"] = train_speed(cfg, args.steps, "bf16-mixed")
    result["train_fp32"] = train_speed(cfg, args.steps, "32")
    model = VATokenizer.from_pretrained(args.model) if args.model else VATokenizer(**cfg["model"]).eval()
    result["codec"] = codec_speed(model, args.resolution)
    result["peak_rss_mb"] = peak_rss_mb()
    for k, v in result.items():
        print(f"{k}: {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
