"""`vat3d train-generator`: a few steps on tiny token data, resume, export, tokenizer checks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.cli import app
from vat3d.data import prepare_dataset
from vat3d.data.tokens import tokenize_dataset
from vat3d.models.generator import NextScaleGenerator
from vat3d.models.tokenizer import VATokenizer
from vat3d.training.common import load_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gen")
    prepare_dataset("procedural:8", root / "data", num_surface=256, num_volume=128, num_near=128)
    paths = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths[f"tok{seed}"] = VATokenizer(**TINY_TOKENIZER, num_points=256).save_pretrained(root / f"tok{seed}")
    tokenizer = VATokenizer.from_pretrained(paths["tok0"])
    tokenize_dataset(tokenizer, root / "data", root / "tokens", image_size=32, model_ref=str(paths["tok0"]))
    paths.update(tokens=root / "tokens", root=root)
    return paths


EVERY_4 = ["--set", "training.val_every_n_steps=4", "--set", "training.ckpt_every_n_steps=4"]


def _run(*args: str):
    return CliRunner().invoke(app, ["train-generator", "--config", "tiny", "--no-progress", *args])


def _csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # three text+image training runs: ~15-25 s on 2 cores
def test_train_generator_runs_resumes_exactly_and_exports(setup, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from vat3d.training.generator_module import GeneratorModule

    straight = tmp_path / "straight"
    result = _run("--tokens", str(setup["tokens"]), "--run-dir", str(straight), "--max-steps", "8", *EVERY_4)
    assert result.exit_code == 0, result.output
    assert "trained 8 steps" in result.output and "cond_type=text+image" in result.output
    assert (straight / "checkpoints" / "last.ckpt").is_file() and (straight / "tb").is_dir()
    val = [r for r in _csv_rows(straight) if r.get("val/loss")]
    assert [int(r["step"]) for r in val] == [3, 7]
    assert float(val[0]["val/loss_last"]) > 0 and 0 <= float(val[0]["val/accuracy"]) <= 1
    # a run that crashes after its step-4 checkpoint, then resumes, ends with the same weights
    run_dir = tmp_path / "run"
    original = GeneratorModule.training_step

    def crash_at_step_4(self, batch, batch_idx):
        if self.global_step == 4:
            raise RuntimeError("simulated crash")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(GeneratorModule, "training_step", crash_at_step_4)
    result = _run("--tokens", str(setup["tokens"]), "--run-dir", str(run_dir), "--max-steps", "8", *EVERY_4)
    assert result.exit_code != 0 and not (run_dir / "model").exists()
    monkeypatch.setattr(GeneratorModule, "training_step", original)
    result = _run("--tokens", str(setup["tokens"]), "--run-dir", str(run_dir), "--max-steps", "8", *EVERY_4)
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output and "trained 8 steps" in result.output
    val_steps = [int(r["step"]) for r in _csv_rows(run_dir) if r.get("val/loss")]
    assert val_steps == [3, 7]  # the CSV history of the first attempt is kept
    weights_a = load_file(str(straight / "model" / "model.safetensors"))
    weights_b = load_file(str(run_dir / "model" / "model.safetensors"))
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    model = NextScaleGenerator.from_pretrained(run_dir / "model")
    tokenizer = VATokenizer.from_pretrained(setup["tok0"])
    assert model.config["tokenizer_fingerprint"] == tokenizer.fingerprint()
    model.check_tokenizer(tokenizer)
    out = model.generate({"text": ["a torus"], "image": None}, seed=0, cfg_scale=2.0)
    assert [t.shape for t in out] == [(1, n) for n in tokenizer.scale_sizes]


def test_train_generator_class_conditioning_and_resume(setup, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--tokens", str(setup["tokens"]), "--run-dir", str(run_dir), "--tokenizer", str(setup["tok0"]),
            "--set", "model.cond_type=class", *EVERY_4]
    result = _run(*args, "--max-steps", "4", "--resume", "none")
    assert result.exit_code == 0, result.output
    result = _run(*args, "--max-steps", "8")
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output and "trained 8 steps" in result.output
    assert [int(r["step"]) for r in _csv_rows(run_dir) if r.get("val/loss")] == [3, 7]
    model = NextScaleGenerator.from_pretrained(run_dir / "model")
    names = model.config["class_names"]
    assert names == sorted(names) and len(names) == model.config["num_classes"] >= 2
    assert model.generate([names[0]], seed=0)[0].shape == (1, 1)


def test_init_from_warm_starts_and_refuses_a_misfit(setup, tmp_path):
    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--tokens", str(setup["tokens"]), "--set", "model.cond_type=class", "--set", "training.val_every_n_steps=100"]
    assert _run(*args, "--run-dir", str(first), "--max-steps", "4").exit_code == 0
    # lr 0: the warm-started run exports exactly the weights it started from
    result = _run(*args, "--run-dir", str(second), "--max-steps", "2", "--init-from", str(first / "model"),
                  "--set", "training.lr=0")
    assert result.exit_code == 0, result.output
    assert "initialised from" in result.output
    a, b = (load_file(str(run / "model" / "model.safetensors")) for run in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # with a learning rate it moves away from them
    third = tmp_path / "third"
    assert _run(*args, "--run-dir", str(third), "--max-steps", "2", "--init-from", str(first / "model"),
                "--set", "training.lr=1e-2", "--set", "training.warmup_steps=0").exit_code == 0
    c = load_file(str(third / "model" / "model.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)
    bad = _run(*args, "--run-dir", str(tmp_path / "wide"), "--max-steps", "2", "--init-from", str(first / "model"),
               "--set", "model.width=48")
    assert bad.exit_code != 0 and "does not fit" in bad.output
    other = NextScaleGenerator.from_tokenizer(VATokenizer.from_pretrained(setup["tok1"]), **{
        k: v for k, v in NextScaleGenerator.from_pretrained(first / "model").config.items()
        if k in ("width", "depth", "heads", "cond_type", "num_classes", "class_names")})
    other.save_pretrained(tmp_path / "other")
    bad = _run(*args, "--run-dir", str(tmp_path / "bad"), "--max-steps", "2", "--init-from", str(tmp_path / "other"))
    assert bad.exit_code != 0 and "trained on tokens of tokenizer" in bad.output
    assert not (tmp_path / "bad" / "model").exists()


def test_train_generator_refuses_tokens_of_another_tokenizer(setup, tmp_path):
    result = _run("--tokens", str(setup["tokens"]), "--run-dir", str(tmp_path / "run"), "--tokenizer",
                  str(setup["tok1"]))
    assert result.exit_code != 0 and "were made by tokenizer" in result.output
    assert not (tmp_path / "run" / "model").exists()
    result = _run("--tokens", str(tmp_path / "nothing"), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code != 0 and "vat3d tokenize" in result.output


def test_generator_configs_are_text_and_image_conditioned():
    # the models of every size are built and counted in tests/test_configs.py
    for name in ["tiny", "small", "base", "large"]:
        assert load_config(name, "generator")["model"]["cond_type"] == "text+image"


def test_compute_matched_profile_of_a_class_conditioned_size(setup):
    """benchmarks/scaling.py --rule compute times each size with generator_study.profile; a class model
    takes the data's class vocabulary there, as `vat3d train-generator` gives it (it used to get none)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from generator_study import profile

    overrides = ["model.width=32", "model.depth=1", "model.heads=2", "model.cond_type=class",
                 "model.conditioner_kwargs=null", "data.batch_size=4"]  # as scaling.py passes them
    out = profile({"w32": dict(o.split("=", 1) for o in overrides)},
                  "tiny", str(setup["tokens"]), threads=1, steps=2)
    assert out["w32"]["s_per_step"] > 0 and out["w32"]["params_M"] > 0
