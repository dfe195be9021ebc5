"""Dedup quality with the hand stemmer and with lemmatizers in its place, on the four labelled sets.

The stemmer (`sept.pipeline.dedup.text.stem`) is swapped for the run in every module that calls
it, and each variant goes through benchmarks/dedup.py's `quality` unchanged:
  hand                the shipped rules: irregular tables, then suffix rules;
  lemminflect         lemminflect alone (no part of speech: for a word in -ing/-ed the verb's
                      lemma first, else the noun's, then the verb's, adjective's, adverb's);
  simplemma           simplemma alone;
  lemminflect+suffix  lemminflect in place of the irregular tables, then the suffix rules;
  simplemma+suffix    the same with simplemma.
Under a lemmatizer some lexicon entries become one form with another entry of their line
("schoolchild, schoolchildren"), which the lexicon refuses as listed twice; the run uses a copy
of the shipped lexicon without those repeats (listed in the output).

    pip install lemminflect simplemma   # not dependencies of sept
    python benchmarks/dedup_stemmers.py [VARIANT ...]
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dedup_benchmark", ROOT / "benchmarks" / "dedup.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from sept.pipeline.dedup import lexicon, rules, text  # noqa: E402
from sept.pipeline.models import get_sentence_model  # noqa: E402

HAND = text.stem
SETS = ["dedup_pairs.tsv", "dedup_pairs_heldout.tsv", "dedup_pairs_final.tsv", "dedup_pairs_blind.tsv"]


def suffix_rules(word: str) -> str:
    """The hand stem less its IRREGULAR / IRREGULAR_VERBS tables."""
    saved = text.IRREGULAR, text.IRREGULAR_VERBS
    text.IRREGULAR, text.IRREGULAR_VERBS = {}, {}
    try:
        return HAND(word)
    finally:
        text.IRREGULAR, text.IRREGULAR_VERBS = saved


@lru_cache(maxsize=None)
def by_simplemma(word: str) -> str:
    import simplemma

    return simplemma.lemmatize(word, lang="en").lower()


@lru_cache(maxsize=None)
def by_lemminflect(word: str) -> str:
    import lemminflect

    lemmas = lemminflect.getAllLemmas(word)
    order = ("VERB", "NOUN", "ADJ", "ADV") if word.endswith(("ing", "ed")) else ("NOUN", "VERB", "ADJ", "ADV")
    return next((lemmas[pos][0].lower() for pos in order if lemmas.get(pos)), word)


VARIANTS = {
    "hand": HAND,
    "lemminflect": by_lemminflect,
    "simplemma": by_simplemma,
    "lemminflect+suffix": lambda w: suffix_rules(by_lemminflect(w)),
    "simplemma+suffix": lambda w: suffix_rules(by_simplemma(w)),
}


def lexicon_for(stem, folder: Path, name: str) -> tuple[Path, list[str]]:
    """A copy of the shipped lexicon without the entries `stem` makes one form with an earlier
    entry of their line (and without a group left with one entry); the entries left out."""
    out, dropped = [], []
    for n, line in enumerate(bench.SYNONYMS.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
            continue
        context = line.startswith("@")
        entries, forms = [], set()
        for entry in (e.strip() for e in (line[1:] if context else line).split(",")):
            form = tuple(stem(w) for w in text.content_words(entry))
            if form in forms:
                dropped.append(f"{n}:{entry}")
                continue
            forms.add(form)
            entries.append(entry)
        if len(entries) < 2:
            dropped.append(f"{n}:the whole group")
            continue
        out.append(("@ " if context else "") + ", ".join(entries))
    path = folder / f"synonyms-{name}.txt"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path, dropped


def main() -> None:
    names = sys.argv[1:] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r} (known: {', '.join(VARIANTS)})")
    model = get_sentence_model(None)
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            stem = VARIANTS[name]
            text.stem = lexicon.stem = rules.stem = stem
            lexicon._load_lexicon.cache_clear()
            synonyms, dropped = lexicon_for(stem, Path(folder), name.replace("+", "-"))
            print(f"{name}: lexicon entries left out as repeats: {', '.join(dropped) or 'none'}")
            for s in SETS:
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    bench.quality(ROOT / "tests" / "data" / s, model, synonyms)
                out = buf.getvalue()
                m = re.search(r"^precision (\S+)\s+recall (\S+)\s+\(merged (\d+) of (\d+) paraphrases; (\d+) distinct", out, re.M)
                m0 = re.search(r"without the lexicon: precision (\S+)\s+recall (\S+)", out)
                print(f"  {s:26} precision {m[1]} recall {m[2]} (merged {m[3]} of {m[4]}, {m[5]} distinct merged)"
                      f"   without the lexicon: precision {m0[1]} recall {m0[2]}", flush=True)


if __name__ == "__main__":
    main()
