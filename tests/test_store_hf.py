"""`sept store export --format hf` / `sept store import --format hf`: a version as a Hugging Face dataset folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sept.neighbor_store import IntegrityError, NeighborRecord, Store, neighbor_id
from sept.neighbor_store.hf import ExportError, export_hf, import_hf

SEPT = Path(sys.executable).parent / "sept"
CLASSES = ["dog", "cafe/restaurant", "Straßenbahn"]
PARAMS = {
    "backend": "openai",
    "model": "Qwen/Qwen2.5-7B-Instruct",
    "prompt": "neighbors-v2@0123456789ab",
    "dedup": {"threshold": 0.9, "model": "all-MiniLM-L6-v2"},
    "clap": {"fingerprint": "clap-abc", "amodel": "HTSAT-tiny"},
    "visible_classes": CLASSES,
    "split": {"policy": "seeded", "seed": 1, "base": CLASSES, "new": ["Cough"]},
}
COST = [{"backend": "openai", "model": "Qwen/Qwen2.5-7B-Instruct", "requests": 7, "prompt_tokens": 900}]


def rec(cls, text, **kw):
    return NeighborRecord(class_=cls, text=text, **kw)


@pytest.fixture
def version(tmp_path):
    store = Store(tmp_path / "store")
    neighbors = [
        rec("dog", "barking dog", kind="acoustic", scores={"clap_self": 0.61}, source={"sample": 0}),
        rec("cafe/restaurant", "clinking coffee cups", scores={"clap_self": 0.5}, source={"sample": 1}),
        rec("dog", "puppy yelping", kind="subtype", scores={"clap_self": 0.4}, source={"sample": 0}),
        rec("Straßenbahn", "tram bell ringing", scores={"clap_self": 0.3}, source={"sample": 2}),
    ]
    rejected = [rec("dog", "Barking  dog", status="rejected", reason=f"duplicate_of:{neighbor_id('dog', 'barking dog')}")]
    ref = store.write_version("ESC-50 mini", CLASSES, neighbors, rejected, params=PARAMS, message="first", cost=COST)
    v = store.read(ref)
    margins = np.arange(len(CLASSES) * len(v.neighbors), dtype=np.float32).reshape(len(CLASSES), -1)
    store.attach_margins(ref, "clap-abc", margins, v.neighbor_ids, meta={"templates": "default@123"})
    return store, ref, v, margins


def test_export_card_and_files(version, tmp_path):
    store, ref, v, _ = version
    out = export_hf(store, ref, tmp_path / "hf", rejected=True)
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["README.md", "data/neighbors.jsonl", "data/rejected.jsonl", "manifest.json",
                     "margins/clap-abc.json", "margins/clap-abc.safetensors"]
    assert (out / "data/neighbors.jsonl").read_bytes() == (v.path / "neighbors.jsonl").read_bytes()
    assert json.loads((out / "manifest.json").read_text()) == v.manifest
    card = (out / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "Qwen/Qwen2.5-7B-Instruct" in body and "openai" in body
    assert "Prompt hash: 0123456789ab" in body and "Prompt id: neighbors-v2" in body
    assert "Visible classes (3): dog, cafe/restaurant, Straßenbahn" in body
    assert v.id in body and "requests=7" in body and "threshold=0.9" in body and "fingerprint=clap-abc" in body
    assert "new=[Cough]" in body
    assert "| dog | 2 | 1 |" in body and "| Straßenbahn | 1 | 0 |" in body
    assert "config_name: neighbors" in front and "path: data/neighbors.jsonl" in front
    assert "config_name: rejected" in front and "license" not in front
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.tmp")]


def test_export_loads_with_datasets(version, tmp_path):
    import datasets  # the hf extra (make setup installs .[test,bench,hf])
    store, ref, v, _ = version
    out = export_hf(store, ref, tmp_path / "hf", rejected=True)
    ds = datasets.load_dataset("json", data_files=str(out / "data/neighbors.jsonl"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds["text"] == [r.text for r in v.neighbors]
    assert ds["class"] == [r.class_ for r in v.neighbors]
    assert ds["id"] == v.neighbor_ids
    assert [s["clap_self"] for s in ds["scores"]] == [r.scores["clap_self"] for r in v.neighbors]
    rej = datasets.load_dataset("json", data_files=str(out / "data/rejected.jsonl"), split="train",
                                cache_dir=str(tmp_path / "cache"))
    assert rej["reason"] == [r.reason for r in v.rejected]
    # the folder as the Hub serves it: load_dataset(FOLDER) reads the card's configs
    hub = datasets.load_dataset(str(out), "neighbors", split="train", cache_dir=str(tmp_path / "cache2"))
    assert hub["text"] == [r.text for r in v.neighbors]
    hub_rej = datasets.load_dataset(str(out), "rejected", split="train", cache_dir=str(tmp_path / "cache2"))
    assert hub_rej["reason"] == [r.reason for r in v.rejected]


def test_roundtrip_same_id_and_margins(version, tmp_path):
    store, ref, v, margins = version
    out = export_hf(store, ref, tmp_path / "hf", rejected=True)
    other = Store(tmp_path / "other")
    ref2, created, note = import_hf(other, out)
    assert created and note is None
    assert other.resolve(ref2)[1] == v.id and ref2 == ref
    back = other.read(ref2)
    assert back.neighbors == v.neighbors and back.rejected == v.rejected
    assert back.manifest["params"] == v.manifest["params"] and back.manifest["cost"] == COST
    m = other.read_margins(ref2, "clap-abc")
    assert np.array_equal(m.values.numpy(), margins) and m.meta == {"templates": "default@123"}
    assert other.verify(ref2)[0][1] == []
    # importing again reuses the version
    assert import_hf(other, out)[:2] == (ref, False)


def test_export_without_rejected_imports_with_a_note(version, tmp_path):
    store, ref, v, _ = version
    out = export_hf(store, ref, tmp_path / "hf")
    assert not (out / "data/rejected.jsonl").exists()
    assert "config_name: rejected" not in (out / "README.md").read_text()
    ref2, created, note = import_hf(Store(tmp_path / "other"), out)
    assert created and ref2 != ref and "rejected" in note and v.id in note


def test_refusals_name_the_file(version, tmp_path):
    store, ref, _, _ = version
    out = tmp_path / "hf"
    out.mkdir()
    with pytest.raises(ExportError, match=f"{out}: already exists"):
        export_hf(store, ref, out)
    assert list(out.iterdir()) == [] and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    out = export_hf(store, ref, tmp_path / "hf2", rejected=True)
    nb = out / "data/neighbors.jsonl"
    nb.write_text(nb.read_text().replace("puppy yelping", "puppy howling"), encoding="utf-8")
    other = Store(tmp_path / "other")
    with pytest.raises(ExportError, match=f"{nb}: does not match manifest.json"):
        import_hf(other, out)
    assert other.list() == []
    (out / "manifest.json").unlink()
    with pytest.raises(ExportError, match=f"{out / 'manifest.json'}: missing"):
        import_hf(other, out)
    assert other.list() == []


def test_cli_export_import_subprocess(version, tmp_path):
    store, ref, v, _ = version
    env = {**os.environ, "SEPT_STORE": str(store.root)}
    out = tmp_path / "hf"
    p = subprocess.run([SEPT, "store", "export", ref, out, "--format", "hf", "--rejected"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "hf upload USER/NAME" in p.stdout and (out / "README.md").is_file()
    p = subprocess.run([SEPT, "store", "export", ref, out], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and p.stderr.strip() == f"error: {out}: already exists; choose a new folder"
    env2 = {**os.environ, "SEPT_STORE": str(tmp_path / "other")}
    p = subprocess.run([SEPT, "store", "import", "--format", "hf", out, "--tag", "shared"],
                       capture_output=True, text=True, env=env2, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == ref
    assert Store(tmp_path / "other").resolve("esc-50-mini@shared")[1] == v.id
    p = subprocess.run([SEPT, "store", "import", out], capture_output=True, text=True, env=env2, timeout=120)
    assert p.returncode == 1 and "--dataset is required" in p.stderr


def test_import_refuses_before_storing_anything(version, tmp_path):
    store, ref, _, _ = version
    out = export_hf(store, ref, tmp_path / "hf", rejected=True)
    other = Store(tmp_path / "other")
    side = out / "margins/clap-abc.safetensors"
    side.write_bytes(side.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(IntegrityError, match=f"{side}: sha256 does not match clap-abc.json"):
        import_hf(other, out)
    assert other.list() == []
    out2 = export_hf(store, ref, tmp_path / "hf2", rejected=True)
    m = json.loads((out2 / "manifest.json").read_text())
    m["params"]["model"] = "another-model"  # enters the id: the files no longer give the manifest's id
    (out2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match=f"{out2 / 'manifest.json'}: the files give version"):
        import_hf(other, out2)
    assert other.list() == []


def test_varied_records_load_with_datasets(tmp_path):
    import datasets

    store = Store(tmp_path / "store")
    neighbors = [rec("dog", "barking dog"), rec("dog", "growl", scores={"clap_self": 0.2, "clap_best_other": 0.1}),
                 rec("cat", "purring", source={"backend": "openai", "sample": 3, "prompt": "p@1"})]
    ref = store.write_version("pets", ["dog", "cat"], neighbors)
    out = export_hf(store, ref, tmp_path / "hf")
    ds = datasets.load_dataset(str(out), "neighbors", split="train", cache_dir=str(tmp_path / "cache"))
    assert ds["text"] == ["barking dog", "growl", "purring"]
    assert ds["scores"][1]["clap_best_other"] == 0.1 and ds["source"][2]["sample"] == 3
