"""The domain synonym lexicon of dedup: a text file of synonym groups, parsed into a mapping.

Each entry is read as a candidate is (`content_words`, then `stem`) and maps to the stems of its
group's canonical entry; `Lexicon.spans` covers a phrase's stems with the longest entries;
`Lexicon.for_class` adds the class-context groups that apply under one class. A file that cannot
be read or would make the mapping ambiguous raises `LexiconError`, naming the file and line.
"""
from __future__ import annotations

import copy
import hashlib
from functools import lru_cache
from pathlib import Path

from sept.errors import SeptError
from sept.pipeline.dedup.text import content_words, stem

# The shipped synonym lexicon (package data); its header states the rule for inclusion.
SYNONYMS = Path(__file__).parent.parent / "lexicon" / "synonyms.txt"


class LexiconError(SeptError, ValueError):
    """A synonym lexicon that cannot be read or would make the mapping ambiguous (file:line in the message)."""


class Lexicon:
    """Synonym groups of the domain, read from a text file: one group a line, comma-separated
    entries, the first one canonical, '#' lines comments (format and inclusion rule in the
    header of `lexicon/synonyms.txt`).

    Entries are read as candidates are (content_words, then stem), so one entry covers its
    inflections; an entry of several words matches those content words in that order. Every
    entry maps to the stems of its group's canonical entry. A line that starts with "@" holds a
    class-context group: it applies only under a class whose name contains its first entry
    (`for_class`), where the class name fixes the sense of a word that has another one
    elsewhere ("@ helicopter, chopper"); its first entry may be one of a main group, whose
    canonical form it then takes and whose entries select it too. A file that would make the
    mapping ambiguous is refused, naming the file and line: a group of one entry, an entry with
    no content word, an entry listed twice (context groups included), a canonical entry using a
    word that another group maps.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise LexiconError(f"synonym lexicon {path}: cannot read it ({e.strerror or e})") from None
        self.path, self.sha256 = path, hashlib.sha256(raw).hexdigest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LexiconError(f"synonym lexicon {path}: not UTF-8 ({e})") from None
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
                 if line.strip() and not line.lstrip().startswith("#")]
        # the main groups first, so that a context group may start with an entry of one of them
        lines = [(n, line, False) for n, line in lines if not line.startswith("@")] + \
                [(n, line[1:], True) for n, line in lines if line.startswith("@")]
        groups: list[tuple[int, list[tuple[str, tuple[str, ...]]]]] = []
        where: dict[tuple[str, ...], tuple[int, str]] = {}
        main_lines: set[int] = set()
        anchor: dict[int, int] = {}  # context line -> the main line its first entry is from
        for n, line, context in lines:
            entries = []
            for k, entry in enumerate(e.strip() for e in line.split(",")):
                stems = tuple(stem(w) for w in content_words(entry))
                if not stems:
                    raise LexiconError(f"synonym lexicon {path}:{n}: entry {entry!r} has no content word")
                if stems in where:
                    m, other = where[stems]
                    if not (context and k == 0 and m in main_lines):
                        raise LexiconError(f"synonym lexicon {path}:{n}: entry {entry!r} is already listed as {other!r} on line {m}")
                    anchor[n] = m  # "@ helicopter, chopper" with "helicopter, copter" on line m
                else:
                    where[stems] = (n, entry)
                entries.append((entry, stems))
            if len(entries) < 2:
                raise LexiconError(f"synonym lexicon {path}:{n}: a group needs at least two entries, got {line.strip()!r}")
            groups.append((n, entries))
            if not context:
                main_lines.add(n)
        by_line = dict(groups)
        canonical_of = {n: entries[0][1] for n, entries in groups}
        for n, m in anchor.items():
            canonical_of[n] = canonical_of[m]
        self._map: dict[tuple[str, ...], tuple[str, ...]] = {}
        for n, entries in groups:
            canonical = canonical_of[n]
            for w in canonical:
                # "cell phone" must not keep "phone" when another line says "phone" is "telephone"
                other = where.get((w,))
                if other is not None and other[0] != n and canonical_of[other[0]] != (w,):
                    raise LexiconError(f"synonym lexicon {path}:{n}: canonical entry {entries[0][0]!r} uses "
                                     f"{other[1]!r}, which line {other[0]} maps to another form")
            if n in main_lines:
                for _, stems in entries:
                    self._map[stems] = canonical
        self.groups = [[e for e, _ in entries] for n, entries in groups if n in main_lines]
        self.context_groups = [[e for e, _ in entries] for n, entries in groups if n not in main_lines]
        # (line, the entries that select it in a class name, the entries it maps, their canonical
        # form). Only its first entry selects it, and for an anchored group its main group's
        # entries ("angry" for "@ anger, mad"): the others are the words of two senses, and
        # "plane" in "wood planing" must not make a plane an airplane.
        self._context = [
            (n, [entries[0][1]] + [st for _, st in by_line.get(anchor.get(n), [])],
             [st for _, st in entries[1:]] if n in anchor else [st for _, st in entries], canonical_of[n])
            for n, entries in groups if n not in main_lines
        ]
        self._longest = max((len(k) for k in self._map), default=1)
        self._for_class: dict[tuple[int, ...], Lexicon] = {(): self}

    def for_class(self, name: str) -> Lexicon:
        """This lexicon with the context groups that apply under the class `name` (those whose
        first entry, or an entry of the main group it starts from, stands in the class name, its
        words in order); itself when none does."""
        words = tuple(stem(w) for w in content_words(name))
        lines = tuple(n for n, selectors, _, _ in self._context
                      if any(words[k:k + len(e)] == e for e in selectors for k in range(len(words) - len(e) + 1)))
        if lines not in self._for_class:
            derived = copy.copy(self)
            derived._map = dict(self._map)
            for n, _, entries, canonical in self._context:
                if n in lines:
                    derived._map.update((e, canonical) for e in entries)
            derived._longest = max((len(k) for k in derived._map), default=1)
            self._for_class[lines] = derived
        return self._for_class[lines]

    def spans(self, stems: list[str]) -> list[tuple[int, int, tuple[str, ...]]]:
        """(start, end, canonical stems) covering `stems` left to right, the longest entry first;
        a word no entry matches is its own span."""
        out, i = [], 0
        while i < len(stems):
            for size in range(min(self._longest, len(stems) - i), 0, -1):
                canonical = self._map.get(tuple(stems[i:i + size]))
                if canonical is not None:
                    out.append((i, i + size, canonical))
                    i += size
                    break
            else:
                out.append((i, i + 1, (stems[i],)))
                i += 1
        return out


@lru_cache(maxsize=8)
def _load_lexicon(path: str, mtime_ns: int, size: int) -> Lexicon:
    return Lexicon(path)


def load_lexicon(synonyms: str | Path | Lexicon | None = SYNONYMS) -> Lexicon | None:
    """The lexicon `synonyms` names: a Lexicon as is, a path read (once per file version),
    None for none."""
    if synonyms is None or isinstance(synonyms, Lexicon):
        return synonyms
    path = Path(synonyms).expanduser()
    try:
        st = path.stat()
    except OSError as e:
        raise LexiconError(f"synonym lexicon {path}: cannot read it ({e.strerror or e})") from None
    return _load_lexicon(str(path.resolve()), st.st_mtime_ns, st.st_size)
