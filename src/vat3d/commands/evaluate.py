"""``vat3d eval``: reconstruction quality, bytes, and the classical competitors, per shape and in all."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vat3d.codec.effort_defaults import DEFAULT_EFFORT


def evaluate(
    model: str = typer.Argument(..., help="Tokenizer folder or 'default'."),
    meshes: list[Path] = typer.Argument(..., help="Ground-truth mesh files or folders."),
    out: Path = typer.Option(Path("eval_out"), "--output", "-o", help="Folder for eval.json, eval.md, eval.png."),
    resolution: int = typer.Option(256, help="Marching-cubes resolution of the full decoding."),
    scale_resolution: int = typer.Option(128, help="Resolution for the coarser prefixes."),
    n_points: int = typer.Option(20_000, help="Surface samples per mesh for Chamfer / F-score."),
    budgets: str = typer.Option("256,512,1024,4096", help="Byte budgets for simplification + Draco."),
    baselines: bool = typer.Option(True, help="Run Draco and simplification + Draco."),
    entropy: Optional[str] = typer.Option(None, "--entropy", help="Also report entropy-coded bytes with this generator."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N meshes."),
    effort: str = typer.Option(DEFAULT_EFFORT, "--effort", help="Encode effort(s), comma-separated (fast, turned, "
                               "oriented, balanced, best): "
                               "the first makes the main table, each one gets a row of quality and seconds."),
) -> None:
    """Evaluate a tokenizer on meshes it should reconstruct; prints a Markdown table.

    Writes eval.json, eval.md and eval.png. Compares with Draco and simplification + Draco at 256 B,
    512 B, 1 KB, 4 KB and each .vat's own size; with --entropy also bits/token and bytes/shape with
    and without entropy coding.
    """
    from rich.console import Console
    from rich.progress import track

    from vat3d.commands.codec import _expand
    from vat3d.geometry.io import MESH_SUFFIXES
    from vat3d.evaluation.report import EvalSettings, evaluate_shape, write_report
    from vat3d.pretrained import load_tokenizer

    from vat3d.codec.refine import EFFORTS

    efforts = [e.strip() for e in effort.split(",") if e.strip()]
    unknown = [e for e in efforts if e not in EFFORTS]
    if not efforts or unknown:
        raise typer.BadParameter(f"--effort takes {', '.join(EFFORTS)} (comma-separated), got {effort!r}")
    tokenizer = load_tokenizer(model)
    files = _expand(meshes, MESH_SUFFIXES)[:limit]
    settings = EvalSettings(resolution=resolution, scale_resolution=scale_resolution, n_points=n_points,
                            budgets=[int(b) for b in budgets.split(",") if b], baselines=baselines,
                            effort=efforts[0], extra_efforts=tuple(efforts[1:]))
    if entropy:
        from vat3d.codec.entropy import entropy_bytes
        from vat3d.commands.codec import load_entropy_generator

        generator = load_entropy_generator(entropy, tokenizer)
        settings.extra_bytes = lambda shape: entropy_bytes(generator, tokenizer, shape)
    rows = []
    console = Console(stderr=True)
    # a progress bar on a terminal; one line per shape in a log (rich draws nothing there until the end)
    shapes = track(files, description="evaluating", console=console) if console.is_terminal else files
    for i, f in enumerate(shapes):
        try:
            rows.append(evaluate_shape(tokenizer, f, settings, name=str(f)))
            if not console.is_terminal:
                r = rows[-1]
                typer.echo(f"[{i + 1}/{len(files)}] {f.name}: {r['vat_bytes']} B, F@0.02 {r['fscore@0.02']:.3f}, "
                           f"encode {r['encode_s']:.2f} s", err=True)
        except Exception as error:
            typer.secho(f"skipped {f}: {error}", fg="yellow", err=True)
    if not rows:
        raise typer.Exit(1)
    write_report(rows, out)
    Console().print((out / "eval.md").read_text())
    typer.echo(f"wrote {out / 'eval.json'}, {out / 'eval.md'}, {out / 'eval.png'}")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
