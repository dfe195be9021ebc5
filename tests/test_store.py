"""Store Python API: versions, references, tags, margins, verification, secrets."""
import json
import shutil

import numpy as np
import pytest
import torch

from sept.neighbor_store import (
    IntegrityError,
    NeighborRecord,
    RefError,
    Store,
    ValidationError,
    neighbor_id,
)
from sept.errors import SeptError
from sept.neighbor_store.writer import prepare_records, render
from sept.neighbor_store.version import content_id, sha256_bytes

CLASSES = ["dog", "cafe/restaurant", "Cough", "city_center"]


def rec(cls, text, **kw):
    return NeighborRecord(class_=cls, text=text, **kw)


def sample(n_extra=0):
    neighbors = [
        rec("dog", "barking dog", kind="acoustic", scores={"clap_self": 0.61}),
        rec("cafe/restaurant", "clinking coffee cups", source={"backend": "openai", "model": "m", "sample": 1}),
        rec("dog", "puppy yelping", kind="subtype"),
        rec("Cough", "dry hacking cough"),
    ] + [rec("city_center", f"traffic noise {i}") for i in range(n_extra)]
    rejected = [
        rec("dog", "Barking  dog", status="rejected", reason=f"duplicate_of:{neighbor_id('dog', 'barking dog')}"),
        rec("Cough", "", status="rejected", reason="invalid:empty_text"),
    ]
    return neighbors, rejected


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def test_write_read_roundtrip_sorted_by_class_then_rank(store):
    neighbors, rejected = sample()
    ref = store.write_version("ESC-50", CLASSES, neighbors, rejected, params={"backend": "openai"}, message="hi")
    assert ref.startswith("esc-50@") and len(ref.split("@")[1]) == 12
    v = store.read(ref)
    assert v.dataset == "ESC-50" and v.classes == CLASSES
    assert [r.text for r in v.neighbors] == ["barking dog", "puppy yelping", "clinking coffee cups", "dry hacking cough"]
    by = v.by_class()
    assert list(by) == CLASSES
    assert [r.text for r in by["dog"]] == ["barking dog", "puppy yelping"]
    assert by["city_center"] == []
    assert v.neighbors[0].scores == {"clap_self": 0.61} and v.neighbors[0].kind == "acoustic"
    assert [r.reason for r in v.rejected] == [rejected[0].reason, "invalid:empty_text"]
    m = v.manifest
    assert m["parent"] is None and m["message"] == "hi" and m["params"] == {"backend": "openai"}
    assert m["counts"]["per_class"][0] == {"class": "dog", "accepted": 2, "rejected": 1}
    assert m["files"]["neighbors.jsonl"]["rows"] == 4
    assert m["files"]["neighbors.jsonl"]["sha256"] == sha256_bytes((v.path / "neighbors.jsonl").read_bytes())
    from sept import __version__

    assert m["code_version"] == __version__ and m["created_at"]
    # the JSONL a person reads: key "class", reason only on rejected lines
    first = json.loads((v.path / "neighbors.jsonl").read_text().splitlines()[0])
    assert list(first)[:4] == ["class", "text", "kind", "id"] and "reason" not in first
    assert store.resolve(ref) == ("esc-50", v.id)


def test_identical_content_same_id_no_duplicate_created_at_not_hashed(store):
    neighbors, rejected = sample()
    a = store.write_version("esc50", CLASSES, neighbors, rejected, params={"x": 1}, message="one")
    b = store.write_version("esc50", CLASSES, neighbors, rejected, params={"x": 1}, message="two")
    assert a == b
    assert len(list((store.root / "esc50" / "versions").iterdir())) == 1
    assert store.read(a).manifest["message"] == "one"  # the existing version is reused untouched
    c = store.write_version("esc50", CLASSES, neighbors, rejected, params={"x": 2})
    assert c != a  # generation params are part of the content id


def test_references_prefix_tag_latest_and_errors(store):
    n, r = sample()
    a = store.write_version("esc50", CLASSES, n, r, tag="first")
    b = store.write_version("esc50", CLASSES, n[:2], [], parent=a)
    vid_b = store.resolve(b)[1]
    assert store.resolve("esc50@latest")[1] == vid_b
    assert store.resolve("esc50")[1] == vid_b
    assert store.resolve("esc50@first") == store.resolve(a)
    assert store.resolve(f"esc50@{vid_b[:6]}")[1] == vid_b
    assert store.resolve(f"ESC50@{vid_b}")[1] == vid_b  # dataset part goes through the slug
    assert store.read(b).manifest["parent"] == store.resolve(a)[1]
    with pytest.raises(RefError, match="no version or tag 'nope'"):
        store.resolve("esc50@nope")
    with pytest.raises(RefError, match="no dataset 'other'"):
        store.resolve("other@latest")
    with pytest.raises(RefError, match="too short"):
        store.resolve("esc50@ab")
    store.tag(b, "first")  # tags move
    assert store.resolve("esc50@first")[1] == vid_b
    for bad in ("latest", "has space", "a@b", "abcdef12", ""):
        with pytest.raises(ValidationError):
            store.tag(b, bad)


def test_ambiguous_prefix_lists_candidates(store):
    # find two param sets whose ids share a 4-hex prefix, then store just those two
    n, r = sample()
    n, r = prepare_records(CLASSES, n, r)
    nsha, rsha = sha256_bytes(render(n)), sha256_bytes(render(r))
    seen = {}
    for i in range(5000):
        vid = content_id(CLASSES, {"i": i}, nsha, rsha)
        if vid[:4] in seen:
            pair = (seen[vid[:4]], i)
            break
        seen[vid[:4]] = i
    refs = [store.write_version("esc50", CLASSES, n, r, params={"i": i}) for i in pair]
    prefix = refs[0].split("@")[1][:4]
    with pytest.raises(RefError, match="ambiguous") as e:
        store.resolve(f"esc50@{prefix}")
    assert refs[0] in str(e.value) and refs[1] in str(e.value)


@pytest.mark.parametrize(
    "neighbors, match",
    [
        ([rec("bird", "tweet")], "unknown class 'bird'"),
        ([rec("dog", "   ")], "empty text for a neighbor of class 'dog'"),
        ([rec("dog", "woof"), rec("dog", "Woof ")], "duplicate id"),
        ([rec("dog", "woof", id="0" * 40)], "is not neighbor_id"),
        ([rec("dog", "woof", status="rejected")], "status 'rejected' in the accepted list"),
    ],
)
def test_write_version_rejects_bad_records_and_writes_nothing(store, neighbors, match):
    with pytest.raises(ValidationError, match=match):
        store.write_version("esc50", CLASSES, neighbors)
    assert store.list() == []
    assert not any((store.root / "esc50" / "versions").glob("*")) if (store.root / "esc50").exists() else True


def test_bad_classes_and_params(store):
    with pytest.raises(ValidationError, match="appears twice"):
        store.write_version("esc50", ["dog", "dog"], [])
    with pytest.raises(ValidationError, match="class list is empty"):
        store.write_version("esc50", [], [])
    with pytest.raises(SeptError, match="slug is empty"):   # sept.names.dataset_slug's refusal
        store.write_version("!!!", ["dog"], [])
    with pytest.raises(ValidationError, match="parameter 'sampling.temperature' is not a finite"):
        store.write_version("esc50", ["dog"], [], params={"sampling": {"temperature": float("nan")}})
    with pytest.raises(ValidationError, match="parameter 'obj'"):
        store.write_version("esc50", ["dog"], [], params={"obj": object()})


def test_secrets_never_stored(store, monkeypatch):
    secret = "sk-test-1234567890abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", "hf_zzzzzzzzzzzz")
    n = [rec("dog", "woof", source={"backend": "openai", "headers": {"Authorization": f"Bearer {secret}"}})]
    ref = store.write_version(
        "esc50", ["dog"], n,
        params={"api_key": "literal-key-value", "base_url": f"http://x/?key={secret}", "max_tokens": 64,
                "nested": [{"token": "abc123456"}], "note": "uses hf_zzzzzzzzzzzz"},
        message=f"made with {secret}",
    )
    v = store.read(ref)
    blob = b"".join(p.read_bytes() for p in v.path.rglob("*") if p.is_file())
    for s in (secret, "hf_zzzzzzzzzzzz", "literal-key-value", "abc123456"):
        assert s.encode() not in blob
    assert v.manifest["params"]["max_tokens"] == 64  # not a credential
    assert v.manifest["params"]["api_key"] == "<redacted>"
    with pytest.raises(ValidationError, match="secret environment variable"):
        store.write_version("esc50", ["dog"], [rec("dog", f"say {secret}")])
    store.attach_margins(ref, "fp1", np.zeros((1, 1)), v.neighbor_ids, meta={"api_key": secret, "n": 1})
    assert secret.encode() not in (v.path / "margins" / "fp1.safetensors").read_bytes()
    assert store.read_margins(ref, "fp1").meta == {"api_key": "<redacted>", "n": 1}


def test_margins_attach_read_and_order_checks(store):
    n, r = sample()
    ref = store.write_version("esc50", CLASSES, n, r)
    v = store.read(ref)
    C, K = len(CLASSES), len(v.neighbors)
    m = torch.arange(C * K, dtype=torch.float64).reshape(C, K)
    assert store.read_margins(ref, "clap-abc") is None
    store.attach_margins(ref, "clap-abc", m, v.neighbor_ids, meta={"templates": "default@123"})
    store.attach_margins(ref, "clap-def", np.ones((C, K)), v.neighbor_ids)
    got = store.read_margins(ref, "clap-abc")
    assert got.values.dtype == torch.float32 and torch.equal(got.values, m.float())
    assert got.neighbor_ids == v.neighbor_ids and got.classes == CLASSES and got.meta == {"templates": "default@123"}
    assert store.margin_fingerprints(ref) == ["clap-abc", "clap-def"]
    with pytest.raises(ValidationError, match=r"shape \[C=4, K=4\]"):
        store.attach_margins(ref, "x", np.zeros((K, C + 1)), v.neighbor_ids)
    with pytest.raises(ValidationError, match="neighbor id #0"):
        store.attach_margins(ref, "x", np.zeros((C, K)), list(reversed(v.neighbor_ids)))
    with pytest.raises(ValidationError, match="NaN"):
        store.attach_margins(ref, "x", np.full((C, K), np.nan), v.neighbor_ids)
    with pytest.raises(ValidationError, match="fingerprint"):
        store.attach_margins(ref, "../evil", np.zeros((C, K)), v.neighbor_ids)
    assert all(problems == [] for _, problems in store.verify("esc50"))


def test_margins_carried_when_neighbors_same_else_stale(store):
    n, r = sample()
    parent = store.write_version("esc50", CLASSES, n, r)
    v = store.read(parent)
    store.attach_margins(parent, "fp", np.ones((4, 4)), v.neighbor_ids)
    # same accepted neighbors, another rejected set: margins still valid, carried over
    same = store.write_version("esc50", CLASSES, n, r[:1], parent=parent)
    assert store.read(same).manifest["margins"]["status"] == "carried"
    assert torch.equal(store.read_margins(same, "fp").values, torch.ones(4, 4))
    changed = store.write_version("esc50", CLASSES, n[:3], r, parent=parent)
    note = store.read(changed).manifest["margins"]
    assert note["status"] == "stale" and note["fingerprints"] == ["fp"] and "recompute" in note["reason"]
    assert store.read_margins(changed, "fp") is None


def test_verify_detects_tampering(store):
    n, r = sample()
    ref = store.write_version("esc50", CLASSES, n, r)
    v = store.read(ref)
    store.attach_margins(ref, "fp", np.ones((4, 4)), v.neighbor_ids)
    assert store.verify(ref) == [(ref, [])]
    pristine = store.root.parent / "pristine"
    shutil.copytree(store.root, pristine)

    def tamper(rel, edit):
        shutil.rmtree(store.root)
        shutil.copytree(pristine, store.root)
        p = v.path / rel
        p.write_bytes(edit(p.read_bytes()))
        [(_, problems)] = store.verify(ref)
        return problems

    problems = tamper("neighbors.jsonl", lambda b: b.replace(b"barking dog", b"barking cat"))
    assert any(p.startswith("neighbors.jsonl: sha256") for p in problems)
    with pytest.raises(IntegrityError, match="neighbors.jsonl"):
        store.read(ref)
    assert any(p.startswith("rejected.jsonl") for p in tamper("rejected.jsonl", lambda b: b + b"\n{}\n"))
    problems = tamper("manifest.json", lambda b: b.replace(b'"dataset": "esc50"', b'"dataset": "esc51"'))
    assert problems and all(p.startswith("manifest.json") for p in problems)
    problems = tamper("margins/fp.safetensors", lambda b: b[:-4] + b"\x00\x00\x80\x7f")
    assert problems == ["margins/fp.safetensors: sha256 does not match fp.json"]
    with pytest.raises(IntegrityError, match="fp.safetensors"):
        store.read_margins(ref, "fp")


def test_list_and_log_lineage(store):
    n, r = sample()
    a = store.write_version("esc50", CLASSES, n, r, tag="gen", message="generated")
    b = store.write_version("esc50", CLASSES, n[:3], r, parent=a, message="reviewed")
    store.write_version("us8k", ["siren"], [rec("siren", "wailing ambulance")])
    rows = store.list()
    assert [x["ref"] for x in rows][:2] == [a, b] and rows[2]["dataset"] == "us8k"
    assert rows[0]["tags"] == ["gen"] and rows[1]["neighbors"] == 3
    assert [x["ref"] for x in store.list("esc50")] == [a, b]
    assert [x["ref"] for x in store.log("esc50")] == [b, a]
    assert [x["ref"] for x in store.log(b)] == [b, a]
    with pytest.raises(RefError):
        store.list("nothing")


def test_store_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SEPT_STORE", str(tmp_path / "env-store"))
    assert Store().root == tmp_path / "env-store"
    monkeypatch.delenv("SEPT_STORE")
    monkeypatch.chdir(tmp_path)
    ref = Store().write_version("esc50", ["dog"], [rec("dog", "woof")])
    assert (tmp_path / "neighbor-store" / "esc50" / "versions" / Store().resolve(ref)[1]).is_dir()


def test_diff_shows_added_removed_status_and_respelled_text(store):
    from sept.neighbor_store.diff import diff_versions, format_diff

    a = store.write_version("esc50", ["dog", "cat"], [rec("dog", "Dog  bark"), rec("dog", "growl"), rec("cat", "meow")])
    b = store.write_version(
        "esc50", ["dog", "cat", "cow"], [rec("dog", "dog bark"), rec("cow", "moo")],
        rejected=[rec("dog", "growl", status="rejected", reason="review")], parent=a,
    )
    d = diff_versions(store.read(a), store.read(b))
    assert d.classes_added == ["cow"] and d.classes_removed == []
    assert [(x.text, y.text) for x, y in d.per_class["dog"].text] == [("Dog  bark", "dog bark")]
    assert [(x.status, y.status) for x, y in d.per_class["dog"].status] == [("accepted", "rejected")]
    assert [r.text for r in d.per_class["cat"].removed] == ["meow"]
    assert [r.text for r in d.per_class["cow"].added] == ["moo"]
    text = format_diff(d)
    assert "+ class 'cow'" in text and "1 added, 1 removed, 1 status changed, 1 text changed" in text
    assert format_diff(diff_versions(store.read(a), store.read(a))).splitlines()[1] == "no changes"
