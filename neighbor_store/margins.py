"""Margin attachments: `[C, K]` margins of a version, one file per text-encoder fingerprint.

    <version>/margins/<fingerprint>.safetensors   tensor "margins" [C, K] float32; metadata: fingerprint,
                                                  version id, classes and neighbor ids (JSON), meta
    <version>/margins/<fingerprint>.json          sha256 of the .safetensors, shape, created_at, meta

Margins are derived data: attaching them leaves the version's id and files untouched. The K axis
is the version's accepted neighbors in neighbors.jsonl order, checked by id on write and read.
The functions take a `Version` the store has read (and checked); this module never looks a
version up itself.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from sept.atomic import atomic_write, atomic_write_json
from sept.neighbor_store import redact
from sept.neighbor_store.errors import IntegrityError, ValidationError
from sept.neighbor_store.records import NeighborRecord
from sept.neighbor_store.version import MARGINS, Margins, Version, jsonable, now, sha256_bytes

_FINGERPRINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_fingerprint(fingerprint: str) -> None:
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise ValidationError(f"encoder fingerprint {fingerprint!r} must match {_FINGERPRINT.pattern}")


def fingerprints(version_dir: Path) -> list[str]:
    """Fingerprints with margins attached to the version in `version_dir`."""
    d = version_dir / MARGINS
    return sorted(p.stem for p in d.glob("*.safetensors")) if d.is_dir() else []


def metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file given as bytes.

    Read from the bytes, not with `safe_open(path).metadata()`: the library opens metadata only
    by file name, which would read the file a second time, and a concurrent attach may have
    replaced it since these bytes were checked against the sidecar's sha256. The header is the
    format's first 8 bytes (little-endian length) followed by that many bytes of JSON.
    """
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__", {})


def margins_shape(data: bytes) -> list[int]:
    """Shape of the "margins" tensor; the library parses (and so validates) the whole file."""
    from safetensors.numpy import load

    return list(load(data)["margins"].shape)


def carry_plan(parent: Version | None, classes: list[str],
               neighbors: list[NeighborRecord]) -> tuple[Path | None, dict[str, Any]]:
    """Which margin files of the `parent` version a new version can carry over (None, or their
    dir) and its manifest note. `parent` is None when there is none or it has no margins.

    Margins stay valid only when classes and accepted neighbors (ids and texts, in order) are the
    parent's; otherwise the note says they are stale and must be recomputed.
    """
    fps = fingerprints(parent.path) if parent is not None and parent.path is not None else []
    if not fps:
        return None, {"status": "absent"}
    same = parent.classes == classes and [(r.id, r.text) for r in parent.neighbors] == [
        (r.id, r.text) for r in neighbors
    ]
    if same:
        return parent.path / MARGINS, {"status": "carried", "from": parent.id, "fingerprints": fps}
    return None, {
        "status": "stale",
        "from": parent.id,
        "fingerprints": fps,
        "reason": "the classes or accepted neighbors differ from the parent's; recompute margins for this version",
    }


def copy_carried(margins_dir: Path, target: Path) -> None:
    """Copy a parent's margin files into a version under construction."""
    # under the parent's margins lock: never copy a file and a sidecar from two different attaches
    with FileLock(str(margins_dir / ".lock"), timeout=60):
        shutil.copytree(margins_dir, target, ignore=shutil.ignore_patterns(".*"))


def attach(v: Version, fingerprint: str, margins: Any, neighbor_ids: list[str],
           meta: dict[str, Any] | None = None) -> Path:
    """Store margins `[C, K]` of version `v` under `fingerprint`; see `Store.attach_margins`."""
    import numpy as np
    from safetensors.numpy import save

    check_fingerprint(fingerprint)
    if hasattr(margins, "detach"):
        margins = margins.detach().to("cpu").float().numpy()
    arr = np.ascontiguousarray(np.asarray(margins, dtype=np.float32))
    C, K = len(v.classes), len(v.neighbors)
    if arr.shape != (C, K):
        raise ValidationError(f"margins for {v.ref} must have shape [C={C}, K={K}], got {list(arr.shape)}")
    ids = list(neighbor_ids)
    if ids != v.neighbor_ids:
        if len(ids) != K:
            raise ValidationError(f"margins for {v.ref}: {len(ids)} neighbor ids given, the version has K={K}")
        k = next(i for i, (a, b) in enumerate(zip(ids, v.neighbor_ids)) if a != b)
        raise ValidationError(
            f"margins for {v.ref}: neighbor id #{k} is {ids[k]}, the version has {v.neighbor_ids[k]} there "
            "(ids must follow neighbors.jsonl order)"
        )
    if not np.isfinite(arr).all():
        raise ValidationError(f"margins for {v.ref} contain NaN or infinite values")
    meta = redact.scrub(jsonable(dict(meta or {}), "meta"))
    header = {
        "fingerprint": fingerprint,
        "version": v.id,
        "classes": json.dumps(v.classes, ensure_ascii=False),
        "neighbor_ids": json.dumps(ids),
        "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True),
    }
    data = save({"margins": arr}, metadata=header)
    d = v.path / MARGINS
    d.mkdir(exist_ok=True)
    side = {"fingerprint": fingerprint, "file": f"{fingerprint}.safetensors", "sha256": sha256_bytes(data),
            "shape": [C, K], "created_at": now(), "meta": meta}
    with FileLock(str(d / ".lock"), timeout=60):
        atomic_write(d / f"{fingerprint}.safetensors", data)
        atomic_write_json(d / f"{fingerprint}.json", side)
    return d / f"{fingerprint}.safetensors"


def read(v: Version, fingerprint: str) -> Margins | None:
    """Margins `[C, K]` (torch float32) of version `v` under `fingerprint`, or None if none were attached."""
    check_fingerprint(fingerprint)
    d = v.path / MARGINS
    path = d / f"{fingerprint}.safetensors"
    if not path.is_file():
        return None
    from safetensors.torch import load

    # lock-free, so a read-only store works; a mismatch may be a concurrent re-attach, so look twice more
    for attempt in range(3):
        data = path.read_bytes()
        side = json.loads((d / f"{fingerprint}.json").read_text(encoding="utf-8"))
        if sha256_bytes(data) == side.get("sha256"):
            break
        time.sleep(0.05 * (attempt + 1))
    else:
        raise IntegrityError(f"{path}: sha256 does not match {fingerprint}.json (file was modified)")
    values = load(data)["margins"]
    header = metadata(data)
    ids = json.loads(header["neighbor_ids"])
    if ids != v.neighbor_ids or list(values.shape) != [len(v.classes), len(v.neighbors)]:
        raise IntegrityError(f"{path}: margins do not match the neighbors of {v.ref}")
    return Margins(values=values, neighbor_ids=ids, classes=json.loads(header["classes"]),
                   fingerprint=fingerprint, meta=json.loads(header.get("meta", "{}")))
