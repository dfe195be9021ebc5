"""The pair rules of dedup: content and spelling keys, the word substitution, and `Rules`.

`content_key` (word order ignored) and `spelling_key` (text order, no spaces) are the keys two
paraphrases share; `substitution` is what each of two phrases has that the other lacks, and
`lookalikes` the word pairs the semantic rule must not take. `Rules` decides, over one set of
texts and their sentence embeddings [N, D], whether text j duplicates text i by the key, synonym
or semantic rule (the rules themselves are stated in `sept.pipeline.dedup.stage`).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from sept.pipeline.dedup.lexicon import Lexicon
from sept.pipeline.dedup.text import content_words, normalize_text, stem

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


class Rules:
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
