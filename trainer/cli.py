"""Command-line verbs of this part; see `register`."""
import typer


def register(app: typer.Typer) -> None:
    """Add this part's verbs to the `sept` app."""
