"""Human-edited neighbor files: import, checkout and commit.

A person may write a line with only `class` and `text`; everything else is filled
(`id` from class+text, `kind` "human", `source` {"backend": "human"}, `status` "accepted").
An existing line whose text was edited gets a new id, and remembers the old one in
`source.edited_from` so `diff` can show the edit as a change rather than remove + add.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sept.atomic import atomic_write_json
from sept.neighbor_store.errors import StoreError, ValidationError
from sept.neighbor_store.jsonl import read_jsonl, write_jsonl
from sept.neighbor_store.records import NeighborRecord, neighbor_id
from sept.neighbor_store.store import Store
from sept.neighbor_store.writer import check_classes
from sept.neighbor_store.version import NEIGHBORS, REJECTED

CHECKOUT = ".sept-checkout.json"
HUMAN_SOURCE = {"backend": "human"}
_FIELDS = {"class", "text", "kind", "id", "scores", "source", "status", "reason"}


@dataclass
class LineRecord:
    record: NeighborRecord
    file: Path
    line: int


def read_classes_file(path: str | Path) -> list[str]:
    """One class per line, verbatim (only the line ending is removed); blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # not read_text: a "\r" inside a class name is not a line end
    except FileNotFoundError:
        raise ValidationError("classes file not found", file=path) from None
    except UnicodeDecodeError as e:
        raise ValidationError(f"not valid UTF-8 ({e.reason})", file=path) from None
    classes: list[str] = []
    first: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        name = line.rstrip("\r")
        if not name.strip():
            continue
        if name in first:
            raise ValidationError(f"class {name!r} already listed on line {first[name]}", file=path, line=lineno)
        first[name] = lineno
        classes.append(name)
    if not classes:
        raise ValidationError("no classes listed", file=path)
    return classes


def parse_line(
    obj: dict[str, Any], path: Path, lineno: int, classes: list[str] | None, rejected_file: bool = False
) -> tuple[NeighborRecord, str | None]:
    """One human-written line -> a complete record, plus the id the line carried if its text was edited.

    In a rejected file a rejected line may have empty text: the pipeline keeps empty LLM
    outputs there (reason `invalid`) rather than dropping them.
    """
    def fail(reason: str):
        raise ValidationError(reason, file=path, line=lineno)

    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        fail(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(_FIELDS))})")
    cls = obj.get("class")
    if cls is None:
        fail("missing 'class'")
    if not isinstance(cls, str) or not cls.strip():
        fail(f"'class' must be a non-empty string, got {cls!r}")
    text = obj.get("text")
    if text is None:
        fail(f"missing 'text' (class {cls!r})")
    if not isinstance(text, str):
        fail(f"'text' must be a string, got {type(text).__name__} (class {cls!r})")
    if classes is not None and cls not in classes:
        fail(f"unknown class {cls!r} (not in the version's classes)")
    status = obj.get("status", "rejected" if rejected_file else "accepted")
    if status not in ("accepted", "rejected"):
        fail(f"status must be 'accepted' or 'rejected', got {status!r}")
    if not text.strip() and not (rejected_file and status == "rejected"):
        fail(f"empty text (class {cls!r})")
    fields = dict(obj)
    fields.setdefault("kind", "human")
    fields.setdefault("source", dict(HUMAN_SOURCE))
    fields["status"] = status
    new_id = neighbor_id(cls, text)
    old_id = fields.get("id")
    fields["id"] = new_id
    try:
        record = NeighborRecord.model_validate(fields)
    except Exception as e:
        errors = getattr(e, "errors", lambda: [])()
        if errors:
            err = errors[0]
            fail(f"field {'.'.join(str(p) for p in err['loc'])!r}: {err['msg']} (class {cls!r})")
        fail(f"invalid record ({e})")
    edited_from = old_id if isinstance(old_id, str) and old_id and old_id != new_id else None
    return record, edited_from


def read_human_file(
    path: str | Path, classes: list[str] | None, rejected_file: bool = False
) -> list[tuple[LineRecord, str | None]]:
    """Every line of a human-edited JSONL file as a complete record (see `parse_line`)."""
    path = Path(path)
    return [
        (LineRecord(rec, path, lineno), edited)
        for lineno, obj in read_jsonl(path)
        for rec, edited in [parse_line(obj, path, lineno, classes, rejected_file)]
    ]


def _split(lines: list[LineRecord]) -> tuple[list[NeighborRecord], list[NeighborRecord]]:
    """Accepted / rejected lists; a duplicate accepted id is an error naming both lines."""
    accepted: list[NeighborRecord] = []
    rejected: list[NeighborRecord] = []
    seen: dict[str, LineRecord] = {}
    for lr in lines:
        r = lr.record
        if r.status == "rejected":
            rejected.append(r if r.reason else r.model_copy(update={"reason": "review"}))
            continue
        if r.id in seen:
            first = seen[r.id]
            raise ValidationError(
                f"duplicate id {r.id} (class {r.class_!r}, same text as {first.file.name}:{first.line})",
                file=lr.file, line=lr.line,
            )
        seen[r.id] = lr
        accepted.append(r.model_copy(update={"reason": None}))
    return accepted, rejected


def import_file(
    store: Store,
    path: str | Path,
    dataset: str,
    classes_file: str | Path | None = None,
    parent: str | None = None,
    message: str = "",
    tag: str | None = None,
    visible_classes_file: str | Path | None = None,
) -> tuple[str, bool]:
    """Import a JSONL file of neighbors as a version; returns `(ref, created)`.

    visible_classes_file: the classes that whoever made the neighbors saw (one per line);
    default: the imported class list.
    """
    path = Path(path)
    classes = read_classes_file(classes_file) if classes_file is not None else None
    parsed = read_human_file(path, classes)
    if classes is None:
        classes = list(dict.fromkeys(lr.record.class_ for lr, _ in parsed))
        if not classes:
            raise ValidationError("no neighbors in the file and no --classes given", file=path)
    accepted, rejected = _split([lr for lr, _ in parsed])
    params: dict[str, Any] = {"source": "human-import"}
    if visible_classes_file is not None:
        params["visible_classes"] = read_classes_file(visible_classes_file)
    return store.write_version_info(
        dataset, classes, accepted, rejected, params=params,
        parent=parent, message=message, tag=tag,
    )


def checkout(store: Store, ref: str, directory: str | Path) -> Path:
    """Write an editable copy of version `ref` into `directory` (which must be new or empty)."""
    v = store.read(ref)
    d = Path(directory)
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise StoreError(f"{d}: checkout directory exists and is not empty")
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / NEIGHBORS, (r.to_json_dict() for r in v.neighbors))
    write_jsonl(d / REJECTED, (r.to_json_dict() for r in v.rejected))
    meta = {
        "parent": f"{v.slug}@{v.id}",
        "dataset": v.dataset,
        "classes": v.classes,
        "store": str(store.root.resolve()),
    }
    # written last and whole: a folder is a checkout only once both record files are in it
    atomic_write_json(d / CHECKOUT, meta)
    return d


def read_checkout(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CHECKOUT
    if not path.is_file():
        raise StoreError(f"{directory}: not a checkout (no {CHECKOUT}; create one with `sept store checkout REF DIR`)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["parent"], meta["dataset"], meta["classes"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValidationError(f"unreadable checkout file ({e})", file=path) from None
    check_classes(meta["classes"], file=path)
    return meta


def commit(store: Store, directory: str | Path, message: str = "", tag: str | None = None) -> tuple[str, bool]:
    """Validate the edited checkout and write it as a child of the checked-out version; returns `(ref, created)`."""
    d = Path(directory)
    meta = read_checkout(d)
    parent = store.read(meta["parent"])
    classes = parent.classes
    parent_ids = {r.id for r in parent.neighbors} | {r.id for r in parent.rejected}
    lines: list[LineRecord] = []
    for name in (NEIGHBORS, REJECTED):
        if not (d / name).is_file():
            if name == REJECTED:
                continue
            raise ValidationError("file not found (deleting all neighbors means emptying it, not removing it)",
                                  file=d / name)
        for lr, edited_from in read_human_file(d / name, classes, rejected_file=name == REJECTED):
            if edited_from in parent_ids:
                source = {**lr.record.source, "edited_from": edited_from}
                lr.record = lr.record.model_copy(update={"source": source})
            lines.append(lr)
    accepted, rejected = _split(lines)
    return store.write_version_info(
        parent.dataset, classes, accepted, rejected, params=parent.manifest.get("params", {}),
        parent=meta["parent"], message=message, tag=tag,
    )
