"""What one stored version is: its records, its manifest's values, and how its content id is computed.

Everything here is pure (no store, no file writes), so every other module of the store may
import it: the file names of a version folder, id and prefix rules, hashing, the JSON a
manifest holds (`jsonable`, `now`, `per_class`), and the `Version` / `Margins` types.
(`writer.py` builds and publishes versions; `store.py` finds and reads them.)
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sept.neighbor_store.errors import IntegrityError, ValidationError
from sept.neighbor_store.jsonl import read_jsonl
from sept.neighbor_store.records import NeighborRecord

ID_SHOWN = 12  # hex chars of a version id shown in references
MIN_PREFIX = 4  # shortest id prefix a reference may use
HEX = re.compile(r"^[0-9a-f]+$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")  # a full version id
MANIFEST = "manifest.json"
NEIGHBORS = "neighbors.jsonl"
REJECTED = "rejected.jsonl"
MARGINS = "margins"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_records(path: Path, expected_sha256: str | None, mismatch: Exception) -> list[NeighborRecord]:
    """The records of a version's JSONL file, after checking its bytes against the recorded hash;
    `mismatch` is raised when they differ (the store and an import word it their own way)."""
    if sha256_bytes(path.read_bytes()) != expected_sha256:
        raise mismatch
    out = []
    for lineno, obj in read_jsonl(path):
        try:
            out.append(NeighborRecord.model_validate(obj))
        except Exception as e:  # pydantic's message is multi-line; keep its last reason
            raise IntegrityError(f"{path}:{lineno}: invalid record ({str(e).splitlines()[-1].strip()})") from None
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def content_id(classes: list[str], params: dict[str, Any], neighbors_sha256: str, rejected_sha256: str) -> str:
    """The version id: sha256 over the class list, the generation params and both JSONL files.

    Parent, message, tag and created_at stay out on purpose: the same neighbors produced
    twice are the same version, whoever wrote them and when.
    """
    return sha256_bytes(
        canonical_json(
            {
                "classes": classes,
                "params": params,
                "neighbors_sha256": neighbors_sha256,
                "rejected_sha256": rejected_sha256,
            }
        )
    )


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own `manifest_sha256` field; lets verify catch an edited manifest."""
    return sha256_bytes(canonical_json({k: v for k, v in manifest.items() if k != "manifest_sha256"}))


def short(version_id: str) -> str:
    return version_id[:ID_SHOWN]


def now() -> str:
    """A manifest's timestamp: UTC, ISO 8601, microseconds."""
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


def per_class(classes: list[str], neighbors: list[NeighborRecord], rejected: list[NeighborRecord]) -> list[dict]:
    """The manifest's per-class counts of accepted and rejected records, in class order."""
    acc = {c: 0 for c in classes}
    rej = {c: 0 for c in classes}
    for r in neighbors:
        acc[r.class_] += 1
    for r in rejected:
        rej[r.class_] += 1
    return [{"class": c, "accepted": acc[c], "rejected": rej[c]} for c in classes]


@dataclass
class Version:
    """One stored version, read back. `neighbors` are accepted, in class order then rank."""

    dataset: str  # the dataset name as given when written (verbatim)
    slug: str  # its folder name
    id: str  # full sha256 hex
    classes: list[str]
    manifest: dict[str, Any]
    neighbors: list[NeighborRecord] = field(default_factory=list)
    rejected: list[NeighborRecord] = field(default_factory=list)
    path: Path | None = None

    @property
    def ref(self) -> str:
        """`<dataset-slug>@<12 hex>`, the form every command prints."""
        return f"{self.slug}@{short(self.id)}"

    @property
    def parent(self) -> str | None:
        return self.manifest.get("parent")

    def by_class(self) -> dict[str, list[NeighborRecord]]:
        """Accepted neighbors per class, every class present (maybe empty), in class order."""
        out: dict[str, list[NeighborRecord]] = {c: [] for c in self.classes}
        for r in self.neighbors:
            out[r.class_].append(r)
        return out

    @property
    def neighbor_ids(self) -> list[str]:
        """Ids of the accepted neighbors in file order: the K axis of this version's margins."""
        return [r.id for r in self.neighbors]


@dataclass
class Margins:
    """Margins of one version under one text encoder: `values[i, k]` for class i, neighbor k."""

    values: Any  # torch.Tensor [C, K] float32
    neighbor_ids: list[str]  # K ids, the version's accepted neighbors in neighbors.jsonl order
    classes: list[str]  # C class names in version order
    fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)
