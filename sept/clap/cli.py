"""`sept clap ...`: checkpoint chores for the CLAP encoder.

`sept clap convert CKPT OUT.safetensors` unpickles a LAION-CLAP checkpoint once, on purpose
(running the command is the trust), and writes its weights as safetensors. The converted file
then loads without pickle and without `--trust-checkpoint`, with the same weights; its
fingerprint differs from the original's, since the fingerprint hashes the file (see
`sept.clap.factory`). The last line of stdout is the output path.
"""
from __future__ import annotations

from pathlib import Path

import typer

clap_app = typer.Typer(
    name="clap",
    help="CLAP checkpoint chores: convert a pickled checkpoint to safetensors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register(app: typer.Typer) -> None:
    """Add `sept clap ...` to the `sept` app."""
    app.add_typer(clap_app, name="clap")


@clap_app.command("convert")
def convert(
    checkpoint: Path = typer.Argument(..., help="LAION-CLAP checkpoint (.pt); it is unpickled, so only convert a file you trust."),
    out: Path = typer.Argument(..., help="Output file, ending in .safetensors."),
) -> None:
    """Unpickle CHECKPOINT once and write its weights to OUT (.safetensors), which loads safely."""
    from sept.clap.factory import convert_checkpoint

    target = convert_checkpoint(checkpoint, out)
    typer.echo(f"wrote {len(_tensor_names(target))} tensors from {checkpoint} ({target.stat().st_size / 1e6:.1f} MB); "
               f"use it as the checkpoint, no --trust-checkpoint needed")
    typer.echo(str(target))


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())
