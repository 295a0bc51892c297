"""What the web app does, without the web: upload checks, encoding, prefix decoding, generation.

Everything here is plain Python (no gradio import), so it is tested directly and the UI in
:mod:`vat3d.app.web` stays a thin layer of widgets around it. Every user-facing failure is an
:class:`AppError` whose message is shown in the page as is.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vat3d.codec.effort_defaults import DEFAULT_EFFORT
from vat3d.models.sampling_defaults import CFG_SCALE

#: The mesh formats the app accepts (lower case, with the dot).
UPLOAD_SUFFIXES: tuple[str, ...] = (".obj", ".ply", ".stl", ".off", ".glb")
DEFAULT_MAX_UPLOAD_MB = 50.0
RESOLUTIONS: tuple[int, ...] = (64, 96, 128, 192, 256)
DEFAULT_RESOLUTION = 128


class AppError(Exception):
    """A problem to report to the user (bad upload, empty result, missing model...)."""


# ---- shape state -----------------------------------------------------------------------------------

@dataclass
class ShapeTokens:
    """The tokens of one encoded (or generated) shape: kept in the page's session state."""

    name: str
    tokens: list[np.ndarray]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    orientation: int = 0  # the axis-aligned turn the tokens were made in (vat3d.geometry.normalize.ORIENTATIONS)
    effort: str = DEFAULT_EFFORT
    score: float | None = None  # held-out IoU on the input's own labelled points (search / rate control)
    seconds: float = 0.0  # encoding time

    @property
    def num_scales(self) -> int:
        return len(self.tokens)

    def transform(self):
        from vat3d.geometry.normalize import Transform

        return Transform(center=np.asarray(self.center, dtype=np.float64), scale=self.scale,
                         orientation=self.orientation)


def vat_bytes(tokenizer, shape: ShapeTokens, num_scales: int | None = None) -> bytes:
    """The ``.vat`` file of the first ``num_scales`` scales of ``shape`` (all by default)."""
    from vat3d.codec.api import model_fingerprint_bytes
    from vat3d.codec.vatfile import encode_vat

    k = shape.num_scales if num_scales is None else clamp_scales(num_scales, shape.num_scales)
    return encode_vat(shape.tokens[:k], model_fingerprint=model_fingerprint_bytes(tokenizer),
                      codebook_size=tokenizer.codebook_size, scale_sizes=tokenizer.scale_sizes,
                      center=shape.center, scale=shape.scale, orientation=shape.orientation)


def clamp_scales(num_scales: Any, total: int) -> int:
    try:
        k = int(round(float(num_scales)))
    except (TypeError, ValueError):
        k = total
    return max(1, min(total, k))


# ---- files -----------------------------------------------------------------------------------------

class Workdir:
    """A private temporary folder for the files the app hands to the browser (GLB, .vat).

    Each result gets its own sub-folder (so a download keeps a readable name); folders older
    than ``max_age_s`` are removed whenever a new one is made.
    """

    def __init__(self, root: str | os.PathLike | None = None, max_age_s: float = 3600.0):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="vat3d-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s

    def new_dir(self) -> Path:
        self.prune()
        path = self.root / uuid.uuid4().hex
        path.mkdir()
        return path

    def prune(self) -> None:
        now = time.time()
        for child in self.root.iterdir():
            try:
                if child.is_dir() and now - child.stat().st_mtime > self.max_age_s:
                    for f in child.iterdir():
                        f.unlink(missing_ok=True)
                    child.rmdir()
            except OSError:
                pass


def safe_stem(name: str, default: str = "shape") -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)[:64].strip("._")
    return stem or default


def check_upload(path: str | os.PathLike | None, max_bytes: int) -> Path:
    """The uploaded file as a path, or :class:`AppError` (no file, wrong type, empty, too large)."""
    if path is None or str(path) == "":
        raise AppError("Upload a mesh file (" + ", ".join(s.lstrip(".").upper() for s in UPLOAD_SUFFIXES) + ").")
    path = Path(path)
    if not path.is_file():
        raise AppError("The uploaded file is gone; upload it again.")
    if path.suffix.lower() not in UPLOAD_SUFFIXES:
        raise AppError(f"'{path.suffix or path.name}' is not a supported mesh format; use "
                       + ", ".join(UPLOAD_SUFFIXES) + ".")
    size = path.stat().st_size
    if size > max_bytes:
        raise AppError(f"The file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.")
    if size == 0:
        raise AppError("The file is empty (0 bytes).")
    return path


def export_glb(mesh, directory: Path, stem: str) -> Path:
    """Write ``mesh`` as GLB (what the 3D viewer shows and what is offered for download)."""
    path = directory / f"{stem}.glb"
    path.write_bytes(mesh.export(file_type="glb"))
    return path


def mesh_summary(mesh) -> str:
    return f"{len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces"


# ---- the app's model work --------------------------------------------------------------------------

@dataclass
class Decoded:
    glb: Path | None  # None when the decoded surface is empty
    vat: Path  # the .vat of the decoded prefix
    num_scales: int
    total_scales: int
    num_bytes: int
    message: str


@dataclass
class Generated:
    glb: Path
    vat: Path | None
    message: str
    shape: ShapeTokens | None


class AppModels:
    """The tokenizer (and optional generator) behind the app, used by one request at a time."""

    def __init__(self, tokenizer, generator=None, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 workdir: Workdir | None = None, generator_error: str | None = None):
        tokenizer.eval()
        self.tokenizer = tokenizer
        self.generator = None
        self.generator_note = generator_error or "No generator model is loaded: start the app with --generator FOLDER."
        if generator is not None:
            try:
                generator.check_tokenizer(tokenizer)
            except ValueError as error:
                self.generator_note = f"The generator does not fit this tokenizer ({error})."
            else:
                generator.eval()
                self.generator = generator
                self.generator_note = ""
        self.max_upload_mb = float(max_upload_mb)
        self.workdir = workdir or Workdir()
        self.lock = threading.Lock()  # torch modules are not shared between concurrent requests

    @property
    def num_scales(self) -> int:
        return len(self.tokenizer.scale_sizes)

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    # -- reconstruct --
    def encode(self, upload: str | os.PathLike | None, effort: str = DEFAULT_EFFORT, max_bytes: Any = None,
               target_iou: Any = None) -> tuple[ShapeTokens, Path, int]:
        """Check, load and tokenize an upload: (tokens, path of its .vat, .vat size in bytes).

        ``effort`` (fast / balanced / best) and the rate settings (``max_bytes``, ``target_iou``; 0 or
        None: off) are those of :func:`vat3d.codec.api.encode_mesh`. The loaded mesh is also written as
        ``input.glb`` next to the .vat (for the input viewer).
        """
        from vat3d.codec.refine import EFFORTS
        from vat3d.codec.api import encode_mesh
        from vat3d.geometry.io import MeshError, load_mesh

        path = check_upload(upload, self.max_bytes)
        if effort not in EFFORTS:
            raise AppError(f"Unknown effort {effort!r}: choose one of {', '.join(EFFORTS)}.")
        rate = {"max_bytes": int(max_bytes) if max_bytes else None,
                "target_iou": float(target_iou) if target_iou else None}
        try:
            mesh = load_mesh(path)
        except MeshError as error:
            raise AppError(f"Could not read this file as a mesh: {error}.") from error
        with self.lock:
            try:
                encoded = encode_mesh(self.tokenizer, mesh, effort=effort, **rate)
            except (ValueError, MeshError) as error:
                raise AppError(f"Could not encode this mesh: {error}.") from error
        t = encoded.transform
        shape = ShapeTokens(name=safe_stem(path.name), tokens=[np.asarray(x) for x in encoded.tokens],
                            center=tuple(float(c) for c in t.center), scale=float(t.scale),
                            orientation=t.orientation, effort=effort, score=encoded.score, seconds=encoded.seconds)
        out = self.workdir.new_dir() / f"{shape.name}.vat"
        out.write_bytes(encoded.data)
        try:
            export_glb(mesh, out.parent, "input")
        except Exception:  # noqa: BLE001 - the preview of the input is optional
            pass
        return shape, out, encoded.num_bytes

    def decode(self, shape: ShapeTokens | None, num_scales: Any = None, resolution: Any = DEFAULT_RESOLUTION
               ) -> Decoded:
        """Decode the first ``num_scales`` scales of ``shape`` into a GLB (None if the surface is empty)."""
        from vat3d.codec.api import decode_tokens

        if shape is None:
            raise AppError("Upload a mesh first.")
        total = shape.num_scales
        k = clamp_scales(num_scales, total)
        res = int(resolution) if str(resolution).isdigit() else DEFAULT_RESOLUTION
        res = max(16, min(512, res))
        with self.lock:
            mesh = decode_tokens(self.tokenizer, shape.tokens, shape.transform(), resolution=res, num_scales=k)
        directory = self.workdir.new_dir()
        data = vat_bytes(self.tokenizer, shape, k)
        suffix = "" if k == total else f"-{k}of{total}"
        vat = directory / f"{shape.name}{suffix}.vat"
        vat.write_bytes(data)
        scales = f"scales 1–{k} of {total}" if k > 1 else f"scale 1 of {total}"
        if len(mesh.faces) == 0:
            message = (f"The decoded surface is **empty** ({scales}, {res}³ grid): the model sees no "
                       "inside with these scales. Try more scales or another shape.")
            return Decoded(None, vat, k, total, len(data), message)
        glb = export_glb(mesh, directory, f"{shape.name}{suffix}-{res}")
        message = f"Decoded {scales} ({len(data):,} bytes as a .vat prefix) at {res}³: {mesh_summary(mesh)}."
        return Decoded(glb, vat, k, total, len(data), message)

    # -- generate --
    def condition_inputs(self) -> dict:
        return condition_inputs(self.generator)

    def generate(self, text: str | None = None, image: Any = None, seed: Any = 0, cfg_scale: float = CFG_SCALE,
                 resolution: Any = DEFAULT_RESOLUTION, class_label: str | None = None) -> Generated:
        """One sample for the inputs the generator takes (inputs it does not take are ignored)."""
        if self.generator is None:
            raise AppError(self.generator_note)
        inputs = self.condition_inputs()
        text = (text or "").strip() or None if inputs["text"] else None
        image = image if inputs["image"] else None
        class_label = (class_label or None) if inputs["classes"] is not None else None
        try:
            seed = int(float(seed))
        except (TypeError, ValueError):
            seed = 0
        res = int(resolution) if str(resolution).isdigit() else DEFAULT_RESOLUTION
        from vat3d.pipelines import generate_meshes  # lazy: the pipeline imports the whole model stack

        with self.lock:
            try:
                result = generate_meshes(self.generator, self.tokenizer, text=text, image=image,
                                         class_label=class_label, n=1, seed=seed, cfg_scale=float(cfg_scale),
                                         resolution=res)
            except (ValueError, TypeError, OSError) as error:
                raise AppError(f"Could not generate: {error}.") from error
        meshes, tokens = _split_generation(result)
        if not meshes:
            raise AppError("The generator returned no shape.")
        mesh = meshes[0]
        directory = self.workdir.new_dir()
        stem = f"generated-seed{seed}"
        shape, vat = None, None
        if tokens:
            shape = ShapeTokens(name=stem, tokens=[np.asarray(t).reshape(-1) for t in tokens[0]])
            try:
                data = vat_bytes(self.tokenizer, shape)
            except (ValueError, TypeError):
                shape = None
            else:
                vat = directory / f"{stem}.vat"
                vat.write_bytes(data)
        given = [desc for desc, value in ((f"the prompt “{text}”", text), ("the image", image),
                                          (f"class '{class_label}'", class_label)) if value is not None]
        how = f"from {' and '.join(given)}" if given else "unconditionally (no prompt given)"
        if mesh is None or len(mesh.faces) == 0:
            raise AppError(f"Generated {how} with seed {seed}, but the surface is **empty** (the model "
                           "produced no inside). Try another seed or prompt.")
        glb = export_glb(mesh, directory, stem)
        size = f"; its tokens take {vat.stat().st_size:,} bytes as a .vat file" if vat is not None else ""
        return Generated(glb, vat, f"Generated {how} with seed {seed}: {mesh_summary(mesh)}{size}.", shape)


def _split_generation(result: Any) -> tuple[list, list | None]:
    """``generate_meshes`` returns meshes, or (meshes, tokens), or an object with .meshes/.tokens."""
    tokens = None
    if isinstance(result, tuple) and len(result) == 2:
        meshes, tokens = result
    elif hasattr(result, "meshes"):
        meshes, tokens = result.meshes, getattr(result, "tokens", None)
    else:
        meshes = result
    if meshes is None:
        return [], None
    if not isinstance(meshes, (list, tuple)):
        meshes = [meshes]
    if tokens is not None:
        tokens = _per_sample_tokens(tokens, len(meshes))
    return list(meshes), tokens


def _per_sample_tokens(tokens: Any, batch: int) -> list[list[np.ndarray]] | None:
    """Tokens as [sample][scale] arrays, from [scale] tensors of shape (B, n_k) or [sample][scale]."""
    try:
        items = list(tokens)
        if not items:
            return None
        first = np.asarray(items[0].detach().cpu() if hasattr(items[0], "detach") else items[0]) \
            if not isinstance(items[0], (list, tuple)) else None
        if first is not None and first.ndim == 2 and first.shape[0] == batch:  # per scale (B, n_k)
            arrays = [np.asarray(t.detach().cpu() if hasattr(t, "detach") else t) for t in items]
            return [[a[b] for a in arrays] for b in range(batch)]
        if first is not None and first.ndim == 1 and batch == 1:  # one sample, per scale (n_k,)
            return [[np.asarray(t.detach().cpu() if hasattr(t, "detach") else t) for t in items]]
        return [[np.asarray(t.detach().cpu() if hasattr(t, "detach") else t).reshape(-1) for t in sample]
                for sample in items]
    except Exception:  # noqa: BLE001 - the .vat of a generated shape is a bonus, never an error
        return None


def condition_inputs(generator) -> dict:
    """Which inputs the Generate tab offers for ``generator``'s ``cond_type``.

    ``cond_type`` is ``none``, ``class``, ``text``, ``image`` or a ``+``-joined combination such as
    ``text+image``. Returns ``{"text": bool, "image": bool, "classes": list[str] | None, "cond_type": str}``.
    """
    if generator is None:
        return {"text": False, "image": False, "classes": None, "cond_type": "none"}
    cond_type = str(generator.config.get("cond_type", "none")).lower()
    parts = {p.strip() for p in cond_type.replace(",", "+").split("+")}
    classes = None
    if "class" in parts:
        names = generator.config.get("class_names")
        classes = list(names) if names else [str(i) for i in range(int(generator.config.get("num_classes", 1)))]
    return {"text": "text" in parts, "image": "image" in parts, "classes": classes, "cond_type": cond_type}


def example_meshes(directory: Path, seeds: Sequence[int] = (8, 3, 4, 16)) -> list[Path]:
    """A few procedural shapes written as OBJ files, offered as one-click examples."""
    from vat3d.data.procedural import make_shape

    paths = []
    for seed in seeds:
        try:
            shape = make_shape(seed)
        except Exception:  # noqa: BLE001 - examples are optional
            continue
        path = directory / f"{shape.family}-{seed}.obj"
        if not path.exists():
            shape.mesh.export(str(path))
        paths.append(path)
    return paths
