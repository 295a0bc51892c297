"""Token data for the generator: prepared shapes -> multi-scale VAT tokens + captions + rendered views.

``vat3d tokenize MODEL DATA OUT`` (:func:`tokenize_dataset`) encodes every prepared shape of DATA (a
``vat3d prepare`` folder) with a trained tokenizer and writes, per shape, one ``.npz`` into OUT.
:class:`~vat3d.data.token_dataset.TokenDataset` reads them back for generator training.

Layout of ``OUT``::

    tokens.json                             the tokenizer's fingerprint, scale sizes, settings
    shapes/ab/<id>.npz                      one file per shape (ab = sha1(id)[:2])
    metadata/shard-00000-of-00001.jsonl     one row per finished shape, per shard (appended, fsync'ed)

Shape file (``TOKENS_FORMAT_VERSION`` 1; plain arrays, no pickles):

===============  =======  ========================================================================
key              dtype    content
===============  =======  ========================================================================
tokens           int16    (N,) all scales' token ids, concatenated (N = sum of scale_sizes)
scale_sizes      int32    (K,) tokens per scale
view_00 ...      uint8    (H, W, 3) one array per rendered view (so a loader reads just one)
elevations       float32  (V,) camera elevation of each view, degrees
azimuths         float32  (V,) camera azimuth of each view, degrees (random, seeded per shape)
caption          str      0-d; "" when unknown
family           str      0-d; the procedural family ("" for files)
class_name       str      0-d; the class label ("" when unknown)
meta             str      0-d JSON: id, source, tokenizer fingerprint, settings, prepared hashes
===============  =======  ========================================================================

Tokens come from the tokenizer's deterministic path (eval mode, the posterior mean) on a seeded
subset of ``num_points`` (the tokenizer's own ``num_points``) of the stored surface points. Views
are rendered with :func:`vat3d.renderers.render_views` from the source mesh (reloaded from
the metadata row: the procedural seed or the file path) normalised with the stored transform, so
they show exactly the shape the tokens encode. A shape whose mesh cannot be reloaded is recorded as
failed (its tokens are not written).

Guarantees, as for ``vat3d prepare``: atomic writes (temporary name + ``os.replace``), a metadata
row only after its file is in place, resumable and idempotent reruns (a shape is redone only when
the tokenizer, the settings or the prepared shape changed), sharding by hash of id. OUT belongs to
one tokenizer: tokenizing into a folder made by another one is refused (``overwrite`` starts over).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vat3d.data.ids import id_relpath, id_rng, id_shard, parse_shard
from vat3d.fileio import atomic_savez, atomic_write_text
from vat3d.data.metadata import METADATA_DIR, Row, RunSummary, compact_file, read_metadata, shard_file_name

TOKENS_FORMAT_VERSION = 1
INFO_NAME = "tokens.json"
SHAPES_DIR = "shapes"


class TokenizerMismatchError(ValueError):
    """Tokens made by one tokenizer used with another."""


@dataclass(frozen=True)
class TokenizeSettings:
    """Everything that changes a token file besides the tokenizer itself."""

    num_points: int = 2048
    num_views: int = 8
    image_size: int = 224
    elevations: tuple[float, ...] = (20.0, -10.0, 45.0)
    lighting: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "elevations", tuple(float(e) for e in self.elevations))
        if self.num_points < 1:
            raise ValueError("num_points must be >= 1")
        if self.num_views < 0:
            raise ValueError("num_views must be >= 0")
        if self.image_size < 8:
            raise ValueError("image_size must be >= 8")
        if self.num_views and not self.elevations:
            raise ValueError("give at least one elevation")
        if self.lighting not in ("fixed", "random"):
            raise ValueError(f"lighting must be 'fixed' or 'random', got {self.lighting!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["elevations"] = list(self.elevations)
        return data

    def hash(self, fingerprint: str) -> str:
        payload = json.dumps({"format": TOKENS_FORMAT_VERSION, "tokenizer": fingerprint, **self.to_dict()},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class TokenizeSummary(RunSummary):
    """What a :func:`tokenize_dataset` run did (times in seconds)."""

    tokenize_seconds: float = 0.0
    render_seconds: float = 0.0  # summed over workers
    views: int = 0

    @property
    def ms_per_view(self) -> float:
        return 1000.0 * self.render_seconds / self.views if self.views else 0.0


# --------------------------------------------------------------------------- small helpers


def token_relpath(item_id: str) -> str:
    return id_relpath(SHAPES_DIR, item_id)


class _RowWriter:
    """Appends JSON rows to one metadata file, each flushed and fsync'ed."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")

    def append(self, row: Row) -> None:
        self._handle.write(json.dumps(row) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def label_of(row: dict) -> str:
    """The class label used for class conditioning: the class, else the family, else "unknown"."""
    return str(row.get("class") or row.get("family") or "unknown")


# --------------------------------------------------------------------------- tokens.json


def read_token_info(root: str | os.PathLike) -> dict:
    """The ``tokens.json`` of a token folder (raises FileNotFoundError with a hint)."""
    path = Path(root) / INFO_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} a `vat3d tokenize` output folder?")
    return json.loads(path.read_text())


def check_token_fingerprint(root: str | os.PathLike, fingerprint: str) -> dict:
    """Raise :class:`TokenizerMismatchError` unless the tokens in ``root`` were made by ``fingerprint``."""
    info = read_token_info(root)
    if info.get("tokenizer_fingerprint") != fingerprint:
        raise TokenizerMismatchError(
            f"the tokens in {root} were made by tokenizer {info.get('tokenizer_fingerprint')}, not by tokenizer "
            f"{fingerprint}: tokenize the data again with this tokenizer (vat3d tokenize) or use the matching one")
    return info


def _write_info(out_dir: Path, tokenizer, settings: TokenizeSettings, model_ref: str | None, data_dir: Path,
                overwrite: bool) -> dict:
    fingerprint = tokenizer.fingerprint()
    path = out_dir / INFO_NAME
    here = str(data_dir.resolve())
    data_dirs = [here]
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text() or "{}")
        # every prepared folder tokenized into this one, in order (folders written before 2026-12-07 kept only "data")
        data_dirs = list(old.get("data_dirs") or ([old["data"]] if old.get("data") else []))
        data_dirs += [here] if here not in data_dirs else []
        if old.get("tokenizer_fingerprint") not in (None, fingerprint):
            raise TokenizerMismatchError(
                f"{out_dir} holds tokens of tokenizer {old['tokenizer_fingerprint']}, this is tokenizer {fingerprint}: "
                "choose another output folder (or pass --overwrite to start over)")
    info = {
        "format_version": TOKENS_FORMAT_VERSION,
        "tokenizer_fingerprint": fingerprint,
        "tokenizer": model_ref,
        "scale_sizes": [int(n) for n in tokenizer.scale_sizes],
        "codebook_size": int(tokenizer.codebook_size),
        "num_tokens": int(sum(tokenizer.scale_sizes)),
        "settings": settings.to_dict(),
        "settings_hash": settings.hash(fingerprint),
        "data": here,  # the folder of the last run
        "data_dirs": data_dirs,
    }
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    return info


# --------------------------------------------------------------------------- per-shape work


def _prepared_hash(row: dict) -> str:
    return f"{row.get('content_hash', '')}:{row.get('settings_hash', '')}"


def load_surface(data_dir: Path, row: dict, num_points: int, seed: int) -> dict[str, np.ndarray]:
    """A prepared shape's surface subset (seeded by ``(seed, id)``) and its transform."""
    with np.load(data_dir / row["file"], allow_pickle=False) as data:
        points = data["surface_points"].astype(np.float32)
        normals = data["surface_normals"].astype(np.float32)
        transform = data["transform"].astype(np.float64)
    total = len(points)
    rng = id_rng(seed, row["id"])
    pick = rng.permutation(total)[:num_points] if num_points <= total else rng.integers(0, total, num_points)
    return {"points": points[pick], "normals": normals[pick], "transform": transform}


def load_normalized_mesh(row: dict, transform_4: np.ndarray):
    """Reload the source mesh of a prepared row and normalise it with the stored transform."""
    import trimesh

    from vat3d.data.sources import SourceItem, load_item
    from vat3d.geometry.normalize import Transform

    source, path = str(row.get("source", "")), str(row.get("path", ""))
    if source == "procedural":
        if not path.startswith("procedural:seed="):
            raise ValueError(f"procedural row without a seed (path {path!r})")
        item = SourceItem(id=row["id"], source="procedural", seed=int(path.split("=", 1)[1]))
    else:
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"source mesh {path!r} of {row['id']} is not available for rendering")
        item = SourceItem(id=row["id"], source=source or "folder", path=path)
    mesh = load_item(item).mesh
    vertices = Transform.from_array(transform_4).apply(np.asarray(mesh.vertices, dtype=np.float64))
    return trimesh.Trimesh(vertices, np.asarray(mesh.faces), process=False)


_RenderTask = tuple[dict, np.ndarray, TokenizeSettings]


def render_task(task: _RenderTask) -> dict[str, Any]:
    """Render one shape's views; never raises (errors are returned)."""
    row, transform_4, settings = task
    start = time.perf_counter()
    try:
        from vat3d.renderers import render_views

        mesh = load_normalized_mesh(row, transform_4)
        view_seed = int(id_rng(settings.seed, row["id"], 1).integers(0, 2**31 - 1))
        images, cameras = render_views(mesh, settings.num_views, size=settings.image_size,
                                       elevations=settings.elevations, seed=view_seed, lighting=settings.lighting)
        return {"id": row["id"], "images": images, "elevations": [c["elevation_deg"] for c in cameras],
                "azimuths": [c["azimuth_deg"] for c in cameras], "error": "", "seconds": time.perf_counter() - start}
    except Exception as err:  # noqa: BLE001 - one broken shape must not stop a run
        return {"id": row["id"], "images": None, "error": f"render: {type(err).__name__}: {err}",
                "seconds": time.perf_counter() - start}


def _init_worker() -> None:
    from vat3d.data.prepare import limit_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(1)


def _shape_arrays(row: dict, tokens_N: np.ndarray, scale_sizes: Sequence[int], render: dict | None,
                  meta: dict) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "tokens": tokens_N.astype(np.int16),
        "scale_sizes": np.asarray(scale_sizes, dtype=np.int32),
        "caption": np.array(str(row.get("caption") or "")),
        "family": np.array(str(row.get("family") or "")),
        "class_name": np.array(str(row.get("class") or "")),
        "meta": np.array(json.dumps(meta)),
    }
    if render is not None:
        for k, image in enumerate(render["images"]):
            arrays[f"view_{k:02d}"] = np.ascontiguousarray(image, dtype=np.uint8)
        arrays["elevations"] = np.asarray(render["elevations"], dtype=np.float32)
        arrays["azimuths"] = np.asarray(render["azimuths"], dtype=np.float32)
    return arrays


def load_token_file(path: str | os.PathLike, *, views: Sequence[int] | None = ()) -> dict[str, Any]:
    """Read one token file: ``tokens`` (N,) int64, ``scale_sizes``, ``caption``, ``family``,
    ``class_name``, ``meta`` (dict), ``num_views`` and the views listed in ``views`` as
    ``images`` (list of (H, W, 3) uint8; ``views=None``: all of them)."""
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        num_views = sum(1 for name in names if name.startswith("view_"))
        out: dict[str, Any] = {
            "tokens": data["tokens"].astype(np.int64),
            "scale_sizes": [int(n) for n in data["scale_sizes"]],
            "caption": str(data["caption"]),
            "family": str(data["family"]),
            "class_name": str(data["class_name"]),
            "meta": json.loads(str(data["meta"])),
            "num_views": num_views,
        }
        wanted = range(num_views) if views is None else views
        out["images"] = [data[f"view_{int(k):02d}"] for k in wanted]
        if "azimuths" in names:
            out["azimuths"], out["elevations"] = data["azimuths"], data["elevations"]
    return out


# --------------------------------------------------------------------------- the run


def _batches(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def tokenize_dataset(
    tokenizer,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    num_views: int = 8,
    image_size: int = 224,
    elevations: Sequence[float] = (20.0, -10.0, 45.0),
    lighting: str = "random",
    num_points: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    workers: int = 1,
    shard: tuple[int, int] | str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    model_ref: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Row, bool], None] | None = None,
) -> TokenizeSummary:
    """Tokenize (and render) every prepared shape of ``data_dir`` into ``out_dir``; resumable.

    Args:
        tokenizer: a :class:`~vat3d.models.tokenizer.VATokenizer` (used in eval mode, on ``device``).
        data_dir: a ``vat3d prepare`` output folder (its "done" rows are tokenized).
        out_dir: output folder (created); may already hold a partial or sharded run of the same tokenizer.
        num_views: rendered views per shape (0: none; image conditioning then cannot be trained).
        image_size: view side in pixels.
        elevations: view k uses ``elevations[k % len(elevations)]``; azimuths are random, seeded per shape.
        lighting: ``"random"`` (each view's light direction, ambient level and albedo brightness drawn,
            seeded per shape; :func:`vat3d.renderers.raycast.random_lighting`) or ``"fixed"``.
        num_points: surface points per shape (default: the tokenizer's ``num_points``).
        seed: seed of the point subsets and the azimuths (with the id).
        batch_size: shapes per tokenizer forward pass.
        workers: render processes (spawn); 1 renders in this process.
        shard: ``(index, count)`` or ``"index/count"``: only ids with ``hash(id) % count == index``.
        limit: only the first ``limit`` shapes (sorted by id, before sharding).
        overwrite: redo every shape (and accept a folder made by another tokenizer).
        device: torch device of the tokenizer.
        model_ref: how the tokenizer was named (recorded in ``tokens.json`` for training).
        on_start: called with the number of selected shapes.
        on_result: called with ``(row, skipped)`` per shape.
    """
    import torch

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    rows = read_metadata(data_dir, status="done")
    if not rows:
        raise ValueError(f"no prepared shapes in {data_dir}: run `vat3d prepare` first")
    settings = TokenizeSettings(num_points=int(num_points or tokenizer.num_points), num_views=num_views,
                                image_size=image_size, elevations=tuple(elevations), lighting=lighting, seed=seed)
    shard_index, shard_count = parse_shard(shard)
    rows = rows[:limit] if limit is not None else rows
    rows = [row for row in rows if shard_count == 1 or id_shard(row["id"], shard_count) == shard_index]

    out_dir.mkdir(parents=True, exist_ok=True)
    info = _write_info(out_dir, tokenizer, settings, model_ref, data_dir, overwrite)
    settings_hash, fingerprint = info["settings_hash"], info["tokenizer_fingerprint"]
    own_file = out_dir / METADATA_DIR / shard_file_name(shard_index, shard_count)
    if own_file.exists():
        compact_file(own_file, keep=lambda r: r.get("status") != "done" or (out_dir / r.get("file", "")).is_file())
    previous = {r["id"]: r for r in read_metadata(out_dir)}

    def finished(row: dict) -> bool:
        old = previous.get(row["id"])
        return (not overwrite and old is not None and old.get("status") == "done"
                and old.get("settings_hash") == settings_hash and old.get("prepared_hash") == _prepared_hash(row)
                and (out_dir / str(old.get("file", ""))).is_file())

    summary = TokenizeSummary(total=len(rows))
    if on_start is not None:
        on_start(len(rows))
    todo = []
    for row in rows:
        if finished(row):
            summary.skipped += 1
            if on_result is not None:
                on_result(previous[row["id"]], True)
        else:
            todo.append(row)

    tokenizer = tokenizer.to(device).eval()
    scale_sizes = [int(n) for n in tokenizer.scale_sizes]
    bounds = np.cumsum([0, *scale_sizes])
    if tokenizer.codebook_size > np.iinfo(np.int16).max + 1:
        raise ValueError(f"codebook of {tokenizer.codebook_size} codes does not fit int16 tokens")
    pool = None
    if workers > 1 and num_views > 0 and len(todo) > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(todo)), initializer=_init_worker)
    start = time.perf_counter()
    writer = _RowWriter(own_file)

    def record(row: Row) -> None:
        writer.append(row)
        if row["status"] == "done":
            summary.done += 1
        else:
            summary.failed += 1
            summary.failures.append((row["id"], row["error"]))
        if on_result is not None:
            on_result(row, False)

    try:
        for batch in _batches(todo, max(1, batch_size)):
            t0 = time.perf_counter()
            loaded, errors = {}, {}
            for row in batch:
                try:
                    loaded[row["id"]] = load_surface(data_dir, row, settings.num_points, seed)
                except Exception as err:  # noqa: BLE001
                    errors[row["id"]] = f"load: {type(err).__name__}: {err}"
            tasks = [(row, loaded[row["id"]]["transform"], settings) for row in batch if row["id"] in loaded]
            pending = pool.map_async(render_task, tasks, chunksize=1) if pool is not None and num_views else None
            ids = [row["id"] for row in batch if row["id"] in loaded]
            tokens_BN = np.zeros((0, int(bounds[-1])), dtype=np.int64)
            if ids:
                points = torch.from_numpy(np.stack([loaded[i]["points"] for i in ids])).to(device)
                normals = torch.from_numpy(np.stack([loaded[i]["normals"] for i in ids])).to(device)
                with torch.no_grad():
                    tokens_BN = torch.cat(tokenizer.encode(points, normals), dim=1).cpu().numpy()
            summary.tokenize_seconds += time.perf_counter() - t0
            if not num_views:
                renders = {task[0]["id"]: None for task in tasks}
            else:
                results = pending.get() if pending is not None else [render_task(task) for task in tasks]
                renders = {r["id"]: r for r in results}
                for r in results:
                    summary.render_seconds += r["seconds"]
                    summary.views += len(r["images"] or [])
            for row in batch:
                item_id = row["id"]
                out_row: Row = {
                    "id": item_id, "status": "failed", "file": "", "error": errors.get(item_id, ""),
                    "settings_hash": settings_hash, "prepared_hash": _prepared_hash(row),
                    "tokenizer_fingerprint": fingerprint, "num_tokens": int(bounds[-1]), "num_views": 0,
                    "source": row.get("source", ""), "caption": row.get("caption") or "",
                    "family": row.get("family") or "", "class": row.get("class") or "",
                    "finished_at": 0.0,
                }
                render = renders.get(item_id)
                if item_id in loaded and render is not None and render["error"]:
                    out_row["error"] = render["error"]
                elif item_id in loaded:
                    try:
                        tokens_N = tokens_BN[ids.index(item_id)]
                        meta = {"format_version": TOKENS_FORMAT_VERSION, "id": item_id, "source": out_row["source"],
                                "tokenizer_fingerprint": fingerprint, "settings": settings.to_dict(),
                                "settings_hash": settings_hash, "prepared_hash": out_row["prepared_hash"]}
                        relpath = token_relpath(item_id)
                        atomic_savez(out_dir / relpath, _shape_arrays(row, tokens_N, scale_sizes, render, meta))
                        out_row.update(status="done", file=relpath, num_views=num_views if render else 0)
                    except Exception as err:  # noqa: BLE001
                        last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
                        where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
                        out_row["error"] = f"write: {type(err).__name__}: {err}{where}"
                if out_row["status"] == "failed":
                    (out_dir / token_relpath(item_id)).unlink(missing_ok=True)
                out_row["finished_at"] = time.time()
                record(out_row)
        if pool is not None:
            pool.close()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        writer.close()
        summary.seconds = time.perf_counter() - start
    return summary
