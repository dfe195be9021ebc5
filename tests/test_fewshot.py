"""Few-shot split files: every run writes the clips it trains on; fewshot_file trains on a file's clips;
`sept data fewshot` writes the files runs would draw; `sept bench --fewshot-dir` uses them.

The random-weight CLAP of the session and a synthesized dataset; 1 epoch, 2 shots, n_ctx 4.
"""
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys

import pytest

from fixtures_audio import write_benchmark_root
from sept.sweeps import plan_bench, spec_from
from sept.sweeps.records import load_record
from sept.sweeps.tables import runs_csv
from sept.trainer.config import config_from_dict, config_hash, make_config
from sept.trainer.data import DataError, few_shot, load_dataset
from sept.trainer.fewshot import fewshot_path, fewshot_record, read_fewshot_file, write_fewshot_files
from sept.trainer.train import train, training_clips


def _sept(*args: str) -> subprocess.CompletedProcess:
    """`sept ARGS` as a user runs it: the console script's handling of errors included."""
    return subprocess.run([sys.executable, "-m", "sept", *args], capture_output=True, text=True, timeout=300)


def _cfg(palm_dataset, clap_checkpoint, tmp_path, **over):
    values = dict(dataset_root=str(palm_dataset), checkpoint=str(clap_checkpoint), cache_dir=str(tmp_path / "cache"),
                  out_dir=str(tmp_path / "runs"), shots=2, epochs=1, batch_size=4, n_ctx=4, method="coop",
                  device="cpu", fold=1, seed=1, base_to_new=True)
    values.update(over)
    return make_config(overrides=values)


def test_a_run_trained_from_another_runs_fewshot_json_gives_identical_results(backbone, palm_dataset, clap_checkpoint,
                                                                              tmp_path):
    drawn = train(_cfg(palm_dataset, clap_checkpoint, tmp_path), backbone=backbone)
    first = json.loads((tmp_path / "runs" / drawn["run"] / "fewshot.json").read_text())
    ds = load_dataset(palm_dataset, 1)
    # the base classes it trains (sorted split: the first half), 2 clips each, as the draw gives them
    assert first["dataset"] == "Synth" and first["fold"] == 1 and (first["shots"], first["seed"]) == (2, 1)
    assert list(first["classes"]) == ["Cough", "cafe/restaurant"]
    expected = fewshot_record(ds, few_shot(ds.train, 2, 1), 2, 1)["classes"]
    assert first["classes"] == {c: expected[c] for c in ("Cough", "cafe/restaurant")}
    assert all(len(v) == 2 and all(not p.startswith("/") for p in v) for v in first["classes"].values())

    from_file = _cfg(palm_dataset, clap_checkpoint, tmp_path, fewshot_file=str(tmp_path / "runs" / drawn["run"] / "fewshot.json"))
    again = train(from_file, backbone=backbone)
    assert again["run"] != drawn["run"]                     # its own folder: the file's digest is in the name
    losses = lambda r: [{k: v for k, v in e.items() if k != "seconds"} for e in r["history"]]   # noqa: E731
    assert again["metrics"] == drawn["metrics"] and losses(again) == losses(drawn)
    second = json.loads((tmp_path / "runs" / again["run"] / "fewshot.json").read_text())
    assert second["classes"] == first["classes"]
    digest = hashlib.sha256((tmp_path / "runs" / drawn["run"] / "fewshot.json").read_bytes()).hexdigest()
    assert second["source"]["sha256"] == digest

    # identity: the file's content, not its path (two machines, two checkouts); an edited file is another run
    copy = tmp_path / "elsewhere" / "split.json"
    copy.parent.mkdir()
    shutil.copy(from_file.fewshot_file, copy)
    assert config_hash(from_file.replace(fewshot_file=str(copy))) == config_hash(from_file)
    assert config_hash(from_file) != config_hash(from_file.replace(fewshot_file=None))
    copy.write_text(copy.read_text().replace('"shots": 2', '"shots": 3'))
    assert config_hash(from_file.replace(fewshot_file=str(copy))) != config_hash(from_file)
    # without a file the field stays out of the hash: the identity runs had before the field existed
    plain = _cfg(palm_dataset, clap_checkpoint, tmp_path).to_dict()
    del plain["fewshot_file"]
    assert config_hash(config_from_dict(plain)) == config_hash(_cfg(palm_dataset, clap_checkpoint, tmp_path))


def test_sept_data_fewshot_writes_what_runs_draw(palm_dataset, clap_checkpoint, tmp_path):
    out = tmp_path / "splits"
    done = _sept("data", "fewshot", str(palm_dataset.parent), "--datasets", "Synth", "--shots", "2",
                 "--seeds", "1,2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert names == ["Synth/fold1_shots2_seed1.json", "Synth/fold1_shots2_seed2.json"]
    ds = load_dataset(palm_dataset, 1)
    for seed in (1, 2):
        written = json.loads(fewshot_path(out, "Synth", 1, 2, seed).read_text())
        # what `sept train` trains on with every class (no base-to-new): its fewshot.json record
        _, record = training_clips(_cfg(palm_dataset, clap_checkpoint, tmp_path, seed=seed, base_to_new=False),
                                   ds, ds.classes)
        assert written == record
        assert list(written["classes"]) == ds.classes and all(len(v) == 2 for v in written["classes"].values())
    one = json.loads(fewshot_path(out, "Synth", 1, 2, 1).read_text())["classes"]
    two = json.loads(fewshot_path(out, "Synth", 1, 2, 2).read_text())["classes"]
    assert one != two                                        # seeds draw differently

    # no benchmark dataset under the root unless named; a named one that is absent: one line, exit 1
    done = _sept("data", "fewshot", str(palm_dataset.parent), "--out", str(out))
    assert done.returncode == 1 and "no benchmark dataset" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = _sept("data", "fewshot", str(palm_dataset.parent), "--datasets", "Nope", "--out", str(out))
    assert done.returncode == 1 and "Nope" in done.stderr


def test_bad_files_are_refused_naming_the_clip_or_class(palm_dataset, clap_checkpoint, tmp_path):
    ds = load_dataset(palm_dataset, 1)
    good = fewshot_record(ds, few_shot(ds.train, 2, 1), 2, 1)
    path = tmp_path / "split.json"

    def refused(record, trained=ds.classes):
        path.write_text(json.dumps(record))
        with pytest.raises(DataError) as info:
            read_fewshot_file(path, ds, trained)
        assert str(path) in str(info.value)
        return str(info.value)

    path.write_text(json.dumps(good))
    samples, _ = read_fewshot_file(path, ds, ds.classes)
    assert samples == few_shot(ds.train, 2, 1)
    # a base-to-new run ignores the classes it does not train, but needs a clip for each it does
    assert [s.classname for s in read_fewshot_file(path, ds, ["dog", "siren"])[0]] == ["dog"] * 2 + ["siren"] * 2

    missing_clip = json.loads(json.dumps(good))
    missing_clip["classes"]["dog"].append("audio/dog/nope.wav")
    assert "clip 'audio/dog/nope.wav' (class 'dog') is not in" in refused(missing_clip)
    # fold 1 leaves out each class's last training clip: it is in train.csv, not in train_1.csv
    left_out = sorted({s.path for s in load_dataset(palm_dataset).train if s.classname == "dog"}
                      - {s.path for s in ds.train})
    assert len(left_out) == 1
    other_fold_clip = json.loads(json.dumps(good))
    other_fold_clip["classes"]["dog"] = [left_out[0].relative_to(palm_dataset).as_posix()]
    assert f"clip '{other_fold_clip['classes']['dog'][0]}' (class 'dog') is not in" in refused(other_fold_clip)
    wrong_class = json.loads(json.dumps(good))
    wrong_class["classes"]["siren"] = list(good["classes"]["dog"])
    assert "listed under 'siren', but its class" in refused(wrong_class)
    foreign = {**good, "classes": {**good["classes"], "cat": ["audio/cat/train_0.wav"]}}
    assert "class 'cat' is not a class of Synth" in refused(foreign)
    short = {**good, "classes": {c: v for c, v in good["classes"].items() if c != "siren"}}
    assert "no clip for class(es) the run trains: 'siren'" in refused(short)
    assert "dataset 'Other'" in refused({**good, "dataset": "Other"})
    assert "fold None" in refused({**good, "fold": None})
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_fewshot_file(path, ds, ds.classes)
    with pytest.raises(DataError, match="file not found"):
        read_fewshot_file(tmp_path / "absent.json", ds, ds.classes)

    # through `sept train`: refused before CLAP is loaded, in one line naming the file and the clip
    path.write_text(json.dumps(missing_clip))
    done = _sept("train", f"dataset_root={palm_dataset}", "checkpoint=/nowhere/clap.pt", "fold=1",
                 f"fewshot_file={path}", f"out_dir={tmp_path / 'runs'}", "-q")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: fewshot_file {path}: clip 'audio/dog/nope.wav' (class 'dog') "
                                                f"is not in {palm_dataset / 'csv_files' / 'train_1.csv'}"]


def test_bench_with_fewshot_dir_trains_on_the_files_and_records_their_sha256(backbone, clap_checkpoint, tmp_path):
    root = write_benchmark_root(tmp_path / "data", ["Beijing-Opera"], clips_per_class=2)
    splits = tmp_path / "splits"
    written = write_fewshot_files(root, splits, 1, [1], ["Beijing-Opera"], "1")
    assert written == [splits / "Beijing-Opera" / "fold1_shots1_seed1.json"]
    values = dict(datasets_root=str(root), checkpoint=str(clap_checkpoint), methods="coop", sept="off", seeds="1",
                  datasets="Beijing-Opera", folds="1", out=str(tmp_path / "bench"), fewshot_dir=str(splits),
                  options=["epochs=1", "shots=1", "n_ctx=4", "batch_size=4", "device=cpu",
                           f"cache_dir={tmp_path / 'cache'}"])
    plan = plan_bench(spec_from(values))
    assert plan.ok and len(plan.runs) == 1
    run = plan.runs[0]
    assert run.config["fewshot_file"] == str(written[0])
    results = train(config_from_dict(run.config), backbone=backbone)
    assert json.loads((run.run_dir / "fewshot.json").read_text())["classes"] == {
        c: v for c, v in json.loads(written[0].read_text())["classes"].items() if c in results["classes"]["base"]}
    record = load_record(run)
    digest = hashlib.sha256(written[0].read_bytes()).hexdigest()
    assert record.status == "skipped" and record.fewshot_sha256 == digest
    row = next(csv.DictReader(io.StringIO(runs_csv([record]))))
    assert row["fewshot_sha256"] == digest and row["run"] == run.name

    # the same files elsewhere (another machine): the same run, already done
    moved = tmp_path / "other-machine" / "splits"
    shutil.copytree(splits, moved)
    again = plan_bench(spec_from({**values, "fewshot_dir": str(moved)}))
    assert again.runs[0].config_hash == run.config_hash and again.runs[0].done()

    # `sept bench --fewshot-dir`: a missing file stops the bench before any run, naming the file
    args = ["bench", "base2new", "--datasets-root", str(root), "--checkpoint", str(clap_checkpoint), "--methods", "coop",
            "--sept", "off", "--datasets", "Beijing-Opera", "--folds", "1", "--seeds", "1,2",
            "--out", str(tmp_path / "bench"), "--dry-run", "shots=1", "epochs=1"]
    done = _sept(*args, "--fewshot-dir", str(moved))
    assert done.returncode == 1
    assert f"no few-shot file {moved / 'Beijing-Opera' / 'fold1_shots1_seed2.json'}" in done.stderr
    assert not (tmp_path / "bench" / "runs.csv").exists()
