"""The `sept` command: one entry point, verbs contributed by each part of the project.

Each part owns its verbs in its own `cli.py` and exposes `register(app)`. Heavy imports
(torch, laion-clap, prefect) happen inside the commands, so `sept --help` stays fast.
"""
import typer

from sept.clap import cli as clap_cli
from sept.flows import cli as flows_cli
from sept.neighbor_store import cli as store_cli
from sept.pipeline import cli as pipeline_cli
from sept.trainer import cli as trainer_cli

app = typer.Typer(
    name="sept",
    help="Semantic neighbors for audio classes, and SEPT prompt tuning of CLAP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from sept import __version__

        typer.echo(__version__)
        raise typer.Exit()


for part in (store_cli, pipeline_cli, trainer_cli, flows_cli, clap_cli):
    part.register(app)


def main() -> None:
    """The console script: a `SeptError` (anything the user can fix) is one line on stderr and
    exit code 1; any other exception is a bug and keeps its traceback."""
    from sept.errors import SeptError

    try:
        app()  # click handles its own usage errors and exits; anything else comes out here
    except SeptError as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
