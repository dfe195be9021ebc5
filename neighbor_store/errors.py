"""Errors of the neighbor store. Each message is one line that names the file, line, class or reference at fault."""
from __future__ import annotations

from pathlib import Path

from sept.errors import SeptError


class StoreError(SeptError):
    """Base class: anything the store refuses to do."""


class RefError(StoreError):
    """A reference `DATASET@VERSION` that does not name exactly one version."""


class ValidationError(StoreError):
    """Bad input records; `file` and `line` (1-based) say where, when it came from a file."""

    def __init__(self, reason: str, file: str | Path | None = None, line: int | None = None):
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.line = line
        where = ""
        if self.file is not None:
            where = f"{self.file}:{line}: " if line is not None else f"{self.file}: "
        super().__init__(f"{where}{reason}")


class IntegrityError(StoreError):
    """Stored bytes that no longer match their recorded hash or shape."""
