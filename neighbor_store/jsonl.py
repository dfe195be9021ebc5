"""The one JSONL reader/writer of sept: one JSON object per line, UTF-8, `\\n` endings.

Lines are written with keys in record order (not sorted) so a person reading or diffing a
file sees `class`, `text`, `kind`, ... first. The same bytes always come out of the same
records, which is what makes version ids content addresses.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sept.neighbor_store.errors import ValidationError


def dumps_line(obj: dict[str, Any]) -> str:
    """One object as one JSONL line (with the trailing newline). Non-ASCII text stays readable."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "), allow_nan=False) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write `rows` to `path`; returns the number of lines. Not atomic by itself: callers write into a temp dir."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(dumps_line(row))
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, object)` for every non-blank line; a bad line raises `ValidationError` naming file:line."""
    path = Path(path)
    try:
        f = open(path, "rb")  # binary: only "\n" ends a line (text mode would also split on a lone "\r")
    except FileNotFoundError:
        raise ValidationError("file not found", file=path) from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # editors may add a BOM
            except UnicodeDecodeError as e:
                raise ValidationError(f"not valid UTF-8 ({e.reason})", file=path, line=lineno) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValidationError(f"bad JSON: {e.msg} (column {e.colno})", file=path, line=lineno) from None
            if not isinstance(obj, dict):
                raise ValidationError(f"expected a JSON object, got {type(obj).__name__}", file=path, line=lineno)
            yield lineno, obj
