"""Save and load models as ``config.json`` + ``model.safetensors`` (diffusers style).

The constructor arguments of a model *are* its config: :func:`register_to_config`
records them, :meth:`ModelMixin.save_pretrained` writes them as JSON beside the
weights, and :meth:`ModelMixin.from_pretrained` rebuilds the model from the JSON
and loads the weights with safetensors (never unpickling anything).

Why not ``huggingface_hub.PyTorchModelHubMixin`` (checked against huggingface_hub 2.4): it fills the
constructor from ``config.json`` by taking only the keys ``__init__`` names and silently drops the
rest (a config written by another version loads as a different model, with no error); it loads
weights with ``strict=False`` by default; a repository without ``model.safetensors`` falls back to
``pytorch_model.bin`` through ``torch.load`` (pickle); and a name that is not a local folder is looked
up on the Hub, where this project never downloads at run time. It also has no storage dtype (float16
files that load as float32), no weight fingerprint in the file and no atomic writes. So the ~150
lines here stay: a config key the constructor does not take is an error naming it, loading is strict,
and nothing but safetensors is read.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from vat3d.fileio import atomic_write_bytes, publish
from vat3d import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T", bound="ModelMixin")


def register_to_config(init):
    """Decorate ``__init__`` so the bound keyword arguments become ``self.config``."""

    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        config = {k: v for k, v in bound.arguments.items() if k != "self"}
        extra = config.pop("kwargs", None)
        if extra:
            raise TypeError(f"{type(self).__name__} got unexpected config keys: {sorted(extra)}")
        config = {k: _jsonable(v) for k, v in config.items()}
        init(self, *args, **kwargs)
        self.config = dict(config)

    return wrapper


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON-serialisable")


class ModelMixin(nn.Module):
    """Adds ``save_pretrained``/``from_pretrained``/``fingerprint`` to an ``nn.Module``."""

    config: dict

    def save_pretrained(self, directory: str | os.PathLike, metadata: dict | None = None,
                        storage_dtype: torch.dtype | str | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically).

        ``storage_dtype`` ("float16", "bfloat16" or a torch dtype) stores every floating tensor in that
        type, half the bytes of float32; :meth:`from_pretrained` casts it back to the model's own dtype.
        The file's fingerprint is that of the model as it loads (the rounded weights), so reload the
        file before encoding with it.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, "_vat3d_version": __version__, **self.config}
        if metadata:
            config["_metadata"] = _jsonable(metadata)
        from safetensors.torch import save_file  # imported when used: building models needs only torch

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        loaded = state
        if storage_dtype is not None:
            dtype = getattr(torch, storage_dtype) if isinstance(storage_dtype, str) else storage_dtype
            if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
                raise ValueError(f"storage_dtype must be a floating dtype, got {storage_dtype!r}")
            stored = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            loaded = {k: stored[k].to(v.dtype) for k, v in state.items()}  # what from_pretrained will hold
            state = stored
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(state, tmp, metadata={"fingerprint": _fingerprint(self.config, loaded)})
            publish(tmp, directory / WEIGHTS_NAME)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
        return directory

    @classmethod
    def from_config(cls: type[T], config: dict) -> T:
        kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
        accepted = inspect.signature(cls.__init__).parameters
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
            unknown = sorted(set(kwargs) - set(accepted))
            if unknown:
                raise ValueError(f"{cls.__name__} takes no config keys {unknown} (a config of another vat3d "
                                 f"version?): its keys are {sorted(k for k in accepted if k != 'self')}")
        return cls(**kwargs)

    @classmethod
    def load_config(cls, directory: str | os.PathLike) -> dict:
        path = Path(_resolve(directory)) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {path.parent}")
        config = json.loads(path.read_text())
        name = config.get("_class_name")
        if name is not None and name != cls.__name__:
            raise ValueError(f"{path} holds a {name}, not a {cls.__name__}")
        return config

    @classmethod
    def from_pretrained(cls: type[T], directory: str | os.PathLike, map_location: str = "cpu") -> T:
        """Build the model from ``config.json`` and load ``model.safetensors`` (strict)."""
        root = Path(_resolve(directory))
        model = cls.from_config(cls.load_config(root))
        weights = root / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in {root}")
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights), device=map_location), strict=True)
        model.eval()
        return model

    def fingerprint(self, nbytes: int = 8) -> str:
        """A short hex digest of the config and every weight: two models share it only if identical."""
        return _fingerprint(self.config, self.state_dict(), nbytes)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Switch block recomputation in training on or off here and in every submodule that has the
        option (a runtime setting: the config keeps what the model was built with)."""
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = bool(enabled)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _fingerprint(config: dict, state: dict[str, torch.Tensor], nbytes: int = 8) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[: 2 * nbytes]


def _resolve(directory: str | os.PathLike) -> str:
    """A local folder as is; otherwise a Hugging Face Hub repo id (needs network or the local cache)."""
    path = Path(directory)
    if path.exists():
        return str(path)
    text = str(directory)
    if text.count("/") == 1 and not text.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=text, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME])
    raise FileNotFoundError(f"no model folder at {directory}")
