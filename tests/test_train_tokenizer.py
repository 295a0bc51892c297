"""Training the tokenizer end to end on tiny data: overfitting, exact resume, and 2-process DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vat3d
from vat3d.cli import app

runner = CliRunner()

# fp32, no data workers: runs are bit-reproducible on one machine
COMMON = ["--config", "tiny", "--accelerator", "cpu", "--devices", "1", "--precision", "32", "--no-progress",
          "--set", "data.num_workers=0", "--set", "data.val_fraction=0"]


def _procedural_data(tmp_path_factory, count: int) -> Path:
    """``count`` procedural shapes from seed 3, prepared small."""
    from vat3d.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp(f"data{count}")
    prepare_dataset(f"procedural:{count}:3", out, num_surface=512, num_volume=4096, num_near=4096)
    return out


@pytest.fixture(scope="module")
def eight_shapes(tmp_path_factory) -> Path:
    return _procedural_data(tmp_path_factory, 8)


def _train(args: list[str]) -> None:
    result = runner.invoke(app, ["train-tokenizer", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@torch.no_grad()
def _volume_iou(model_dir: Path, data: Path) -> float:
    """Mean volume IoU of the full-scale quantized reconstruction over every prepared shape."""
    from vat3d.data.dataset import PreparedShapeDataset
    from vat3d.models.tokenizer import VATokenizer

    model = VATokenizer.from_pretrained(model_dir).eval()
    ds = PreparedShapeDataset(data, split="all", num_surface=model.num_points, num_volume=None, num_near=None)
    ious = []
    for i in range(len(ds)):
        item = ds.item(i, seed=0)
        tokens = model.encode(item["surface_points"][None], item["surface_normals"][None])
        occ = model.decode_tokens(tokens, item["volume_points"][None])[0] > 0
        gt = item["volume_labels"] > 0.5
        ious.append(float((occ & gt).sum()) / max(1, int((occ | gt).sum())))
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def four_shapes(tmp_path_factory) -> Path:
    return _procedural_data(tmp_path_factory, 4)


@pytest.mark.slow
def test_tiny_model_overfits_four_shapes(four_shapes, tmp_path):
    # 500 steps (the continuous phase to 200, then quantized): volume IoU 0.869 on one machine (fp32, one
    # thread); an untrained model is near 0.1. 1600 steps on 8 shapes reached 0.9 but cost 4x the time.
    run = tmp_path / "run"
    _train([*COMMON, "--data", str(four_shapes), "--run-dir", str(run), "--max-steps", "500",
            "--set", "training.quantize_start_step=200", "--set", "training.lr=3e-3",
            "--set", "training.val_every_n_steps=250", "--set", "training.ckpt_every_n_steps=1000",
            "--set", "data.num_volume=1024", "--set", "data.num_near=1024", "--set", "model.plane_resolution=32"])
    iou = _volume_iou(run / "model", four_shapes)
    assert iou >= 0.8, f"volume IoU {iou:.3f} after overfitting 4 shapes"
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    assert any(r.get("val/cross_scale_iou") for r in rows)  # validation ran with quantization on
    assert any(r.get("codebook/usage_s01") for r in rows)  # codebook usage is logged per scale


def test_resume_equals_uninterrupted_run(eight_shapes, tmp_path):
    # stopped at step 8, inside the window of steps whose sampled latents make the k-means pool (tiny:
    # 4096 tokens, 128 a step): the checkpoint carries them, and the resumed run's k-means at step 10
    # sees the same pool as the uninterrupted run's
    schedule = ["--max-steps", "16", "--set", "training.quantize_start_step=10",
                "--set", "training.ckpt_every_n_steps=100", "--set", "training.val_every_n_steps=100"]
    straight, chunked = tmp_path / "straight", tmp_path / "chunked"
    _train([*COMMON, "--data", str(eight_shapes), "--run-dir", str(straight), *schedule])
    _train([*COMMON, "--data", str(eight_shapes), "--run-dir", str(chunked), *schedule, "--stop-at-step", "8"])
    assert (chunked / "checkpoints" / "last.ckpt").is_file() and not (chunked / "model").exists()
    inside = torch.load(chunked / "checkpoints" / "last.ckpt", weights_only=False)
    assert inside["vat3d_pool_steps"] == 8 and [t.shape for t in inside["vat3d_latent_pool"]] == [(8, 16, 8)] * 8
    _train([*COMMON, "--data", str(eight_shapes), "--run-dir", str(chunked), *schedule])  # resumes from last.ckpt
    for run in (straight, chunked):  # after the switch no checkpoint carries a pool
        assert "vat3d_latent_pool" not in torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    a, b = _weights(straight / "model"), _weights(chunked / "model")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def _two_process_run(data: Path, run: Path, strategy: str, *extra: str) -> subprocess.CompletedProcess:
    """`vat3d train-tokenizer --config tiny` on 2 CPU processes (gloo), through the switch to quantization
    at step 3 with every unused code restarted at every quantized step (threshold above the usage that
    k-means leaves), so both codebook writes run under ``strategy``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(vat3d.__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "vat3d", "train-tokenizer", "--config", "tiny", "--accelerator", "cpu",
           "--devices", "2", "--strategy", strategy, "--precision", "32", "--no-progress", "--data", str(data),
           "--run-dir", str(run), "--max-steps", "6", "--set", "data.num_workers=0", "--set", "data.val_fraction=0",
           "--set", "training.quantize_start_step=3", "--set", "training.val_every_n_steps=3",
           "--set", "training.ckpt_every_n_steps=100", "--set", "model.dead_code_threshold=0.995",
           "--set", "data.num_volume=256", "--set", "data.num_near=256", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    return proc


def _check_two_process_run(run: Path, steps: int) -> None:
    from vat3d.models.tokenizer import VATokenizer

    model = VATokenizer.from_pretrained(run / "model")  # the exported model loads (strict)
    assert bool(model.quantizer.initialized)
    assert json.loads((run / "model" / "config.json").read_text())["_metadata"]["steps"] == steps
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    val = [r for r in rows if r.get("val/vol_iou")]
    assert any(r.get("val/vol_iou_s01") for r in val)  # validated with quantization on
    diffs = [float(r["val/codebook_rank_diff"]) for r in val if r.get("val/codebook_rank_diff")]
    assert diffs and max(diffs) == 0.0  # after k-means and restarts, every rank holds rank 0's codebook
    assert list((run / "previews").glob("*.png"))  # previews were written (rank 0, whole model)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(eight_shapes, tmp_path):
    run = tmp_path / "ddp"
    proc = _two_process_run(eight_shapes, run, "ddp")
    assert "codebook k-means initialised on 768 latent tokens" in proc.stdout + proc.stderr  # 3 steps x 2 ranks
    _check_two_process_run(run, 6)


@pytest.mark.slow
def test_two_process_fsdp_on_cpu_trains_exports_and_resumes(eight_shapes, tmp_path):
    run = tmp_path / "fsdp"
    _two_process_run(eight_shapes, run, "fsdp", "--stop-at-step", "4")  # through k-means, then stop
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "model").exists()
    proc = _two_process_run(eight_shapes, run, "fsdp")  # resumes from last.ckpt to step 6
    assert "resuming from" in proc.stdout and "trained 6 steps" in proc.stdout
    assert "k-means" not in proc.stdout  # the codebook came back with the checkpoint
    _check_two_process_run(run, 6)
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "csv" / "metrics.csv")) if r.get("val/vol_iou")]
    assert 2 in steps and 5 in steps  # the history of both attempts


def test_init_from_warm_starts_and_refuses_another_architecture(eight_shapes, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _train([*COMMON, "--data", str(eight_shapes), "--run-dir", str(first), "--max-steps", "8",
            "--set", "training.quantize_start_step=4", "--set", "training.val_every_n_steps=100"])
    # lr 0: the warm-started run must export exactly the weights it started from, trained quantized
    result = runner.invoke(app, ["train-tokenizer", *COMMON, "--data", str(eight_shapes), "--run-dir", str(second),
                                 "--max-steps", "3", "--init-from", str(first / "model"), "--set", "training.lr=0",
                                 "--set", "model.dead_code_threshold=0",
                                 "--set", "training.val_every_n_steps=100"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "initialised from" in result.output and "k-means" not in result.output
    a, b = _weights(first / "model"), _weights(second / "model")
    assert a.keys() == b.keys()
    for key in a:
        if key != "quantizer.code_usage":  # a running usage statistic, updated by every training step
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    bad = runner.invoke(app, ["train-tokenizer", *COMMON, "--data", str(eight_shapes), "--run-dir",
                              str(tmp_path / "bad"), "--max-steps", "2", "--init-from", str(first / "model"),
                              "--set", "model.plane_channels=8"])
    assert bad.exit_code != 0 and "does not fit" in bad.output


def test_train_only_keeps_the_other_part(eight_shapes, tmp_path):
    """``training.train_only=decoder``: the decoder learns, the encoder and the quantizer (codebook, refiners,
    no dead-code restarts) stay bit-identical, so every shape keeps its tokens. ``encoder``: the decoder stays."""
    from vat3d.codec.api import encode_mesh
    from vat3d.data.procedural import make_shape
    from vat3d.models.tokenizer import VATokenizer

    first, second = tmp_path / "first", tmp_path / "second"
    _train([*COMMON, "--data", str(eight_shapes), "--run-dir", str(first), "--max-steps", "6",
            "--set", "training.quantize_start_step=3", "--set", "training.val_every_n_steps=100"])
    _train([*COMMON, "--data", str(eight_shapes), "--run-dir", str(second), "--max-steps", "4",
            "--init-from", str(first / "model"), "--set", "training.lr=1e-2", "--set", "training.warmup_steps=0",
            "--set", "training.train_only=decoder", "--set", "training.val_every_n_steps=100"])
    a, b = _weights(first / "model"), _weights(second / "model")
    changed = {key for key in a if not torch.equal(a[key], b[key])}
    assert changed and all(key.startswith("decoder.") or key == "quantizer.code_usage" for key in changed), changed
    assert any(key.startswith("decoder.") for key in changed)
    mesh = make_shape(5).mesh
    old, new = (VATokenizer.from_pretrained(path / "model") for path in (first, second))
    for t_old, t_new in zip(encode_mesh(old, mesh).tokens, encode_mesh(new, mesh).tokens):
        np.testing.assert_array_equal(np.asarray(t_old), np.asarray(t_new))
    third = tmp_path / "third"
    _train([*COMMON, "--data", str(eight_shapes), "--run-dir", str(third), "--max-steps", "4",
            "--init-from", str(first / "model"), "--set", "training.lr=1e-2", "--set", "training.warmup_steps=0",
            "--set", "training.train_only=encoder", "--set", "training.val_every_n_steps=100"])
    c = _weights(third / "model")
    changed = {key for key in a if not torch.equal(a[key], c[key])}
    assert changed and not any(key.startswith("decoder.") for key in changed), changed
    bad = runner.invoke(app, ["train-tokenizer", *COMMON, "--data", str(eight_shapes), "--run-dir",
                              str(tmp_path / "bad"), "--max-steps", "1", "--set", "training.train_only=quantizer"])
    assert bad.exit_code != 0


def test_precision_auto_follows_the_hardware():
    from vat3d.training.common import cpu_has_native_bf16, default_precision, resolve_precision

    assert resolve_precision("32", "bf16-mixed") == "32"
    assert resolve_precision(None, "bf16-mixed") == "bf16-mixed"
    assert resolve_precision(None, "auto") == resolve_precision() == default_precision()
    if not torch.cuda.is_available():
        assert default_precision() == ("bf16-mixed" if cpu_has_native_bf16() else "32")


def test_mixed_precision_takes_the_unfused_optimizer():
    """Lightning cannot clip a fused optimizer's gradients under mixed precision (it unscales them itself)."""
    from vat3d.training.common import build_optimizer

    model = torch.nn.Linear(4, 2)
    cfg = dict(weight_decay=0.01, lr=1e-3, betas=(0.9, 0.95), warmup_steps=1, max_steps=10, min_lr_ratio=0.1)
    assert build_optimizer(model, cfg, precision="32")["optimizer"].defaults["fused"]
    for precision in ("bf16-mixed", "16-mixed"):
        assert not build_optimizer(model, cfg, precision=precision)["optimizer"].defaults["fused"]
