"""`sept data check`: a fixture root with a ready, a broken and absent benchmark datasets."""
import csv
import shutil

import pytest
from typer.testing import CliRunner

from fixtures_audio import benchmark_facts, write_benchmark_root
from sept.cli import app
from sept.trainer.data_check import check_root, load_benchmark


@pytest.fixture
def root(tmp_path):
    return write_benchmark_root(tmp_path / "data", ["SESA", "Beijing-Opera", "VocalSound"], clips_per_class=2, seconds=0.3)


def _break_beijing_opera(folder):
    (folder / "csv_files" / "test_4.csv").unlink()                  # a fold half gone
    rows = list(csv.reader(open(folder / "csv_files" / "train_1.csv", encoding="utf-8")))
    rows = [r for r in rows if r[1] != "xiaoluo"]                    # one split file lacks a class
    rows.append(["audio/extra/clip.wav", "jinghu"])                  # a class not in the known list
    with open(folder / "csv_files" / "train_1.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    clips = sorted((folder / "audio").rglob("clip_0.*"))
    clips[0].unlink()                                                # missing audio
    clips[1].write_bytes(b"not audio at all")                       # unreadable audio


def test_benchmark_facts_are_the_shared_copy():
    facts = load_benchmark()
    assert len(facts) == 11 and facts == benchmark_facts()
    assert "cafe/restaurant" in facts["TUT2017"]["classes"] and facts["ESC50"]["folds"] == 5


def test_ready_broken_and_absent(root):
    _break_beijing_opera(root / "Beijing-Opera")
    reports = {r.name: r for r in check_root(root)}
    assert len(reports) == 11
    assert reports["SESA"].ok and reports["SESA"].folds == 1 and reports["SESA"].classes == 4
    assert reports["VocalSound"].ok and reports["VocalSound"].clips == 6 * 4
    assert not reports["ESC50"].present and not reports["ESC50"].ok and reports["ESC50"].problems == []
    bo = reports["Beijing-Opera"]
    assert bo.present and not bo.ok and bo.folds == 4 and bo.expected_folds == 5
    text = "\n".join(bo.problems)
    assert "layout: missing csv_files/test_4.csv" in text
    assert "1 not in the Beijing-Opera class list: 'jinghu'" in text
    assert "csv_files/train_1.csv has no clip of 'xiaoluo'" in text
    assert "audio: 3 of" in text      # the deleted clip, the garbage clip, the unknown row's file
    assert "(missing)" in text and "(unreadable" in text


def test_class_missing_everywhere_is_named(root):
    folder = root / "SESA"
    for name in ("train.csv", "test.csv"):
        rows = [r for r in csv.reader(open(folder / name, encoding="utf-8")) if r[1] != "gunshot"]
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    (report,) = check_root(root, ["SESA"])
    assert report.problems == ["classes: missing 1 of 4: 'gunshot'"]


def test_cli_exit_codes(root):
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "check", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "SESA" in ok.output and "ready" in ok.output and "absent" in ok.output
    required = runner.invoke(app, ["data", "check", str(root), "--require", "SESA,ESC50"])
    assert required.exit_code == 1 and "required but absent: ESC50" in required.output
    shutil.rmtree(root / "VocalSound" / "audio" / "00-cough")
    broken = runner.invoke(app, ["data", "check", str(root), "--datasets", "VocalSound,SESA"])
    assert broken.exit_code == 1 and "problems in: VocalSound" in broken.output
    assert "audio: 4 of 24 missing" in broken.output
    unknown = runner.invoke(app, ["data", "check", str(root), "--datasets", "ESC-50"])
    assert unknown.exit_code == 1 and "not a benchmark dataset: ESC-50" in unknown.output


def test_root_csvs_are_checked_beside_the_fold_files(root):
    """With csv_files/ present, `sept train` without --fold and the audio check still read the root
    train.csv: a class misspelled there is named, and its fold files alone would pass."""
    folder = root / "Beijing-Opera"
    assert (folder / "csv_files" / "train_1.csv").is_file() and (folder / "train.csv").is_file()
    assert check_root(root, ["Beijing-Opera"])[0].ok
    rows = list(csv.reader(open(folder / "train.csv", encoding="utf-8")))
    rows = [[p, "xiao luo" if c == "xiaoluo" else c] for p, c in rows]
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    report = check_root(root, ["Beijing-Opera"])[0]
    assert not report.ok
    assert any("not in the Beijing-Opera class list: 'xiao luo'" in p for p in report.problems), report.problems
    assert any("train.csv has no clip of 'xiaoluo'" in p for p in report.problems), report.problems
    (folder / "train.csv").unlink()
    (folder / "test.csv").unlink()                                   # the root files are optional with folds
    assert check_root(root, ["Beijing-Opera"])[0].ok
