"""The vocabulary every filtering stage shares: a stage's result, and the kept or rejected copy of a record.

A stage takes class -> records (the dict order is the class order) and returns a `StageResult`:
every class present in `kept`, every dropped record in `rejected` with its reason (nothing is
dropped silently), and the stage's own facts in `info` for provenance. `keep` and `reject`
return copies with the verdict and the stage's scores added; the input records are not changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sept.neighbor_store.records import NeighborRecord


@dataclass
class StageResult:
    """Output of a filtering stage: `kept` per class (class order, every class present),
    every `rejected` record with its reason, and stage facts for provenance in `info`."""

    kept: dict[str, list[NeighborRecord]]
    rejected: list[NeighborRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def reject(record: NeighborRecord, reason: str, source: dict[str, Any] | None = None, **scores: float) -> NeighborRecord:
    """A rejected copy of `record` with `reason`, extra scores and, when given, `source` fields
    merged into its source (a stage's account of why: dedup's rule, for one)."""
    update: dict[str, Any] = {"status": "rejected", "reason": reason, "scores": {**record.scores, **scores}}
    if source:
        update["source"] = {**record.source, **source}
    return record.model_copy(update=update, deep=True)


def keep(record: NeighborRecord, **scores: float) -> NeighborRecord:
    """An accepted copy of `record` with extra scores."""
    return record.model_copy(update={"status": "accepted", "reason": None, "scores": {**record.scores, **scores}}, deep=True)
