"""``vat3d eval-generation``: MMD / COV / 1-NNA (Chamfer), family match and speed on held-out shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vat3d.commands.generate import MEND_HELP, mend_text, parse_mend
from vat3d.models.sampling_defaults import CANDIDATES, CFG_SCALE, CFG_SCHEDULE, MEND_STEPS, TOP_P


def eval_generation(
    model: str = typer.Argument("default", help="Generator folder or 'default'."),
    tokenizer: str = typer.Option("default", "--tokenizer", "-t", help="Tokenizer folder or 'default'."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset folder (vat3d prepare); its val split is held out."),
    out: Path = typer.Option(Path("eval_generation"), "--output", "-o", help="Folder for eval_generation.json / .md."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", help="Held-out shapes to use (default: all)."),
    samples_per_condition: int = typer.Option(1, "--samples-per-condition", min=1, help="Shapes generated per held-out condition."),
    n_points: int = typer.Option(2048, "--n-points", help="Points per shape (PointFlow: 2048)."),
    resolution: int = typer.Option(128, help="Marching-cubes resolution of generated shapes."),
    split: str = typer.Option("val", help="Split used as reference: val, train or all."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="Share of ids in the val split (as in training)."),
    source: Optional[list[str]] = typer.Option(
        None, "--source", help="Only held-out shapes of this source (repeatable), e.g. procedural or pybullet."),
    reference: str = typer.Option("points", help="'points' (stored surface samples) or 'mesh' (rebuild procedural shapes)."),
    normalize: str = typer.Option("box", help="Per-cloud normalisation of both sets: box, sphere or none."),
    seed: int = typer.Option(0, help="Random seed."),
    batch_size: int = typer.Option(8, "--batch-size", help="Shapes sampled per generator call."),
    cfg: float = typer.Option(CFG_SCALE, "--cfg", help="Classifier-free guidance scale."),
    cfg_schedule: str = typer.Option(CFG_SCHEDULE, "--cfg-schedule", help="linear or constant."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    top_k: int = typer.Option(0, "--top-k", help="Top-k filtering (0 = off)."),
    top_p: float = typer.Option(TOP_P, "--top-p", help="Top-p filtering (1 = off)."),
    candidates: int = typer.Option(CANDIDATES, "--candidates", min=1,
                                   help="Best of N per shape: draw N, keep a whole one needing the least mending, "
                                        "else the least torn (1: plain sampling)."),
    mend: str = typer.Option(mend_text(MEND_STEPS), "--mend", help=MEND_HELP),
    num_scales: Optional[int] = typer.Option(None, "--num-scales", help="Generate only the first k scales."),
    iso: float = typer.Option(0.0, "--iso", help="Occupancy logit meshed as the surface (below 0: fatter shapes)."),
    min_piece: float = typer.Option(0.0, "--min-piece", min=0.0, max=0.99,
                                    help="Drop generated pieces under this share of the surface area (0: keep all)."),
    device: str = typer.Option("cpu", help="Torch device."),
    condition: str = typer.Option(
        "auto", "--condition", help="Prompts for a text+image generator: auto (= text), text, image (a rendered "
        "view of each held-out shape) or text+image."),
    sheet: bool = typer.Option(True, "--sheet/--no-sheet", help="Save eval_generation.png: held-out shapes beside their samples."),
    sheet_shapes: int = typer.Option(12, "--sheet-shapes", min=1, help="Rows of the sample sheet."),
    reference_fragmentation: bool = typer.Option(
        True, "--reference-fragmentation/--no-reference-fragmentation",
        help="Also mesh the held-out shapes (rebuilt and reconstructed) for the fragmentation comparison."),
) -> None:
    """Evaluate a generator on the held-out shapes of a prepared dataset; writes JSON and Markdown."""
    if reference not in ("points", "mesh"):
        raise typer.BadParameter("--reference must be 'points' or 'mesh'")
    if split not in ("val", "train", "all"):
        raise typer.BadParameter("--split must be val, train or all")
    mend_steps = parse_mend(mend)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vat3d.evaluation.generation import GenerationEvalSettings, evaluate_generation
    from vat3d.evaluation.generation_report import write_generation_report
    from vat3d.pretrained import load_generator, load_tokenizer

    try:
        gen = load_generator(model, device=device)
        tok = load_tokenizer(tokenizer, device=device)
    except FileNotFoundError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    settings = GenerationEvalSettings(
        num_conditions=num_samples, samples_per_condition=samples_per_condition, n_points=n_points,
        resolution=resolution, split=split, val_fraction=val_fraction, reference=reference, normalize=normalize,
        seed=seed, batch_size=batch_size, cfg_scale=cfg, cfg_schedule=cfg_schedule, temperature=temperature,
        top_k=top_k, top_p=top_p, num_scales=num_scales, sources=tuple(source) if source else None,
        reference_fragmentation=reference_fragmentation, sheet_shapes=sheet_shapes, condition=condition,
        iso=iso, min_piece=min_piece, candidates=candidates, mend=mend_steps)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("loading held-out shapes", total=None)

        def progress(done: int, total: int, stage: str) -> None:
            bar.update(task, completed=done, total=total, description=stage)

        try:
            result = evaluate_generation(gen, tok, data, settings, progress=progress,
                                         sheet_path=out / "eval_generation.png" if sheet else None)
        except (ValueError, FileNotFoundError) as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    json_path, md_path = write_generation_report(result, out)
    Console().print(md_path.read_text())
    typer.echo(f"wrote {json_path}, {md_path}")


def register(app: typer.Typer) -> None:
    app.command("eval-generation")(eval_generation)
