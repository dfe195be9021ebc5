"""`sept store ...` through the real CLI app (and once through the installed console script)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sept.neighbor_store import Store, neighbor_id
from sept.cli import app

SEPT = Path(sys.executable).parent / "sept"


def run(root, *args, env=None):
    cmd = ["store", "--store", str(root), *args] if root is not None else ["store", *args]
    return CliRunner(env=env).invoke(app, [str(a) for a in cmd])


def last_line(result):
    return result.stdout.strip().splitlines()[-1]


def write_lines(path, lines):
    path.write_text("".join((json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else x) + "\n" for x in lines),
                    encoding="utf-8")
    return path


def versions_on_disk(root):
    return sorted(p.name for p in Path(root).glob("*/versions/*"))


@pytest.fixture
def files(tmp_path):
    neighbors = write_lines(tmp_path / "n.jsonl", [
        {"class": "dog", "text": "barking dog"},
        {"class": "cafe/restaurant", "text": "clinking cups"},
        {"class": "dog", "text": "puppy yelp", "kind": "subtype"},
        {"class": "Cough", "text": "dry cough"},
    ])
    classes = tmp_path / "classes.txt"
    classes.write_text("dog\ncafe/restaurant\nCough\nstraße\n", encoding="utf-8")
    return neighbors, classes


def test_import_fills_fields_prints_ref_last_and_is_idempotent(tmp_path, files):
    neighbors, classes = files
    root = tmp_path / "store"
    r = run(root, "import", neighbors, "--dataset", "ESC-50", "--classes", classes, "-m", "seed", "--tag", "v1")
    assert r.exit_code == 0, r.output
    ref = last_line(r)
    assert ref.startswith("esc-50@") and len(ref) == len("esc-50@") + 12
    v = Store(root).read(ref)
    assert v.classes == ["dog", "cafe/restaurant", "Cough", "straße"]
    assert [len(x) for x in v.by_class().values()] == [2, 1, 1, 0]
    first = v.neighbors[0]
    assert (first.kind, first.source, first.status, first.id) == (
        "human", {"backend": "human"}, "accepted", neighbor_id("dog", "barking dog"))
    assert v.neighbors[1].kind == "subtype"
    again = run(root, "import", neighbors, "--dataset", "ESC-50", "--classes", classes)
    assert again.exit_code == 0 and last_line(again) == ref
    assert "reusing" in again.stderr
    assert len(versions_on_disk(root)) == 1
    # without --classes: first-appearance order
    r2 = run(root, "import", neighbors, "--dataset", "other")
    assert Store(root).read(last_line(r2)).classes == ["dog", "cafe/restaurant", "Cough"]


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"class": "dog", "text": "woof"', "bad JSON"),
        ('["dog", "woof"]', "expected a JSON object"),
        ({"text": "woof"}, "missing 'class'"),
        ({"class": "dog"}, "missing 'text'"),
        ({"class": "dog", "text": "  "}, "empty text"),
        ({"class": "bird", "text": "tweet"}, "unknown class 'bird'"),
        ({"class": "dog", "text": "Barking  Dog"}, "duplicate id"),
        ({"class": "dog", "text": "woof", "stauts": "rejected"}, "unknown field 'stauts'"),
        ({"class": "dog", "text": "woof", "status": "maybe"}, "status must be"),
        ({"class": "dog", "text": "woof", "scores": {"clap_self": "high"}}, "scores.clap_self"),
    ],
)
def test_malformed_line_names_file_and_line_and_writes_nothing(tmp_path, files, line, reason):
    _, classes = files
    bad = write_lines(tmp_path / "bad.jsonl", [{"class": "dog", "text": "barking dog"}, "", line])
    root = tmp_path / "store"
    r = run(root, "import", bad, "--dataset", "esc50", "--classes", classes)
    assert r.exit_code == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in r.output
    assert f"{bad}:3:" in err and reason in err
    assert versions_on_disk(root) == []


def test_classes_file_errors(tmp_path, files):
    neighbors, _ = files
    dup = tmp_path / "dup.txt"
    dup.write_text("dog\nCough\ndog\n")
    r = run(tmp_path / "s", "import", neighbors, "--dataset", "x", "--classes", dup)
    assert r.exit_code == 1 and f"{dup}:3: class 'dog' already listed on line 1" in r.stderr
    r = run(tmp_path / "s", "import", tmp_path / "missing.jsonl", "--dataset", "x")
    assert r.exit_code == 1 and "missing.jsonl" in r.stderr and "not found" in r.stderr


def test_list_show_log_tag(tmp_path, files):
    neighbors, classes = files
    root = tmp_path / "store"
    a = last_line(run(root, "import", neighbors, "--dataset", "esc50", "--classes", classes, "-m", "first"))
    edited = write_lines(tmp_path / "e.jsonl", [{"class": "dog", "text": "growl"}])
    b = last_line(run(root, "import", edited, "--dataset", "esc50", "--classes", classes, "--parent", a, "-m", "second"))
    assert a != b
    r = run(root, "list", "--json")
    rows = json.loads(r.stdout)
    assert [x["ref"] for x in rows] == [a, b] and rows[1]["parent"] == Store(root).resolve(a)[1]
    r = run(root, "list")
    assert a in r.stdout and b in r.stdout and "second" in r.stdout
    show = json.loads(run(root, "show", b, "--json").stdout)
    assert show["id"].startswith(b.split("@")[1]) and show["dataset"] == "esc50"
    assert show["parent"] == Store(root).resolve(a)[1] and show["classes"][1] == "cafe/restaurant"
    assert show["counts"]["neighbors"] == 1 and show["counts"]["per_class"][0]["accepted"] == 1
    human = run(root, "show", "esc50@latest").stdout
    assert "'cafe/restaurant': 0 accepted" in human and b in human
    r = run(root, "tag", a, "reviewed")
    assert r.exit_code == 0 and last_line(r) == a
    assert json.loads(run(root, "show", "esc50@reviewed", "--json").stdout)["message"] == "first"
    log = run(root, "log", "esc50").stdout
    assert log.index(b) < log.index(a) and "(reviewed)" in log and "second" in log
    r = run(root, "show", "esc50@zzz")
    assert r.exit_code == 1 and r.stderr.startswith("error: no version or tag 'zzz' in dataset esc50")
    r = run(root, "tag", a, "latest")
    assert r.exit_code == 1 and "reserved" in r.stderr
    assert run(root, "show").exit_code == 2  # usage error


def test_verify_ok_and_tamper_names_file(tmp_path, files):
    neighbors, classes = files
    root = tmp_path / "store"
    ref = last_line(run(root, "import", neighbors, "--dataset", "esc50", "--classes", classes))
    s = Store(root)
    v = s.read(ref)
    s.attach_margins(ref, "fp0", np.ones((4, 4)), v.neighbor_ids)
    r = run(root, "verify", ref)
    assert r.exit_code == 0 and f"ok   {ref}" in r.stdout
    f = v.path / "margins" / "fp0.safetensors"
    f.write_bytes(f.read_bytes()[:-1] + b"\x01")
    r = run(root, "verify", "esc50")
    assert r.exit_code == 1 and "margins/fp0.safetensors" in r.stderr
    f.unlink()
    r = run(root, "verify", ref)
    assert r.exit_code == 1 and "fp0.safetensors is missing" in r.stderr
    (v.path / "margins" / "fp0.json").unlink()
    (v.path / "rejected.jsonl").write_text('{"class": "dog", "text": "x"}\n')
    r = run(root, "verify", ref)
    assert r.exit_code == 1 and "rejected.jsonl" in r.stderr


def test_review_workflow_checkout_edit_commit_diff(tmp_path, files):
    neighbors, classes = files
    root = tmp_path / "store"
    parent = last_line(run(root, "import", neighbors, "--dataset", "esc50", "--classes", classes))
    s = Store(root)
    pv = s.read(parent)
    s.attach_margins(parent, "fp", np.ones((4, 4)), pv.neighbor_ids)
    co = tmp_path / "review"
    r = run(root, "checkout", parent, co)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (co / "neighbors.jsonl").read_text().splitlines()]
    assert [x["text"] for x in lines] == ["barking dog", "puppy yelp", "clinking cups", "dry cough"]
    # nothing edited: committing gives back the parent itself
    assert last_line(run(root, "commit", co)) == parent
    lines[0]["status"] = "rejected"  # flip
    lines[1]["text"] = "small puppy yelping"  # edit text
    del lines[2]  # delete
    lines.append({"class": "straße", "text": "tram bell"})  # add with only class + text
    write_lines(co / "neighbors.jsonl", lines)
    r = run(root, "commit", co, "-m", "review pass", "--tag", "reviewed")
    assert r.exit_code == 0, r.output
    child = last_line(r)
    cv = s.read(child)
    assert cv.manifest["parent"] == pv.id and cv.manifest["message"] == "review pass"
    assert [(x.class_, x.text) for x in cv.neighbors] == [
        ("dog", "small puppy yelping"), ("Cough", "dry cough"), ("straße", "tram bell")]
    edited = cv.neighbors[0]
    assert edited.id == neighbor_id("dog", "small puppy yelping") and edited.source["edited_from"] == lines[1]["id"]
    assert [(x.text, x.reason) for x in cv.rejected] == [("barking dog", "review")]
    assert cv.neighbors[2].kind == "human" and cv.neighbors[2].source == {"backend": "human"}
    assert cv.manifest["margins"]["status"] == "stale" and s.read_margins(child, "fp") is None
    assert s.resolve("esc50@reviewed")[1] == cv.id
    r = run(root, "diff", parent, child)
    assert r.exit_code == 0
    out = r.stdout
    assert "class 'dog':" in out and "~ 'barking dog': accepted -> rejected" in out
    assert "~ text 'puppy yelp' -> 'small puppy yelping'" in out
    assert "class 'cafe/restaurant':" in out and "- 'clinking cups' (accepted)" in out
    assert "class 'straße':" in out and "+ 'tram bell' (accepted)" in out
    assert "class 'Cough'" not in out
    d = json.loads(run(root, "diff", parent, child, "--json").stdout)
    assert d["summary"] == {"added": 1, "removed": 1, "status_changed": 1, "text_changed": 1}
    assert run(root, "verify", "esc50").exit_code == 0


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda ls: ls + [{"class": "bird", "text": "tweet"}], "unknown class 'bird'"),
        (lambda ls: ls + [{"class": "dog", "text": ""}], "empty text"),
        (lambda ls: ls + [dict(ls[0])], "duplicate id"),
        (lambda ls: ls + ["not json"], "bad JSON"),
        (lambda ls: ls + [{"text": "no class"}], "missing 'class'"),
    ],
)
def test_commit_validation_names_file_line_and_writes_nothing(tmp_path, files, edit, reason):
    neighbors, classes = files
    root = tmp_path / "store"
    parent = last_line(run(root, "import", neighbors, "--dataset", "esc50", "--classes", classes))
    co = tmp_path / "co"
    run(root, "checkout", parent, co)
    lines = [json.loads(x) for x in (co / "neighbors.jsonl").read_text().splitlines()]
    write_lines(co / "neighbors.jsonl", edit(lines))
    before = versions_on_disk(root)
    r = run(root, "commit", co)
    assert r.exit_code == 1
    assert f"{co / 'neighbors.jsonl'}:5:" in r.stderr and reason in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert versions_on_disk(root) == before


def test_checkout_refuses_nonempty_dir_and_commit_needs_checkout(tmp_path, files):
    neighbors, classes = files
    root = tmp_path / "store"
    ref = last_line(run(root, "import", neighbors, "--dataset", "esc50"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    r = run(root, "checkout", ref, tmp_path / "full")
    assert r.exit_code == 1 and "not empty" in r.stderr
    r = run(root, "commit", tmp_path / "full")
    assert r.exit_code == 1 and "not a checkout" in r.stderr


def test_store_root_from_env_and_default(tmp_path, files, monkeypatch):
    neighbors, _ = files
    env_root = tmp_path / "env-store"
    r = run(None, "import", neighbors, "--dataset", "esc50", env={"SEPT_STORE": str(env_root)})
    assert r.exit_code == 0 and versions_on_disk(env_root)
    monkeypatch.delenv("SEPT_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    r = run(None, "list", "--json", env={"SEPT_STORE": None})
    assert r.exit_code == 0 and json.loads(r.stdout) == []  # ./neighbor-store does not exist yet
    r = run(None, "import", neighbors, "--dataset", "esc50", env={"SEPT_STORE": None})
    assert r.exit_code == 0 and versions_on_disk(tmp_path / "neighbor-store")


def test_console_script_subprocess(tmp_path, files):
    neighbors, classes = files
    assert SEPT.exists(), f"console script missing at {SEPT}; install the project"
    env = {**os.environ, "SEPT_STORE": str(tmp_path / "store")}
    p = subprocess.run([SEPT, "store", "import", neighbors, "--dataset", "Urban Sound", "--classes", classes, "--tag", "t"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    ref = p.stdout.strip().splitlines()[-1]
    assert ref.startswith("urban-sound@")
    p = subprocess.run([SEPT, "store", "verify", "urban-sound@t"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and f"ok   {ref}" in p.stdout
    p = subprocess.run([SEPT, "store", "show", "urban-sound@nope"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
