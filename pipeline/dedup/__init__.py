"""Dedup: drop repeated candidates within each class, keeping every drop with its reason and rule.

Four rooms, each importing only those before it:
- `text`: the comparison form of a phrase, its content words and the stemmer;
- `lexicon`: the domain synonym lexicon (`lexicon/synonyms.txt`) and its parser;
- `rules`: content and spelling keys, the word substitution and the pair rules (`Rules`), with
  the default thresholds and the reason for each;
- `stage`: `dedup`, the stage over class -> candidates (its docstring states every rule).
The names below are the package's public surface: `from sept.pipeline.dedup import dedup`.
"""
from sept.pipeline.dedup.lexicon import SYNONYMS, Lexicon, LexiconError, load_lexicon
from sept.pipeline.dedup.rules import (
    DEFAULT_THRESHOLD,
    KEY_DISTANCE_FACTOR,
    WORD_THRESHOLD,
    content_key,
    embed_texts,
    key_threshold_for,
    lookalikes,
    spelling_key,
    substitution,
)
from sept.pipeline.dedup.stage import DedupError, dedup
from sept.pipeline.dedup.text import content_words, normalize_text, stem
from sept.pipeline.verdicts import StageResult

__all__ = [
    "DEFAULT_THRESHOLD", "KEY_DISTANCE_FACTOR", "SYNONYMS", "WORD_THRESHOLD", "DedupError", "Lexicon", "LexiconError",
    "StageResult", "content_key", "content_words", "dedup", "embed_texts", "key_threshold_for", "load_lexicon",
    "lookalikes", "normalize_text", "spelling_key", "stem", "substitution",
]
