"""``vat3d app``: the web interface (reconstruct uploaded meshes, generate shapes)."""

from __future__ import annotations

import typer


def app_command(
    tokenizer: str = typer.Option("default", "--tokenizer", help="Tokenizer folder or 'default' (the shipped one)."),
    generator: str = typer.Option("default", "--generator",
                                  help="Generator folder, 'default' (the shipped one, if any) or 'none'."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (0.0.0.0: every interface)."),
    port: int = typer.Option(7860, "--port", help="Port to serve on."),
    share: bool = typer.Option(False, "--share/--no-share", help="Also open a public gradio.live link."),
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", help="Largest mesh upload accepted, in MB."),
    device: str = typer.Option("cpu", "--device", help="Torch device of the models (cpu, cuda, ...)."),
) -> None:
    """Start the web app: upload a mesh to see it rebuilt from its tokens, or generate a shape."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        typer.secho("The web app needs gradio: pip install 'vat3d[app]'", fg="red", err=True)
        raise typer.Exit(1)

    from vat3d.app.web import build_app, launch_app
    from vat3d.pretrained import load_generator, load_tokenizer

    try:
        tok = load_tokenizer(tokenizer, device=device)
    except (FileNotFoundError, OSError, ValueError) as error:
        typer.secho(f"cannot load the tokenizer '{tokenizer}': {error}", fg="red", err=True)
        raise typer.Exit(1)
    gen, note = None, None
    if generator.lower() != "none":
        try:
            gen = load_generator(generator, device=device)
        except (FileNotFoundError, OSError, ValueError) as error:
            if generator != "default":  # asked for explicitly: that is an error
                typer.secho(f"cannot load the generator '{generator}': {error}", fg="red", err=True)
                raise typer.Exit(1)
            note = f"No generator model is available ({error}); start the app with --generator FOLDER."
            typer.secho(f"note: {note}", fg="yellow", err=True)
    demo = build_app(tok, gen, max_upload_mb=max_upload_mb, generator_note=note)
    typer.echo(f"vat3d app on http://{host}:{port} (Ctrl+C to stop)")
    launch_app(demo, host=host, port=port, share=share)


def register(app: typer.Typer) -> None:
    app.command("app")(app_command)
