"""`sept store ...`: import, inspect, verify, diff and review neighbor versions.

Every command that creates a version prints its reference (`dataset@id12`) as the last
line of stdout, so scripts can take `| tail -n1`. Errors the user can fix are one line on stderr, exit 1; a bug keeps its traceback.
"""
from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from sept.neighbor_store.errors import StoreError
from sept.neighbor_store.store import Store

store_app = typer.Typer(
    name="store",
    help="The versioned neighbor store: import, export, list, show, log, tag, verify, diff, checkout, commit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register(app: typer.Typer) -> None:
    """Add `sept store ...` and `sept review` to the `sept` app."""
    app.add_typer(store_app, name="store")
    app.command("review")(review)


@store_app.callback()
def _store_options(
    ctx: typer.Context,
    store: Optional[Path] = typer.Option(
        None, "--store", envvar="SEPT_STORE", help="Store root (default ./neighbor-store; env SEPT_STORE)."
    ),
) -> None:
    ctx.obj = {"store": store}


def _root(ctx: typer.Context) -> Optional[Path]:
    return (ctx.obj or {}).get("store")


def _open(ctx: typer.Context) -> Store:
    return Store(_root(ctx))


def _fail(message: str) -> None:
    typer.echo(f"error: {' '.join(str(message).split(chr(10)))}", err=True)
    raise typer.Exit(1)


# OS errors about a path the user named or the store's folder (missing, not a folder, no
# permission, disk full, read-only): the user fixes them, so they are one line. Any other
# OSError (a bad file descriptor, an invalid argument) is a bug and keeps its traceback.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
_USER_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG}


@contextmanager
def _errors() -> Iterator[None]:
    """Store errors, and OS errors about a named path, become one line on stderr and exit code 1."""
    try:
        yield
    except StoreError as e:
        _fail(str(e))
    except OSError as e:
        if not (isinstance(e, _USER_OS_ERRORS) or e.errno in _USER_ERRNOS) or not e.filename:
            raise
        _fail(f"{e.filename}: {e.strerror}")


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped output: do not squeeze tables into 80 columns
        console.width = 200
    return console


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


def _created_note(ref: str, created: bool) -> None:
    if not created:
        typer.echo(f"identical content already stored as {ref}; reusing it", err=True)
    typer.echo(ref)


@store_app.command("import")
def import_(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="JSONL file; each line needs at least 'class' and 'text' (with --format hf: a folder made by `sept store export --format hf`)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset name (kept verbatim; its folder is a slug). Required for JSONL; an hf export names its own."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class list, one per line: fixes order, allows empty classes."),
    parent: Optional[str] = typer.Option(None, "--parent", help="Parent version reference DATASET@REF."),
    message: str = typer.Option("", "--message", "-m", help="Free-text message for the manifest."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Tag the new version."),
    visible_classes: Optional[Path] = typer.Option(None, "--visible-classes", help="Classes the neighbors' author saw, one per line (default: the imported class list); base-to-new training refuses a version that saw a new class."),
    format: str = typer.Option("jsonl", "--format", help="jsonl: a file of neighbors; hf: a folder written by `sept store export --format hf` (same version id)."),
) -> None:
    """Import a JSONL file of neighbors (or an hf export folder) as a version; prints its reference last."""
    if format == "hf":
        from sept.neighbor_store.hf import import_hf

        given = [n for n, val in (("--dataset", dataset), ("--classes", classes), ("--parent", parent),
                                  ("--message", message), ("--visible-classes", visible_classes)) if val]
        if given:
            _fail(f"{', '.join(given)}: not used with --format hf (the export's manifest says them)")
        with _errors():
            s = _open(ctx)
            ref, created, note = import_hf(s, file)
            if tag is not None:
                s.tag(ref, tag)
        if note:
            typer.echo(f"note: {note}", err=True)
        _created_note(ref, created)
        return
    if format != "jsonl":
        _fail(f"--format: {format!r} is not one of jsonl, hf")
    if not dataset:
        _fail("--dataset is required to import a JSONL file")
    from sept.neighbor_store.review import import_file

    with _errors():
        ref, created = import_file(_open(ctx), file, dataset, classes, parent, message, tag, visible_classes)
    _created_note(ref, created)


@store_app.command("export")
def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Version to export (DATASET@ID|TAG|latest)."),
    out: Path = typer.Argument(..., help="New folder to write."),
    format: str = typer.Option("hf", "--format", help="hf: a Hugging Face dataset folder with a dataset card (the only format)."),
    rejected: bool = typer.Option(False, "--rejected", help="Also export the rejected candidates with their reasons."),
) -> None:
    """Write a version as a Hugging Face dataset folder (card, data/*.jsonl, manifest, margins)."""
    if format != "hf":
        _fail(f"--format: {format!r} is not one of hf")
    from sept.neighbor_store.hf import export_hf

    with _errors():
        s = _open(ctx)
        d = export_hf(s, ref, out, rejected=rejected)
        slug, vid = s.resolve(ref)
    typer.echo(f"exported {slug}@{vid[:12]} to {d}")
    typer.echo(f"publish: hf upload USER/NAME {d} --repo-type dataset")


@store_app.command("list")
def list_(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Argument(None, help="Only this dataset."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List versions (oldest first), with tags and counts."""
    with _errors():
        rows = _open(ctx).list(dataset)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        typer.echo("no versions")
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for col in ("ref", "created", "classes", "neighbors", "rejected", "tags", "parent", "message"):
        table.add_column(col, no_wrap=col == "ref", overflow="fold")
    for r in rows:
        table.add_row(
            r["ref"], (r["created_at"] or "")[:19], str(r["classes"]), str(r["neighbors"]), str(r["rejected"]),
            ",".join(r["tags"]), (r["parent"] or "")[:12], r["message"],
        )
    _console().print(table)


@store_app.command("show")
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="DATASET@<id-prefix|tag|latest>"),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Show a version's manifest: id, parent, dataset, classes, counts, provenance."""
    with _errors():
        s = _open(ctx)
        v = s.read(ref)
        tags = sorted(t for t, i in s.tags(v.slug).items() if i == v.id)
        attached = s.margin_fingerprints(v.ref)
    if as_json:
        _print_json({**v.manifest, "ref": v.ref, "tags": tags, "margins_attached": attached})
        return
    m = v.manifest
    out = [
        f"ref:        {v.ref}",
        f"id:         {v.id}",
        f"dataset:    {v.dataset}",
        f"parent:     {m.get('parent') or '-'}",
        f"created_at: {m.get('created_at')}",
        f"code:       {m.get('code_version')}",
        f"message:    {m.get('message') or '-'}",
        f"tags:       {', '.join(tags) or '-'}",
        f"neighbors:  {m['counts']['neighbors']} accepted, {m['counts']['rejected']} rejected, "
        f"{m['counts']['classes']} classes",
        f"margins:    attached {', '.join(attached) or 'none'}; at creation {m.get('margins', {}).get('status')}",
        f"params:     {json.dumps(m.get('params', {}), ensure_ascii=False, sort_keys=True)}",
    ]
    if m.get("cost"):
        from sept.neighbor_store.cost import format_cost

        out += ["cost:"] + [f"  {format_cost(c)}" for c in m["cost"]]
    out.append("per class:")
    out += [f"  {c['class']!r}: {c['accepted']} accepted, {c['rejected']} rejected" for c in m["counts"]["per_class"]]
    typer.echo("\n".join(out))


@store_app.command("log")
def log(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="DATASET (every version) or DATASET@REF (that version's ancestry)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Lineage, newest first: id, parent, tags, counts, message."""
    with _errors():
        rows = _open(ctx).log(dataset)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        tags = f" ({', '.join(r['tags'])})" if r["tags"] else ""
        parent = f"{r['slug']}@{r['parent'][:12]}" if r["parent"] else "-"
        typer.echo(f"{r['ref']}{tags}  {r['created_at']}  parent {parent}")
        typer.echo(f"    {r['neighbors']} accepted, {r['rejected']} rejected; {r['message'] or '(no message)'}")


@store_app.command("tag")
def tag(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="DATASET@<id-prefix|tag|latest>"),
    name: str = typer.Argument(..., help="Tag name (moves it if it exists)."),
) -> None:
    """Point a tag at a version."""
    with _errors():
        s = _open(ctx)
        before = s.tags(ref.rpartition("@")[0] or ref).get(name)
        out = s.tag(ref, name)
    if before and not out.endswith(before[:12]):
        typer.echo(f"moved tag {name!r} from {before[:12]}", err=True)
    typer.echo(out)


@store_app.command("verify")
def verify(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="DATASET@REF (one version) or DATASET (all its versions and tags)."),
) -> None:
    """Recompute every hash (JSONL files, manifest, margins); exit 0 only if all match."""
    with _errors():
        results = _open(ctx).verify(ref)
    bad = []
    for name, problems in results:
        if problems:
            for p in problems:
                typer.echo(f"FAIL {name}: {p}")
                bad.append(f"{name}: {p}")
        else:
            typer.echo(f"ok   {name}")
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        _fail(f"verification failed: {bad[0]}{more}")


@store_app.command("diff")
def diff(
    ctx: typer.Context,
    ref_a: str = typer.Argument(..., help="Old version."),
    ref_b: str = typer.Argument(..., help="New version."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per class: neighbors added, removed, and changed (status or text)."""
    from sept.neighbor_store.diff import diff_versions, format_diff

    with _errors():
        s = _open(ctx)
        d = diff_versions(s.read(ref_a), s.read(ref_b))
    if as_json:
        _print_json(d.to_json_dict())
    else:
        typer.echo(format_diff(d))


@store_app.command("checkout")
def checkout(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Version to review."),
    directory: Path = typer.Argument(..., help="New or empty directory for the editable copy."),
) -> None:
    """Write an editable copy (neighbors.jsonl, rejected.jsonl) of a version for review."""
    from sept.neighbor_store.review import checkout as do_checkout

    with _errors():
        s = _open(ctx)
        d = do_checkout(s, ref, directory)
        v = s.resolve(ref)
    typer.echo(f"checked out {v[0]}@{v[1][:12]} into {d}")
    typer.echo(f"edit {d / 'neighbors.jsonl'} (flip status, delete lines, add lines with class+text, edit text),")
    typer.echo(f"then: sept store commit {d} -m MESSAGE")


@store_app.command("commit")
def commit(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="A directory made by `sept store checkout`."),
    message: str = typer.Option("", "--message", "-m", help="What the review changed."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Tag the new version."),
) -> None:
    """Validate an edited checkout and store it as a child version; prints its reference last."""
    from sept.neighbor_store.review import commit as do_commit
    from sept.neighbor_store.review import read_checkout

    with _errors():
        root = _root(ctx) or read_checkout(directory).get("store")
        ref, created = do_commit(Store(root), directory, message, tag)
    _created_note(ref, created)


@store_app.command("plot")
def plot(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="DATASET@<id-prefix|tag|latest>"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNG files (created if missing)."),
) -> None:
    """PNG plots of a version: score histograms per kind (accepted vs rejected), counts per class, rejection reasons."""
    from sept.neighbor_store.plot import write_plots

    with _errors():
        v = _open(ctx).read(ref)
        paths = write_plots(v, out)
    if not any(p.name.startswith("scores-") for p in paths):
        typer.echo(f"{v.ref} has no scores: no score histograms", err=True)
    for p in paths:
        typer.echo(str(p))


def review(
    ref: str = typer.Argument(..., help="DATASET@<id-prefix|tag|latest>: the version to review."),
    store: Optional[Path] = typer.Option(
        None, "--store", envvar="SEPT_STORE", help="Store root (default ./neighbor-store; env SEPT_STORE)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback unless given)."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port (default: a free one)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="Another host name the page may be reached by (with --host); repeatable."
    ),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in a browser."),
    verbose: bool = typer.Option(False, "--verbose", help="Log each request (paths only, never the token)."),
) -> None:
    """Review a version in the browser: accept/reject/edit/add, then commit a child version as `sept store commit` does."""
    from sept.neighbor_store.review_web import ReviewApp, ReviewServer

    with _errors():
        app = ReviewApp(Store(store), ref)
        server = ReviewServer(app, host, port, tuple(allow_host), verbose)
    typer.echo(f"reviewing {app.slug}@{app.version_id[:12]} (Ctrl-C to stop)")
    typer.echo(server.url)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
