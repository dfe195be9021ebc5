"""Durable writes: a file is either its old content or its whole new content, never half."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_write(path: Path, data: bytes) -> None:
    """Write `data` and flush it to disk (files of a version under construction)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename; readers see the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        fsync_write(tmp, data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
