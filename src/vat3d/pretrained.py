"""The models shipped inside the package, and loading a model by name or folder."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SHIPPED = {"tokenizer": "tokenizer-small", "generator": "generator-small"}


def shipped_path(kind: str) -> Path:
    return Path(str(resources.files("vat3d") / "pretrained" / SHIPPED[kind]))


def resolve(name_or_path: str | os.PathLike, kind: str) -> Path | str:
    """``default`` -> the shipped model of that kind; else a folder (or a Hub repo id)."""
    if str(name_or_path) == "default":
        path = shipped_path(kind)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no shipped {kind} model at {path}: train one (see README) and pass its folder")
        return path
    return name_or_path


def load_tokenizer(name_or_path: str | os.PathLike = "default", device: str = "cpu"):
    from vat3d.models.tokenizer import VATokenizer

    return VATokenizer.from_pretrained(resolve(name_or_path, "tokenizer")).to(device)


def load_generator(name_or_path: str | os.PathLike = "default", device: str = "cpu"):
    from vat3d.models.generator import NextScaleGenerator

    return NextScaleGenerator.from_pretrained(resolve(name_or_path, "generator")).to(device)
