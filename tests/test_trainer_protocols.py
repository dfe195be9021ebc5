"""Base-to-new and cross-dataset protocols: which neighbor versions a run accepts, and what it records.

The synthesized dataset has classes Cough, cafe/restaurant, dog, siren: the sorted split's base
is (Cough, cafe/restaurant), the shuffled split's (seed 42) is (cafe/restaurant, dog).
"""
import json

import pytest

from sept.neighbor_store import NeighborRecord, Store
from sept.splits import resolve_split
from sept.trainer.config import ConfigError, make_config
from sept.trainer.train import TrainError, train

NEIGHBORS = {"Cough": ["dry cough"], "cafe/restaurant": ["coffee shop ambience"], "dog": ["barking dog"],
             "siren": ["police siren wailing"]}
CLASSES = list(NEIGHBORS)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio-cache")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("store"))


def version(store, classes, visible=None):
    records = [NeighborRecord(**{"class": c, "text": t}) for c in classes for t in NEIGHBORS.get(c, [f"{c} sound"])]
    params = {"backend": "human"} if visible is None else {"backend": "human", "visible_classes": visible}
    return store.write_version("Synth", classes, records, params=params)


def cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, **over):
    values = dict(dataset_root=str(palm_dataset), checkpoint=str(clap_checkpoint), cache_dir=str(cache_dir),
                  out_dir=str(tmp_path / "runs"), shots=2, epochs=1, batch_size=4, n_ctx=4, method="coop",
                  device="cpu", store=str(store.root), base_to_new=True, neighbor_budget=2)
    values.update(over)
    return make_config(overrides=values)


def test_base_to_new_refuses_a_version_that_saw_new_classes(backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                             cache_dir, store):
    everything = version(store, CLASSES)
    c = cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, neighbors=everything)
    with pytest.raises(TrainError) as e:
        train(c, backbone=backbone)
    msg = str(e.value)
    assert "saw the new class(es) 'dog', 'siren'" in msg
    assert "sept generate --dataset Synth --dataset-root <root> --split base --split-policy sorted" in msg
    assert not (tmp_path / "runs").exists()          # refused before anything ran

    # a base-only version that still saw the new classes while it was made is refused too
    seen_all = version(store, CLASSES[:2], visible=CLASSES)
    with pytest.raises(TrainError, match="'dog', 'siren'"):
        train(c.replace(neighbors=seen_all), backbone=backbone)

    # shuffled split: the shuffle's new classes are named, with the seed in the command
    with pytest.raises(TrainError) as e:
        train(c.replace(split="shuffled"), backbone=backbone)
    assert "'Cough', 'siren'" in str(e.value) and "--split-policy shuffled --split-seed 42" in str(e.value)


def test_leak_ablation_runs_and_is_marked(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir, store):
    c = cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, neighbors=version(store, CLASSES),
            allow_visible_new=True)
    results = train(c, backbone=backbone)
    assert results["visible_new"] == ["dog", "siren"] and results["neighbors"]["allow_visible_new"] is True
    assert results["neighbors"]["K"] == 2 and results["neighbors"]["K_version"] == 4    # base neighbors only
    on_disk = json.loads((tmp_path / "runs" / results["run"] / "results.json").read_text())
    assert on_disk["visible_new"] == ["dog", "siren"]


def test_base_only_version_trains_and_the_split_is_recorded(backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                             cache_dir, store):
    sorted_base = version(store, CLASSES[:2])
    results = train(cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, neighbors=sorted_base),
                    backbone=backbone)
    expected = resolve_split(CLASSES).to_dict()
    assert results["protocol"] == "base2new" and results["split"] == expected
    assert json.loads((tmp_path / "runs" / results["run"] / "split.json").read_text()) == expected
    assert results["classes"] == {"base": ["Cough", "cafe/restaurant"], "new": ["dog", "siren"]}
    assert "visible_new" not in results and results["neighbors"]["visible_classes"] == CLASSES[:2]

    shuffled = resolve_split(CLASSES, "shuffled", 42)
    c = cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, split="shuffled",
            neighbors=version(store, shuffled.base))
    results = train(c, backbone=backbone)
    assert results["split"] == shuffled.to_dict() and results["run"] == "synth-coop-shuffled42-sept-seed0"
    assert results["classes"]["base"] == ["cafe/restaurant", "dog"]
    # the sorted base-only version lacks 'dog', a base class of the shuffled split
    with pytest.raises(TrainError, match="in base classes but not the version: 'dog'"):
        train(c.replace(neighbors=sorted_base), backbone=backbone)


def test_split_file_policy(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir, store):
    path = tmp_path / "my-split.json"
    path.write_text(json.dumps({"base": ["siren", "Cough", "dog"], "new": ["cafe/restaurant"]}))
    results = train(cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, split=f"file:{path}",
                        neighbors=version(store, ["Cough", "dog", "siren"])), backbone=backbone)
    assert results["classes"] == {"base": ["Cough", "dog", "siren"], "new": ["cafe/restaurant"]}
    assert results["split"]["policy"] == f"file:{path}"
    path.write_text(json.dumps({"base": ["siren", "Cough"], "new": ["cafe/restaurant"]}))
    with pytest.raises(TrainError, match="'dog' in neither 'base' nor 'new'"):
        train(cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, split=f"file:{path}"), backbone=backbone)
    with pytest.raises(ConfigError, match="parameter 'split'"):
        make_config(overrides={"split": "random"})


def test_cross_protocol_trains_on_the_source_and_never_sees_targets(backbone, palm_dataset, palm_dataset_other,
                                                                     clap_checkpoint, tmp_path, cache_dir, store):
    base = dict(base_to_new=False, targets=[str(palm_dataset_other)])
    # 'rain' is a class of the target only: a version that saw it is refused
    leaky = version(store, CLASSES, visible=CLASSES + ["rain"])
    with pytest.raises(TrainError, match="outside the training classes 'rain'"):
        train(cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, neighbors=leaky, **base),
              backbone=backbone)
    results = train(cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, store, neighbors=version(store, CLASSES),
                        **base), backbone=backbone)
    assert results["protocol"] == "cross" and "split" not in results
    assert results["classes"] == {"all": CLASSES} and results["dataset"]["n_train"] == 2 * 4
    assert set(results["transfer"]) == {"Other"}
    other = results["transfer"]["Other"]
    # evaluated in the target's own label space, on its test clips (2 per class)
    assert list(other["per_class"]) == ["dog", "rain", "siren"] and other["n"] == 6
    with pytest.raises(ConfigError, match="trains on all classes of the source"):
        make_config(overrides={"base_to_new": True, "targets": "a,b"})
