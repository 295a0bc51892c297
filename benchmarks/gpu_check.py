"""Paper-scale training on one GPU, as the training commands run it: the `base` tokenizer and the `base`
generator, a few hundred Lightning steps each in bf16, on one device and with FSDP on that one device,
with the tokenizer's k-means switch to quantization forced early. Prints and saves JSON: step time,
samples/s, peak memory, model FLOPs utilisation (MFU), and the k-means switch's time and pool.

    python benchmarks/gpu_check.py                        # on the GPU: base configs, bf16, 300 steps
    python benchmarks/gpu_check.py --device cpu --tiny    # anywhere: tiny configs, fp32, a few steps

Needs only torch, lightning and numpy (what a bare GPU machine has): the data are synthetic and made
here (ellipsoids with exact occupancy for the tokenizer; random tokens and images for the generator),
nothing is written but the JSON (no checkpoints, no logs), and the generator is image-conditioned
(the text encoder needs sentence-transformers and a model download). No mesh library is imported.

Step times are per optimiser step, synchronised with the device, over the steps after a warm-up and
apart from the switch step (its k-means is reported on its own). FLOPs per step are counted once by
``torch.utils.flop_counter`` (matmuls, convolutions, attention) on a forward and backward of the same
batch; MFU divides them by the step time and the device's dense bf16 peak (``--peak-tflops``, else a
table of known GPUs; none on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a checkout without `pip install`

# dense bf16 tensor peak, TFLOP/s (vendor data sheets; SXM parts)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "4090": 165.0, "V100": 125.0}


# ---------------------------------------------------------------------------------------------------
# synthetic data


class Ellipsoids:
    """Shapes for the tokenizer: ellipsoids with random centres and radii; surface samples with normals,
    uniform volume points and near-surface points with exact inside/outside labels."""

    def __init__(self, num_items: int, num_surface: int, num_volume: int, num_near: int):
        self.num_items, self.counts = num_items, (num_surface, num_volume, num_near)

    def __len__(self) -> int:
        return self.num_items

    def item(self, index: int, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed * 1_000_003 + index)
        ns, nv, nn = self.counts
        centre = (torch.rand(3, generator=g) - 0.5) * 0.4
        radii = 0.25 + 0.5 * torch.rand(3, generator=g)
        u = torch.nn.functional.normalize(torch.randn(ns, 3, generator=g), dim=-1)
        surface = centre + radii * u
        normals = torch.nn.functional.normalize(u / radii, dim=-1)
        inside = lambda p: (((p - centre) / radii).square().sum(-1) < 1).float()  # noqa: E731
        volume = torch.rand(nv, 3, generator=g) * 2 - 1
        near = (centre + radii * torch.nn.functional.normalize(torch.randn(nn, 3, generator=g), dim=-1)
                + 0.02 * torch.randn(nn, 3, generator=g)).clamp(-1, 1)
        return {"surface_points": surface, "surface_normals": normals, "volume_points": volume,
                "volume_labels": inside(volume), "near_points": near, "near_labels": inside(near), "id": str(index)}


class RandomTokens:
    """Token sequences and views for the generator (a fixed pool of random images, indexed)."""

    def __init__(self, num_items: int, scale_sizes: list[int], codebook_size: int, image_size: int):
        self.num_items, self.scale_sizes, self.codebook_size = num_items, scale_sizes, codebook_size
        self.images = torch.rand(16, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.num_items

    def item(self, index: int, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed * 1_000_003 + index)
        tokens = torch.randint(self.codebook_size, (sum(self.scale_sizes),), generator=g)
        return {"tokens": tokens, "indices": list(tokens.split(self.scale_sizes)), "image": self.images[index % 16],
                "label": 0, "caption": "", "class": "", "id": str(index)}


def datamodule(dataset, batch_size: int, max_steps: int):
    from vat3d.training.batches import StepDataModule

    class Synthetic(StepDataModule):
        def __init__(self):
            super().__init__()
            self.batch_size, self.num_workers, self.seed, self.max_steps, self.val_items = batch_size, 0, 0, max_steps, 1

        def dataset(self, split: str):
            return dataset

    return Synthetic()


# ---------------------------------------------------------------------------------------------------
# measurement


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Wall time of every optimiser step (device-synchronised), and where the k-means switch was."""

    def __new__(cls, device: torch.device):
        import lightning.pytorch as pl

        class _Timer(pl.Callback):
            def __init__(self):
                self.device, self.times, self._t0 = device, [], None

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                sync(self.device)
                self._t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                sync(self.device)
                self.times.append(time.perf_counter() - self._t0)

        return _Timer()


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process peak RSS (not per run)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def count_flops(step_fn) -> int:
    """FLOPs of one training step's forward and backward (matmul, conv, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step_fn()
    return int(counter.get_total_flops())


def peak_flops(device: torch.device, given_tflops: float | None) -> tuple[float | None, str]:
    if given_tflops:
        return given_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no table entry for a CPU"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12, f"bf16 dense peak of {key}"
    return None, f"unknown GPU {name!r}: pass --peak-tflops"


def summarise(times: list[float], batch_size: int, flops: int, peak: float | None) -> dict:
    median = sorted(times)[len(times) // 2]
    return {"steps_timed": len(times), "step_s_median": median, "step_s_mean": sum(times) / len(times),
            "samples_per_s": batch_size / median, "flops_per_step": flops, "achieved_tflops": flops / median / 1e12,
            "mfu": (flops / median / peak) if peak else None}


# ---------------------------------------------------------------------------------------------------
# runs


def make_trainer(args, strategy: str, max_steps: int, timer, root: str):
    import lightning.pytorch as pl

    from vat3d.models.modules import Block
    from vat3d.training.distributed import CPUCapableFSDPStrategy

    if strategy == "fsdp":
        strat = CPUCapableFSDPStrategy(auto_wrap_policy={Block}, use_orig_params=True)
    else:
        strat = "auto"
    return pl.Trainer(default_root_dir=root, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                      strategy=strat, precision=args.precision, max_steps=max_steps, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0,
                      use_distributed_sampler=False, callbacks=[timer])


def tokenizer_run(args, strategy: str, root: str) -> dict:
    from vat3d.training.common import load_config
    from vat3d.training.tokenizer_module import TokenizerModule

    device = torch.device(args.device)
    cfg = load_config("tiny" if args.tiny else "base", "tokenizer")
    data = cfg["data"]
    B = args.batch_size or data["batch_size"]
    steps, switch = args.steps, args.quantize_at
    M = cfg["model"]["num_latents"]
    training = dict(cfg["training"], max_steps=steps, quantize_start_step=switch, warmup_steps=min(20, switch),
                    val_every_n_steps=10**9, ckpt_every_n_steps=10**9, precision=args.precision)
    torch.manual_seed(0)
    module = TokenizerModule(cfg["model"], training)
    dataset = Ellipsoids(10_000, data["num_surface"], data["num_volume"], data["num_near"])
    batch = {k: torch.stack([dataset.item(i)[k] for i in range(B)]).to(device)
             for k in ("surface_points", "surface_normals", "volume_points", "volume_labels", "near_points",
                       "near_labels")}
    counted = copy.deepcopy(module.model).to(device)  # the run's own model stays untouched

    def one_step():  # forward (quantized, as after the switch) and backward, under the run's autocast
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in args.precision):
            out = counted(batch["surface_points"], batch["surface_normals"],
                          torch.cat([batch["volume_points"], batch["near_points"]], 1), quantize=True)
            loss = out["logits"].float().square().mean() + out["vq_loss"] + out["kl"]
        loss.backward()

    flops = count_flops(one_step)
    del counted, batch
    reset_peak(device)
    timer = StepTimer(device)
    trainer = make_trainer(args, strategy, steps, timer, root)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule(dataset, B, steps))
    wall = time.perf_counter() - start
    times = timer.times
    peak, peak_source = peak_flops(device, args.peak_tflops)
    continuous = times[args.warmup:switch]
    result = {"model": "tokenizer", "config": "tiny" if args.tiny else "base", "strategy": strategy,
              "batch_size": B, "num_latents": M, "codebook_size": cfg["model"]["codebook_size"],
              "params_M": module.model.num_parameters() / 1e6, "steps": len(times), "wall_s": wall,
              "peak_memory_GB": peak_memory_bytes(device) / 1e9,
              "continuous_step_s_median": sorted(continuous)[len(continuous) // 2] if continuous else None,
              "kmeans": dict(module.kmeans_report or {}, switch_step_s=times[switch] if len(times) > switch else None,
                             codebook_initialised=bool(module.model.quantizer.initialized)),
              "timed": "quantized steps after the switch", "peak_source": peak_source}
    quantized = times[max(switch + 1, args.warmup):]
    result.update(summarise(quantized or times, B, flops, peak))
    return result


def generator_run(args, strategy: str, root: str) -> dict:
    from vat3d.models.quantizer import default_scale_sizes
    from vat3d.training.common import load_config
    from vat3d.training.generator_module import GeneratorModule

    device = torch.device(args.device)
    name = "tiny" if args.tiny else "base"
    tok = load_config(name, "tokenizer")["model"]
    cfg = load_config(name, "generator")
    model_cfg = dict(cfg["model"], cond_type="image", conditioner_kwargs=cfg["model"]["conditioner_kwargs"]["image"],
                     num_latents=tok["num_latents"], codebook_size=tok["codebook_size"], code_dim=tok["code_dim"])
    B = args.batch_size or cfg["data"]["batch_size"]
    steps = args.steps
    training = dict(cfg["training"], max_steps=steps, warmup_steps=min(20, steps), val_every_n_steps=10**9,
                    ckpt_every_n_steps=10**9, precision=args.precision)
    torch.manual_seed(0)
    module = GeneratorModule(model_cfg, training)
    scale_sizes = default_scale_sizes(tok["num_latents"])
    image_size = model_cfg["conditioner_kwargs"].get("image_size", 224)
    dataset = RandomTokens(10_000, scale_sizes, tok["codebook_size"], image_size)
    items = [dataset.item(i) for i in range(B)]
    batch = {"indices": [torch.stack([it["indices"][k] for it in items]).to(device) for k in range(len(scale_sizes))],
             "image": torch.stack([it["image"] for it in items]).to(device)}
    counted = copy.deepcopy(module.model).to(device).train()

    def one_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in args.precision):
            loss = counted.loss(batch["indices"], batch["image"])["loss"]
        loss.backward()

    flops = count_flops(one_step)
    del counted, batch
    reset_peak(device)
    timer = StepTimer(device)
    trainer = make_trainer(args, strategy, steps, timer, root)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule(dataset, B, steps))
    wall = time.perf_counter() - start
    peak, peak_source = peak_flops(device, args.peak_tflops)
    result = {"model": "generator", "config": name, "strategy": strategy, "cond_type": "image",
              "batch_size": B, "tokens": sum(scale_sizes), "codebook_size": tok["codebook_size"],
              "params_M": module.model.num_parameters(trainable_only=True) / 1e6, "steps": len(timer.times),
              "wall_s": wall, "peak_memory_GB": peak_memory_bytes(device) / 1e9, "timed": "steps after the warm-up",
              "peak_source": peak_source}
    result.update(summarise(timer.times[args.warmup:] or timer.times, B, flops, peak))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a CPU smoke run of the same script)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default 300; tiny 10)")
    parser.add_argument("--quantize-at", type=int, default=None, help="the tokenizer's switch step (default steps/3)")
    parser.add_argument("--warmup", type=int, default=None, help="first steps left out of the timing (default 20; tiny 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--precision", default=None, help="default bf16-mixed on a GPU, 32 on a CPU")
    parser.add_argument("--runs", default="tokenizer:single,tokenizer:fsdp,generator:single,generator:fsdp")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--out", default=None, help="default benchmarks/results/gpu_check[_cpu_tiny].json")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: use --device cpu --tiny")
    args.steps = args.steps or (10 if args.tiny else 300)
    args.quantize_at = args.quantize_at if args.quantize_at is not None else args.steps // 3
    args.warmup = args.warmup if args.warmup is not None else (2 if args.tiny else 20)
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32")
    name = "gpu_check" + ("" if args.device == "cuda" else "_cpu") + ("_tiny" if args.tiny else "")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"{name}.json")

    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    device = torch.device(args.device)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "lightning": pl.__version__, "precision": args.precision,
              "steps": args.steps, "warmup": args.warmup, "runs": []}
    for spec in args.runs.split(","):
        kind, strategy = spec.split(":")
        with tempfile.TemporaryDirectory() as root:
            run = tokenizer_run if kind == "tokenizer" else generator_run
            result = run(args, strategy, root)
        report["runs"].append(result)
        print(json.dumps(result), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")
    return report


if __name__ == "__main__":
    main()
