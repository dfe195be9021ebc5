"""File-system names of the things users name verbatim.

Dataset and class names stay verbatim everywhere (`cafe/restaurant`, `Cough`); anything that
becomes a path goes through one slug function, here.
"""
from __future__ import annotations

from slugify import slugify

from sept.errors import SeptError


def dataset_slug(name: str) -> str:
    """Folder name of a dataset ("ESC50-Actions" -> "esc50-actions"); a name with no usable
    slug is refused."""
    slug = slugify(name) if isinstance(name, str) else ""
    if not slug:
        raise SeptError(f"dataset name {name!r} has no usable folder name (its slug is empty)")
    return slug
