"""Dedup quality on the labelled pair set (tests/data/dedup_pairs.tsv) with the shipped MiniLM,
and the rules themselves: stemming, content keys, the synonym lexicon, substitutions, the rule
kept with every rejection and through the store."""
import csv
import hashlib
from pathlib import Path

import pytest

from sept.errors import SeptError
from sept.neighbor_store import NeighborRecord, Store, neighbor_id
from sept.pipeline.datasets import bundled_classes, bundled_datasets
from sept.pipeline.dedup import (
    DEFAULT_THRESHOLD,
    SYNONYMS,
    DedupError,
    Lexicon,
    LexiconError,
    content_key,
    content_words,
    dedup,
    key_threshold_for,
    load_lexicon,
    lookalikes,
    spelling_key,
    stem,
    substitution,
)
from sept.pipeline.models import get_sentence_model

DATA = Path(__file__).parent / "data"
PAIRS = DATA / "dedup_pairs.tsv"
FIELDS = ["label", "dataset", "class", "text_a", "text_b", "why"]
# The labelled sets and the least precision and recall of "merge" each must keep at the
# defaults; each was written apart from the others, by meaning, with the labelling rule in its
# header. dedup_pairs.tsv is the set the goal is stated on (0.98 / 0.90). The rules and the
# lexicon were revised against the misses of the first three sets in turn, so their figures
# are not blind; dedup_pairs_blind.tsv was measured once, after the last revision was
# committed, and was not revised against (recall 0.846). The floors are the figures measured
# then, less one pair; benchmarks/dedup.py prints the figures and the misses.
SETS = {
    "dedup_pairs.tsv": (0.98, 0.90),
    "dedup_pairs_heldout.tsv": (0.98, 0.93),
    "dedup_pairs_final.tsv": (0.98, 0.91),
    "dedup_pairs_blind.tsv": (0.98, 0.82),
}


def rec(cls: str, text: str) -> NeighborRecord:
    return NeighborRecord(**{"class": cls, "text": text, "source": {"backend": "test"}})


def read_pairs(name: str = PAIRS.name) -> list[dict]:
    lines = [line for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert list(rows[0]) == FIELDS
    return rows


@pytest.fixture(scope="module")
def minilm():
    return get_sentence_model(None)


@pytest.fixture(scope="module", params=list(SETS))
def judged(request, minilm):
    """Every pair of a set as the only two candidates of its own class, all in one call: merged
    when text_b is rejected as a duplicate of text_a. The class is the pair's class with a
    number after it: its words select the lexicon's class-context groups, and the number keeps
    the class-name rule out of it."""
    rows = read_pairs(request.param)
    names = [f"{r['class']} {n}" for n, r in enumerate(rows)]
    cands = {c: [rec(c, r["text_a"]), rec(c, r["text_b"])] for c, r in zip(names, rows)}
    res = dedup(cands, minilm)
    out = []
    for c, r in zip(names, rows):
        a = cands[c][0]
        rejected = [x for x in res.rejected if x.class_ == c]
        assert all(x.reason == f"duplicate_of:{a.id}" for x in rejected), (r, rejected)
        out.append({**r, "merged": bool(rejected), "rejected": rejected, "set": request.param})
    return out


@pytest.mark.parametrize("name", list(SETS))
def test_labelled_set_covers_the_benchmark_datasets(name):
    rows = read_pairs(name)
    datasets = bundled_datasets()
    assert len(datasets) == 11
    assert {r["dataset"].lower() for r in rows} == set(datasets)  # bundled lists go by slug
    for r in rows:
        assert r["label"] in ("merge", "stay"), r
        assert r["class"] in bundled_classes(r["dataset"]), r
        assert r["text_a"].strip() and r["text_b"].strip() and r["why"].strip(), r
    merges = sum(r["label"] == "merge" for r in rows)
    assert len(rows) >= 60 and merges >= 30 and len(rows) - merges >= 30
    assert len({(r["text_a"], r["text_b"]) for r in rows}) == len(rows)  # no pair twice
    header = (DATA / name).read_text(encoding="utf-8").split("\nlabel\t")[0]
    assert "Labelling rule" in header and "merge" in header and "stay" in header


def test_labelled_sets_are_disjoint():
    seen: dict[frozenset, str] = {}
    for name in SETS:
        for r in read_pairs(name):
            pair = frozenset((r["text_a"].lower(), r["text_b"].lower()))
            assert pair not in seen, (name, seen.get(pair), r)
            seen[pair] = name


def test_figures_at_the_defaults(judged):
    """Precision and recall of "merge" at the defaults, at least the set's floor in SETS; and
    recall >= 0.90 on paraphrases of word order, inflection, filler, voice and spelling alone
    (the pairs that only a synonym joins depend on the lexicon: "big"/"large" and "baby"/"infant"
    are as close in MiniLM as "slow"/"fast")."""
    min_precision, min_recall = SETS[judged[0]["set"]]
    tp = sum(j["merged"] and j["label"] == "merge" for j in judged)
    fp = sum(j["merged"] and j["label"] == "stay" for j in judged)
    merges = [j for j in judged if j["label"] == "merge"]
    plain = [j for j in merges if "synonym" not in j["why"]]
    assert tp / (tp + fp) >= min_precision, [(j["text_a"], j["text_b"]) for j in judged if j["merged"] and j["label"] == "stay"]
    assert tp / len(merges) >= min_recall, [(j["text_a"], j["text_b"]) for j in merges if not j["merged"]]
    assert sum(j["merged"] for j in plain) / len(plain) >= 0.90, [(j["text_a"], j["text_b"]) for j in plain if not j["merged"]]


def test_every_merge_of_the_set_says_its_rule_and_scores(judged):
    for j in judged:
        for r in j["rejected"]:
            rule = r.source["dedup_rule"]
            assert rule in ("exact", "key", "synonym", "semantic")
            assert all(isinstance(v, float) for v in r.scores.values())
            if rule in ("key", "synonym"):
                assert r.scores["dedup_sim"] >= key_threshold_for(DEFAULT_THRESHOLD)
            assert ("dedup_synonyms" in r.source) == (rule == "synonym")
            if rule == "semantic":
                assert r.scores["dedup_sim"] >= DEFAULT_THRESHOLD and r.scores["dedup_word_sim"] >= 0.815


# ---------------------------------------------------------------- the rules on their own


def test_stem_rules():
    cases = {
        "frogs": "frog", "croaking": "croak", "croaks": "croak", "crows": "crow", "crowing": "crow",
        "loudly": "loud", "angrily": "angry", "casually": "casual", "belly": "belly",
        "clapping": "clap", "clapped": "clap", "purring": "pur", "purrs": "pur",
        "sneeze": "sneez", "sneezes": "sneez", "sneezing": "sneez", "crashes": "crash", "buzzing": "buzz",
        "children": "child", "leaves": "leaf", "cries": "cry", "cried": "cry",
        "ring": "ring", "ringing": "ring", "string": "string", "shed": "shed", "speed": "speed",
        "bus": "bus", "glass": "glass", "bee": "bee", "fearful": "fearful",  # derivation is not stripped
        # but a quality's noun meets its adjective, in words of 7 letters or more
        "distance": "distant", "distances": "distant", "distant": "distant", "distantly": "distant",
        "silence": "silent", "silently": "silent", "dance": "danc", "fence": "fenc",
    }
    assert {w: stem(w) for w in cases} == cases


def test_content_key_drops_filler_and_order():
    assert content_key("rooster crows loudly") == content_key("loud rooster crowing") == ("crow", "loud", "rooster")
    assert content_key("sound of a vacuum cleaner") == content_key("vacuum cleaner noise") == ("cleaner", "vacuum")
    assert content_key("knocking on a door") == content_key("door being knocked") == ("door", "knock")
    assert content_key("someone sniffing") == content_key("a person sniffing") == ("snif",)
    assert content_words("The sound of a dog's bark in the park") == ["dog", "bark", "park"]
    # a preposition at the end is a particle, and keeps the events apart
    assert content_key("breathing in") == ("breath", "in") != content_key("breathing out")
    assert content_key("dog barking") != content_key("dog barking loudly")
    assert content_key("the sound of") == ()
    assert content_key("explosion in the distance") == content_key("distant explosion") == ("distant", "explosion")


def test_sounding_verbs_and_linking_participles_are_filler():
    assert content_key("melody played on a flute") == content_key("flute melody") == ("flut", "melody")
    assert content_key("noise made by a car engine") == content_key("car engine noise") == ("car", "engin")
    assert content_key("birds heard in the forest") == content_key("birds in the forest")
    # in every form, so that the active still meets the passive
    assert content_key("orchestra playing a symphony") == content_key("a symphony played by an orchestra")
    assert content_key("guitar being played") == content_key("someone playing guitar") == ("guitar",)
    assert content_key("flute played softly") == ("flut", "soft")
    # "caused", "coming" only link before a preposition; elsewhere they are events
    assert content_key("noise caused by the wind") == ("wind",)
    assert content_key("music coming from a radio") == content_key("radio music") != content_key("car coming")
    assert content_key("a speaker who sounds disgusted") == content_key("speaker sounding disgusted")
    assert content_key("voice full of sorrow") == content_key("sorrowful voice") == ("sorrowful", "voic")
    assert content_key("full of the joy") == ("joyful",) and content_key("full of") == ("full",)


def test_irregular_verbs_pronouns_and_spelling():
    assert content_key("large gong struck") == content_key("striking a large gong") == ("gong", "larg", "strik")
    assert content_key("bell rang") == content_key("bell ringing") and content_key("glass broken") == content_key("breaking glass")
    assert stem("saw") == "saw" and stem("shot") == "shot"  # the tool and the gunshot stay nouns
    assert content_key("clearing one's throat") == content_key("someone clearing their throat") == ("clear", "throat")
    assert content_key("one gunshot") == ("gunshot", "one")  # a number, not a pronoun
    assert content_key("my dog barking") == content_key("dog barking")
    assert spelling_key("window pane smashing") == spelling_key("windowpane smashing") == "windowpansmash"
    assert spelling_key("gun-fire in the street") == spelling_key("gunfire in the street")
    assert spelling_key("fire gun") != spelling_key("gunfire")  # order counts in the spelling key


def test_lookalike_words_are_not_synonyms():
    assert lookalikes("inhaling", "exhaling") and lookalikes("ascending", "descending")
    assert not lookalikes("kids", "children") and not lookalikes("yelling", "shouting")
    assert not lookalikes("loading", "loading") and not lookalikes("low hum", "slow hum")


def test_substitution_is_what_each_phrase_lacks():
    assert substitution("kids playing outside", "children playing outside") == ("kids", "children")
    assert substitution("slow dripping", "fast dripping") == ("slow", "fast")
    assert substitution("dog barking", "dog barking loudly") is None  # an added qualifier
    assert substitution("frog croaking", "frogs croak") is None  # the same key
    assert substitution("female singer", "woman singing") == ("female singer", "woman singing")


def test_each_rule_reason_and_score(minilm):
    inp = {
        "frog": [rec("frog", t) for t in ["frog croaking", "Frog croaking!", "frogs croak", "frogs", "toad croaking"]],
        "children playing": [rec("children playing", t) for t in
                             ["kids playing outside", "children playing outside", "slow footsteps", "fast footsteps"]],
        "dog": [rec("dog", t) for t in ["dog barking", "dog barking loudly", "sound of a frog"]],
    }
    out = dedup(inp, minilm, synonyms=None)  # the semantic rule on its own: "kids"/"children" is also a lexicon group
    first = inp["frog"][0]
    got = {r.text: (r.reason, r.source["dedup_rule"]) for r in out.rejected}
    assert got == {
        "Frog croaking!": (f"duplicate_of:{first.id}", "exact"),
        "frogs croak": (f"duplicate_of:{first.id}", "key"),
        "frogs": ("duplicate_of_class", "key"),
        "children playing outside": (f"duplicate_of:{neighbor_id('children playing', 'kids playing outside')}", "semantic"),
        "sound of a frog": ("names_other_class:frog", "key"),
    }
    assert [r.text for r in out.kept["dog"]] == ["dog barking", "dog barking loudly"]  # a qualifier stays
    # the class name respelled is the class name; lookalike words are not synonyms
    gun = dedup({"gun shot": [rec("gun shot", "gunshot"), rec("gun shot", "gunshots in the distance")],
                 "breathing": [rec("breathing", "inhaling deeply"), rec("breathing", "exhaling deeply")]}, minilm)
    assert {r.text: r.reason for r in gun.rejected} == {"gunshot": "duplicate_of_class"}
    assert [r.text for r in gun.kept["breathing"]] == ["inhaling deeply", "exhaling deeply"]
    assert [r.text for r in out.kept["children playing"]] == ["kids playing outside", "slow footsteps", "fast footsteps"]
    by_text = {r.text: r for r in out.rejected}
    assert by_text["Frog croaking!"].scores["dedup_sim"] == 1.0
    emb = minilm.encode(["frog croaking", "frogs croak"], normalize_embeddings=True)
    assert by_text["frogs croak"].scores["dedup_sim"] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-4)
    sem = by_text["children playing outside"].scores
    words = minilm.encode(["kids", "children"], normalize_embeddings=True)
    assert sem["dedup_word_sim"] == pytest.approx(float(words[0] @ words[1]), abs=1e-4)
    assert sem["dedup_word_sim"] > 0.85 and sem["dedup_sim"] > 0.95  # clear of 0.815 / 0.85
    assert out.info["key_threshold"] == pytest.approx(key_threshold_for(DEFAULT_THRESHOLD))


def test_thresholds_tighten_every_rule(minilm):
    inp = {"rooster": [rec("rooster", "rooster crows loudly"), rec("rooster", "loud rooster crowing")]}
    assert len(dedup(inp, minilm).kept["rooster"]) == 1  # cosine 0.856, over the key floor 0.475
    assert len(dedup(inp, minilm, threshold=0.99).kept["rooster"]) == 2  # key floor 0.965
    assert len(dedup(inp, minilm, threshold=0.99, key_threshold=0.5).kept["rooster"]) == 1
    kids = {"park": [rec("park", "kids playing in the park"), rec("park", "children playing in the park")]}
    assert len(dedup(kids, minilm, synonyms=None).kept["park"]) == 1
    assert len(dedup(kids, minilm, word_threshold=0.95, synonyms=None).kept["park"]) == 2  # "kids"/"children" 0.884
    assert len(dedup(kids, minilm, word_threshold=0.95).kept["park"]) == 1  # a lexicon group: the synonym rule
    with pytest.raises(ValueError, match="word_threshold"):
        dedup(inp, minilm, word_threshold=0.0)
    with pytest.raises(DedupError, match="key_threshold"):
        dedup(inp, minilm, key_threshold=1.5)
    assert issubclass(DedupError, SeptError) and issubclass(DedupError, ValueError)


def test_cross_class_flags_say_their_rule(minilm):
    inp = {"frog": [rec("frog", "frog croaking")], "pond": [rec("pond", "frogs croak"), rec("pond", "dripping water")]}
    out = dedup(inp, minilm)
    assert out.rejected == []
    (flag,) = out.info["cross_class"]
    assert (flag["text"], flag["other_text"], flag["rule"]) == ("frog croaking", "frogs croak", "key")


def test_rule_and_scores_survive_the_store(minilm, tmp_path):
    inp = {"frog": [rec("frog", t) for t in ["frog croaking", "frogs croak", "bullfrog calling"]]}
    out = dedup(inp, minilm)
    store = Store(tmp_path / "store")
    ref = store.write_version("test-set", ["frog"], out.kept["frog"], out.rejected, params={"dedup": "defaults"})
    back = store.read(ref)
    (r,) = back.rejected
    assert r.reason == f"duplicate_of:{neighbor_id('frog', 'frog croaking')}"
    assert r.source == {"backend": "test", "dedup_rule": "key"}
    assert r.scores == pytest.approx(out.rejected[0].scores)
    assert [n.scores["dedup_max"] for n in back.neighbors] == pytest.approx([n.scores["dedup_max"] for n in out.kept["frog"]])


# ---------------------------------------------------------------- the synonym lexicon


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon()


def test_shipped_lexicon_loads_with_its_fingerprint(lexicon):
    assert lexicon.path == SYNONYMS and SYNONYMS.parent.name == "lexicon"
    assert lexicon.sha256 == hashlib.sha256(SYNONYMS.read_bytes()).hexdigest()
    assert 80 <= len(lexicon.groups) <= 200
    assert ["baby", "infant"] in lexicon.groups
    header = SYNONYMS.read_text(encoding="utf-8").split("\n\n")[0]
    assert "Rule for inclusion" in header and "Never included" in header
    assert load_lexicon() is lexicon  # read once per file version
    assert load_lexicon(None) is None and load_lexicon(lexicon) is lexicon


def test_lexicon_maps_a_group_to_its_canonical_form(lexicon):
    # one word, its inflections, and entries of several words
    assert content_key("crying infant", lexicon) == content_key("baby crying", lexicon) == ("baby", "cry")
    assert content_key("infants crying", lexicon) == ("baby", "cry")
    assert content_key("motor bikes revving", lexicon) == content_key("motorcycle revving", lexicon) == ("motorcycl", "rev")
    assert content_key("a frightened woman", lexicon) == content_key("scared lady", lexicon) == ("fear", "woman")
    assert content_key("city centre traffic", lexicon) == content_key("traffic in the center of the city", lexicon)
    assert content_key("cellphones ringing", lexicon) == content_key("mobile phone ringing", lexicon) == ("cell", "phon", "ring")
    # a single entry of a group whose canonical form has two words stands for both
    assert content_key("vacuuming", lexicon) == content_key("vacuum cleaner", lexicon) == ("cleaner", "vacuum")
    # without the lexicon, nothing is mapped
    assert content_key("crying infant") == ("cry", "infant") != content_key("baby crying")


def test_lexicon_leaves_hypernyms_and_qualities_apart(lexicon):
    for a, b in [("dog barking", "puppy barking"), ("light rain", "light drizzle"), ("loud bang", "booming bang"),
                 ("baby crying", "baby sobbing"), ("car engine", "car motor"), ("storm", "thunderstorm"),
                 ("door closing", "door shutting"), ("wood planing", "airplane wood")]:
        assert content_key(a, lexicon) != content_key(b, lexicon), (a, b)


def test_synonyms_cancel_in_a_substitution(lexicon):
    assert substitution("infant crying softly", "baby sobbing", lexicon) == ("crying softly", "sobbing")
    assert substitution("infant crying softly", "baby sobbing") == ("infant crying softly", "baby sobbing")
    assert substitution("infant crying", "baby crying", lexicon) is None  # one key: the synonym rule's
    assert substitution("infant crying", "baby crying") == ("infant", "baby")
    assert substitution("kids playing outside", "children playing outdoors", lexicon) is None
    assert substitution("large truck", "big lorry passing", lexicon) is None  # only adds a word


def write_lexicon(tmp_path, body: str) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("# test lexicon\n" + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, message", [
    ("baby, infant\nkid\n", r"words\.txt:3: a group needs at least two entries"),
    ("baby, infant\nchild, kid, infants\n", r"words\.txt:3: entry 'infants' is already listed as 'infant' on line 2"),
    ("baby, the sound of\n", r"words\.txt:2: entry 'the sound of' has no content word"),
    ("phone, telephone\ncell telephone, cellphone\n", r"words\.txt:3: canonical entry 'cell telephone' uses 'telephone'"),
])
def test_bad_lexicon_is_refused_naming_file_and_line(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        Lexicon(write_lexicon(tmp_path, body))


def test_missing_or_undecodable_lexicon_is_refused(tmp_path):
    with pytest.raises(LexiconError, match=r"synonym lexicon .*nowhere\.txt: cannot read it") as refused:
        load_lexicon(tmp_path / "nowhere.txt")
    assert isinstance(refused.value, SeptError)  # the CLI prints it in one line
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9, coffee shop\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt: not UTF-8"):
        load_lexicon(bad)


def test_synonym_rule_reason_scores_and_switch(minilm, lexicon, tmp_path):
    inp = {"crying baby": [rec("crying baby", t) for t in ["infant crying loudly", "baby crying loudly", "infant crying"]]}
    out = dedup(inp, minilm)
    first = inp["crying baby"][0]
    (dup,) = out.rejected
    assert dup.text == "baby crying loudly" and dup.reason == f"duplicate_of:{first.id}"
    assert dup.source == {"backend": "test", "dedup_rule": "synonym", "dedup_synonyms": "infant / baby"}
    emb = minilm.encode(["infant crying loudly", "baby crying loudly"], normalize_embeddings=True)
    assert dup.scores["dedup_sim"] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-4)
    assert dup.scores["dedup_sim"] > key_threshold_for(DEFAULT_THRESHOLD) + 0.1
    # the class name is matched without the lexicon: a synonym of the class is a wanted neighbor
    assert [r.text for r in out.kept["crying baby"]] == ["infant crying loudly", "infant crying"]
    assert out.info["synonyms"] == {"file": "synonyms.txt", "sha256": lexicon.sha256, "groups": len(lexicon.groups),
                                    "context_groups": len(lexicon.context_groups)}
    vac = dedup({"vacuum cleaner": [rec("vacuum cleaner", "loud vacuuming"), rec("vacuum cleaner", "loud vacuum cleaner")]}, minilm)
    assert vac.rejected[0].source["dedup_synonyms"] == "loud vacuuming / loud vacuum cleaner"
    # switched off, MiniLM alone keeps both ("baby"/"infant" are far apart in it)
    off = dedup(inp, minilm, synonyms=None)
    assert off.rejected == [] and off.info["synonyms"] is None
    # another lexicon file
    own = dedup(inp, minilm, synonyms=write_lexicon(tmp_path, "baby, newborn\n"))
    assert own.rejected == [] and own.info["synonyms"]["groups"] == 1


def test_context_groups_apply_only_under_their_class(minilm, tmp_path):
    own = Lexicon(write_lexicon(tmp_path, "baby, infant\n@ helicopter, chopper\n@ rooster, cock\n"))
    assert own.groups == [["baby", "infant"]] and own.context_groups == [["helicopter", "chopper"], ["rooster", "cock"]]
    heli = own.for_class("helicopter")
    assert content_key("chopper flying", heli) == ("fly", "helicopter") == content_key("helicopter flying", heli)
    assert content_key("chopper flying", own) == ("chopper", "fly")
    assert own.for_class("cleaver") is own and own.for_class("helicopter") is heli  # derived once
    assert content_key("infant crying", heli) == ("baby", "cry")  # the main groups stay
    pair = ["helicopter flying overhead", "chopper flying overhead"]
    out = dedup({"helicopter": [rec("helicopter", t) for t in pair], "kitchen": [rec("kitchen", t) for t in pair]},
                minilm, synonyms=own)
    (dup,) = out.rejected
    assert (dup.class_, dup.text, dup.source["dedup_rule"]) == ("helicopter", "chopper flying overhead", "synonym")
    assert dup.source["dedup_synonyms"] == "helicopter / chopper"
    assert [r.text for r in out.kept["kitchen"]] == pair  # a cleaver, perhaps
    assert out.info["synonyms"]["context_groups"] == 2
    with pytest.raises(ValueError, match=r"words\.txt:3: entry 'chopper' is already listed as 'chopper' on line 2"):
        Lexicon(write_lexicon(tmp_path, "chopper, cleaver\n@ helicopter, chopper\n"))
    # a context group may start from a main group: its canonical form, selected by its entries
    # too; the word of two senses never selects it ("plane" in "wood planing" is the tool)
    air = Lexicon(write_lexicon(tmp_path, "@ airplane, plane\nairplane, aeroplane\n"))
    assert air.groups == [["airplane", "aeroplane"]] and air.context_groups == [["airplane", "plane"]]
    assert content_key("plane taking off", air.for_class("aeroplane")) == content_key("airplane taking off", air)
    assert air.for_class("wood planing") is air and content_key("plane", air) == ("plan",)
    with pytest.raises(ValueError, match=r"words\.txt:3: entry 'airplane' is already listed as 'airplane' on line 2"):
        Lexicon(write_lexicon(tmp_path, "@ airplane, plane\n@ airplane, jet\n"))


def test_cross_class_flags_use_the_lexicon(minilm):
    inp = {"crying baby": [rec("crying baby", "infant wailing")], "laughing": [rec("laughing", "baby wailing")]}
    (flag,) = dedup(inp, minilm).info["cross_class"]
    assert (flag["text"], flag["other_text"], flag["rule"]) == ("infant wailing", "baby wailing", "synonym")
    assert dedup(inp, minilm, synonyms=None).info["cross_class"] == []


def test_manifest_records_the_lexicon(lexicon):
    from sept.pipeline.run import PipelineConfig, provenance
    from sept.prompts import load_prompt, load_templates

    cfg = PipelineConfig(dataset="lexicon", classes=["dog"], backend="vllm", model="m", base_url="http://127.0.0.1:9/v1")
    params = provenance(cfg, load_prompt("default"), load_templates("default"))
    assert params["dedup"]["synonyms_sha256"] == lexicon.sha256
