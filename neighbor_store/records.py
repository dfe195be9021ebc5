"""The neighbor record: one line of `neighbors.jsonl` / `rejected.jsonl`.

Every part of sept passes neighbors around as `NeighborRecord`s; the store is the only
place that turns them into files.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KINDS = ("synonym", "acoustic", "subtype", "paraphrase", "human", "other")

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Text as compared for identity: NFKC, whitespace collapsed and trimmed, case-folded.

    Case and spacing variants of one phrase ("Dog  barking" / "dog barking") are the same
    neighbor, so they must get the same id and be caught as duplicates.
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def neighbor_id(class_name: str, text: str) -> str:
    """Stable id of a neighbor: sha1 hex of `f"{class}\\x00{normalized text}"`.

    The class name enters verbatim: the same phrase under two classes is two neighbors.
    """
    return hashlib.sha1(f"{class_name}\x00{normalize_text(text)}".encode("utf-8")).hexdigest()


class NeighborRecord(BaseModel):
    """One neighbor of one class, with its scores, provenance and review status."""

    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class")
    text: str
    kind: str = "other"
    id: str = ""
    scores: dict[str, float] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    status: Literal["accepted", "rejected"] = "accepted"
    reason: str | None = None

    def model_post_init(self, __context: Any) -> None:
        # a record built without an id gets its canonical one, so callers never compute it
        if not self.id:
            self.id = neighbor_id(self.class_, self.text)

    def to_json_dict(self) -> dict[str, Any]:
        """The record as written to JSONL: key `class`, no `reason` unless set."""
        d = self.model_dump(by_alias=True, exclude={"reason"} if self.reason is None else set())
        return d
