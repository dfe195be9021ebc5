"""The store: per dataset, immutable content-addressed versions, tags, and margin attachments.

Layout (root defaults to `./neighbor-store`, or `$SEPT_STORE`):

    <root>/<dataset-slug>/versions/<id>/manifest.json
    <root>/<dataset-slug>/versions/<id>/neighbors.jsonl
    <root>/<dataset-slug>/versions/<id>/rejected.jsonl
    <root>/<dataset-slug>/versions/<id>/margins/<fingerprint>.safetensors   (+ <fingerprint>.json: sha256)
    <root>/<dataset-slug>/tags.json

`Store` is the one entry point. It resolves references and reads versions itself; writing
(`writer`), tags (`tags`), margin attachments (`margins`) and verification (`verify`) live in
their own modules, which work on folders and `Version`s and never import the store: the store
calls them, never the other way round. `version_path`, `manifest` and `version_ids` are the
public way to a version's folder and manifest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sept.names import dataset_slug

from sept.neighbor_store import margins as margin_files
from sept.neighbor_store import tags as tag_file
from sept.neighbor_store import verify as verification
from sept.neighbor_store import writer
from sept.neighbor_store.errors import IntegrityError, RefError
from sept.neighbor_store.records import NeighborRecord
from sept.neighbor_store.version import (
    HEX,
    HEX64,
    MANIFEST,
    MIN_PREFIX,
    NEIGHBORS,
    REJECTED,
    Margins,
    Version,
    read_records,
    short,
)

DEFAULT_ROOT = "neighbor-store"


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


class Store:
    """A neighbor store rooted at `root` (None -> `$SEPT_STORE` or `./neighbor-store`)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get("SEPT_STORE") or DEFAULT_ROOT)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---- paths and lookup -------------------------------------------------------------------

    def _dataset_dir(self, dataset: str) -> Path:
        return self.root / dataset_slug(dataset)

    def version_path(self, slug: str, version_id: str) -> Path:
        """The folder of version `version_id` (full id) of dataset `slug`; it may not exist."""
        return self.root / slug / "versions" / version_id

    def datasets(self) -> list[str]:
        """Slugs of the datasets that hold at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / "versions").is_dir())

    def version_ids(self, slug: str) -> list[str]:
        """Full ids of the published versions of dataset `slug`, sorted."""
        d = self.root / slug / "versions"
        if not d.is_dir():
            return []
        # a published version always has its manifest: the directory appears by rename, complete
        return sorted(p.name for p in d.iterdir() if HEX64.match(p.name) and (p / MANIFEST).is_file())

    def manifest(self, slug: str, version_id: str) -> dict[str, Any]:
        """The manifest of a published version, as stored (IntegrityError when unreadable)."""
        path = self.version_path(slug, version_id) / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise IntegrityError(f"{path}: unreadable manifest ({e})") from None

    def resolve(self, ref: str) -> tuple[str, str]:
        """`DATASET@<id-prefix|tag|latest>` -> `(dataset_slug, full_id)`; RefError if not exactly one version."""
        dataset, version = split_ref(ref)
        slug = dataset_slug(dataset)
        ids = self.version_ids(slug)
        if not ids:
            known = ", ".join(self.datasets()) or "none"
            raise RefError(f"no dataset {dataset!r} in store {self.root} (datasets: {known})")
        if version == "latest":
            return slug, max(ids, key=lambda i: (self.manifest(slug, i).get("created_at", ""), i))
        tags = self.tags(slug)
        if version in tags:
            if tags[version] not in ids:
                raise IntegrityError(f"tag {version!r} of {slug} points to missing version {tags[version]}")
            return slug, tags[version]
        v = version.lower()
        if HEX.match(v):
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
        return read_records(path, expect.get("sha256"),
                            IntegrityError(f"{path}: sha256 does not match the manifest (file was modified)"))

    def read(self, ref: str) -> Version:
        """The version named by `ref`, records checked against the manifest's hashes."""
        slug, vid = self.resolve(ref)
        m = self.manifest(slug, vid)
        d = self.version_path(slug, vid)
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

    # ---- writing (sept.neighbor_store.writer) ----------------------------------------------

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
        cost: list[dict[str, Any]] | None = None,
    ) -> str:
        """Validate, store atomically and return `"<dataset-slug>@<id12>"`. Identical content -> the existing version.

        `cost`: what generating it cost, one entry per backend (requests, retries, cache hits,
        tokens, wall time); recorded in the manifest, outside the version id.
        """
        ref, _ = self.write_version_info(dataset, classes, neighbors, rejected, params, parent, message, tag, cost)
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
        cost: list[dict[str, Any]] | None = None,
    ) -> tuple[str, bool]:
        """Like `write_version`, also telling whether a new version was created (False: it already existed)."""
        draft = writer.prepare(dataset, classes, neighbors, rejected, params, message, cost)
        if tag is not None:
            tag_file.check_tag(tag)
        parent_id = None
        if parent is not None:
            pslug, parent_id = self.resolve(parent)
            if pslug != draft.slug:
                raise RefError(f"parent {parent!r} belongs to dataset {pslug}, not {draft.slug}")
        created = False
        if not (self.version_path(draft.slug, draft.id) / MANIFEST).is_file():
            # the parent is read (and checked) only when it has margins that may be carried over
            parent_version = None
            if parent_id is not None and margin_files.fingerprints(self.version_path(draft.slug, parent_id)):
                parent_version = self.read(f"{draft.slug}@{parent_id}")
            carry_from, note = margin_files.carry_plan(parent_version, draft.classes, draft.neighbors)
            created = writer.publish(self.root, draft, parent_id, carry_from, note)
        if tag is not None:
            self.tag(draft.ref, tag)
        return draft.ref, created

    # ---- tags (sept.neighbor_store.tags) ----------------------------------------------------

    def tags(self, dataset: str) -> dict[str, str]:
        """Tag -> full version id for a dataset."""
        return tag_file.read_tags(self._dataset_dir(dataset))

    def tag(self, ref: str, tag: str) -> str:
        """Point `tag` at the version `ref` (moving it if it existed); returns the version's reference."""
        tag_file.check_tag(tag)
        slug, vid = self.resolve(ref)
        tag_file.set_tag(self.root / slug, tag, vid)
        return f"{slug}@{short(vid)}"

    # ---- listing ----------------------------------------------------------------------------

    def _summary(self, slug: str, vid: str, tags_by_id: dict[str, list[str]]) -> dict[str, Any]:
        m = self.manifest(slug, vid)
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
            "margins": margin_files.fingerprints(self.version_path(slug, vid)),
        }

    def list(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Version summaries (oldest first), for one dataset or all of them."""
        if dataset is not None:
            slugs = [dataset_slug(dataset)]
            if not self.version_ids(slugs[0]):
                raise RefError(f"no dataset {dataset!r} in store {self.root} (datasets: {', '.join(self.datasets()) or 'none'})")
        else:
            slugs = self.datasets()
        out = []
        for slug in slugs:
            tags_by_id = tag_file.tags_by_id(self.tags(slug))
            rows = [self._summary(slug, v, tags_by_id) for v in self.version_ids(slug)]
            out.extend(sorted(rows, key=lambda r: (r["created_at"] or "", r["id"])))
        return out

    def log(self, dataset: str) -> list[dict[str, Any]]:
        """Lineage, newest first: for `DATASET`, every version; for `DATASET@REF`, that version and its ancestors."""
        if "@" not in dataset:
            return list(reversed(self.list(dataset)))
        slug, vid = self.resolve(dataset)
        tags_by_id = tag_file.tags_by_id(self.tags(slug))
        out, seen = [], set()
        while vid is not None and vid not in seen:
            seen.add(vid)
            if not (self.version_path(slug, vid) / MANIFEST).is_file():
                break
            row = self._summary(slug, vid, tags_by_id)
            out.append(row)
            vid = row["parent"]
        return out

    # ---- margins (sept.neighbor_store.margins) ----------------------------------------------

    def margin_fingerprints(self, ref: str) -> list[str]:
        slug, vid = self.resolve(ref)
        return margin_files.fingerprints(self.version_path(slug, vid))

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
        margin_files.check_fingerprint(fingerprint)
        return margin_files.attach(self.read(ref), fingerprint, margins, neighbor_ids, meta)

    def read_margins(self, ref: str, fingerprint: str) -> Margins | None:
        """Margins `[C, K]` (torch float32) of `ref` under `fingerprint`, or None if none were attached."""
        margin_files.check_fingerprint(fingerprint)
        return margin_files.read(self.read(ref), fingerprint)

    # ---- verification (sept.neighbor_store.verify) ------------------------------------------

    def verify(self, target: str) -> list[tuple[str, list[str]]]:
        """Recompute every hash of one version (`DATASET@REF`) or all versions of a dataset (`DATASET`).

        Returns `[(ref, problems)]`; an empty problem list means the version is intact.
        """
        if "@" in target:
            slug, vid = self.resolve(target)
            return [(f"{slug}@{short(vid)}", verification.verify_version(self.version_path(slug, vid), vid))]
        slug = dataset_slug(target)
        ids = self.version_ids(slug)
        if not ids:
            raise RefError(f"no dataset {target!r} in store {self.root}")
        out = [(f"{slug}@{short(v)}", verification.verify_version(self.version_path(slug, v), v)) for v in ids]
        try:
            tag_problems = verification.verify_tags(self.tags(slug), ids)
        except IntegrityError as e:
            tag_problems = [str(e)]
        if tag_problems:
            out.append((f"{slug} tags", tag_problems))
        return out
