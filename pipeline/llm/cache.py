"""The on-disk response cache: a re-run with the same inputs costs zero LLM requests.

One JSON file per valid reply, named by the sha256 of every input that changes the answer
(backend kind, model, prompt ref, rendered messages, class, sampling parameters, sample index,
schema version). Not in the key: the API key, and the server address (a vLLM server restarted
on another port serves the same model). Writes go to a temporary file and are renamed into
place, so a reader never sees a half-written entry and concurrent writers never clash.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sept.atomic import atomic_write


def default_cache_dir() -> Path:
    """`$SEPT_CACHE/llm` when SEPT_CACHE is set, else `$SEPT_HOME/llm-cache` (`./.sept/llm-cache`)."""
    from sept.home import sept_home

    root = os.environ.get("SEPT_CACHE")
    return Path(root) / "llm" if root else sept_home() / "llm-cache"


def cache_key(fields: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of `fields`."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Valid LLM replies on disk, by key. `hits` / `misses` count lookups in this process."""

    def __init__(self, dir: str | Path | None = None):
        self.dir = Path(dir) if dir is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or None. A damaged entry (e.g. edited by hand) counts as a miss."""
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            self.misses += 1
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> Path:
        """Store `entry` (JSON-serializable) under `key`, atomically."""
        path = self._path(key)
        data = json.dumps({**entry, "key": key}, ensure_ascii=False, indent=1, sort_keys=True)
        # No fsync: it would stall the event loop for every reply, and an entry lost or
        # emptied by a power cut is read back as a miss and asked again, never as a wrong answer.
        atomic_write(path, data, durable=False)
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*/*.json")) if self.dir.is_dir() else 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.dir)!r})"
