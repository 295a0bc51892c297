"""Dataset preparation: meshes -> one compressed ``.npz`` per shape + a metadata table.

Layout of ``OUT_DIR``::

    shapes/ab/<id>.npz                      one file per shape (ab = sha1(id)[:2])
    metadata/shard-00000-of-00001.jsonl     one row per finished shape, per shard
    metadata.csv                            a snapshot of the whole table (convenience)
    settings.json                           the settings of the latest run

Guarantees: every file is written to a temporary name and moved into place with
``os.replace`` (a crash never leaves a half-written shape or table); a metadata row is
appended and fsync'ed only after its shape file is in place; a rerun skips shapes whose
latest row has the same content hash and settings hash (and whose file exists); inputs are
only read. Each shape's random numbers come from ``(seed, id)``, so results do not depend on
order, worker count, sharding or interruptions.

Shape file format (``FORMAT_VERSION`` 1; all arrays, no pickles):

=================  ============  ====================================================
key                dtype         content
=================  ============  ====================================================
surface_points     float16       (Ns, 3) area-uniform surface samples, box units
surface_normals    float16       (Ns, 3) unit face normals at those samples
volume_points      float16       (Nv, 3) uniform in [-1, 1]^3
volume_labels      uint8         ceil(Nv / 8) bytes, ``np.packbits`` of inside flags
near_points        float16       (Nn, 3) surface samples + N(0, sigma^2), grouped by sigma
near_labels        uint8         ceil(Nn / 8) bytes, packed inside flags
near_sigmas        float32       (S,) the sigmas, box units
near_counts        int64         (S,) points per sigma (sum = Nn)
transform          float64       (4,) centre xyz, scale: box = (original - centre) * scale
meta               str (0-d)     JSON: id, source, caption, family, class, licence, package,
                                 hashes, settings
=================  ============  ====================================================

Labels are computed on the float16-rounded coordinates, so they are exact for the stored
points (float16 rounding moves a point by up to 2.4e-4 box units, which would otherwise
mislabel some near points at sigma 0.005).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import time
import traceback
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vat3d.data.ids import id_relpath, id_rng, id_shard, parse_shard
from vat3d.fileio import atomic_savez
from vat3d.data.metadata import (
    METADATA_DIR,
    MetadataWriter,
    Row,
    RunSummary,
    compact_file,
    read_metadata,
    shard_file_name,
    write_csv,
)
from vat3d.data.sources import SourceItem, content_hash, list_source, load_item

FORMAT_VERSION = 1
SHAPES_DIR = "shapes"


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that changes a shape file; its hash decides whether a rerun redoes a shape."""

    num_surface: int = 8192
    num_volume: int = 32768
    num_near: int = 32768
    near_sigmas: tuple[float, ...] = (0.005, 0.02)
    margin: float = 0.05
    seed: int = 0
    point_dtype: str = "float16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "near_sigmas", tuple(float(s) for s in self.near_sigmas))
        for name in ("num_surface", "num_volume", "num_near"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError("margin must be in [0, 1)")
        if self.point_dtype not in ("float16", "float32"):
            raise ValueError("point_dtype must be float16 or float32")
        if not self.near_sigmas or min(self.near_sigmas) <= 0:
            raise ValueError("near_sigmas must be positive")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["near_sigmas"] = list(self.near_sigmas)
        return data

    def hash(self) -> str:
        payload = json.dumps({"format": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class PrepareSummary(RunSummary):
    """What a :func:`prepare_dataset` run did (``failures``: new and earlier ones)."""


# --------------------------------------------------------------------------- paths, files


def shard_of(item_id: str, count: int) -> int:
    """The shard (0..count-1) an id belongs to: a hash of the id, independent of order."""
    return id_shard(item_id, count)


def shape_relpath(item_id: str) -> str:
    """Path of a shape file relative to the output folder."""
    return id_relpath(SHAPES_DIR, item_id)


def load_prepared(path: str | Path, *, decode: bool = True) -> dict[str, Any]:
    """Read one prepared shape file.

    With ``decode`` (default): points and normals as float32, labels as bool arrays of the
    right length, ``transform`` (4,) float64, ``near_sigmas``, ``near_counts`` and ``meta``
    (a dict). Without: the raw stored arrays (packed labels, ``meta`` as a JSON string).
    """
    with np.load(path, allow_pickle=False) as data:
        raw = {key: data[key] for key in data.files}
    if not decode:
        return raw
    meta = json.loads(str(raw["meta"]))
    out: dict[str, Any] = {
        "surface_points": raw["surface_points"].astype(np.float32),
        "surface_normals": raw["surface_normals"].astype(np.float32),
        "volume_points": raw["volume_points"].astype(np.float32),
        "volume_labels": np.unpackbits(raw["volume_labels"], count=len(raw["volume_points"])).astype(bool),
        "near_points": raw["near_points"].astype(np.float32),
        "near_labels": np.unpackbits(raw["near_labels"], count=len(raw["near_points"])).astype(bool),
        "near_sigmas": raw["near_sigmas"],
        "near_counts": raw["near_counts"],
        "transform": raw["transform"].astype(np.float64),
        "meta": meta,
    }
    return out


# --------------------------------------------------------------------------- one shape


def _shape_rng(settings: PrepareSettings, item_id: str) -> np.random.Generator:
    return id_rng(settings.seed, item_id)


def _base_row(item: SourceItem, settings: PrepareSettings) -> Row:
    return {
        "id": item.id,
        "source": item.source,
        "path": item.path or (f"procedural:seed={item.seed}" if item.source == "procedural" else ""),
        "content_hash": "",
        "settings_hash": settings.hash(),
        "file": "",
        "n_surface": 0,
        "n_volume": 0,
        "n_near": 0,
        "n_vertices": 0,
        "n_faces": 0,
        "watertight": None,
        "inside_fraction": None,
        "near_inside_fraction": None,
        "status": "failed",
        "error": "",
        "caption": item.caption,
        "family": item.family,
        "class": item.class_name,
        "licence": item.licence,
        "package": item.package,
        "package_version": item.package_version,
        "augment": item.augment,
        "seconds": 0.0,
        "finished_at": 0.0,
    }


def prepare_shape(
    item: SourceItem,
    settings: PrepareSettings,
    out_dir: str | Path,
    *,
    skip_if_hash: str | None = None,
) -> tuple[Row, bool]:
    """Prepare one shape and write its file; never raises for bad input.

    Args:
        item: what to prepare.
        settings: sample counts, margin, seed, ...
        out_dir: the dataset folder.
        skip_if_hash: the content hash of an earlier finished run with the same settings;
            when the input still hashes to it, nothing is recomputed.

    Returns:
        ``(row, skipped)``: the metadata row (status "done" or "failed" with ``error``) and
        whether the shape was skipped (then ``row`` is only partially filled).
    """
    from vat3d.geometry.io import MeshError
    from vat3d.geometry.normalize import normalize_mesh
    from vat3d.geometry.occupancy import sample_occupancy
    from vat3d.geometry.points import sample_surface

    start = time.perf_counter()
    out_dir = Path(out_dir)
    row = _base_row(item, settings)
    relpath = shape_relpath(item.id)
    target = out_dir / relpath
    try:
        row["content_hash"] = content_hash(item)
        if skip_if_hash is not None and row["content_hash"] == skip_if_hash:
            return row, True
        loaded = load_item(item)
        mesh = loaded.mesh
        row.update(
            caption=loaded.caption,
            family=loaded.family,
            **{"class": loaded.class_name},
            n_vertices=int(len(mesh.vertices)),
            n_faces=int(len(mesh.faces)),
            watertight=bool(mesh.is_watertight),
        )
        normalized, transform = normalize_mesh(mesh, margin=settings.margin)
        rng = _shape_rng(settings, item.id)
        point_dtype = np.dtype(settings.point_dtype)
        surface_S3, normals_S3 = sample_surface(normalized, settings.num_surface, seed=rng)
        occupancy = sample_occupancy(
            normalized,
            num_volume=settings.num_volume,
            num_near=settings.num_near,
            near_sigmas=settings.near_sigmas,
            seed=rng,
            point_dtype=point_dtype,
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "id": item.id,
            "source": item.source,
            "path": row["path"],
            "caption": row["caption"],
            "family": row["family"],
            "class": row["class"],
            "licence": row["licence"],
            "package": row["package"],
            "package_version": row["package_version"],
            "augment": item.augment,
            "augment_seed": item.augment_seed,
            "parts": [part.id for part in item.parts],
            "content_hash": row["content_hash"],
            "settings_hash": row["settings_hash"],
            "settings": settings.to_dict(),
            "watertight": row["watertight"],
            "inside_fraction": occupancy.inside_fraction,
            "winding_flipped": occupancy.flipped,
            "transform": transform.to_dict(),
        }
        arrays = {
            "surface_points": surface_S3.astype(point_dtype),
            "surface_normals": normals_S3.astype(point_dtype),
            "volume_points": occupancy.volume_points,
            "volume_labels": np.packbits(occupancy.volume_labels),
            "near_points": occupancy.near_points,
            "near_labels": np.packbits(occupancy.near_labels),
            "near_sigmas": occupancy.near_sigmas,
            "near_counts": occupancy.near_counts,
            "transform": transform.to_array(),
            "meta": np.array(json.dumps(meta)),
        }
        atomic_savez(target, arrays)
        row.update(
            status="done",
            file=relpath,
            n_surface=settings.num_surface,
            n_volume=settings.num_volume,
            n_near=settings.num_near,
            inside_fraction=round(occupancy.inside_fraction, 6),
            near_inside_fraction=round(float(occupancy.near_labels.mean()), 6),
        )
    except MeshError as err:
        row.update(status="failed", error=str(err))
    except Exception as err:  # noqa: BLE001 - one broken shape must not stop a run
        last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        where = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
        row.update(status="failed", error=f"internal error: {type(err).__name__}: {err}{where}")
    if row["status"] == "failed":
        target.unlink(missing_ok=True)  # an output of an earlier run for this id
    row["seconds"] = round(time.perf_counter() - start, 4)
    row["finished_at"] = time.time()
    return row, False


# --------------------------------------------------------------------------- workers

_Task = tuple[SourceItem, PrepareSettings, str, "str | None"]


def _init_worker(threads_per_worker: int) -> None:
    """Pool initializer: leave Ctrl-C to the parent, pin native thread pools."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(threads_per_worker)
    os.environ["IGL_NUM_THREADS"] = str(threads_per_worker)  # libigl reads it when it runs


def limit_threads(threads: int) -> None:
    """Limit the native thread pools of this process (BLAS, OpenMP) and torch's to ``threads``.

    Through threadpoolctl, because a spawned worker has imported numpy (unpickling its task imports
    this module) before its initializer runs: the pools already exist and no longer read
    ``OMP_NUM_THREADS`` & co. The variables are set too, for processes this one starts.
    """
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _run_task(task: _Task) -> tuple[Row, bool]:
    item, settings, out_dir, skip_if_hash = task
    return prepare_shape(item, settings, out_dir, skip_if_hash=skip_if_hash)


# --------------------------------------------------------------------------- a dataset


def select_items(
    items: Sequence[SourceItem], *, limit: int | None = None, shard: tuple[int, int] | str | None = None
) -> list[SourceItem]:
    """The first ``limit`` items, then those of shard ``index/count`` (by hash of id)."""
    index, count = parse_shard(shard)
    chosen = list(items)[:limit] if limit is not None else list(items)
    return [item for item in chosen if count == 1 or shard_of(item.id, count) == index]


def _remove_stale_temporaries(out_dir: Path, ids: set[str]) -> None:
    shapes = out_dir / SHAPES_DIR
    if not shapes.is_dir():
        return
    for folder in shapes.iterdir():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            name = entry.name
            if name.startswith(".") and name.endswith(".tmp") and ".npz." in name:
                if name[1:].split(".npz.", 1)[0] in ids:
                    Path(entry.path).unlink(missing_ok=True)


def prepare_dataset(
    source: str | Sequence[SourceItem],
    out_dir: str | Path,
    *,
    num_surface: int = 8192,
    num_volume: int = 32768,
    num_near: int = 32768,
    near_sigmas: Sequence[float] = (0.005, 0.02),
    margin: float = 0.05,
    seed: int = 0,
    point_dtype: str = "float16",
    workers: int = 1,
    shard: tuple[int, int] | str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    threads_per_worker: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Row, bool], None] | None = None,
) -> PrepareSummary:
    """Prepare every shape of ``source`` (of one shard) into ``out_dir``; resumable.

    Args:
        source: a source string (see :func:`vat3d.data.sources.list_source`) or items.
        out_dir: output folder (created); may already hold a partial or sharded dataset.
        num_surface, num_volume, num_near: samples per shape.
        near_sigmas: Gaussian sigmas (box units) of the near-surface points, split evenly.
        margin: the normalised shape's longest side is ``2 * (1 - margin)``.
        seed: global seed; each shape's random stream is derived from ``(seed, id)``.
        point_dtype: "float16" (default) or "float32" for stored coordinates.
        workers: processes (spawn); 1 runs in this process.
        shard: ``(index, count)`` or ``"index/count"``: only ids with
            ``hash(id) % count == index``.
        limit: only the first ``limit`` items of the source (before sharding).
        overwrite: redo every shape even when a finished one matches.
        retry_failed: redo shapes whose latest row is a failure with the same inputs.
        threads_per_worker: native threads (libigl) per worker process when ``workers > 1``.
        on_start: called with the number of selected items before work starts.
        on_result: called with ``(row, skipped)`` as each shape finishes.

    Returns:
        A :class:`PrepareSummary`. ``KeyboardInterrupt`` stops the workers and returns a
        summary with ``interrupted=True``; everything finished so far is kept.
    """
    settings = PrepareSettings(
        num_surface=num_surface,
        num_volume=num_volume,
        num_near=num_near,
        near_sigmas=tuple(near_sigmas),
        margin=margin,
        seed=seed,
        point_dtype=point_dtype,
    )
    shard_index, shard_count = parse_shard(shard)
    all_items = list_source(source) if isinstance(source, str) else list(source)
    items = select_items(all_items, limit=limit, shard=(shard_index, shard_count))
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("source items have duplicate ids")

    out_dir = Path(out_dir)
    (out_dir / SHAPES_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / METADATA_DIR).mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir, set(ids))
    settings_file = out_dir / "settings.json"
    if not settings_file.exists() or json.loads(settings_file.read_text() or "{}").get("settings") != settings.to_dict():
        from vat3d.fileio import atomic_write_text

        payload = {"format_version": FORMAT_VERSION, "settings_hash": settings.hash(), "settings": settings.to_dict()}
        atomic_write_text(settings_file, json.dumps(payload, indent=2) + "\n")

    # Rebuild a consistent own metadata file: latest row per id, done rows need their file.
    own_file = out_dir / METADATA_DIR / shard_file_name(shard_index, shard_count)
    if own_file.exists():
        compact_file(own_file, keep=lambda row: row.get("status") != "done" or (out_dir / row.get("file", "")).is_file())
    previous = {row["id"]: row for row in read_metadata(out_dir)}

    def finished_hash(item: SourceItem) -> str | None:
        row = previous.get(item.id)
        if overwrite or row is None or row.get("settings_hash") != settings.hash():
            return None
        if row.get("status") == "done" and (out_dir / str(row.get("file", ""))).is_file():
            return str(row.get("content_hash"))
        if row.get("status") == "failed" and not retry_failed and row.get("content_hash"):
            return str(row.get("content_hash"))
        return None

    tasks: list[_Task] = [(item, settings, str(out_dir), finished_hash(item)) for item in items]
    summary = PrepareSummary(total=len(tasks))
    if on_start is not None:
        on_start(len(tasks))
    start = time.perf_counter()

    def record(row: Row, skipped: bool, writer: MetadataWriter) -> None:
        if skipped:
            summary.skipped += 1
            earlier = previous[row["id"]]
            if earlier.get("status") == "failed":
                summary.skipped_failed += 1
                summary.failures.append((row["id"], str(earlier.get("error", ""))))
        else:
            writer.append(row)
            if row["status"] == "done":
                summary.done += 1
            else:
                summary.failed += 1
                summary.failures.append((row["id"], str(row["error"])))
        if on_result is not None:
            on_result(row if not skipped else {**previous[row["id"]], **{"skipped": True}}, skipped)

    results = _execute(tasks, workers=workers, threads_per_worker=threads_per_worker)
    with MetadataWriter(own_file) as writer:
        try:
            for row, skipped in results:
                record(row, skipped, writer)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            results.close()  # stops the pool at once if we leave early
    summary.seconds = time.perf_counter() - start
    try:
        write_csv(read_metadata(out_dir), out_dir / "metadata.csv")
    except OSError:
        pass
    return summary


def _execute(tasks: Sequence[_Task], *, workers: int, threads_per_worker: int) -> Generator[tuple[Row, bool], None, None]:
    """Run tasks in this process (workers <= 1) or in a spawn pool; yields as they finish."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pool = context.Pool(processes=min(workers, len(tasks)), initializer=_init_worker, initargs=(threads_per_worker,))
    try:
        yield from pool.imap_unordered(_run_task, tasks, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
