"""benchmarks/scaling.py: the power-law fit recovers known a, b; size parsing; reading CSV logs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"
_spec = importlib.util.spec_from_file_location("vat3d_bench_scaling", _PATH)
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)


@pytest.mark.parametrize("a,b", [(1e-4, -0.076), (3e-7, -0.3), (2.0, 0.5)])
def test_power_law_fit_recovers_a_b(a, b):
    n = np.logspace(3, 8, 6)
    fit = scaling.fit_power_law(n, scaling.power_law(n, a, b))
    assert fit["a"] == pytest.approx(a, rel=1e-6) and fit["b"] == pytest.approx(b, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0) and fit["points"] == 6


def test_power_law_fit_with_noise_and_bad_points():
    rng = np.random.default_rng(0)
    n = np.logspace(4, 7, 12)
    loss = scaling.power_law(n, 5e-5, -0.1) * np.exp(rng.normal(0, 0.005, size=n.shape))
    loss[3] = np.nan  # skipped
    fit = scaling.fit_power_law(n, loss)
    assert fit["b"] == pytest.approx(-0.1, abs=0.01) and fit["points"] == 11
    assert np.log10(fit["a"]) == pytest.approx(np.log10(5e-5), abs=0.5)
    with pytest.raises(ValueError):
        scaling.fit_power_law([10, 10], [1.0, 2.0])


def test_parse_sizes_and_final_losses(tmp_path):
    assert scaling.parse_sizes("32x1, 64x2x4") == [
        {"name": "w32d1h1", "width": 32, "depth": 1, "heads": 1},
        {"name": "w64d2h4", "width": 64, "depth": 2, "heads": 4}]
    with pytest.raises(ValueError):
        scaling.parse_sizes("64")
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss,val/loss_last\n0,9,4.0,,\n0,10,,3.5,3.7\n0,19,3.0,,\n0,20,,3.1,3.3\n")
    assert scaling.final_losses(tmp_path) == {"val_loss": 3.1, "val_loss_last": 3.3, "step": 20}


def test_plot(tmp_path):
    points = [{"params_non_embedding": n, "val_loss": float(scaling.power_law(n, 1e-4, -0.1)),
               "val_loss_last": float(scaling.power_law(n, 1e-4, -0.08))} for n in (1e3, 1e4, 1e5)]
    fits = {k: scaling.fit_power_law([p["params_non_embedding"] for p in points], [p[k] for p in points])
            for k in ("val_loss", "val_loss_last")}
    path = scaling.plot(points, fits, tmp_path / "s.png", "params_non_embedding")
    assert path.is_file() and path.stat().st_size > 1000


def test_bootstrap_interval_over_seeds_narrows_with_the_noise():
    n = np.logspace(4, 7, 5)

    def fit(noise):
        rng = np.random.default_rng(1)
        losses = [list(scaling.power_law(v, 5e-5, -0.1) * np.exp(rng.normal(0, noise, size=4))) for v in n]
        return scaling.fit_with_interval(n, losses, n_boot=500)

    noisy, quiet = fit(0.02), fit(0.002)
    for f in (noisy, quiet):
        lo, hi = f["b_ci"]
        assert f["method"] == "seeds" and f["n_boot"] == 500 and lo < f["b"] < hi
        assert f["b"] == pytest.approx(-0.1, abs=0.01)
    width = lambda f: f["b_ci"][1] - f["b_ci"][0]  # noqa: E731
    assert width(quiet) < width(noisy) / 4
    exact = scaling.fit_with_interval(n, [[float(scaling.power_law(v, 5e-5, -0.1))] for v in n], n_boot=200)
    assert exact["method"] == "residuals" and exact["b_ci"][0] == pytest.approx(exact["b_ci"][1], abs=1e-9)
    with pytest.raises(ValueError):
        scaling.fit_with_interval(n, [[1.0]] * 4)


def test_scaling_fit_end_to_end_from_run_folders(tmp_path):
    """--fit-only over finished runs (two seeds per size): the exported models give N, the CSV logs the
    losses, and the fit, its interval and the plot are written."""
    import json

    import torch

    from vat3d.models.generator import NextScaleGenerator

    sizes = scaling.parse_sizes("16x1,32x1,32x2")
    for k, size in enumerate(sizes):
        torch.manual_seed(0)
        model = NextScaleGenerator(width=size["width"], depth=size["depth"], heads=size["heads"], num_latents=16,
                                   codebook_size=32, code_dim=8, cond_type="none")
        n = sum(p.numel() for p in model.blocks.parameters())
        for seed in (0, 1):
            run_dir = tmp_path / "runs" / (size["name"] if seed == 0 else f"{size['name']}-s{seed}")
            model.save_pretrained(run_dir / "model")
            (run_dir / "csv").mkdir(parents=True)
            loss = float(scaling.power_law(n, 1e-3, -0.2)) * (1.0 + 0.01 * seed)
            (run_dir / "csv" / "metrics.csv").write_text(f"step,val/loss,val/loss_last\n9,{loss},{loss * 1.1}\n")
    out = tmp_path / "scaling.json"
    result = scaling.main(["--tokens", str(tmp_path), "--sizes", "16x1,32x1,32x2", "--seeds", "0,1", "--fit-only",
                           "--work", str(tmp_path), "--n-boot", "200", "--out", str(out)])
    fit = result["fits"]["val_loss"]
    assert fit["b"] == pytest.approx(-0.2, abs=0.01) and fit["method"] == "seeds"
    assert fit["b_ci"][0] <= fit["b"] <= fit["b_ci"][1]
    assert [len(p["runs"]) for p in result["points"]] == [2, 2, 2]
    assert json.loads(out.read_text())["seeds"] == [0, 1] and out.with_suffix(".png").is_file()


def test_nearly_flat_losses_fit_without_overflow(tmp_path):
    """Reconstruction errors that barely change with N put a = exp(log_a) far outside the float range;
    the fit keeps log_a and the interval still comes out (tokenizer_scaling.py crashed on this)."""
    n = [3.8e5, 7.3e5, 1.6e6, 4.4e6]
    losses = [[0.766], [0.741], [0.752], [0.749]]  # 1 - IoU of four sizes: b close to 0
    fit = scaling.fit_with_interval(n, losses, n_boot=200)
    assert abs(fit["b"]) < 0.02 and math.isfinite(fit["log_a"])
    assert fit["a"] is None or math.isfinite(fit["a"])  # JSON has no infinity
    assert scaling.format_a(fit).startswith("e^") == (fit["a"] is None)
    assert scaling.format_a({"a": None, "log_a": 1e5}) == "e^1e+05"
    assert fit["n_boot"] > 0 and fit["b_ci"][0] <= fit["b"] <= fit["b_ci"][1]
    points = [{"params": v, "val_loss": l[0], "val_loss_last": l[0]} for v, l in zip(n, losses)]
    assert scaling.plot(points, {"val_loss": fit}, tmp_path / "flat.png", "params").is_file()


def test_finished_runs_are_kept_only_when_they_reached_their_steps(tmp_path):
    run = tmp_path / "run"
    assert not scaling.finished(run, 21)
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text("step,val/loss,val/loss_last\n9,3.5,3.6\n20,3.1,3.3\n")
    assert not scaling.finished(run, 21)  # no exported model: it stopped before its end
    (run / "model").mkdir()
    (run / "model" / "config.json").write_text("{}")
    assert scaling.finished(run, 21) and not scaling.finished(run, 40)
