"""No channel for held-out classes: what a base-only neighbor version and a combined DePT + ASPL
run can learn from besides what they are meant to see.

- Under `--split base` no prompt the LLM receives names the dataset (an LLM recalls a named
  dataset's classes) or any held-out class. The LLM is the stand-in server of
  tests/fault_server.py, which records every request it receives; those are what is read here.
- The audio check never uses a clip that is a test clip of any fold.
- An audio prompt's FiLM trains without weight decay, whatever the text learner's.
"""
import csv
import re

import pytest
from typer.testing import CliRunner

from fixtures_audio import write_benchmark_root, write_palm_dataset
from sept.cli import app
from sept.names import dataset_slug
from sept.neighbor_store import Store
from sept.pipeline.datasets import audio_check_clips, palm_clips
from sept.pipeline.generate import NEUTRAL_DESCRIPTION
from sept.pipeline.run import ConfigError, PipelineConfig, config_from, resolve_inputs
from sept.splits import resolve_split

DATASET = "ESC50"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def sent_texts(server) -> list[str]:
    return [" ".join(m.get("content") or "" for m in r["body"]["messages"]) for r in server.requests]


def spellings(name: str) -> set[str]:
    """A name as a prompt could spell it: verbatim, with spaces for separators, and as a slug."""
    return {name, re.sub(r"[_\-/]+", " ", name), dataset_slug(name)}


def mentions(text: str, name: str) -> bool:
    # whole words only (underscores count as word characters, so "dog" is not found in "dog_bark")
    return any(re.search(rf"(?<!\w){re.escape(s)}(?!\w)", text, re.IGNORECASE) for s in spellings(name))


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory):
    return write_benchmark_root(tmp_path_factory.mktemp("esc50"), [DATASET], clips_per_class=1, folds=1,
                                seconds=0.3)


def generate(server, root, tmp_path, *extra):
    store = tmp_path / "store"
    result = run("generate", "--dataset", DATASET, "--dataset-root", root, "--backend", "vllm",
                 "--model", "stand-in", "--base-url", server.base_url, "--n-per-class", 2,
                 "--store", store, "--cache-dir", tmp_path / "cache", *extra)
    assert result.exit_code == 0, result.output
    return Store(store).read(result.stdout.strip().splitlines()[-1])


def test_split_base_prompts_name_neither_the_dataset_nor_a_held_out_class(fault_server, esc50_root, tmp_path):
    classes = sorted(r["classname"] for r in csv.DictReader(open(esc50_root / DATASET / "train.csv")))
    split = resolve_split(sorted(set(classes)), "sorted")
    version = generate(fault_server, esc50_root, tmp_path / "base", "--split", "base")
    sent = sent_texts(fault_server)
    assert len(sent) == len(split.base)
    for text in sent:
        assert not mentions(text, DATASET), text
        leaked = [c for c in split.new if mentions(text, c)]
        assert not leaked, (leaked, text)
        assert NEUTRAL_DESCRIPTION.capitalize() in text and "dataset" not in text.lower()
        assert all(f'"{c}"' in text for c in split.base)     # the class list is there, base classes only
    assert version.manifest["params"]["dataset_description"] == NEUTRAL_DESCRIPTION

    # the checks can fail: asked for the name, or over all classes, the prompts carry "ESC50"
    fault_server.requests.clear()
    named = generate(fault_server, esc50_root, tmp_path / "named", "--split", "base", "--dataset-description", "name")
    assert all(mentions(text, DATASET) for text in sent_texts(fault_server))
    assert named.manifest["params"]["dataset_description"] == DATASET and named.id != version.id
    fault_server.requests.clear()
    everything = generate(fault_server, esc50_root, tmp_path / "all")
    texts = sent_texts(fault_server)
    assert all(f'The audio dataset "{DATASET}" has these classes' in t for t in texts)
    assert any(mentions(t, c) for t in texts for c in split.new)
    assert everything.manifest["params"]["dataset_description"] == DATASET

    # a description of the user's own replaces the name as it is
    fault_server.requests.clear()
    own = generate(fault_server, esc50_root, tmp_path / "own", "--split", "base",
                   "--dataset-description", "a set of everyday sound recordings")
    assert all("A set of everyday sound recordings has these classes" in t for t in sent_texts(fault_server))
    assert own.manifest["params"]["dataset_description"] == "a set of everyday sound recordings"
    with pytest.raises(ConfigError, match="dataset_description: must not be empty"):
        config_from({"dataset": DATASET, "backend": "openai", "model": "m", "dataset_description": " "})


def _write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "classname"])
        writer.writerows(rows)


def _rows(path):
    return [(r["path"], r["classname"]) for r in csv.DictReader(open(path, encoding="utf-8"))]


@pytest.fixture
def two_fold_data(tmp_path):
    """PALM layout whose fold 2 tests the first train.csv clip of every class (the root train.csv
    is fold 1's copy, as PALM's scripts leave it)."""
    folder = write_palm_dataset(tmp_path, name="Folds", n_train=4, n_test=2, seconds=0.2, long_clip=False)
    train, test = _rows(folder / "train.csv"), _rows(folder / "test.csv")
    first = {}
    for path, name in train:
        first.setdefault(name, path)
    moved = [(p, n) for p, n in train if p in first.values()]
    _write_rows(folder / "csv_files" / "train_2.csv", [r for r in train if r not in moved] + test)
    # spelled "./..." in this file: one clip whatever the spelling
    _write_rows(folder / "csv_files" / "test_2.csv", [(f"./{p}", n) for p, n in moved])
    return folder, train, first


def test_audio_check_never_takes_a_test_clip_of_any_fold(two_fold_data):
    folder, train, first = two_fold_data
    classes = sorted(first)
    got = audio_check_clips(folder.parent, folder.name, classes, per_class=2)
    for name in classes:
        expected = [p for p, n in train if n == name][1:3]       # the fold-2 test clip is skipped
        assert got.source["clips"][name] == expected
        assert got.clips[name] == [folder / p for p in expected]
        assert folder / first[name] not in got.clips[name]
    assert got.source["train_csv"] == "train.csv"
    assert got.source["test_csvs"] == ["test.csv", "csv_files/test_1.csv", "csv_files/test_2.csv"]
    assert got.source["excluded_test_clips"] == len(classes)
    assert palm_clips(folder.parent, folder.name, classes, per_class=2) == got.clips


def test_a_class_whose_clips_are_all_some_folds_test_clips_is_refused(tmp_path, clap_checkpoint):
    # two folds that swap halves: every train.csv clip is a test clip of fold 2
    root = write_benchmark_root(tmp_path, ["ESC50-Actions"], clips_per_class=1, folds=2, seconds=0.2)
    classes = sorted({n for _, n in _rows(root / "ESC50-Actions" / "train.csv")})
    with pytest.raises(ValueError, match=rf"class {re.escape(repr(classes[0]))} \(and {len(classes) - 1} more\)"):
        audio_check_clips(root, "ESC50-Actions", classes, per_class=1)
    cfg = PipelineConfig(dataset="ESC50-Actions", dataset_root=root, backend="openai", model="m",
                         clap_checkpoint=clap_checkpoint, audio_clips_per_class=1, split="base")
    # refused before any LLM request, naming the first visible class
    with pytest.raises(ConfigError, match=re.escape(repr(resolve_split(classes, "sorted").base[0]))):
        resolve_inputs(cfg)


def test_manifest_records_where_the_audio_clips_came_from(two_fold_data, backbone, clap_checkpoint):
    from sept.pipeline.run import provenance
    from sept.prompts import load_prompt, load_templates

    folder, train, first = two_fold_data
    cfg = PipelineConfig(dataset=folder.name, dataset_root=folder, backend="openai", model="m",
                         clap_checkpoint=clap_checkpoint, audio_clips_per_class=1)
    params = provenance(cfg, load_prompt(), load_templates(), backbone)
    record = params["clap_filter"]["audio_clips"]
    assert record["excluded_test_clips"] == len(first)
    assert record["test_csvs"][-1] == "csv_files/test_2.csv"
    assert record["clips"] == {n: [[p for p, c in train if c == n][1]] for n in first}


def test_dept_weight_decay_never_reaches_the_audio_prompt(backbone, palm_dataset, clap_checkpoint, tmp_path):
    from sept.trainer.checkpoints import load_checkpoint
    from sept.trainer.config import make_config
    from sept.trainer.train import train

    cfg = make_config(overrides=dict(dataset_root=str(palm_dataset), checkpoint=str(clap_checkpoint),
                                     cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "runs"), shots=1,
                                     epochs=1, batch_size=4, n_ctx=2, ctx_init="", method="coop", dept=True,
                                     audio_prompt="aspl", device="cpu"))
    assert cfg.weight_decay == 5e-4
    results = train(cfg, backbone=backbone)
    state = load_checkpoint(tmp_path / "runs" / results["run"] / "checkpoints" / "epoch_1.pt")
    groups = state["optimizer"]["param_groups"]
    # trained_param_groups' order: DePT's prompt, DePT's head (linear probe), the audio prompt
    assert len(groups) == 3
    prompt, head, audio = groups
    assert len(audio["params"]) == len(state["audio_prompt"]) == 4 and audio["weight_decay"] == 0.0
    assert prompt["weight_decay"] == head["weight_decay"] == cfg.weight_decay
    assert head["initial_lr"] == pytest.approx(cfg.lr * cfg.dept_lr_mult)
