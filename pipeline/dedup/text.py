"""The text side of dedup: the comparison form of a phrase, its content words and the stemmer.

`normalize_text` is the form two candidates are compared in (exact rule); `content_words` keeps
the words that name the sound (filler, inner prepositions, linking participles dropped); `stem`
strips inflection so that both sides of a paraphrase meet on one form. Pure functions of a
string: no model, no lexicon.
"""
from __future__ import annotations

import re
import unicodedata

from sept.neighbor_store.records import normalize_text as normalize_identity

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
# Why hand tables and not a lemmatizer that ships its data (lemminflect 0.2.3, simplemma 2.0.0),
# measured with benchmarks/dedup_stemmers.py on the four labelled sets (recall with the lexicon;
# precision 1.000 for every variant):
#   hand rules (these tables + stem's suffix rules)  0.942 / 0.957 / 0.938 / 0.846
#   lemmatizer alone, lemminflect                    0.876 / 0.929 / 0.877 / 0.815
#   lemmatizer alone, simplemma                      0.884 / 0.943 / 0.877 / 0.815
#   lemmatizer in place of the tables, suffix rules  0.942 / 0.957 / 0.938 / 0.846 (either one)
# (sets: dedup_pairs, _heldout, _final, _blind). Alone, a lemmatizer keeps "loudly" apart from
# "loud" and "distance" from "distant", and falls below the recall floors of the quality test
# (tests/test_dedup_quality.py) on three sets (simplemma) or all four (lemminflect). In place of the
# tables it changes no figure, but without a part of speech it picks the other sense of forms
# the tables decide ("leaves" -> "leave", "rung" the ladder's, "lit" -> "light", "led" -> "lead";
# simplemma also "saw" -> "see", "spoke" -> "speak"), so the tables stay: the curation is theirs.
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
