"""Verification: recompute every hash of a stored version and say what no longer matches.

Checks, per version: the manifest's own digest and id, each JSONL file's sha256, row count,
record ids and classes, the version id from classes + params + file hashes, per-class counts,
and each margin attachment against its sidecar sha256 and the version's neighbors. Per dataset,
also that every tag points to a version that exists. Nothing is repaired: problems are reported.
The functions take folders and tag tables; `Store.verify` finds them.
"""
from __future__ import annotations

import json
from pathlib import Path
from sept.neighbor_store import margins as margin_files
from sept.neighbor_store.jsonl import read_jsonl
from sept.neighbor_store.records import NeighborRecord, neighbor_id
from sept.neighbor_store.version import (
    MANIFEST,
    MARGINS,
    NEIGHBORS,
    REJECTED,
    content_id,
    manifest_digest,
    per_class,
    sha256_bytes,
    sha256_file,
    short,
)


def verify_tags(tags: dict[str, str], version_ids: list[str]) -> list[str]:
    """Problems of a dataset's tag table: tags pointing to versions that do not exist."""
    known = set(version_ids)
    return [f"tags.json: tag {t!r} points to missing version {i}" for t, i in tags.items() if i not in known]


def verify_version(d: Path, vid: str) -> list[str]:
    """Problems of the version `vid` stored in folder `d` ([] when intact)."""
    problems: list[str] = []
    try:
        m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return [f"{MANIFEST}: unreadable ({e})"]
    if m.get("manifest_sha256") != manifest_digest(m):
        problems.append(f"{MANIFEST}: content does not match its manifest_sha256 (manifest was modified)")
    if m.get("id") != vid:
        problems.append(f"{MANIFEST}: id {m.get('id')} differs from the version folder {vid}")
    classes = m.get("classes") or []
    files = m.get("files") or {}
    records: dict[str, list[NeighborRecord]] = {}
    for name in (NEIGHBORS, REJECTED):
        path = d / name
        expect = files.get(name) or {}
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        sha = sha256_file(path)
        if sha != expect.get("sha256"):
            problems.append(f"{name}: sha256 {sha[:12]} does not match the manifest's {str(expect.get('sha256'))[:12]}")
        rows = []
        try:
            for lineno, obj in read_jsonl(path):
                r = NeighborRecord.model_validate(obj)
                if r.id != neighbor_id(r.class_, r.text):
                    problems.append(f"{name}:{lineno}: id does not match class and text")
                if r.class_ not in classes:
                    problems.append(f"{name}:{lineno}: class {r.class_!r} not in the manifest's classes")
                rows.append(r)
        except Exception as e:
            problems.append(f"{name}: unreadable ({str(e).splitlines()[0]})")
        if len(rows) != expect.get("rows"):
            problems.append(f"{name}: {len(rows)} rows, the manifest says {expect.get('rows')}")
        records[name] = rows
    if not problems:
        recomputed = content_id(classes, m.get("params", {}), files[NEIGHBORS]["sha256"], files[REJECTED]["sha256"])
        if recomputed != vid:
            problems.append(f"{MANIFEST}: classes/params no longer hash to the version id {short(vid)}")
        if per_class(classes, records[NEIGHBORS], records[REJECTED]) != m.get("counts", {}).get("per_class"):
            problems.append(f"{MANIFEST}: per-class counts do not match the files")
    problems.extend(verify_margins(d, records.get(NEIGHBORS), classes))
    return problems


def verify_margins(d: Path, neighbors: list[NeighborRecord] | None, classes: list[str]) -> list[str]:
    """Problems of the margin attachments of the version in folder `d`."""
    md = d / MARGINS
    if not md.is_dir():
        return []
    problems = []
    tensors = {p.stem for p in md.glob("*.safetensors")}
    sides = {p.stem for p in md.glob("*.json")}
    for fp in sorted(sides - tensors):
        problems.append(f"{MARGINS}/{fp}.json: its {fp}.safetensors is missing")
    for fp in sorted(tensors):
        rel = f"{MARGINS}/{fp}.safetensors"
        if fp not in sides:
            problems.append(f"{rel}: no {fp}.json with its sha256")
            continue
        try:
            side = json.loads((md / f"{fp}.json").read_text(encoding="utf-8"))
            data = (md / f"{fp}.safetensors").read_bytes()
        except (OSError, json.JSONDecodeError) as e:
            problems.append(f"{rel}: unreadable ({e})")
            continue
        if sha256_bytes(data) != side.get("sha256"):
            problems.append(f"{rel}: sha256 does not match {fp}.json")
            continue
        try:
            ids = json.loads(margin_files.metadata(data)["neighbor_ids"])
            shape = margin_files.margins_shape(data)
        except Exception as e:
            problems.append(f"{rel}: unreadable header ({e})")
            continue
        if neighbors is not None and (ids != [r.id for r in neighbors] or shape != [len(classes), len(neighbors)]):
            problems.append(f"{rel}: neighbor ids or shape do not match neighbors.jsonl")
    return problems
