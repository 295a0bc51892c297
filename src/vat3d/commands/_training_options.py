"""Command-line options shared by ``vat3d train-tokenizer`` and ``vat3d train-generator``: Lightning's
own multi-device flags, run length, resume and config overrides."""

from __future__ import annotations

import typer

CONFIG = typer.Option("small", "--config", "-c", help="Packaged config name (tiny, small, base, large) or a YAML path.")
MAX_STEPS = typer.Option(None, help="Override training.max_steps.")
MAX_TIME = typer.Option(None, help="Stop after this wall time, DD:HH:MM:SS, counted over resumes (checkpoint kept).")
STOP_AT_STEP = typer.Option(None, help="Stop with a checkpoint at this step (the LR schedule still follows max_steps): "
                                       "train in chunks on time-limited queues, then rerun to resume.")
DEVICES = typer.Option("auto", help="Lightning --devices: a count, a list like 0,1, or auto.")
NUM_NODES = typer.Option(1, help="Lightning --num-nodes.")
STRATEGY = typer.Option("auto", help="auto, ddp, ddp_spawn or fsdp.")
ACCELERATOR = typer.Option("auto", help="auto, cpu, gpu.")
PRECISION = typer.Option(None, help="bf16-mixed, 16-mixed, 32 or auto (default: the config's; auto: bf16 where the hardware computes it natively, else 32).")
RESUME = typer.Option("auto", help="auto (the run's last.ckpt if any), none, or a checkpoint path.")
SET = typer.Option([], "--set", help="Override a config value: section.key=value (repeatable).")
PROGRESS = typer.Option(True, help="Show the progress bar.")


def parse_devices(devices: str):
    """``"2"`` -> 2; lists and ``auto`` pass through to Lightning."""
    return int(devices) if devices.isdigit() else devices
