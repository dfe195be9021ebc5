"""The random-word control: `sept generate --backend random-words --like DATASET@REF` end to end,
with a real store on disk and, for margins, the session's random-weight CLAP. No LLM is contacted:
the OpenAI and Anthropic clients are pointed at the stand-in server, which must see no request."""
import string
from collections import Counter

import pytest
from typer.testing import CliRunner

from sept.cli import app
from sept.clap import keep_backbone
from sept.neighbor_store import NeighborRecord, Store
from sept.pipeline.random_words import WORDLIST, load_words, random_texts, wordlist_ref

CLASSES = ["Cough", "cafe/restaurant", "city_center", "dog", "siren"]
# a base-only version (sorted split: the first 3 of 5), as base-to-new training needs: 3, 1 and 0
# neighbors per class
LIKE = {"Cough": ["dry cough", "person coughing", "hacking cough"], "cafe/restaurant": ["coffee shop ambience"]}
SPLIT = {"policy": "sorted", "seed": 42, "base": CLASSES[:3], "new": CLASSES[3:], "part": "base"}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def like_ref(tmp_path):
    store = Store(tmp_path / "store")
    records = [NeighborRecord(**{"class": c, "text": t, "kind": "acoustic"}) for c, ts in LIKE.items() for t in ts]
    # made seeing the base classes only
    ref = store.write_version("Synth", SPLIT["base"], records,
                              params={"backend": "human", "visible_classes": SPLIT["base"], "split": SPLIT})
    return tmp_path / "store", ref


@pytest.fixture
def no_llm(fault_server, monkeypatch):
    """Every LLM client of the project would land on the stand-in server, which counts requests."""
    monkeypatch.setenv("OPENAI_BASE_URL", fault_server.base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fault_server.anthropic_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-key")
    return fault_server


def _generate(store_root, ref, *extra):
    result = run("generate", "--backend", "random-words", "--like", ref, "--store", store_root, *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_random_version_copies_the_shape_seeded(like_ref, no_llm):
    store_root, ref = like_ref
    store = Store(store_root)
    like = store.read(ref)
    out = _generate(store_root, ref, "--seed", 1, "--tag", "random")
    assert no_llm.count == 0                                        # no LLM request of any kind
    v = store.read(out)
    assert out != like.ref and store.read("synth@random").id == v.id
    assert v.classes == like.classes
    assert v.manifest["visible_classes"] == like.manifest["visible_classes"]
    assert v.manifest["params"]["split"] == SPLIT
    assert Counter(r.class_ for r in v.neighbors) == Counter(r.class_ for r in like.neighbors) == \
        Counter({"Cough": 3, "cafe/restaurant": 1})
    params = v.manifest["params"]
    assert params["backend"] == "random-words" and params["seed"] == 1 and params["like"]["ref"] == like.ref
    assert params["words"] == wordlist_ref() and params["margins"].startswith("skipped")
    assert {r.kind for r in v.neighbors} == {"random"}
    assert all(r.text.startswith(f"{r.class_}, which has ") for r in v.neighbors)
    assert store.read_margins(out, "0" * 16) is None

    # deterministic for a seed (the same content is the same version), different for another
    assert _generate(store_root, ref, "--seed", 1) == out
    other = store.read(_generate(store_root, ref, "--seed", 2))
    assert other.id != v.id
    assert {r.text for r in other.neighbors}.isdisjoint({r.text for r in v.neighbors})
    assert no_llm.count == 0


def test_margins_attached_with_a_clap_checkpoint(like_ref, no_llm, backbone, clap_checkpoint):
    keep_backbone(backbone)
    store_root, ref = like_ref
    out = _generate(store_root, ref, "--seed", 3, "--clap-checkpoint", clap_checkpoint, "--templates", "single")
    store = Store(store_root)
    v = store.read(out)
    margins = store.read_margins(out, backbone.fingerprint)
    assert margins is not None and tuple(margins.values.shape) == (3, 4)      # 3 classes x 4 neighbors
    assert float(margins.values.min()) > 0
    assert v.manifest["params"]["margins"]["fingerprint"] == backbone.fingerprint
    assert no_llm.count == 0


def test_texts_alternate_words_and_letters():
    words = load_words()
    assert len(words) == 2000 and all(w.isalpha() and w.islower() for w in words)
    assert WORDLIST.read_text().startswith("#")                   # its header says where the words come from
    texts = random_texts("dog", 5, seed=7, words=words)
    assert texts == random_texts("dog", 5, seed=7, words=words) != random_texts("dog", 5, seed=8, words=words)
    assert random_texts("cat", 5, seed=7, words=words) != texts
    tails = [t.removeprefix("dog, which has ").split() for t in texts]
    assert all(len(t) == 2 for t in tails)
    for i in (0, 2, 4):
        assert all(w in set(words) for w in tails[i])
    for i in (1, 3):
        assert [len(w) for w in tails[i]] == [len(w) for w in tails[i - 1]]
        assert all(set(w) <= set(string.ascii_lowercase) for w in tails[i])


def test_random_words_errors(like_ref, no_llm, tmp_path, sept_main):
    store_root, ref = like_ref

    def error(*args):           # through the console script, where a SeptError is one line
        result = sept_main("generate", "--backend", "random-words", "--store", store_root, *args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        return result.stderr.strip().splitlines()[-1]

    assert "--like" in error()
    assert "--dataset" in error("--like", ref, "--dataset", "Synth")
    assert "'nope'" in error("--like", "synth@nope")                 # the store names the unknown version
    assert "--like" in sept_main("generate", "--backend", "vllm", "--like", ref, "--dataset", "x", "--model", "m",
                                 "--base-url", "http://127.0.0.1:9/v1").stderr
    assert len(Store(store_root).list("Synth")) == 1                # nothing written by a failed call
    assert no_llm.count == 0
