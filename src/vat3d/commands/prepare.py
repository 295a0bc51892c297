"""``vat3d prepare SOURCE OUT_DIR``: meshes -> sampled points, normals and occupancy labels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def prepare(
    source: str = typer.Argument(
        ...,
        help=(
            "A folder of meshes (recursive), a mesh file, procedural:N[:SEED], pybullet[:random|:named], or "
            "package:NAME for the meshes an installed package ships (example-robot-data, metaworld, "
            "gymnasium-robotics, airo-models, myosuite, myo-sim; package:all for every installed one). "
            "Robots reserved for evaluation are always left out. See docs/data.md."
        ),
    ),
    out_dir: Path = typer.Argument(..., help="Output folder (shapes/*.npz, metadata/*.jsonl); reruns resume."),
    num_surface: int = typer.Option(8192, help="Surface points (with normals) per shape."),
    num_volume: int = typer.Option(32768, help="Labelled points uniform in the [-1,1]^3 box per shape."),
    num_near: int = typer.Option(32768, help="Labelled near-surface points per shape, split over the sigmas."),
    near_sigma: list[float] = typer.Option(
        [0.005, 0.02], "--near-sigma", help="Noise sigma of near-surface points, box units (repeatable)."
    ),
    margin: float = typer.Option(0.05, help="Normalised longest side is 2*(1-margin)."),
    seed: int = typer.Option(0, help="Global seed; each shape's samples depend on (seed, id) only."),
    float32: bool = typer.Option(False, "--float32", help="Store coordinates as float32 instead of float16."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes."),
    shard: Optional[str] = typer.Option(
        None, help="I/N: prepare only shard I (0-based) of N, by hash of id. SLURM: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT."
    ),
    limit: Optional[int] = typer.Option(None, help="Only the first N shapes of the source (before sharding)."),
    overwrite: bool = typer.Option(False, help="Redo every shape, even finished ones."),
    retry_failed: bool = typer.Option(False, help="Redo shapes that failed in an earlier run."),
    strict: bool = typer.Option(False, help="Exit with status 1 when any shape failed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    augment: Optional[str] = typer.Option(
        None, help="Prepare augmented copies instead of the shapes themselves: rot[=so3|up], aniso[=LOW-HIGH], "
        "mirror[=P], parts[=N|LOW-HIGH] (unions with other shapes of the source), comma-separated."
    ),
    copies: int = typer.Option(1, help="Augmented copies per shape (with --augment)."),
) -> None:
    """Prepare a dataset: normalise each mesh into the [-1,1] box, sample surface points with
    normals, label volume and near-surface points inside/outside (fast winding number), and
    write one .npz per shape plus a metadata table (with each mesh's licence and package). Bad
    inputs are recorded as failed and the run goes on. Interrupted or sharded runs can be
    rerun: finished shapes are skipped."""
    from rich.console import Console

    from vat3d.commands._runs import ShapeProgress, report_run
    from vat3d.data.prepare import prepare_dataset
    from vat3d.data.sources import augmented_items, list_source

    console = Console(stderr=True)
    try:
        items = list_source(source)
        if augment is not None:
            items = augmented_items(items[:limit] if limit is not None else items, augment, copies, seed=seed)
    except (ValueError, RuntimeError) as err:
        raise typer.BadParameter(str(err), param_hint="SOURCE") from err

    bar = ShapeProgress("prepare", console, enabled=progress)

    try:
        with bar:
            summary = prepare_dataset(
                items,
                out_dir,
                num_surface=num_surface,
                num_volume=num_volume,
                num_near=num_near,
                near_sigmas=tuple(near_sigma),
                margin=margin,
                seed=seed,
                point_dtype="float32" if float32 else "float16",
                workers=workers,
                shard=shard,
                limit=None if augment is not None else limit,  # augmented: the limit applied to the source
                overwrite=overwrite,
                retry_failed=retry_failed,
                on_start=bar.on_start,
                on_result=bar.on_result,
            )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err

    report_run(console, summary, out_dir, strict=strict, failures_file="metadata.csv")


def register(app: typer.Typer) -> None:
    """Add ``prepare`` to the ``vat3d`` command line."""
    app.command("prepare")(prepare)
