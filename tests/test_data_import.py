"""`sept data import`: folder trees and metadata CSVs -> PALM layout that loads, checks and trains.

The sources are synthesized (tests/fixtures_audio.py's sound families, written by soundfile);
every import goes through the `sept` console script's `main`, so refusals are the one-line
errors a user sees.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile

from fixtures_audio import FAMILIES, synth_clip
from sept.trainer.data import load_dataset


def _clip(path, c: int, seed: int, rate: int = 16000, stereo: bool = False, seconds: float = 0.5):
    wave = synth_clip(FAMILIES[c % len(FAMILIES)], c, np.random.default_rng(seed), rate, seconds)
    if stereo:
        wave = np.stack([wave, 0.7 * wave], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, rate)


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


AWKWARD = ["Dog Bark", "café ambience", "Ünïcode Wind", "siren"]


def _folder_tree(src, per_class: int = 4):
    for c, name in enumerate(AWKWARD):
        for i in range(per_class):
            _clip(src / name / f"clip {i}.wav", c, 10 * c + i)
    # one stereo 48 kHz flac, deeper down
    _clip(src / "Dog Bark" / "more" / "stereo.flac", 0, 99, rate=48000, stereo=True)
    (src / "siren" / "notes.txt").write_text("not audio")


def test_folder_tree_with_awkward_names_imports_and_loads(tmp_path, sept_main):
    src = tmp_path / "src"
    _folder_tree(src)
    out = tmp_path / "data" / "My Sounds"
    ran = sept_main("data", "import", src, "--out", out, "--from", "folder", "--test-fraction", "0.25", "--seed", "3")
    assert ran.exit_code == 0, ran.output
    assert "4 classes, 17 clips" in ran.stdout and "data check passed" in ran.stdout
    ds = load_dataset(out)
    assert ds.classes == sorted(AWKWARD)
    # stratified: each class has one clip in test (0.25 of 4, of 5 for Dog Bark rounds to 1)
    assert sorted(s.classname for s in ds.test) == sorted(AWKWARD)
    assert len(ds.train) == 13
    stereo = [s.path for s in ds.train + ds.test if s.path.name == "stereo.flac"]
    assert len(stereo) == 1 and stereo[0].is_symlink() and stereo[0].parent.name == "dog-bark"
    assert soundfile.info(str(stereo[0])).channels == 2
    assert all(not p.name.startswith(".") for p in out.parent.iterdir())   # no temporary folder left
    # the same seed gives the same split; a second import onto the same --out is refused
    again = tmp_path / "data" / "again"
    assert sept_main("data", "import", src, "--out", again, "--from", "folder", "--test-fraction", "0.25",
                     "--seed", "3").exit_code == 0
    assert (again / "test.csv").read_text() == (out / "test.csv").read_text()
    refused = sept_main("data", "import", src, "--out", out, "--from", "folder")
    assert refused.exit_code == 1 and "already exists" in refused.stderr


def test_generic_csv_with_slash_in_label_copies_audio(tmp_path, sept_main):
    src = tmp_path / "meta"
    rows = []
    for c, name in enumerate(["cafe/restaurant", "dog", "rain"]):
        for i in range(3):
            rel = f"wavs/{c}_{i}.wav"
            _clip(src / rel, c, 10 * c + i)
            rows.append((rel, name, "unused"))
    _write_csv(src / "labels.csv", ["file", "label", "note"], rows)
    out = tmp_path / "data" / "mine"
    ran = sept_main("data", "import", src / "labels.csv", "--out", out, "--from", "csv", "--path-col", "file",
                    "--label-col", "label", "--copy")
    assert ran.exit_code == 0, ran.output
    ds = load_dataset(out)
    assert ds.classes == ["cafe/restaurant", "dog", "rain"]
    cafe = [s.path for s in ds.train if s.classname == "cafe/restaurant"]
    assert cafe and all(p.parent.name == "cafe-restaurant" and not p.is_symlink() for p in cafe)


def _esc50_style(root, classes, folds: int = 5):
    """ESC-50's own layout: meta/esc50.csv (filename, fold, category, ...) and audio/<filename>."""
    rows = []
    for c, category in enumerate(classes):
        for fold in range(1, folds + 1):
            name = f"{fold}-{100 + c}-A-{c}.wav"
            _clip(root / "audio" / name, c, 100 * c + fold, rate=44100, seconds=0.3)
            rows.append((name, fold, c, category, "False", 100 + c, "A"))
    (root / "meta").mkdir(parents=True)
    _write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    return root / "meta" / "esc50.csv"


def test_esc50_preset_folds_and_benchmark_spelling(tmp_path, sept_main):
    meta = _esc50_style(tmp_path / "ESC-50-master", ["crying_baby", "dog", "door_wood_knock"])
    out = tmp_path / "data" / "esc50-mini"
    ran = sept_main("data", "import", meta, "--out", out, "--from", "csv", "--preset", "esc50")
    assert ran.exit_code == 0, ran.output
    assert "5 folds" in ran.stdout
    for k in range(1, 6):
        ds = load_dataset(out, fold=k)
        assert ds.classes == ["crying baby", "dog", "door wood knock"]
        assert len(ds.test) == 3 and len(ds.train) == 12
        assert all(s.path.name.startswith(f"{k}-") for s in ds.test)
    assert not (out / "train.csv").exists()


def test_urbansound8k_preset_with_audio_root(tmp_path, sept_main):
    root = tmp_path / "US8K"
    rows = []
    for c, label in enumerate(["dog_bark", "street_music"]):
        for fold in (1, 2, 3):
            name = f"{c}{fold}-{c}-0-0.wav"
            _clip(root / "sound" / f"fold{fold}" / name, c, 10 * c + fold, rate=22050, seconds=0.3)
            rows.append((name, 100, 0.0, 0.3, 1, fold, c, label))
    (root / "metadata").mkdir()
    _write_csv(root / "metadata" / "UrbanSound8K.csv",
               ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    out = tmp_path / "data" / "us8k-mini"
    ran = sept_main("data", "import", root / "metadata" / "UrbanSound8K.csv", "--out", out, "--from", "csv",
                    "--preset", "urbansound8k", "--audio-root", root / "sound")
    assert ran.exit_code == 0, ran.output
    ds = load_dataset(out, fold=2)
    assert ds.classes == ["dog bark", "street music"]
    assert sorted(s.path.name for s in ds.test) == ["02-0-0-0.wav", "12-1-0-0.wav"]


def test_imported_benchmark_dataset_passes_sept_data_check_and_trains(tmp_path, sept_main, backbone,
                                                                      clap_checkpoint):
    """A full-class ESC-50-style CSV imported as ROOT/ESC50: `sept data check` accepts it, and a
    one-epoch CoOp run trains on its fold 1."""
    from sept.trainer.config import make_config
    from sept.trainer.data_check import load_benchmark
    from sept.trainer.train import train

    spelled = [c.replace(" ", "_") for c in load_benchmark()["ESC50"]["classes"]]
    meta = _esc50_style(tmp_path / "ESC-50-master", spelled)
    root = tmp_path / "data"
    ran = sept_main("data", "import", meta, "--out", root / "ESC50", "--from", "csv", "--preset", "esc50")
    assert ran.exit_code == 0, ran.output
    checked = sept_main("data", "check", root, "--require", "ESC50", "--datasets", "ESC50")
    assert checked.exit_code == 0, checked.output
    cfg = make_config(overrides=dict(dataset_root=str(root / "ESC50"), fold=1, checkpoint=str(clap_checkpoint),
                                     cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "runs"),
                                     shots=1, epochs=1, batch_size=16, n_ctx=2, method="coop", device="cpu",
                                     run_name="imported"))
    train(cfg, backbone=backbone)
    results = json.loads((tmp_path / "runs/imported/results.json").read_text())
    assert len(results["history"]) == 1 and 0 <= results["metrics"]["all"]["accuracy"] <= 1


@pytest.mark.parametrize("breakage, named", [
    ("missing clip", "gone.wav (missing)"),
    ("unreadable clip", "broken.wav (unreadable"),
    ("empty class", "class 'Empty One' has no clip"),
    ("same slug", "classes 'Dog Bark' and 'dog bark' both become the folder name 'dog-bark'"),
])
def test_broken_folder_source_is_refused_naming_it(tmp_path, sept_main, breakage, named):
    src = tmp_path / "src"
    _folder_tree(src, per_class=2)
    if breakage == "missing clip":
        (src / "siren" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    elif breakage == "unreadable clip":
        (src / "siren" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    elif breakage == "empty class":
        (src / "Empty One").mkdir()
        (src / "Empty One" / "readme.txt").write_text("no audio here")
    else:
        _clip(src / "dog bark" / "x.wav", 1, 5)
    out = tmp_path / "data" / "broken"
    ran = sept_main("data", "import", src, "--out", out, "--from", "folder")
    assert ran.exit_code == 1
    assert named in ran.stderr and ran.stderr.startswith("error: ") and ran.stderr.count("\n") == 1
    assert not out.exists() and list((tmp_path / "data").iterdir() if (tmp_path / "data").exists() else []) == []


@pytest.mark.parametrize("breakage, named", [
    ("fold gap", "holds folds 1, 2, 4"),
    ("outside", "lies outside"),
    ("missing clip", "nope.wav (missing)"),
    ("two labels", "is listed with two classes, 'a' and 'b'"),
])
def test_broken_csv_source_is_refused_naming_it(tmp_path, sept_main, breakage, named):
    src = tmp_path / "meta"
    rows = []
    for c, name in enumerate(["a", "b"]):
        for fold in (1, 2, 4 if breakage == "fold gap" else 3):
            rel = f"{c}_{fold}.wav"
            _clip(src / rel, c, fold)
            rows.append((rel, name, fold))
    if breakage == "outside":
        _clip(tmp_path / "elsewhere.wav", 0, 1)
        rows.append(("../elsewhere.wav", "a", 1))
    elif breakage == "missing clip":
        rows.append(("nope.wav", "b", 2))
    elif breakage == "two labels":
        rows.append(("0_1.wav", "b", 1))
    _write_csv(src / "m.csv", ["p", "y", "f"], rows)
    out = tmp_path / "data" / "broken"
    ran = sept_main("data", "import", src / "m.csv", "--out", out, "--from", "csv", "--path-col", "p",
                    "--label-col", "y", "--fold-col", "f")
    assert ran.exit_code == 1 and named in ran.stderr and ran.stderr.count("\n") == 1, ran.output
    assert not out.exists()


def _hf_dataset(tmp_path, names, per_class: int = 3, with_folds: bool = False, drop_class: str | None = None):
    """A `datasets` Dataset with an Audio column holding FLAC/WAV bytes and a ClassLabel label.

    Built from bytes and cast (not encoded), as a dataset from the Hub holds them: encoding
    from arrays would need an audio encoder the tests do not install."""
    import io

    from datasets import Audio, ClassLabel, Dataset, Features, Value

    audio, labels, folds = [], [], []
    for c, name in enumerate(names):
        if name == drop_class:
            continue
        for i in range(per_class):
            buffer = io.BytesIO()
            wave = synth_clip(FAMILIES[c % len(FAMILIES)], c, np.random.default_rng(10 * c + i), 16000, 0.4)
            fmt = "FLAC" if i % 2 else "WAV"
            soundfile.write(buffer, wave, 16000, format=fmt)
            # one clip without a stored file name: its format is told from its bytes
            stored = None if (c, i) == (0, 0) else f"clip_{c}_{i}.{fmt.lower()}"
            audio.append({"bytes": buffer.getvalue(), "path": stored})
            labels.append(c)
            folds.append(i + 1)
    columns = {"audio": audio, "label": labels}
    features = {"audio": Audio(), "label": ClassLabel(names=list(names))}
    if with_folds:
        columns["fold"], features["fold"] = folds, Value("int64")
    return Dataset.from_dict(columns).cast(Features(features))


def test_hf_save_to_disk_and_parquet_import_without_reencoding(tmp_path, sept_main):
    names = ["Bird song", "cafe/restaurant", "rain"]
    ds = _hf_dataset(tmp_path, names)
    ds.save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "data" / "from-hf"
    ran = sept_main("data", "import", tmp_path / "saved", "--out", out, "--from", "hf")
    assert ran.exit_code == 0, ran.output
    loaded = load_dataset(out)
    assert loaded.classes == names and len(loaded.train) + len(loaded.test) == 9
    written = {p.name: p for p in (out / "audio").rglob("*") if p.is_file()}
    assert not any(p.is_symlink() for p in written.values())
    # the stored bytes, unchanged, under the stored name (the nameless one sniffed as WAV)
    assert (written["000004-clip_1_1.flac"].read_bytes() == ds.cast_column("audio", __import__("datasets").Audio(
        decode=False))[4]["audio"]["bytes"])
    assert "000000-clip.wav" in written
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["from-hf"]     # no staging left

    folded = _hf_dataset(tmp_path, names, with_folds=True)
    (tmp_path / "pq").mkdir()
    folded.to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    out = tmp_path / "data" / "from-parquet"
    ran = sept_main("data", "import", tmp_path / "pq", "--out", out, "--from", "hf", "--fold-col", "fold")
    assert ran.exit_code == 0, ran.output
    fold2 = load_dataset(out, fold=2)
    assert fold2.classes == names and len(fold2.test) == 3 and len(fold2.train) == 6


def test_hf_class_without_clip_is_refused(tmp_path, sept_main):
    _hf_dataset(tmp_path, ["a", "b", "c"], drop_class="b").save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "data" / "x"
    ran = sept_main("data", "import", tmp_path / "saved", "--out", out, "--from", "hf")
    assert ran.exit_code == 1 and "class 'b' has no clip" in ran.stderr, ran.output
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("source", ["folder", "csv", "hf"])
def test_each_source_trains_a_one_epoch_coop_run(tmp_path, sept_main, backbone, clap_checkpoint, source):
    """What an import writes is a dataset `sept train` takes, whatever it came from: awkward class
    names (spaces, capitals, non-ASCII, a stereo 48 kHz flac), a '/' in a label, an Audio column."""
    from sept.trainer.config import make_config
    from sept.trainer.train import train

    src = tmp_path / "src"
    if source == "folder":
        _folder_tree(src)
        args = ["--from", "folder"]
    elif source == "csv":
        meta = _esc50_style(tmp_path / "ESC-50-master", ["cafe/restaurant", "dog"], folds=2)
        args = ["--from", "csv", "--path-col", "filename", "--label-col", "category", "--fold-col", "fold",
                "--audio-root", str(tmp_path / "ESC-50-master" / "audio")]
        src = meta
    else:
        _hf_dataset(tmp_path, ["Bird song", "cafe/restaurant", "rain"]).save_to_disk(str(src))
        args = ["--from", "hf"]
    out = tmp_path / "data" / "Imported"
    ran = sept_main("data", "import", src, "--out", out, *args)
    assert ran.exit_code == 0, ran.output
    assert "data check passed" in ran.stdout
    fold = {"fold": 1} if source == "csv" else {}
    cfg = make_config(overrides=dict(dataset_root=str(out), checkpoint=str(clap_checkpoint),
                                     cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "runs"),
                                     shots=1, epochs=1, batch_size=8, n_ctx=2, method="coop", device="cpu",
                                     run_name="imported", **fold))
    train(cfg, backbone=backbone)
    results = json.loads((tmp_path / "runs/imported/results.json").read_text())
    assert len(results["history"]) == 1 and 0 <= results["metrics"]["all"]["accuracy"] <= 1
    assert results["config"]["dataset_root"] == str(out)
