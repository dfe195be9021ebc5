"""The `zebra` split policy against ZEBRA's published files (tests/data/zebra/, copied verbatim
from asif-hanif/zebra scripts/base-novel-classes/), and ZEBRA's files read with `file:`."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fixtures_audio import benchmark_facts
from sept.cli import app
from sept.splits import SplitError, resolve_split, zebra_datasets

ZEBRA = Path(__file__).parent / "data" / "zebra"
ORDER = ["Beijing-Opera", "CREMA-D", "ESC50-Actions", "ESC50", "GT-Music-Genre", "NS-Instruments",
         "RAVDESS", "SESA", "TUT2017", "UrbanSound8K", "VocalSound"]


def published(name: str) -> dict:
    return json.loads((ZEBRA / f"{name}_BaseNovelClassnames.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ORDER)
def test_zebra_policy_is_zebras_published_file(name):
    classes = benchmark_facts()[name]["classes"]
    s = resolve_split(list(reversed(classes)), "zebra", dataset=name)
    theirs = published(name)
    assert (s.base, s.new) == (theirs["base"], theirs["novel"])
    assert s.classes == theirs["all"]
    # the dataset name is matched by its slug, as folder names and CLI arguments spell it
    assert resolve_split(classes, "zebra", dataset=name.lower()) == s


def test_shipped_lists_are_what_zebras_procedure_gives():
    """ZEBRA: random.seed(42) once, then random.sample(sorted(classes), C) per dataset in its
    fixed order, base = the first floor(C/2). The shipped lists are exactly that."""
    rng = random.Random(42)
    for name in ORDER:
        classes = sorted(benchmark_facts()[name]["classes"])
        order = rng.sample(classes, len(classes))
        half = len(classes) // 2
        assert zebra_datasets()[name] == {"base": sorted(order[:half]), "novel": sorted(order[half:])}, name
    assert list(zebra_datasets()) == ORDER


def test_per_dataset_shuffle_is_not_zebra():
    """`shuffled` seeds each dataset on its own: for these three it picks exactly ZEBRA's novel half."""
    for name in ("Beijing-Opera", "SESA", "VocalSound"):
        classes = benchmark_facts()[name]["classes"]
        assert resolve_split(classes, "shuffled", 42).base == published(name)["novel"]


def test_zebra_refuses_other_datasets_and_other_classes():
    with pytest.raises(SplitError, match=r"ZEBRA published no split for dataset 'my-birds'"):
        resolve_split(["a", "b"], "zebra", dataset="my-birds")
    with pytest.raises(SplitError, match="needs the dataset's name"):
        resolve_split(["a", "b"], "zebra")
    classes = benchmark_facts()["SESA"]["classes"]
    with pytest.raises(SplitError, match=r"not in ZEBRA's list: 'gun shot'; missing here: 'gunshot'"):
        resolve_split([c if c != "gunshot" else "gun shot" for c in classes], "zebra", dataset="SESA")
    with pytest.raises(SplitError, match="n_base=1 cannot be combined"):
        resolve_split(classes, "zebra", n_base=1, dataset="SESA")


@pytest.mark.parametrize("name", ["TUT2017", "VocalSound"])
def test_file_policy_reads_zebras_files_as_they_are(name):
    s = resolve_split(benchmark_facts()[name]["classes"], f"file:{ZEBRA / f'{name}_BaseNovelClassnames.json'}")
    assert (s.base, s.new) == (published(name)["base"], published(name)["novel"])


def test_file_policy_checks_zebras_all_list(tmp_path):
    path = tmp_path / "z.json"
    path.write_text(json.dumps({"base": ["dog"], "novel": ["rain"], "all": ["dog", "rain", "siren"]}))
    with pytest.raises(SplitError, match=r"'all' is not the dataset's class list \(not a class: 'siren'\)"):
        resolve_split(["dog", "rain"], f"file:{path}")
    path.write_text(json.dumps({"base": ["dog"], "new": ["rain"], "novel": ["rain"]}))
    with pytest.raises(SplitError, match="split file"):
        resolve_split(["dog", "rain"], f"file:{path}")


# --------------------------------------------------------------------------- sept data split

def _sept(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sept", *args], capture_output=True, text=True, timeout=300)


def test_data_split_json_equals_zebras_file_for_all_eleven():
    runner = CliRunner()
    for name in ORDER:
        result = runner.invoke(app, ["data", "split", name, "--policy", "zebra", "--json"])
        assert result.exit_code == 0, result.output
        theirs = published(name)
        assert json.loads(result.output) == {"base": theirs["base"], "new": theirs["novel"]}, name


def test_data_split_reads_a_dataset_root_and_prints_both_parts(tmp_path):
    from fixtures_audio import write_benchmark_root

    write_benchmark_root(tmp_path, ["SESA"], clips_per_class=1)
    result = CliRunner().invoke(app, ["data", "split", "sesa", "--dataset-root", str(tmp_path), "--policy", "shuffled",
                                      "--seed", "42"])
    assert result.exit_code == 0, result.output
    shuffled = resolve_split(benchmark_facts()["SESA"]["classes"], "shuffled", 42)
    assert f"base: {', '.join(shuffled.base)}" in result.output and "seed 42" in result.output
    assert f"new:  {', '.join(shuffled.new)}" in result.output


def test_data_split_refuses_in_one_line():
    done = _sept("data", "split", "my-birds", "--policy", "zebra")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]          # one line, no traceback
    assert "not one of the benchmark's datasets" in done.stderr and "--dataset-root" in done.stderr
