"""sept.neighbor_store.serving: whether a stored version serves a run's classes, on real store versions.

The trainer (`check_neighbor_classes`) and the bench planner both ask this one function; their
own tests (test_trainer_protocols.py, test_bench.py) check the refusals they print.
"""
from __future__ import annotations

import pytest

from sept.neighbor_store import NeighborRecord, Store
from sept.neighbor_store.serving import class_names, serving
from sept.splits import resolve_split

CLASSES = ["Cough", "cafe/restaurant", "dog", "siren"]
SORTED = resolve_split(CLASSES)                       # base: Cough, cafe/restaurant
SHUFFLED = resolve_split(CLASSES, "shuffled", 42)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("store"))


def version(store, classes, **params):
    records = [NeighborRecord(**{"class": c, "text": f"a loud {c}"}) for c in classes]
    ref = store.write_version("Synth", classes, records, params={"backend": "human", **params})
    return store.read(ref)


def test_a_base_only_version_serves_its_split(store):
    v = version(store, SORTED.base, visible_classes=SORTED.base)
    served = serving(v, CLASSES, SORTED.base)
    assert served.covers and served.refusal(SORTED) is None
    assert served.record() == {"visible_classes": SORTED.base}
    # under another split the same version lacks a base class, and says which split it was made for
    assert SHUFFLED.base != SORTED.base
    other = serving(v, CLASSES, SHUFFLED.base)
    lacking = [c for c in SHUFFLED.base if c not in SORTED.base]
    assert other.lacking == lacking and not other.covers
    assert f"in base classes but not the version: {class_names(lacking)}" in other.refusal(SHUFFLED)


def test_a_version_that_saw_new_classes_is_refused_unless_allowed(store):
    everything = version(store, CLASSES)
    served = serving(everything, CLASSES, SORTED.base)
    assert served.covers and served.seen == ["dog", "siren"]
    reason = served.refusal(SORTED)
    assert reason.startswith(f"neighbor version {everything.ref} saw the new class(es) 'dog', 'siren' while it was made")
    assert served.refusal(SORTED, allow_seen=True) is None
    assert served.record() == {"visible_classes": CLASSES, "visible_new": ["dog", "siren"], "allow_visible_new": True}
    # base-only neighbors, made while seeing every class: the manifest's visible_classes decide
    seen_all = version(store, SORTED.base, visible_classes=CLASSES)
    assert serving(seen_all, CLASSES, SORTED.base).seen == ["dog", "siren"]
    assert "--split-policy shuffled --split-seed 42" in served.remedy("Synth", SHUFFLED)
    assert "--split-seed" not in served.remedy("Synth", SORTED) and "--split base" in served.remedy("Synth", SORTED)


def test_foreign_classes_and_the_split_it_was_made_for_are_named(store):
    made = version(store, ["Cough", "rain"], split={"policy": "sorted", "part": "base"})
    served = serving(made, CLASSES, SORTED.base)
    assert served.foreign == ["rain"] and served.lacking == ["cafe/restaurant"]
    reason = served.refusal(SORTED)
    assert "in base classes but not the version: 'cafe/restaurant'" in reason
    assert "in the version but not the dataset: 'rain'" in reason
    assert "made for split 'sorted' part 'base', the run uses split 'sorted'" in reason
    # an allowed leak never excuses a version that does not cover the classes
    assert served.refusal(SORTED, allow_seen=True) == reason


def test_cross_protocol_trains_all_classes_and_refuses_what_lies_outside(store):
    leaky = version(store, CLASSES, visible_classes=CLASSES + ["rain"])
    served = serving(leaky, CLASSES, CLASSES)
    assert served.covers and served.seen == ["rain"]
    assert "saw class(es) outside the training classes 'rain'" in served.refusal(None)
    assert "sees only Synth's classes" in served.remedy("Synth")
    base_only = serving(version(store, SORTED.base, visible_classes=SORTED.base), CLASSES, CLASSES)
    assert "in the dataset but not the version: 'dog', 'siren'" in base_only.refusal(None)


def test_long_class_lists_stay_one_readable_line():
    names = [f"c{i}" for i in range(20)]
    assert class_names(names) == ", ".join(repr(n) for n in names[:12]) + " and 8 more"
    assert class_names(names[:3]) == "'c0', 'c1', 'c2'"
