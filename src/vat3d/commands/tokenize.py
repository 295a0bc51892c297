"""``vat3d tokenize MODEL DATA OUT``: prepared shapes -> multi-scale tokens + captions + rendered views."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def tokenize(
    model: str = typer.Argument(..., help="Tokenizer folder (config.json + model.safetensors) or 'default' (the shipped one)."),
    data: Path = typer.Argument(..., help="Prepared data folder (vat3d prepare)."),
    out_dir: Path = typer.Argument(..., help="Output folder (tokens.json, shapes/*.npz, metadata/*.jsonl); reruns resume."),
    num_views: int = typer.Option(8, "--views", "-k", help="Rendered views per shape (0: none, no image conditioning)."),
    image_size: int = typer.Option(224, help="View size in pixels."),
    elevation: list[float] = typer.Option([20.0, -10.0, 45.0], "--elevation", help="Camera elevation in degrees (repeatable: view k uses the k-th, cyclically)."),
    lighting: str = typer.Option("random", help="'random': each view's light direction, ambient level and brightness vary (seeded); 'fixed': one set-up."),
    num_points: Optional[int] = typer.Option(None, help="Surface points per shape (default: the tokenizer's num_points)."),
    seed: int = typer.Option(0, help="Seed of the point subsets and view azimuths (with each id)."),
    batch_size: int = typer.Option(32, help="Shapes per tokenizer forward pass."),
    workers: int = typer.Option(1, "--workers", "-j", help="Render processes (1: render in this process)."),
    shard: Optional[str] = typer.Option(None, help="I/N: only shard I (0-based) of N, by hash of id."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prepared shapes (by id, before sharding)."),
    overwrite: bool = typer.Option(False, help="Redo every shape; also accepts an OUT made by another tokenizer."),
    device: str = typer.Option("auto", help="Tokenizer device: auto, cpu, cuda, cuda:1, ..."),
    strict: bool = typer.Option(False, help="Exit with status 1 when any shape failed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Encode every prepared shape to VAT tokens (eval mode: the posterior mean of a seeded subset of
    its stored surface points) and write, per shape, an .npz with the tokens (int16, all scales),
    scale sizes, caption, family, class and K shaded views of the normalised source mesh. The
    tokenizer's fingerprint goes to OUT/tokens.json; generator training refuses tokens of another
    tokenizer. Interrupted or sharded runs can be rerun: finished shapes are skipped."""
    import torch
    from rich.console import Console

    from vat3d.commands._runs import ShapeProgress, report_run

    from vat3d.data.tokens import TokenizerMismatchError, tokenize_dataset
    from vat3d.pretrained import load_tokenizer, resolve

    console = Console(stderr=True)
    if not data.is_dir():
        raise typer.BadParameter(f"{data} is not a folder: run `vat3d prepare` first", param_hint="DATA")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        tokenizer = load_tokenizer(model, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="MODEL") from err
    resolved = resolve(model, "tokenizer")
    model_ref = str(Path(resolved).resolve()) if Path(str(resolved)).exists() else str(resolved)

    bar = ShapeProgress("tokenize", console, enabled=progress)

    try:
        with bar:
            summary = tokenize_dataset(
                tokenizer, data, out_dir, num_views=num_views, image_size=image_size, elevations=tuple(elevation), lighting=lighting,
                num_points=num_points, seed=seed, batch_size=batch_size, workers=workers, shard=shard, limit=limit,
                overwrite=overwrite, device=device, model_ref=model_ref, on_start=bar.on_start, on_result=bar.on_result)
    except TokenizerMismatchError as err:
        raise typer.BadParameter(str(err), param_hint="OUT_DIR") from err
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err

    processed = summary.done + summary.failed
    timing = ""
    if processed:
        timing = f" | tokenizer {1000 * summary.tokenize_seconds / processed:.1f} ms/shape"
    if summary.views:
        timing += f" | render {summary.ms_per_view:.1f} ms/view"
    report_run(console, summary, out_dir, strict=strict, timing=timing, failures_file="metadata")


def register(app: typer.Typer) -> None:
    """Add ``tokenize`` to the ``vat3d`` command line."""
    app.command("tokenize")(tokenize)
