"""A neighbor version as a Hugging Face dataset folder, and back.

    export_hf(store, ref, out, rejected=False)   # writes OUT; `hf upload USER/NAME OUT --repo-type dataset` publishes it
    import_hf(store, out)                         # -> (ref, created); the same version id

The folder (what a Hub user gets from `datasets.load_dataset(REPO)`):

    OUT/README.md                    dataset card; YAML `configs:` point at the data files
    OUT/data/neighbors.jsonl         the version's neighbors.jsonl, byte for byte (config `neighbors`)
    OUT/data/rejected.jsonl          with rejected=True: rejected candidates and reasons (config `rejected`)
    OUT/manifest.json                the version's manifest, verbatim
    OUT/margins/<fp>.safetensors     attached margins (+ <fp>.json), copied

The data files are the store's own bytes, so their sha256 still matches the manifest; the
manifest carries the classes and generation params, the rest of the id. An export without
the rejected candidates imports as a version without them, which has another id (said on
import). The folder is built beside OUT and renamed into place; an OUT that exists is refused.
Plain files only: writing needs no `datasets` package; reading back needs only the store.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from sept.neighbor_store import writer
from sept.neighbor_store.errors import IntegrityError, StoreError
from sept.neighbor_store.records import NeighborRecord
from sept.neighbor_store.version import MANIFEST, MARGINS, NEIGHBORS, REJECTED, read_records, sha256_bytes, short

DATA = "data"
CARD = "README.md"


class ExportError(StoreError):
    """An export folder that cannot be written, or a folder that is not a sept export."""


def _yaml_str(s: str) -> str:
    # JSON strings are valid YAML double-quoted scalars: no quoting rules to get wrong
    return json.dumps(str(s), ensure_ascii=False)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return str(value)


def card(manifest: dict[str, Any], with_rejected: bool) -> str:
    """The README.md dataset card of an export, made from the version's manifest only."""
    params = manifest.get("params") or {}
    dataset = manifest.get("dataset", "")
    vid = manifest.get("id", "")
    prompt = str(params.get("prompt", "unknown"))
    prompt_id, _, prompt_hash = prompt.partition("@")
    lines = [
        "---",
        f"pretty_name: {_yaml_str(f'sept neighbors of {dataset} ({short(vid)})')}",
        "task_categories:",
        "- audio-classification",
        "- zero-shot-classification",
        "tags:",
        "- sept",
        "- semantic-neighbors",
        "- synthetic",
        "configs:",
        "- config_name: neighbors",
        "  default: true",
        "  data_files:",
        "  - split: train",
        f"    path: {DATA}/{NEIGHBORS}",
    ]
    if with_rejected:
        lines += ["- config_name: rejected", "  data_files:", "  - split: train", f"    path: {DATA}/{REJECTED}"]
    lines += ["---", "", f"# Semantic neighbors of {dataset} class names", ""]
    lines += [
        f"Generated with sept {manifest.get('code_version', 'unknown')}; sept version id `{vid}` "
        f"(reference `{manifest.get('dataset_slug', '')}@{short(vid)}`).",
        "",
        "```python",
        "from datasets import load_dataset",
        'neighbors = load_dataset("USER/NAME", "neighbors", split="train")',
        "```",
        "",
        "## How it was made",
        "",
        f"- LLM backend: {params.get('backend', 'unknown')}",
        f"- LLM model: {params.get('model', 'unknown')}",
        f"- Prompt id: {prompt_id or 'unknown'}",
        f"- Prompt hash: {prompt_hash or 'unknown'}",
    ]
    if "sampling" in params:
        lines.append(f"- Sampling: {_describe(params['sampling'])}")
    if "templates" in params:
        lines.append(f"- CLAP text templates: {params['templates']}")
    lines.append(f"- Dedup: {_describe(params['dedup']) if 'dedup' in params else 'not recorded'}")
    lines.append(f"- CLAP: {_describe(params['clap']) if 'clap' in params else 'not recorded'}")
    if "clap_filter" in params:
        lines.append(f"- CLAP filter: {_describe(params['clap_filter'])}")
    visible = manifest.get("visible_classes") or params.get("visible_classes") or manifest.get("classes", [])
    lines.append(f"- Visible classes ({len(visible)}): {', '.join(visible)}")
    split = manifest.get("split") or params.get("split")
    lines.append(f"- Split: {_describe(split) if split else 'none (all classes visible)'}")
    for c in manifest.get("cost") or []:
        lines.append(f"- Cost: {_describe(c)}")
    if not manifest.get("cost"):
        lines.append("- Cost: not recorded")
    if manifest.get("message"):
        lines.append(f"- Message: {manifest['message']}")
    counts = manifest.get("counts") or {}
    lines += ["", "## Counts", "",
              f"{counts.get('neighbors', 0)} neighbors and {counts.get('rejected', 0)} rejected candidates "
              f"over {counts.get('classes', 0)} classes"
              + ("" if with_rejected else " (the rejected candidates are not part of this export)") + ".",
              "", "| class | accepted | rejected |", "|---|---|---|"]
    for row in counts.get("per_class", []):
        name = str(row["class"]).replace("|", "\\|")
        lines.append(f"| {name} | {row['accepted']} | {row['rejected']} |")
    lines += ["", "## Files", "",
              f"- `{DATA}/{NEIGHBORS}`: one neighbor per line (`class`, `text`, `kind`, `id`, `scores`, `source`, `status`).",
              ]
    if with_rejected:
        lines.append(f"- `{DATA}/{REJECTED}`: rejected candidates with their `reason`.")
    lines += [f"- `{MANIFEST}`: the sept manifest (all generation parameters).",
              f"- `{MARGINS}/`: CLAP margins `[classes, neighbors]` as safetensors, one file per text encoder.",
              "", "Import into a sept store with `sept store import --format hf FOLDER`.", ""]
    return "\n".join(lines)


def _build_beside(out: Path) -> Path:
    if out.exists():
        raise ExportError(f"{out}: already exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    build = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build.mkdir()
    return build


def export_hf(store, ref: str, out: str | Path, rejected: bool = False) -> Path:
    """Write version `ref` as a Hugging Face dataset folder at `out` (new); returns `out`."""
    out = Path(out)
    v = store.read(ref)  # checks the files against the manifest's hashes
    if out.exists():
        raise ExportError(f"{out}: already exists; choose a new folder")
    build = _build_beside(out)
    try:
        (build / DATA).mkdir()
        shutil.copyfile(v.path / NEIGHBORS, build / DATA / NEIGHBORS)
        if rejected:
            shutil.copyfile(v.path / REJECTED, build / DATA / REJECTED)
        shutil.copyfile(v.path / MANIFEST, build / MANIFEST)
        if (v.path / MARGINS).is_dir():
            shutil.copytree(v.path / MARGINS, build / MARGINS, ignore=shutil.ignore_patterns(".*"))
        (build / CARD).write_text(card(v.manifest, rejected), encoding="utf-8")
        os.rename(build, out)  # fails if someone created OUT meanwhile: theirs is kept
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return out


def _records(path: Path, expect: dict[str, Any]) -> list[NeighborRecord]:
    return read_records(path, expect.get("sha256"),
                        ExportError(f"{path}: does not match {MANIFEST} (sha256 differs: the file was edited)"))


def import_hf(store, folder: str | Path) -> tuple[str, bool, str | None]:
    """Store the version exported at `folder`; returns (ref, created, note).

    `note` says why the id differs from the exported one (the export left out the rejected
    candidates), else None. Margins in the folder are attached when the id is the exported one.
    """
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder")
    if not mpath.is_file():
        raise ExportError(f"{mpath}: missing; {folder} is not a sept export")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
        files = m["files"]
        dataset, classes, params = m["dataset"], m["classes"], m.get("params") or {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{mpath}: not valid JSON ({e})") from None
    except (KeyError, TypeError):
        raise ExportError(f"{mpath}: not a sept manifest (no dataset, classes or file table)") from None
    npath = folder / DATA / NEIGHBORS
    if not npath.is_file():
        raise ExportError(f"{npath}: missing; {folder} is not a sept export")
    neighbors = _records(npath, files.get(NEIGHBORS, {}))
    rpath = folder / DATA / REJECTED
    rejected = _records(rpath, files.get(REJECTED, {})) if rpath.is_file() else []
    margins = _read_margins(folder / MARGINS)  # checked before anything is stored
    message, cost = m.get("message", ""), m.get("cost")
    # the id is computed (writer.prepare is pure) before the store is touched: a folder whose
    # files and manifest disagree leaves no version behind
    vid = writer.prepare(dataset, classes, neighbors, rejected, params, message, cost).id
    note = None
    if vid != m.get("id"):
        if rpath.is_file() or not files.get(REJECTED, {}).get("rows"):
            raise ExportError(f"{mpath}: the files give version {vid}, the manifest says {m.get('id')}")
        note = (f"{folder} has no {DATA}/{REJECTED} (exported without --rejected), so the imported version "
                f"lacks its {files[REJECTED]['rows']} rejected candidates and its id differs from {m.get('id')}")
    ref, created = store.write_version_info(dataset, classes, neighbors, rejected, params, message=message, cost=cost)
    if note:
        return ref, created, note
    have = set(store.margin_fingerprints(ref))
    if margins:
        v = store.read(ref)
        for fp, (values, meta) in margins.items():
            if fp not in have:
                store.attach_margins(ref, fp, values, v.neighbor_ids, meta=meta)
    return ref, created, note


def _read_margins(mdir: Path) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The export's margins per fingerprint: (values [C, K], meta), each file checked against its sidecar."""
    if not mdir.is_dir():
        return {}
    from safetensors import safe_open
    from safetensors.numpy import load

    out = {}
    for f in sorted(mdir.glob("*.safetensors")):
        data = f.read_bytes()
        side = mdir / f"{f.stem}.json"
        try:
            expect = json.loads(side.read_text(encoding="utf-8")).get("sha256")
        except (OSError, json.JSONDecodeError, AttributeError):
            raise IntegrityError(f"{side}: missing or not a JSON object (needed to check {f.name})") from None
        if sha256_bytes(data) != expect:
            raise IntegrityError(f"{f}: sha256 does not match {side.name} (file was modified)")
        with safe_open(str(f), framework="numpy") as st:
            header = st.metadata() or {}
        out[f.stem] = (load(data)["margins"], json.loads(header.get("meta", "{}")))
    return out
