"""The metadata table of a prepared dataset: one JSON-lines file per shard.

``OUT_DIR/metadata/shard-00003-of-00008.jsonl`` holds one JSON object per line, one line
per finished shape (done or failed), appended, flushed and fsync'ed as each shape finishes.
Only the process preparing a shard writes that shard's file, so n machines can fill one
folder. A rerun appends again; :func:`read_metadata` keeps the latest row of each id across
all files (by ``finished_at``), ignores a torn last line, and returns rows sorted by id.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_DIR = "metadata"

#: The columns of every row, in order. ``licence`` is the mesh's licence (SPDX-like:
#: "Apache-2.0" for procedural shapes, "Zlib" for pybullet_data, the package's or folder's
#: licence, "unknown" for a folder given without one); ``package`` and ``package_version``
#: name the distribution the mesh comes from ("" for folders).
COLUMNS: list[str] = [
    "id",
    "source",
    "path",
    "content_hash",
    "settings_hash",
    "file",
    "n_surface",
    "n_volume",
    "n_near",
    "n_vertices",
    "n_faces",
    "watertight",
    "inside_fraction",
    "near_inside_fraction",
    "status",
    "error",
    "caption",
    "family",
    "class",
    "licence",
    "package",
    "package_version",
    "augment",
    "seconds",
    "finished_at",
]

Row = dict[str, Any]
from vat3d.fileio import atomic_write_text


def shard_file_name(index: int, count: int) -> str:
    """``shard-IIIII-of-NNNNN.jsonl`` (index counts from 0)."""
    return f"shard-{index:05d}-of-{count:05d}.jsonl"


def metadata_files(out_dir: str | Path) -> list[Path]:
    """All metadata files of a prepared dataset, sorted."""
    folder = Path(out_dir) / METADATA_DIR
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def read_rows(path: str | Path) -> list[Row]:
    """The rows of one JSON-lines file, skipping blank or torn (unparsable) lines."""
    rows = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
    return rows


def latest_by_id(rows: Iterable[Row]) -> dict[str, Row]:
    """Keep the last-finished row of each id (ties: the later one in ``rows``)."""
    latest: dict[str, Row] = {}
    for row in rows:
        previous = latest.get(row["id"])
        if previous is None or float(row.get("finished_at") or 0.0) >= float(previous.get("finished_at") or 0.0):
            latest[row["id"]] = row
    return latest


def read_metadata(out_dir: str | Path, *, status: str | None = None) -> list[Row]:
    """All shards of a prepared dataset as one table: a list of row dicts sorted by id.

    Args:
        out_dir: the folder given to ``vat3d prepare``.
        status: keep only rows with this status ("done" or "failed").
    """
    rows: list[Row] = []
    for path in metadata_files(out_dir):
        rows.extend(read_rows(path))
    latest = latest_by_id(rows)
    table = [latest[key] for key in sorted(latest)]
    if status is not None:
        table = [row for row in table if row.get("status") == status]
    return table


def compact_file(path: str | Path, *, keep: Callable[[Row], bool] = lambda row: True) -> list[Row]:
    """Rewrite a metadata file atomically with the latest row per id (where ``keep``).

    Drops torn lines and superseded rows, so appends after a crash start on a clean line.
    Returns the kept rows.
    """
    path = Path(path)
    rows = [row for row in latest_by_id(read_rows(path)).values() if keep(row)]
    rows.sort(key=lambda row: row["id"])
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows))
    return rows


@dataclass
class RunSummary:
    """What a dataset job (``prepare_dataset``, ``tokenize_dataset``) did, shape by shape."""

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0  # of the skipped: failures recorded by an earlier run
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)

    @property
    def processed(self) -> int:
        return self.done + self.failed

    @property
    def shapes_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def any_failed(self) -> bool:
        return self.failed + self.skipped_failed > 0


class MetadataWriter:
    """Appends rows to one JSON-lines file, each flushed and fsync'ed before returning."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._handle = open(self.path, "a", encoding="utf-8")

    def append(self, row: Row) -> None:
        ordered = {key: row.get(key) for key in COLUMNS}
        ordered.update({key: value for key, value in row.items() if key not in ordered})
        self._handle.write(json.dumps(ordered) + "\n")
        self._handle.flush()
        if self._fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> MetadataWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_csv(rows: list[Row], path: str | Path, *, columns: list[str] = COLUMNS) -> None:
    """Write rows as a CSV table (atomically), columns in ``columns`` order."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in columns})
    atomic_write_text(Path(path), buffer.getvalue())
