"""The ``vat3d`` command line.

Each sub-command lives in its own module under :mod:`vat3d.commands` and exposes
``register(app: typer.Typer)``. Modules keep heavy imports (torch, trimesh, ...)
inside the command functions so that ``vat3d --help`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from vat3d import __version__

app = typer.Typer(
    name="vat3d",
    help="Compact 3D shape tokens (VAT) and next-scale autoregressive 3D generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"vat3d {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """vat3d: tokenize meshes into a few hundred bytes and generate shapes from text or images."""


def _register_commands() -> None:
    import vat3d.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"vat3d.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
