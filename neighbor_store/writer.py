"""Writing versions: validate the records, build the version in a temp dir, publish it by rename.

    draft = prepare(dataset, classes, neighbors, rejected, params, message, cost)   # validates
    created = publish(root, draft, parent_id, carry_from, margins_note)               # one rename

A version is built in `<root>/<dataset-slug>/.tmp/<pid>-<random>/` and published with one
`os.rename`, so a reader sees either the whole version or none of it, whatever happens to
the writer. Two writers of identical content race harmlessly: the id is the same and the
loser's rename fails onto an existing directory, which it then reuses.

This module knows folders, not the store: `Store.write_version_info` resolves the parent and
its margins and calls these two steps. (`version.py` holds what a version *is*: its data types
and how its id is computed.)
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sept.atomic import fsync_write
from sept.names import dataset_slug
from sept.neighbor_store import margins as margin_files
from sept.neighbor_store import redact
from sept.neighbor_store.errors import ValidationError
from sept.neighbor_store.jsonl import dumps_line
from sept.neighbor_store.records import NeighborRecord, neighbor_id
from sept.neighbor_store.version import (
    MANIFEST,
    MARGINS,
    NEIGHBORS,
    REJECTED,
    content_id,
    jsonable,
    manifest_digest,
    now,
    per_class,
    sha256_bytes,
    short,
)

FORMAT = "sept-neighbor-store/1"
_STALE_TMP_SECONDS = 3600


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


@dataclass
class Draft:
    """A validated version, not yet published: its records, their bytes and its content id."""

    dataset: str
    slug: str
    classes: list[str]
    params: dict[str, Any]
    message: str
    cost: list[dict[str, Any]] | None
    visible: list[str]
    neighbors: list[NeighborRecord]
    rejected: list[NeighborRecord]
    neighbors_bytes: bytes
    rejected_bytes: bytes
    id: str

    @property
    def ref(self) -> str:
        return f"{self.slug}@{short(self.id)}"


def prepare(
    dataset: str,
    classes: list[str],
    neighbors: list[NeighborRecord],
    rejected: list[NeighborRecord] | None = None,
    params: dict[str, Any] | None = None,
    message: str = "",
    cost: list[dict[str, Any]] | None = None,
) -> Draft:
    """Validate and scrub a version's content and compute its id; writes nothing.

    `cost` (per backend: requests, tokens, wall time) goes into the manifest but not into the
    id: the same neighbors generated again, from the cache or not, are the same version.
    """
    slug = dataset_slug(dataset)
    classes = check_classes(classes)
    secrets = redact.environment_secrets()
    params = redact.scrub(jsonable(dict(params or {}), ""), secrets)
    message = redact.scrub_text(message or "", secrets)
    cost = redact.scrub(jsonable(list(cost), "cost"), secrets) if cost else None
    visible = check_visible(classes, params.get("visible_classes"))
    neighbors, rejected = prepare_records(classes, list(neighbors), list(rejected or []))
    nbytes, rbytes = render(neighbors), render(rejected)
    vid = content_id(classes, params, sha256_bytes(nbytes), sha256_bytes(rbytes))
    return Draft(dataset=dataset, slug=slug, classes=classes, params=params, message=message, cost=cost,
                 visible=visible, neighbors=neighbors, rejected=rejected, neighbors_bytes=nbytes,
                 rejected_bytes=rbytes, id=vid)


def publish(root: Path, draft: Draft, parent_id: str | None, carry_from: Path | None,
            margins_note: dict[str, Any]) -> bool:
    """Build the version folder of `draft` under `root` and publish it by rename.

    `carry_from`: a parent's margins folder to copy in (see `margins.carry_plan`), noted in the
    manifest as `margins_note`. Returns False when identical content was already published.
    """
    from sept import __version__

    ddir = Path(root) / draft.slug
    final = ddir / "versions" / draft.id
    if (final / MANIFEST).is_file():
        return False
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "id": draft.id,
        "dataset": draft.dataset,
        "dataset_slug": draft.slug,
        "classes": draft.classes,
        "parent": parent_id,
        "created_at": now(),
        "code_version": __version__,
        "message": draft.message,
        "params": draft.params,
        # what the version's prompts, CLAP filter and audio check saw (in params when given, so
        # part of the id); base-to-new training refuses a version that saw a new class
        "visible_classes": draft.visible,
        "files": {
            NEIGHBORS: {"sha256": sha256_bytes(draft.neighbors_bytes), "rows": len(draft.neighbors)},
            REJECTED: {"sha256": sha256_bytes(draft.rejected_bytes), "rows": len(draft.rejected)},
        },
        "counts": {
            "classes": len(draft.classes),
            "neighbors": len(draft.neighbors),
            "rejected": len(draft.rejected),
            "per_class": per_class(draft.classes, draft.neighbors, draft.rejected),
        },
        "margins": margins_note,
    }
    if draft.cost is not None:
        manifest["cost"] = draft.cost
    if isinstance(draft.params.get("split"), dict):
        manifest["split"] = draft.params["split"]
    manifest["manifest_sha256"] = manifest_digest(manifest)

    (ddir / "versions").mkdir(parents=True, exist_ok=True)
    (ddir / ".tmp").mkdir(exist_ok=True)
    sweep_tmp(ddir)
    build = ddir / ".tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
    build.mkdir()
    try:
        fsync_write(build / NEIGHBORS, draft.neighbors_bytes)
        fsync_write(build / REJECTED, draft.rejected_bytes)
        if carry_from is not None:
            margin_files.copy_carried(carry_from, build / MARGINS)
        text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
        fsync_write(build / MANIFEST, text.encode("utf-8"))
        try:
            os.rename(build, final)
            return True
        except OSError as e:
            # someone published the same content first; theirs is byte-identical in content
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (final / MANIFEST).is_file():
                raise
            return False
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
