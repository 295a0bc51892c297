"""The README's Python examples run as written (against the shipped models)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _shipped() -> bool:
    from vat3d.pretrained import SHIPPED, shipped_path

    return all((shipped_path(kind) / "config.json").is_file() for kind in SHIPPED)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.skipif(not _shipped(), reason="the shipped models are not in the package")
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), namespace)
    if index == 0:
        decoded, coarse, mesh = namespace["decoded"], namespace["coarse"], namespace["mesh"]
        assert len(namespace["shape"].data) < 1024 and len(decoded.faces) > 0
        # decoded in the input's own coordinates: its bounding box is close to the input's
        assert abs(decoded.extents.max() - mesh.extents.max()) < 0.35 * mesh.extents.max()
        assert len(coarse.faces) > 0
    if index == 1:
        assert (tmp_path / "mug.obj").is_file() and len(namespace["meshes"]) == 2
