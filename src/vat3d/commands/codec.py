"""``vat3d encode`` and ``vat3d decode``: meshes to .vat token files and back."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

MESH_SUFFIXES = {".obj", ".ply", ".stl", ".off", ".glb", ".gltf"}
OUT_SUFFIXES = {".obj", ".ply", ".glb", ".stl", ".off"}


def _expand(inputs: list[Path], suffixes: set[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif item.is_file():
            files.append(item)
        else:
            raise typer.BadParameter(f"{item} does not exist")
    if not files:
        raise typer.BadParameter(f"no input files with suffix {sorted(suffixes)} in {', '.join(map(str, inputs))}")
    return files


def _targets(files: list[Path], inputs: list[Path], out: Path, suffix: str) -> list[Path]:
    """One output per input: OUT itself for a single input with OUT's suffix, else OUT/<relative>.suffix."""
    if len(files) == 1 and out.suffix.lower() == suffix and not out.is_dir():
        return [out]
    targets = []
    for f in files:
        root = next((i for i in inputs if i.is_dir() and f.is_relative_to(i)), None)
        rel = f.relative_to(root) if root else Path(f.name)
        targets.append(out / rel.with_suffix(suffix))
    return targets


def encode(
    model: str = typer.Argument(..., help="Tokenizer folder (config.json + model.safetensors) or 'default'."),
    inputs: list[Path] = typer.Argument(..., help="Mesh files or folders (searched recursively)."),
    out: Path = typer.Option(..., "--output", "-o", help="A .vat path (one input) or a folder."),
    seed: int = typer.Option(0, help="Seed of the surface sampling (encoding is deterministic per seed)."),
    entropy: Optional[str] = typer.Option(None, "--entropy", help="Entropy-code with this generator (or 'default')."),
) -> None:
    """Encode meshes to .vat token files."""
    from rich.progress import track

    from vat3d.codec.api import encode_mesh
    from vat3d.codec.vatfile import atomic_write_bytes
    from vat3d.pretrained import load_generator, load_tokenizer

    tokenizer = load_tokenizer(model)
    generator = load_generator(entropy) if entropy else None
    files = _expand(inputs, MESH_SUFFIXES)
    targets = _targets(files, inputs, out, ".vat")
    total, failed = 0, 0
    for src, dst in track(list(zip(files, targets)), description="encoding", transient=True):
        try:
            shape = encode_mesh(tokenizer, src, seed=seed)
            data = shape.data
            if generator is not None:
                from vat3d.codec.entropy import entropy_encode

                data = entropy_encode(generator, tokenizer, shape)
            atomic_write_bytes(dst, data, protect=files)
            total += len(data)
        except Exception as error:  # report and go on with the batch
            failed += 1
            typer.secho(f"failed: {src}: {error}", fg=typer.colors.RED, err=True)
    done = len(files) - failed
    typer.echo(f"encoded {done} of {len(files)} meshes, {total} bytes in all"
               + (f" ({total / done:.0f} B per shape)" if done else "") + f" -> {out}")
    if failed:
        raise typer.Exit(1)


def decode(
    model: str = typer.Argument(..., help="Tokenizer folder or 'default' (the one that encoded the files)."),
    inputs: list[Path] = typer.Argument(..., help=".vat files or folders."),
    out: Path = typer.Option(..., "--output", "-o", help="A mesh path (.obj/.ply/.glb/.stl/.off) or a folder."),
    scales: Optional[int] = typer.Option(None, "--scales", help="Decode only the first K scales (coarser)."),
    resolution: int = typer.Option(256, help="Marching-cubes grid resolution (256 or 512)."),
    fmt: str = typer.Option("obj", "--format", help="Mesh format when OUT is a folder."),
    entropy: Optional[str] = typer.Option(None, "--entropy", help="Generator for entropy-coded files ('default')."),
) -> None:
    """Decode .vat token files to meshes (in the original mesh's coordinates)."""
    import trimesh
    from rich.progress import track

    from vat3d.codec.api import decode_tokens, read_tokens
    from vat3d.codec.vatfile import atomic_write_bytes, decode_vat_header
    from vat3d.pretrained import load_generator, load_tokenizer

    tokenizer = load_tokenizer(model)
    files = _expand(inputs, {".vat"})
    suffix = out.suffix.lower() if len(files) == 1 and out.suffix.lower() in OUT_SUFFIXES else f".{fmt.lower()}"
    if suffix not in OUT_SUFFIXES:
        raise typer.BadParameter(f"unsupported mesh format {suffix}; use one of {sorted(OUT_SUFFIXES)}")
    targets = _targets(files, inputs, out, suffix)
    generator = None
    failed = 0
    for src, dst in track(list(zip(files, targets)), description="decoding", transient=True):
        try:
            data = src.read_bytes()
            if decode_vat_header(data).coding == "entropy":
                from vat3d.codec.entropy import entropy_decode

                generator = generator or load_generator(entropy or "default")
                tokens, transform, complete = entropy_decode(generator, tokenizer, data, max_scales=scales)
            else:
                vat, transform = read_tokens(tokenizer, data, max_scales=scales)
                tokens, complete = vat.tokens, vat.complete
            if not complete:
                typer.secho(f"{src}: truncated file, decoding the {len(tokens)} complete scales", fg="yellow", err=True)
            mesh = decode_tokens(tokenizer, tokens, transform, resolution=resolution)
            if not len(mesh.faces):
                typer.secho(f"{src}: the decoded field has no surface (empty mesh written)", fg="yellow", err=True)
            blob = trimesh.exchange.export.export_mesh(mesh, file_type=suffix[1:])
            atomic_write_bytes(dst, blob if isinstance(blob, bytes) else blob.encode(), protect=files)
        except Exception as error:
            failed += 1
            typer.secho(f"failed: {src}: {error}", fg=typer.colors.RED, err=True)
    typer.echo(f"decoded {len(files) - failed} of {len(files)} files -> {out}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
    app.command("decode")(decode)
