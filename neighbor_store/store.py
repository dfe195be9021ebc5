"""The store: per dataset, immutable content-addressed versions, tags, and margin attachments.

Layout (root defaults to `./neighbor-store`, or `$SEPT_STORE`):

    <root>/<dataset-slug>/versions/<id>/manifest.json
    <root>/<dataset-slug>/versions/<id>/neighbors.jsonl
    <root>/<dataset-slug>/versions/<id>/rejected.jsonl
    <root>/<dataset-slug>/versions/<id>/margins/<fingerprint>.safetensors   (+ <fingerprint>.json: sha256)
    <root>/<dataset-slug>/tags.json

A version is built in `<root>/<dataset-slug>/.tmp/<pid>-<random>/` and published with one
`os.rename`, so a reader sees either the whole version or none of it, whatever happens to
the writer. Two writers of identical content race harmlessly: the id is the same and the
loser's rename fails onto an existing directory, which it then reuses.
"""
from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock
from slugify import slugify

from sept.neighbor_store import redact
from sept.neighbor_store.errors import IntegrityError, RefError, StoreError, ValidationError
from sept.neighbor_store.jsonl import dumps_line, read_jsonl
from sept.neighbor_store.records import NeighborRecord, neighbor_id
from sept.neighbor_store.version import (
    MANIFEST,
    MARGINS,
    NEIGHBORS,
    REJECTED,
    Margins,
    Version,
    content_id,
    manifest_digest,
    sha256_bytes,
    sha256_file,
    short,
)

FORMAT = "sept-neighbor-store/1"
DEFAULT_ROOT = "neighbor-store"
MIN_PREFIX = 4
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_FINGERPRINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STALE_TMP_SECONDS = 3600


def dataset_slug(dataset: str) -> str:
    """Folder name of a dataset. Class and dataset names stay verbatim everywhere else."""
    slug = slugify(dataset) if isinstance(dataset, str) else ""
    if not slug:
        raise StoreError(f"dataset name {dataset!r} has no usable folder name (slug is empty)")
    return slug


def split_ref(ref: str) -> tuple[str, str]:
    """`"esc50@ab12"` -> `("esc50", "ab12")`; a bare dataset means its latest version."""
    if not isinstance(ref, str) or not ref.strip():
        raise RefError(f"empty version reference {ref!r} (expected DATASET@ID|TAG|latest)")
    dataset, sep, version = ref.rpartition("@")
    if not sep:
        return ref, "latest"
    if not dataset or not version:
        raise RefError(f"bad version reference {ref!r} (expected DATASET@ID|TAG|latest)")
    return dataset, version


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _jsonable(obj: Any, where: str) -> Any:
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
        return {str(k): _jsonable(v, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalar
        return _jsonable(obj.item(), where)
    raise ValidationError(f"parameter {where!r} has a value of type {type(obj).__name__} that JSON cannot hold")


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        _fsync_write(tmp, data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def _render(records: list[NeighborRecord]) -> bytes:
    return "".join(dumps_line(r.to_json_dict()) for r in records).encode("utf-8")


def _per_class(classes: list[str], neighbors: list[NeighborRecord], rejected: list[NeighborRecord]) -> list[dict]:
    acc = {c: 0 for c in classes}
    rej = {c: 0 for c in classes}
    for r in neighbors:
        acc[r.class_] += 1
    for r in rejected:
        rej[r.class_] += 1
    return [{"class": c, "accepted": acc[c], "rejected": rej[c]} for c in classes]


class Store:
    """A neighbor store rooted at `root` (None -> `$SEPT_STORE` or `./neighbor-store`)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get("SEPT_STORE") or DEFAULT_ROOT)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---- paths and lookup -------------------------------------------------------------------

    def _dataset_dir(self, dataset: str) -> Path:
        return self.root / dataset_slug(dataset)

    def _version_dir(self, slug: str, version_id: str) -> Path:
        return self.root / slug / "versions" / version_id

    def datasets(self) -> list[str]:
        """Slugs of the datasets that hold at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / "versions").is_dir())

    def _version_ids(self, slug: str) -> list[str]:
        d = self.root / slug / "versions"
        if not d.is_dir():
            return []
        # a published version always has its manifest: the directory appears by rename, complete
        return sorted(p.name for p in d.iterdir() if _HEX64.match(p.name) and (p / MANIFEST).is_file())

    def _manifest(self, slug: str, version_id: str) -> dict[str, Any]:
        path = self._version_dir(slug, version_id) / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IntegrityError(f"{path}: unreadable manifest ({e})") from None

    def tags(self, dataset: str) -> dict[str, str]:
        """Tag -> full version id for a dataset."""
        path = self._dataset_dir(dataset) / "tags.json"
        if not path.is_file():
            return {}
        try:
            tags = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IntegrityError(f"{path}: unreadable tags file ({e})") from None
        if not isinstance(tags, dict):
            raise IntegrityError(f"{path}: tags file is not a JSON object")
        return tags

    def resolve(self, ref: str) -> tuple[str, str]:
        """`DATASET@<id-prefix|tag|latest>` -> `(dataset_slug, full_id)`; RefError if not exactly one version."""
        dataset, version = split_ref(ref)
        slug = dataset_slug(dataset)
        ids = self._version_ids(slug)
        if not ids:
            known = ", ".join(self.datasets()) or "none"
            raise RefError(f"no dataset {dataset!r} in store {self.root} (datasets: {known})")
        if version == "latest":
            return slug, max(ids, key=lambda i: (self._manifest(slug, i).get("created_at", ""), i))
        tags = self.tags(slug)
        if version in tags:
            if tags[version] not in ids:
                raise IntegrityError(f"tag {version!r} of {slug} points to missing version {tags[version]}")
            return slug, tags[version]
        v = version.lower()
        if _HEX.match(v):
            if len(v) < MIN_PREFIX:
                raise RefError(f"version prefix {version!r} in {ref!r} is too short (at least {MIN_PREFIX} hex chars)")
            hits = [i for i in ids if i.startswith(v)]
            if len(hits) == 1:
                return slug, hits[0]
            if len(hits) > 1:
                cands = ", ".join(f"{slug}@{short(h)}" for h in hits)
                raise RefError(f"ambiguous version {version!r} in {ref!r}: matches {cands}")
        known_tags = ", ".join(sorted(tags)) or "none"
        raise RefError(f"no version or tag {version!r} in dataset {slug} (tags: {known_tags}; or use latest)")

    # ---- reading ----------------------------------------------------------------------------

    def _read_records(self, path: Path, expect: dict[str, Any]) -> list[NeighborRecord]:
        data = path.read_bytes()
        if sha256_bytes(data) != expect.get("sha256"):
            raise IntegrityError(f"{path}: sha256 does not match the manifest (file was modified)")
        out = []
        for lineno, obj in read_jsonl(path):
            try:
                out.append(NeighborRecord.model_validate(obj))
            except Exception as e:  # pydantic's message is multi-line; keep the first reason
                raise IntegrityError(f"{path}:{lineno}: invalid record ({str(e).splitlines()[-1].strip()})") from None
        return out

    def read(self, ref: str) -> Version:
        """The version named by `ref`, records checked against the manifest's hashes."""
        slug, vid = self.resolve(ref)
        m = self._manifest(slug, vid)
        d = self._version_dir(slug, vid)
        try:
            neighbors = self._read_records(d / NEIGHBORS, m["files"][NEIGHBORS])
            rejected = self._read_records(d / REJECTED, m["files"][REJECTED])
        except (KeyError, TypeError):
            raise IntegrityError(f"{d / MANIFEST}: manifest lacks the file table") from None
        except FileNotFoundError as e:
            raise IntegrityError(f"{e.filename}: missing") from None
        return Version(
            dataset=m.get("dataset", slug), slug=slug, id=vid, classes=list(m.get("classes", [])),
            manifest=m, neighbors=neighbors, rejected=rejected, path=d,
        )

    # ---- writing ----------------------------------------------------------------------------

    def _sweep_tmp(self, dataset_dir: Path) -> None:
        """Remove build dirs of writers that died long ago; live writers' dirs are left alone."""
        tmp = dataset_dir / ".tmp"
        if not tmp.is_dir():
            return
        now = time.time()
        for p in tmp.iterdir():
            try:
                if now - p.stat().st_mtime < _STALE_TMP_SECONDS:
                    continue
                pid = int(p.name.split("-", 1)[0])
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(p, ignore_errors=True)
            except (OSError, ValueError):
                continue

    def _margins_plan(self, slug: str, parent: str | None, classes: list[str], neighbors: list[NeighborRecord]):
        """Which parent margin files can be carried over (None, or their dir) and the manifest note."""
        if parent is None:
            return None, {"status": "absent"}
        pdir = self._version_dir(slug, parent) / MARGINS
        fps = sorted(p.stem for p in pdir.glob("*.safetensors")) if pdir.is_dir() else []
        if not fps:
            return None, {"status": "absent"}
        pm = self._manifest(slug, parent)
        pv = self.read(f"{slug}@{parent}")
        same = pm.get("classes") == classes and [(r.id, r.text) for r in pv.neighbors] == [
            (r.id, r.text) for r in neighbors
        ]
        if same:
            return pdir, {"status": "carried", "from": parent, "fingerprints": fps}
        return None, {
            "status": "stale",
            "from": parent,
            "fingerprints": fps,
            "reason": "the classes or accepted neighbors differ from the parent's; recompute margins for this version",
        }

    def write_version(
        self,
        dataset: str,
        classes: list[str],
        neighbors: list[NeighborRecord],
        rejected: list[NeighborRecord] | None = None,
        params: dict[str, Any] | None = None,
        parent: str | None = None,
        message: str = "",
        tag: str | None = None,
    ) -> str:
        """Validate, store atomically and return `"<dataset-slug>@<id12>"`. Identical content -> the existing version."""
        ref, _ = self.write_version_info(dataset, classes, neighbors, rejected, params, parent, message, tag)
        return ref

    def write_version_info(
        self,
        dataset: str,
        classes: list[str],
        neighbors: list[NeighborRecord],
        rejected: list[NeighborRecord] | None = None,
        params: dict[str, Any] | None = None,
        parent: str | None = None,
        message: str = "",
        tag: str | None = None,
    ) -> tuple[str, bool]:
        """Like `write_version`, also telling whether a new version was created (False: it already existed)."""
        slug = dataset_slug(dataset)
        classes = check_classes(classes)
        if tag is not None:
            _check_tag(tag)
        secrets = redact.environment_secrets()
        params = redact.scrub(_jsonable(dict(params or {}), ""), secrets)
        message = redact.scrub_text(message or "", secrets)
        neighbors, rejected = prepare_records(classes, list(neighbors), list(rejected or []))
        parent_id = None
        if parent is not None:
            pslug, parent_id = self.resolve(parent)
            if pslug != slug:
                raise RefError(f"parent {parent!r} belongs to dataset {pslug}, not {slug}")

        nbytes, rbytes = _render(neighbors), _render(rejected)
        nsha, rsha = sha256_bytes(nbytes), sha256_bytes(rbytes)
        vid = content_id(classes, params, nsha, rsha)
        ddir = self.root / slug
        final = ddir / "versions" / vid
        ref = f"{slug}@{short(vid)}"
        if (final / MANIFEST).is_file():
            if tag is not None:
                self.tag(ref, tag)
            return ref, False

        from sept import __version__

        carry_from, margins_note = self._margins_plan(slug, parent_id, classes, neighbors)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "id": vid,
            "dataset": dataset,
            "dataset_slug": slug,
            "classes": classes,
            "parent": parent_id,
            "created_at": _now(),
            "code_version": __version__,
            "message": message,
            "params": params,
            "files": {
                NEIGHBORS: {"sha256": nsha, "rows": len(neighbors)},
                REJECTED: {"sha256": rsha, "rows": len(rejected)},
            },
            "counts": {
                "classes": len(classes),
                "neighbors": len(neighbors),
                "rejected": len(rejected),
                "per_class": _per_class(classes, neighbors, rejected),
            },
            "margins": margins_note,
        }
        manifest["manifest_sha256"] = manifest_digest(manifest)

        (ddir / "versions").mkdir(parents=True, exist_ok=True)
        (ddir / ".tmp").mkdir(exist_ok=True)
        self._sweep_tmp(ddir)
        build = ddir / ".tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        build.mkdir()
        try:
            _fsync_write(build / NEIGHBORS, nbytes)
            _fsync_write(build / REJECTED, rbytes)
            if carry_from is not None:
                # under the parent's margins lock: never copy a file and a sidecar from two different attaches
                with FileLock(str(carry_from / ".lock"), timeout=60):
                    shutil.copytree(carry_from, build / MARGINS, ignore=shutil.ignore_patterns(".*"))
            text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
            _fsync_write(build / MANIFEST, text.encode("utf-8"))
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
            self.tag(ref, tag)
        return ref, created

    def tag(self, ref: str, tag: str) -> str:
        """Point `tag` at the version `ref` (moving it if it existed); returns the version's reference."""
        _check_tag(tag)
        slug, vid = self.resolve(ref)
        ddir = self.root / slug
        with FileLock(str(ddir / ".tags.lock"), timeout=60):
            tags = self.tags(slug)
            tags[tag] = vid
            _atomic_write(ddir / "tags.json", (json.dumps(dict(sorted(tags.items())), indent=2) + "\n").encode())
        return f"{slug}@{short(vid)}"

    # ---- listing ----------------------------------------------------------------------------

    def _summary(self, slug: str, vid: str, tags_by_id: dict[str, list[str]]) -> dict[str, Any]:
        m = self._manifest(slug, vid)
        counts = m.get("counts", {})
        return {
            "dataset": m.get("dataset", slug),
            "slug": slug,
            "id": vid,
            "ref": f"{slug}@{short(vid)}",
            "created_at": m.get("created_at"),
            "parent": m.get("parent"),
            "message": m.get("message", ""),
            "classes": counts.get("classes"),
            "neighbors": counts.get("neighbors"),
            "rejected": counts.get("rejected"),
            "tags": sorted(tags_by_id.get(vid, [])),
            "margins": sorted(p.stem for p in (self._version_dir(slug, vid) / MARGINS).glob("*.safetensors")),
        }

    def _tags_by_id(self, slug: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for t, i in self.tags(slug).items():
            out.setdefault(i, []).append(t)
        return out

    def list(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Version summaries (oldest first), for one dataset or all of them."""
        if dataset is not None:
            slugs = [dataset_slug(dataset)]
            if not self._version_ids(slugs[0]):
                raise RefError(f"no dataset {dataset!r} in store {self.root} (datasets: {', '.join(self.datasets()) or 'none'})")
        else:
            slugs = self.datasets()
        out = []
        for slug in slugs:
            tags_by_id = self._tags_by_id(slug)
            rows = [self._summary(slug, v, tags_by_id) for v in self._version_ids(slug)]
            out.extend(sorted(rows, key=lambda r: (r["created_at"] or "", r["id"])))
        return out

    def log(self, dataset: str) -> list[dict[str, Any]]:
        """Lineage, newest first: for `DATASET`, every version; for `DATASET@REF`, that version and its ancestors."""
        if "@" not in dataset:
            return list(reversed(self.list(dataset)))
        slug, vid = self.resolve(dataset)
        tags_by_id = self._tags_by_id(slug)
        out, seen = [], set()
        while vid is not None and vid not in seen:
            seen.add(vid)
            if not (self._version_dir(slug, vid) / MANIFEST).is_file():
                break
            row = self._summary(slug, vid, tags_by_id)
            out.append(row)
            vid = row["parent"]
        return out

    # ---- margins ----------------------------------------------------------------------------

    def margin_fingerprints(self, ref: str) -> list[str]:
        slug, vid = self.resolve(ref)
        d = self._version_dir(slug, vid) / MARGINS
        return sorted(p.stem for p in d.glob("*.safetensors")) if d.is_dir() else []

    def attach_margins(
        self,
        ref: str,
        fingerprint: str,
        margins: Any,
        neighbor_ids: list[str],
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Store margins `[C, K]` of version `ref` under a text-encoder fingerprint.

        K runs over all accepted neighbors in neighbors.jsonl order; `neighbor_ids` must be
        exactly that order, so margins can never be applied to the wrong neighbors.
        """
        import numpy as np
        from safetensors.numpy import save

        if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
            raise ValidationError(f"encoder fingerprint {fingerprint!r} must match {_FINGERPRINT.pattern}")
        v = self.read(ref)
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
        meta = redact.scrub(_jsonable(dict(meta or {}), "meta"))
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
                "shape": [C, K], "created_at": _now(), "meta": meta}
        with FileLock(str(d / ".lock"), timeout=60):
            _atomic_write(d / f"{fingerprint}.safetensors", data)
            _atomic_write(d / f"{fingerprint}.json", (json.dumps(side, ensure_ascii=False, indent=2) + "\n").encode())
        return d / f"{fingerprint}.safetensors"

    def read_margins(self, ref: str, fingerprint: str) -> Margins | None:
        """Margins `[C, K]` (torch float32) of `ref` under `fingerprint`, or None if none were attached."""
        if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
            raise ValidationError(f"encoder fingerprint {fingerprint!r} must match {_FINGERPRINT.pattern}")
        v = self.read(ref)
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
        header = _safetensors_metadata(data)
        ids = json.loads(header["neighbor_ids"])
        if ids != v.neighbor_ids or list(values.shape) != [len(v.classes), len(v.neighbors)]:
            raise IntegrityError(f"{path}: margins do not match the neighbors of {v.ref}")
        return Margins(values=values, neighbor_ids=ids, classes=json.loads(header["classes"]),
                       fingerprint=fingerprint, meta=json.loads(header.get("meta", "{}")))

    # ---- verification -----------------------------------------------------------------------

    def verify(self, target: str) -> list[tuple[str, list[str]]]:
        """Recompute every hash of one version (`DATASET@REF`) or all versions of a dataset (`DATASET`).

        Returns `[(ref, problems)]`; an empty problem list means the version is intact.
        """
        if "@" in target:
            slug, vid = self.resolve(target)
            return [(f"{slug}@{short(vid)}", self._verify_version(slug, vid))]
        slug = dataset_slug(target)
        ids = self._version_ids(slug)
        if not ids:
            raise RefError(f"no dataset {target!r} in store {self.root}")
        out = [(f"{slug}@{short(v)}", self._verify_version(slug, v)) for v in ids]
        tag_problems = []
        try:
            for t, i in self.tags(slug).items():
                if i not in ids:
                    tag_problems.append(f"tags.json: tag {t!r} points to missing version {i}")
        except IntegrityError as e:
            tag_problems.append(str(e))
        if tag_problems:
            out.append((f"{slug} tags", tag_problems))
        return out

    def _verify_version(self, slug: str, vid: str) -> list[str]:
        d = self._version_dir(slug, vid)
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
            if _per_class(classes, records[NEIGHBORS], records[REJECTED]) != m.get("counts", {}).get("per_class"):
                problems.append(f"{MANIFEST}: per-class counts do not match the files")
        problems.extend(self._verify_margins(d, records.get(NEIGHBORS), classes))
        return problems

    def _verify_margins(self, d: Path, neighbors: list[NeighborRecord] | None, classes: list[str]) -> list[str]:
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
                header = _safetensors_metadata(data)
                ids = json.loads(header["neighbor_ids"])
                shape = _safetensors_shape(data, "margins")
            except Exception as e:
                problems.append(f"{rel}: unreadable header ({e})")
                continue
            if neighbors is not None and (ids != [r.id for r in neighbors] or shape != [len(classes), len(neighbors)]):
                problems.append(f"{rel}: neighbor ids or shape do not match neighbors.jsonl")
        return problems


def _check_tag(tag: str) -> None:
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ValidationError(f"tag {tag!r} must be letters, digits, '.', '_', '+', '-' (no '@', '/' or spaces)")
    if tag == "latest":
        raise ValidationError("tag 'latest' is reserved: it always means the newest version")
    if len(tag) >= MIN_PREFIX and _HEX.match(tag.lower()):
        raise ValidationError(f"tag {tag!r} looks like a version id prefix; pick a name that is not all hex digits")


def _safetensors_header(data: bytes) -> dict[str, Any]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    return _safetensors_header(data).get("__metadata__", {})


def _safetensors_shape(data: bytes, name: str) -> list[int]:
    return list(_safetensors_header(data)[name]["shape"])
