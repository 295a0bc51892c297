"""benchmarks/scaling.py: the power-law fit recovers known a, b; size parsing; reading CSV logs."""

from __future__ import annotations

import importlib.util
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
