"""Writing versions: validate the records, build the version in a temp dir, publish it by rename.

A version is built in `<root>/<dataset-slug>/.tmp/<pid>-<random>/` and published with one
`os.rename`, so a reader sees either the whole version or none of it, whatever happens to
the writer. Two writers of identical content race harmlessly: the id is the same and the
loser's rename fails onto an existing directory, which it then reuses.
(`version.py` holds what a version *is*: its data types and how its id is computed.)
"""
from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sept.neighbor_store import margins as margin_files
from sept.neighbor_store import redact
from sept.atomic import fsync_write
from sept.neighbor_store.errors import RefError, ValidationError
from sept.neighbor_store.jsonl import dumps_line
from sept.neighbor_store.records import NeighborRecord, neighbor_id
from sept.neighbor_store.tags import check_tag
from sept.neighbor_store.version import (
    MANIFEST,
    MARGINS,
    NEIGHBORS,
    REJECTED,
    content_id,
    manifest_digest,
    sha256_bytes,
    short,
)

if TYPE_CHECKING:
    from sept.neighbor_store.store import Store

FORMAT = "sept-neighbor-store/1"
_STALE_TMP_SECONDS = 3600


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def jsonable(obj: Any, where: str) -> Any:
    """Params as plain JSON (paths -> str, tuples -> lists, numpy scalars -> numbers); refuse the rest by name."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValidationError(f"parameter {where!r} is not a finite number ({obj})")
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalar
        return jsonable(obj.item(), where)
    raise ValidationError(f"parameter {where!r} has a value of type {type(obj).__name__} that JSON cannot hold")


def check_classes(classes: list[str], file: str | Path | None = None) -> list[str]:
    """Classes must be non-empty, distinct strings; their order is the version's class order."""
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)):
        raise ValidationError(f"classes must be a list of names, got {type(classes).__name__}", file=file)
    if not classes:
        raise ValidationError("the class list is empty", file=file)
    seen: set[str] = set()
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not c.strip():
            raise ValidationError(f"class #{i + 1} is empty or not a string: {c!r}", file=file)
        if c in seen:
            raise ValidationError(f"class {c!r} appears twice in the class list", file=file)
        seen.add(c)
    return list(classes)


def check_visible(classes: list[str], visible: Any) -> list[str]:
    """The visible classes of a version (default: its classes); each of its classes must be among them."""
    if visible is None:
        return list(classes)
    if isinstance(visible, str) or not isinstance(visible, list) or not all(isinstance(c, str) for c in visible):
        raise ValidationError(f"parameter 'visible_classes' must be a list of class names, got {visible!r}")
    unseen = [c for c in classes if c not in set(visible)]
    if unseen:
        raise ValidationError(f"parameter 'visible_classes' lacks the version's class(es) "
                              f"{', '.join(map(repr, unseen))} (a class's neighbors were made seeing it)")
    return list(visible)


def _record_label(r: NeighborRecord) -> str:
    return f"neighbor {r.text!r} of class {r.class_!r}"


def prepare_records(
    classes: list[str], neighbors: list[NeighborRecord], rejected: list[NeighborRecord]
) -> tuple[list[NeighborRecord], list[NeighborRecord]]:
    """Validate and order records as a version stores them.

    Accepted neighbors: class known, text non-empty, id == neighbor_id(class, text), ids unique.
    Rejected candidates keep duplicates of accepted ids (an exact duplicate *is* the same id).
    Both lists are sorted by class order, keeping input order (rank) within a class.
    """
    order = {c: i for i, c in enumerate(classes)}
    secrets = redact.environment_secrets()
    seen: set[str] = set()
    out: list[list[NeighborRecord]] = [[], []]
    for which, records in ((0, neighbors), (1, rejected)):
        for r in records:
            if not isinstance(r, NeighborRecord):
                raise ValidationError(f"expected NeighborRecord, got {type(r).__name__}")
            if r.class_ not in order:
                raise ValidationError(f"{_record_label(r)}: unknown class {r.class_!r} (not in the version's classes)")
            if which == 0 and not r.text.strip():
                raise ValidationError(f"empty text for a neighbor of class {r.class_!r}")
            if r.id != neighbor_id(r.class_, r.text):
                raise ValidationError(f"{_record_label(r)}: id {r.id} is not neighbor_id(class, text)")
            if redact.contains_secret(r.text, secrets) or redact.contains_secret(r.class_, secrets):
                raise ValidationError(f"{_record_label(r)}: text holds the value of a secret environment variable")
            for k, v in r.scores.items():
                if not math.isfinite(v):
                    raise ValidationError(f"{_record_label(r)}: score {k!r} is not finite ({v})")
            update: dict[str, Any] = {"source": redact.scrub(r.source, secrets)}
            if which == 0:
                if r.status != "accepted":
                    raise ValidationError(f"{_record_label(r)}: status {r.status!r} in the accepted list")
                if r.id in seen:
                    raise ValidationError(f"{_record_label(r)}: duplicate id {r.id}")
                seen.add(r.id)
                update["reason"] = None
            else:
                update["status"] = "rejected"
            out[which].append(r.model_copy(update=update))
    for lst in out:
        lst.sort(key=lambda r: order[r.class_])  # stable: rank within class is kept
    return out[0], out[1]


def render(records: list[NeighborRecord]) -> bytes:
    """The JSONL bytes of a version file (their sha256 enters the version id)."""
    return "".join(dumps_line(r.to_json_dict()) for r in records).encode("utf-8")


def per_class(classes: list[str], neighbors: list[NeighborRecord], rejected: list[NeighborRecord]) -> list[dict]:
    acc = {c: 0 for c in classes}
    rej = {c: 0 for c in classes}
    for r in neighbors:
        acc[r.class_] += 1
    for r in rejected:
        rej[r.class_] += 1
    return [{"class": c, "accepted": acc[c], "rejected": rej[c]} for c in classes]


def sweep_tmp(dataset_dir: Path) -> None:
    """Remove build dirs of writers that died long ago; live writers' dirs are left alone."""
    tmp = dataset_dir / ".tmp"
    if not tmp.is_dir():
        return
    t = time.time()
    for p in tmp.iterdir():
        try:
            if t - p.stat().st_mtime < _STALE_TMP_SECONDS:
                continue
            pid = int(p.name.split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (OSError, ValueError):
            continue


def write(
    store: "Store",
    dataset: str,
    classes: list[str],
    neighbors: list[NeighborRecord],
    rejected: list[NeighborRecord] | None = None,
    params: dict[str, Any] | None = None,
    parent: str | None = None,
    message: str = "",
    tag: str | None = None,
    cost: list[dict[str, Any]] | None = None,
) -> tuple[str, bool]:
    """Validate, store atomically; `(ref, created)`, created False when identical content existed.

    `cost` (per backend: requests, tokens, wall time) goes into the manifest but not into the
    id: the same neighbors generated again, from the cache or not, are the same version.
    """
    from sept.names import dataset_slug

    slug = dataset_slug(dataset)
    classes = check_classes(classes)
    if tag is not None:
        check_tag(tag)
    secrets = redact.environment_secrets()
    params = redact.scrub(jsonable(dict(params or {}), ""), secrets)
    message = redact.scrub_text(message or "", secrets)
    cost = redact.scrub(jsonable(list(cost), "cost"), secrets) if cost else None
    visible = check_visible(classes, params.get("visible_classes"))
    neighbors, rejected = prepare_records(classes, list(neighbors), list(rejected or []))
    parent_id = None
    if parent is not None:
        pslug, parent_id = store.resolve(parent)
        if pslug != slug:
            raise RefError(f"parent {parent!r} belongs to dataset {pslug}, not {slug}")

    nbytes, rbytes = render(neighbors), render(rejected)
    nsha, rsha = sha256_bytes(nbytes), sha256_bytes(rbytes)
    vid = content_id(classes, params, nsha, rsha)
    ddir = store.root / slug
    final = ddir / "versions" / vid
    ref = f"{slug}@{short(vid)}"
    if (final / MANIFEST).is_file():
        if tag is not None:
            store.tag(ref, tag)
        return ref, False

    from sept import __version__

    carry_from, margins_note = margin_files.carry_plan(store, slug, parent_id, classes, neighbors)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "id": vid,
        "dataset": dataset,
        "dataset_slug": slug,
        "classes": classes,
        "parent": parent_id,
        "created_at": now(),
        "code_version": __version__,
        "message": message,
        "params": params,
        # what the version's prompts, CLAP filter and audio check saw (in params when given, so
        # part of the id); base-to-new training refuses a version that saw a new class
        "visible_classes": visible,
        "files": {
            NEIGHBORS: {"sha256": nsha, "rows": len(neighbors)},
            REJECTED: {"sha256": rsha, "rows": len(rejected)},
        },
        "counts": {
            "classes": len(classes),
            "neighbors": len(neighbors),
            "rejected": len(rejected),
            "per_class": per_class(classes, neighbors, rejected),
        },
        "margins": margins_note,
    }
    if cost is not None:
        manifest["cost"] = cost
    if isinstance(params.get("split"), dict):
        manifest["split"] = params["split"]
    manifest["manifest_sha256"] = manifest_digest(manifest)

    (ddir / "versions").mkdir(parents=True, exist_ok=True)
    (ddir / ".tmp").mkdir(exist_ok=True)
    sweep_tmp(ddir)
    build = ddir / ".tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
    build.mkdir()
    try:
        fsync_write(build / NEIGHBORS, nbytes)
        fsync_write(build / REJECTED, rbytes)
        if carry_from is not None:
            margin_files.copy_carried(carry_from, build / MARGINS)
        text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
        fsync_write(build / MANIFEST, text.encode("utf-8"))
        try:
            os.rename(build, final)
            created = True
        except OSError as e:
            # someone published the same content first; theirs is byte-identical in content
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (final / MANIFEST).is_file():
                raise
            created = False
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    if tag is not None:
        store.tag(ref, tag)
    return ref, created
