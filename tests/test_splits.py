"""Split policies: sorted (CoOp), shuffled (seeded, golden values), file:PATH and its errors."""
import json
import math
from pathlib import Path

import pytest

from fixtures_audio import benchmark_facts
from sept.splits import SplitError, resolve_split

GOLDEN = Path(__file__).parent / "data" / "shuffled_splits_seed42.json"


def test_sorted_is_coop_first_half_rounded_up():
    s = resolve_split(["dog", "Cough", "siren", "cafe/restaurant", "rain"])
    assert s.base == ["Cough", "cafe/restaurant", "dog"]        # sorted(): uppercase first
    assert s.new == ["rain", "siren"]
    assert s.to_dict() == {"policy": "sorted", "seed": None, "base": s.base, "new": s.new}
    assert resolve_split(["b", "a", "c", "d"], n_base=1).base == ["a"]


@pytest.mark.parametrize("name", sorted(benchmark_facts()))
def test_shuffled_matches_golden_split(name):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    classes = benchmark_facts()[name]["classes"]
    s = resolve_split(list(reversed(classes)), "shuffled", 42)      # input order does not matter
    assert (s.base, s.new) == (golden["datasets"][name]["base"], golden["datasets"][name]["new"])
    assert len(s.base) == len(classes) // 2 and sorted(s.base + s.new) == sorted(classes)
    assert s.to_dict()["seed"] == 42


def test_shuffled_differs_from_sorted_and_follows_the_seed():
    classes = benchmark_facts()["ESC50"]["classes"]
    a, b = resolve_split(classes, "shuffled", 42), resolve_split(classes, "shuffled", 7)
    assert a.base != resolve_split(classes, "sorted").base[:25]
    assert a.base != b.base
    assert resolve_split(classes, "shuffled", 42) == a
    assert len(resolve_split(classes, "sorted").base) == math.ceil(50 / 2)


def test_file_policy_reads_and_orders(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"base": ["siren", "dog"], "new": ["rain"]}))
    s = resolve_split(["dog", "rain", "siren"], f"file:{path}")
    assert (s.base, s.new, s.seed) == (["dog", "siren"], ["rain"], None)
    assert s.policy == f"file:{path}"


@pytest.mark.parametrize("content, needle", [
    ({"base": ["dog", "dog"], "new": ["rain", "siren"]}, "'dog' listed twice in 'base'"),
    ({"base": ["dog", "rain"], "new": ["rain", "siren"]}, "'rain' in both 'base' and 'new'"),
    ({"base": ["dog", "cat"], "new": ["rain", "siren"]}, "'cat' not a class of the dataset"),
    ({"base": ["dog"], "new": ["rain"]}, "'siren' in neither 'base' nor 'new'"),
    ({"base": ["dog", "rain", "siren"], "new": []}, "at least one class"),
    ({"base": ["dog"], "newer": ["rain", "siren"]}, "new: Field required"),
    ({"base": ["dog"], "new": ["rain"], "novel": ["siren"]}, "novel: Extra inputs are not permitted"),
])
def test_file_policy_errors_name_the_class_and_file(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SplitError) as e:
        resolve_split(["dog", "rain", "siren"], f"file:{path}")
    assert needle in str(e.value) and str(path) in str(e.value)


def test_bad_policy_and_missing_file(tmp_path):
    with pytest.raises(SplitError, match="expected sorted, shuffled, zebra or file:PATH"):
        resolve_split(["a", "b"], "random")
    with pytest.raises(SplitError, match="does not exist"):
        resolve_split(["a", "b"], f"file:{tmp_path / 'none.json'}")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(SplitError, match="not JSON"):
        resolve_split(["a", "b"], f"file:{tmp_path / 'x.json'}")
    with pytest.raises(SplitError, match="leaves no base or no new"):
        resolve_split(["a"], "sorted")
