"""Tags: human names for versions of one dataset, kept in `<dataset-slug>/tags.json`.

A tag moves (re-tagging points it elsewhere); writers serialize on a lock file beside it and
replace the file atomically, so readers never need the lock.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from filelock import FileLock

from sept.atomic import atomic_write
from sept.neighbor_store.errors import IntegrityError, ValidationError
from sept.neighbor_store.version import HEX, MIN_PREFIX

TAGS = "tags.json"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_tag(tag: str) -> None:
    """A tag must never be mistaken for `latest` or an id prefix when a reference is resolved."""
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ValidationError(f"tag {tag!r} must be letters, digits, '.', '_', '+', '-' (no '@', '/' or spaces)")
    if tag == "latest":
        raise ValidationError("tag 'latest' is reserved: it always means the newest version")
    if len(tag) >= MIN_PREFIX and HEX.match(tag.lower()):
        raise ValidationError(f"tag {tag!r} looks like a version id prefix; pick a name that is not all hex digits")


def read_tags(dataset_dir: Path) -> dict[str, str]:
    """Tag -> full version id ({} when the dataset has no tags file)."""
    path = dataset_dir / TAGS
    if not path.is_file():
        return {}
    try:
        tags = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{path}: unreadable tags file ({e})") from None
    if not isinstance(tags, dict):
        raise IntegrityError(f"{path}: tags file is not a JSON object")
    return tags


def set_tag(dataset_dir: Path, tag: str, version_id: str) -> None:
    """Point `tag` at `version_id`, creating or moving it."""
    check_tag(tag)
    with FileLock(str(dataset_dir / ".tags.lock"), timeout=60):
        tags = read_tags(dataset_dir)
        tags[tag] = version_id
        atomic_write(dataset_dir / TAGS, (json.dumps(dict(sorted(tags.items())), indent=2) + "\n").encode())


def tags_by_id(tags: dict[str, str]) -> dict[str, list[str]]:
    """Version id -> the tags pointing at it."""
    out: dict[str, list[str]] = {}
    for t, i in tags.items():
        out.setdefault(i, []).append(t)
    return out
