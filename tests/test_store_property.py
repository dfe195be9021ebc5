"""Property: any class names and texts (slashes, unicode, capitals, spaces) survive write, read, import and review."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from slugify import slugify

from sept.neighbor_store import NeighborRecord, Store, normalize_text
from sept.neighbor_store.review import checkout, commit, import_file

names = st.one_of(
    st.sampled_from(["cafe/restaurant", "Cough", "city_center", "Ünïcödé 鳥", " padded ", "a/b/../c", "DOG"]),
    st.text(min_size=1, max_size=24),
).filter(lambda s: s.strip())
texts = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())


@st.composite
def datasets(draw):
    classes = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    per_class = {c: draw(st.lists(texts, max_size=4, unique_by=normalize_text)) for c in classes}
    dataset = draw(st.text(min_size=1, max_size=16).filter(lambda s: slugify(s) and "@" not in s))
    return dataset, classes, per_class


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets())
@example(("0", ["\r0"], {"\r0": ["a\rb"]}))  # a carriage return inside a name is not a line end
@example(("ESC-50", ["cafe/restaurant", "Cough", "city_center"], {"cafe/restaurant": ["Clinking Cups"], "Cough": [],
                                                                  "city_center": ["tram bell", "crowd / chatter"]}))
def test_class_names_and_texts_round_trip(data):
    dataset, classes, per_class = data
    neighbors = [NeighborRecord(class_=c, text=t) for c in classes for t in per_class[c]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = Store(tmp / "store")
        ref = store.write_version(dataset, classes, neighbors)
        v = store.read(ref)
        assert v.dataset == dataset and v.classes == classes
        assert {c: [r.text for r in rs] for c, rs in v.by_class().items()} == per_class
        assert store.verify(ref) == [(ref, [])]

        # a person's file with only class + text imports to the same neighbors (kind/source filled as human)
        src = tmp / "in.jsonl"
        src.write_text("".join(json.dumps({"class": r.class_, "text": r.text}) + "\n" for r in neighbors), encoding="utf-8")
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes), encoding="utf-8")
        if all("\n" not in c and not c.endswith("\r") for c in classes):  # representable one per line
            iref, _ = import_file(store, src, dataset, classes_file=tmp / "classes.txt")
            iv = store.read(iref)
            assert iv.classes == classes
            assert [(r.class_, r.text, r.id) for r in iv.neighbors] == [(r.class_, r.text, r.id) for r in v.neighbors]

        # checkout and commit without edits is the same version
        checkout(store, ref, tmp / "co")
        assert commit(store, tmp / "co") == (ref, False)
