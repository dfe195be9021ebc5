"""Durable writes: a file is either its old content or its whole new content, never half.

Every file sept writes in place (store files, caches, run records, checkpoints, state files)
goes through `atomic_write`: the bytes land in a temporary sibling that is fsynced and renamed
over the target, and the temporary file is removed whatever goes wrong.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable


def fsync_write(path: Path, data: bytes) -> None:
    """Write `data` and flush it to disk (files of a folder under construction)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def temp_sibling(path: Path) -> Path:
    """A hidden, unique name beside `path` (same file system, so a rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: str | Path, data: bytes | str, *, durable: bool = True) -> None:
    """Replace `path` by `data` (text is written as UTF-8) in one rename; readers see the old
    or the new file, whole. Creates the parent folder. `durable=False` skips the fsync, for
    caches whose entry lost in a power cut is only recomputed (the rename stays atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = temp_sibling(path)
    try:
        if durable:
            fsync_write(tmp, data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> None:
    """`obj` as JSON (indent 2, UTF-8, trailing newline unless `dumps_kwargs` say otherwise)."""
    dumps_kwargs.setdefault("indent", 2)
    dumps_kwargs.setdefault("ensure_ascii", False)
    atomic_write(path, json.dumps(obj, **dumps_kwargs) + "\n")


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """For writers that insist on a file name (`torch.save`, `safetensors.save_file`,
    `matplotlib.savefig`): `save(tmp)` writes a temporary sibling that then replaces `path`.
    The temporary name keeps the target's suffix, so writers that pick a format by suffix
    (savefig) still do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path).with_suffix(".tmp" + path.suffix)
    try:
        save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
