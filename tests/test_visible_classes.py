"""Visible classes in generation: with `--split base` no new class reaches an LLM prompt, the
CLAP filter's confuser comparison or the audio check, and the manifest records what was seen.

The LLM is the stand-in HTTP server of tests/fault_server.py speaking the OpenAI API; it
records every request it receives, which is what these tests read.
"""
import json

import pytest
from typer.testing import CliRunner

from fixtures_audio import benchmark_facts, write_benchmark_root
from sept.cli import app
from sept.clap import keep_backbone
from sept.neighbor_store import Store
from sept.pipeline.datasets import palm_clips
from sept.splits import resolve_split, visible_classes_of

DATASET = "ESC50-Actions"
CLASSES = benchmark_facts()[DATASET]["classes"]
SORTED = resolve_split(CLASSES, "sorted")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def prompts(server) -> list[str]:
    return [" ".join(m.get("content") or "" for m in r["body"]["messages"]) for r in server.requests]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_benchmark_root(tmp_path_factory.mktemp("b2n"), [DATASET], clips_per_class=1, folds=1, seconds=0.5)


def generate(server, data_root, tmp_path, *extra):
    store = tmp_path / "store"
    result = run("generate", "--dataset", DATASET, "--dataset-root", data_root, "--backend", "vllm",
                 "--model", "stand-in", "--base-url", server.base_url, "--n-per-class", 2,
                 "--store", store, "--cache-dir", tmp_path / "cache", *extra)
    assert result.exit_code == 0, result.output
    return Store(store).read(result.stdout.strip().splitlines()[-1])


def test_split_base_prompts_filter_and_audio_see_no_new_class(fault_server, data_root, tmp_path, backbone,
                                                               clap_checkpoint):
    keep_backbone(backbone)
    # min_self -1 and margin -2 turn every neighbor into a confuser of its nearest other class:
    # the reasons then show exactly which classes the comparison covered
    clap = ("--clap-checkpoint", clap_checkpoint, "--min-self", -1, "--confuser-margin", -2, "--audio-clips", 1)
    version = generate(fault_server, data_root, tmp_path / "base", "--split", "base", *clap)
    sent = prompts(fault_server)
    assert len(sent) == len(SORTED.base)
    for text in sent:
        assert not [c for c in SORTED.new if c in text], text
        assert all(c in text for c in SORTED.base)          # the class list is rendered, base classes only
    assert version.classes == SORTED.base
    assert version.manifest["params"]["visible_classes"] == SORTED.base == visible_classes_of(version.manifest)
    assert version.manifest["params"]["split"] == {**SORTED.to_dict(), "part": "base"} == version.manifest["split"]
    assert version.manifest["visible_classes"] == SORTED.base
    reasons = [r.reason for r in version.rejected if not r.reason.startswith("duplicate_of:")]
    assert reasons and all(r.startswith("clap_confuser:") for r in reasons) and version.neighbors == []
    assert {r.split(":", 1)[1] for r in reasons} <= set(SORTED.base)
    assert version.manifest["params"]["clap_filter"]["audio_clips_per_class"] == 1

    # the same run over all classes does name new classes: the checks above can fail
    fault_server.requests.clear()
    everything = generate(fault_server, data_root, tmp_path / "all", *clap)
    assert any(c in text for text in prompts(fault_server) for c in SORTED.new)
    assert visible_classes_of(everything.manifest) == CLASSES and "split" not in everything.manifest["params"]
    assert everything.id != version.id


def test_visible_classes_file_and_shuffled_policy(fault_server, data_root, tmp_path):
    listing = tmp_path / "visible.txt"
    listing.write_text("laughing\nclapping\n", encoding="utf-8")
    version = generate(fault_server, data_root, tmp_path / "file", "--visible-classes", listing)
    assert version.classes == ["clapping", "laughing"] == visible_classes_of(version.manifest)
    assert {r["class"] for r in fault_server.requests} == {"clapping", "laughing"}
    assert all("footsteps" not in text for text in prompts(fault_server))

    fault_server.requests.clear()
    shuffled = resolve_split(CLASSES, "shuffled", 3)
    version = generate(fault_server, data_root, tmp_path / "shuffled", "--split", "base",
                       "--split-policy", "shuffled", "--split-seed", 3)
    assert version.classes == shuffled.base
    assert version.manifest["params"]["split"]["seed"] == 3
    assert not [c for text in prompts(fault_server) for c in shuffled.new if c in text]


def test_generation_split_errors_are_one_line(data_root, tmp_path, sept_main):
    run = sept_main                 # through the console script, where a SeptError is one line
    base = ("generate", "--dataset", DATASET, "--dataset-root", data_root, "--backend", "openai", "--model", "m",
            "--store", tmp_path / "s")
    bad = run(*base, "--split", "novel")
    assert bad.exit_code == 1 and "split: expected base, new or all" in bad.stderr
    bad = run(*base, "--split", "base", "--split-policy", "alphabetical")
    assert bad.exit_code == 1 and "split_policy" in bad.stderr
    listing = tmp_path / "v.txt"
    listing.write_text("laughing\ntuba\n", encoding="utf-8")
    bad = run(*base, "--visible-classes", listing)
    assert bad.exit_code == 1 and "'tuba'" in bad.stderr and str(listing) in bad.stderr
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"base": CLASSES[:4], "new": CLASSES[5:]}))
    bad = run(*base, "--split", "base", "--split-policy", f"file:{split_file}")
    assert bad.exit_code == 1 and repr(CLASSES[4]) in bad.stderr and "in neither" in bad.stderr


def test_audio_clips_come_from_the_training_csv_of_visible_classes(data_root, tmp_path):
    clips = palm_clips(data_root, DATASET, SORTED.base, per_class=5)
    train = (data_root / DATASET / "train.csv").read_text(encoding="utf-8")
    assert set(clips) == set(SORTED.base)
    assert all(p.relative_to(data_root / DATASET).as_posix() in train for got in clips.values() for p in got)
    only_test = tmp_path / "only-test" / DATASET
    only_test.mkdir(parents=True)
    (only_test / "test.csv").write_text((data_root / DATASET / "test.csv").read_text(encoding="utf-8"))
    with pytest.raises(FileNotFoundError, match="training CSV only"):
        palm_clips(only_test.parent, DATASET, SORTED.base, per_class=1)


def test_store_import_records_visible_classes(tmp_path):
    jsonl = tmp_path / "human.jsonl"
    jsonl.write_text(json.dumps({"class": "clapping", "text": "hands clapping"}) + "\n"
                     + json.dumps({"class": "laughing", "text": "giggles"}) + "\n", encoding="utf-8")
    store_dir = tmp_path / "store"
    plain = run("store", "--store", store_dir, "import", jsonl, "--dataset", DATASET)
    assert plain.exit_code == 0, plain.output
    version = Store(store_dir).read(plain.stdout.strip().splitlines()[-1])
    assert version.manifest["visible_classes"] == ["clapping", "laughing"] == visible_classes_of(version.manifest)

    seen = tmp_path / "seen.txt"
    seen.write_text("clapping\nfootsteps\nlaughing\n", encoding="utf-8")
    wider = run("store", "--store", store_dir, "import", jsonl, "--dataset", DATASET, "--visible-classes", seen)
    assert wider.exit_code == 0, wider.output
    other = Store(store_dir).read(wider.stdout.strip().splitlines()[-1])
    assert other.id != version.id                                    # what was seen is part of the identity
    assert other.manifest["visible_classes"] == ["clapping", "footsteps", "laughing"]
    assert run("store", "--store", store_dir, "verify", other.ref).exit_code == 0

    narrow = tmp_path / "narrow.txt"
    narrow.write_text("clapping\n", encoding="utf-8")
    bad = run("store", "--store", store_dir, "import", jsonl, "--dataset", DATASET, "--visible-classes", narrow)
    assert bad.exit_code != 0 and "lacks the version's class(es) 'laughing'" in bad.output


def test_flow_parameters_take_a_split(data_root, tmp_path):
    import inspect

    from sept.flows.generate import generate_neighbors
    from sept.flows.params import ParameterError, validate_config
    from sept.pipeline.datasets import resolve_classes

    names = set(inspect.signature(generate_neighbors.fn).parameters)
    assert {"split", "split_policy", "split_seed", "visible_classes_file"} <= names
    given = {"dataset": DATASET, "dataset_root": str(data_root), "backend": "openai", "model": "m",
             "split": "base", "split_policy": "shuffled", "split_seed": 5, "visible_classes_file": ""}
    assert resolve_classes(validate_config(given)) == resolve_split(CLASSES, "shuffled", 5).base
    with pytest.raises(ParameterError, match="split: expected base, new or all"):
        validate_config({**given, "split": "novel"})
    listing = tmp_path / "v.txt"
    listing.write_text("laughing\n", encoding="utf-8")
    with pytest.raises(ParameterError, match="either split or visible_classes_file"):
        validate_config({**given, "visible_classes_file": str(listing)})
