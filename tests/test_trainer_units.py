"""Trainer parts without a CLAP model: config, PALM-layout data, metrics, SEPT terms, neighbor sampling."""
import math

import numpy as np
import pytest
import torch

from sept.trainer.config import ConfigError, make_config
from sept.trainer.data import DataError, base_new_split, few_shot, load_dataset, read_csv, relabel
from sept.trainer.metrics import classification_metrics, harmonic_mean, summarize
from sept.trainer.sept_loss import NeighborSampler, SeptLoss, sept_terms


# --------------------------------------------------------------------------- config

def test_config_layers_defaults_method_yaml_cli(tmp_path):
    cfg = make_config()
    assert (cfg.lr, cfg.momentum, cfg.epochs, cfg.batch_size, cfg.shots, cfg.n_ctx) == (0.05, 0.9, 50, 16, 16, 16)
    assert cfg.kgcoop_weight == 8.0
    assert make_config(overrides=["method=kgcoop"]).ctx_init == "a sound of a"     # method default
    assert make_config(overrides=["method=zeroshot"]).epochs == 0
    y = tmp_path / "c.yaml"
    y.write_text("method: kgcoop\nctx_init: ''\nepochs: 3\nn-ctx: 4\ntargets: [a, b]\n")
    cfg = make_config(y, ["epochs=5", "lr=0.1", "tokenizer=null", "neighbors=esc50@latest", "fold=2"])
    assert cfg.ctx_init == ""                    # explicit YAML value beats the method default
    assert (cfg.epochs, cfg.n_ctx, cfg.lr, cfg.fold) == (5, 4, 0.1, 2)
    assert cfg.targets == ["a", "b"] and cfg.tokenizer is None and cfg.neighbors == "esc50@latest"


@pytest.mark.parametrize("override, word", [
    (["shots=many"], "'shots'"), (["bogus=1"], "bogus"), (["method=clip"], "method"),
    (["batch_size=0"], "batch_size"), (["sept_intra=false", "sept_inter=false"], "sept_intra"),
    (["epochs"], "key=value"), (["crop=random"], "crop"),
])
def test_config_errors_name_the_parameter(override, word):
    with pytest.raises(ConfigError, match=word):
        make_config(overrides=override)


def test_config_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        make_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        make_config(tmp_path / "none.yaml")


# --------------------------------------------------------------------------- data

def test_palm_layout_classes_verbatim_and_folds(palm_dataset):
    ds = load_dataset(palm_dataset)
    assert ds.classes == ["Cough", "cafe/restaurant", "dog", "siren"]       # sorted, verbatim
    assert ds.name == "Synth" and len(ds.train) == 16 and len(ds.test) == 8
    assert all(s.path.is_absolute() and s.path.is_file() for s in ds.train + ds.test)
    assert all(ds.classes[s.label] == s.classname for s in ds.train)
    fold = load_dataset(palm_dataset, fold=1)
    assert len(fold.train) == 12 and len(fold.test) == 4 and fold.classes == ds.classes
    with pytest.raises(DataError, match="fold 7 not found.*folds present: 1"):
        load_dataset(palm_dataset, fold=7)
    # any CSV with the two columns; paths relative to the dataset folder
    other = load_dataset(palm_dataset, train_csv=palm_dataset / "csv_files/train_1.csv",
                         test_csv=palm_dataset / "test.csv")
    assert len(other.train) == 12 and len(other.test) == 8


def test_one_error_lists_all_missing_or_unreadable_files(palm_dataset, tmp_path):
    folder = tmp_path / "Broken"
    folder.mkdir()
    (folder / "junk.wav").write_bytes(b"not audio at all" * 10)
    rows = ["path,classname"] + [f"missing_{i}.wav,dog" for i in range(6)] + ["junk.wav,cat"]
    rows += [f"{palm_dataset}/train.csv,dog"]          # a text file is not audio either
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    (folder / "test.csv").write_text("path,classname\nmissing_0.wav,dog\n")
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    msg = str(e.value)
    assert msg.startswith("8 audio file(s) missing or unreadable")
    assert "missing_0.wav (missing)" in msg and "and 3 more" in msg


def test_csv_errors_name_file_and_line(tmp_path):
    (tmp_path / "a.csv").write_text("file,label\nx.wav,dog\n")
    with pytest.raises(DataError, match=r"a.csv: line 1: missing column\(s\) path, classname"):
        read_csv(tmp_path / "a.csv", tmp_path)
    (tmp_path / "b.csv").write_text("path,classname\nx.wav,dog\ny.wav,\n")
    with pytest.raises(DataError, match="b.csv: line 3: empty classname"):
        read_csv(tmp_path / "b.csv", tmp_path)


def test_test_classes_must_exist_in_train(palm_dataset, tmp_path):
    (tmp_path / "test.csv").write_text("path,classname\naudio/dog/test_0.wav,wolf\n")
    with pytest.raises(DataError, match="'wolf'"):
        load_dataset(palm_dataset, train_csv=palm_dataset / "train.csv", test_csv=tmp_path / "test.csv",
                     check_files=False)


def test_few_shot_is_seeded_order_independent_and_per_class(palm_dataset):
    ds = load_dataset(palm_dataset)
    a = few_shot(ds.train, 2, seed=3)
    b = few_shot(list(reversed(ds.train)), 2, seed=3)
    assert a == b                                        # CSV order does not matter
    assert [s.label for s in a] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert {s.path for s in few_shot(ds.train, 2, seed=4)} != {s.path for s in a}
    # pinned draw: identical on every machine (PCG64 stream + sort by path)
    assert [s.path.name for s in a] == [s.path.name for s in few_shot(ds.train, 2, seed=3)]
    assert len(few_shot(ds.train, 99, seed=0)) == len(ds.train)
    assert few_shot(ds.train, 0, seed=0) == ds.train


def test_base_to_new_split_and_separate_label_spaces(palm_dataset):
    assert base_new_split(list("abcde")) == (list("abc"), list("de"))     # ceil(5/2) base
    assert base_new_split(list("abcd"), n_base=1) == (["a"], list("bcd"))
    with pytest.raises(DataError, match="n_base"):
        base_new_split(list("ab"), n_base=2)
    ds = load_dataset(palm_dataset)
    base, new = base_new_split(ds.classes)
    new_test = relabel(ds.test, new)
    assert {s.classname for s in new_test} == set(new) and sorted({s.label for s in new_test}) == [0, 1]


# --------------------------------------------------------------------------- metrics

def test_metrics_by_hand():
    classes = ["a", "b", "c"]
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2], classes)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: p=1/2 r=1/2 f=1/2; b: p=2/3 r=1 f=0.8; c: p=1 r=1/2 f=2/3
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert harmonic_mean(0.8, 0.4) == pytest.approx(2 * 0.8 * 0.4 / 1.2) and harmonic_mean(0, 0) == 0
    s = summarize([{"metrics": {"base": m, "H": 0.5}}, {"metrics": {"base": {**m, "accuracy": 1.0}, "H": 0.7}}])
    assert s["base/accuracy"]["mean"] == pytest.approx((4 / 6 + 1) / 2)
    assert s["H"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


# --------------------------------------------------------------------------- SEPT terms

def _unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_sept_terms_zero_inside_margins():
    z = _unit([1, 0, 0], [0, 1, 0])
    p = _unit([1, 0.1, 0], [0.1, 1, 0], [0, 0, 1])
    owners = torch.tensor([0, 1, 1])
    d = torch.cdist(z, p)
    # own neighbors closer than their margin, others farther than theirs
    margins = torch.where(owners[None] == torch.arange(2)[:, None], d + 0.05, d - 0.05)
    intra, inter = sept_terms(z, p, owners, margins)
    assert intra.item() == 0.0 and inter.item() == 0.0


def test_sept_terms_positive_outside_with_descent_direction():
    z = _unit([1, 0, 0], [0, 1, 0]).requires_grad_(True)
    p = _unit([0.6, 0.8, 0], [0.7, 0.7, 0.1])
    owners = torch.tensor([0, 1])
    d = torch.cdist(z.detach(), p)
    # intra: own neighbor farther than its margin; inter: other neighbor nearer than its margin
    m_intra = torch.tensor([[d[0, 0] - 0.2, 5.0], [5.0, d[1, 1] - 0.2]])
    intra, inter = sept_terms(z, p, owners, m_intra)
    assert intra.item() == pytest.approx(0.2, abs=1e-5) and inter.item() > 0
    loss = SeptLoss(1.0, intra=True, inter=False)(z, p, owners, m_intra)[0]
    loss.backward()
    # a descent step moves class 0 toward its own neighbor 0
    assert torch.dot(-z.grad[0], p[0] - z.detach()[0]) > 0
    z.grad = None
    m_inter = torch.tensor([[0.0, d[0, 1] + 0.3], [d[1, 0] + 0.3, 0.0]])
    intra, inter = sept_terms(z, p, owners, m_inter)
    assert intra.item() > 0 and inter.item() == pytest.approx(0.3, abs=1e-5)
    SeptLoss(1.0, intra=False, inter=True)(z, p, owners, m_inter)[0].backward()
    # a descent step moves class 0 away from class 1's neighbor
    assert torch.dot(-z.grad[0], p[1] - z.detach()[0]) < 0


def test_sept_ablation_switches():
    z = _unit([1, 0, 0], [0, 1, 0])
    p = _unit([0.6, 0.8, 0], [0.7, 0.7, 0.1])
    owners = torch.tensor([0, 1])
    margins = torch.tensor([[0.1, 2.0], [2.0, 0.1]])             # both terms violated
    intra, inter = (t.item() for t in sept_terms(z, p, owners, margins))
    assert intra > 0 and inter > 0
    both, parts = SeptLoss(2.0)(z, p, owners, margins)
    assert both.item() == pytest.approx(2.0 * (intra + inter))
    assert SeptLoss(2.0, inter=False)(z, p, owners, margins)[0].item() == pytest.approx(2.0 * intra)
    assert SeptLoss(2.0, intra=False)(z, p, owners, margins)[0].item() == pytest.approx(2.0 * inter)
    zero, parts = SeptLoss(1.0, zero_margins=True)(z, p, owners, margins)
    d = torch.cdist(z, p)
    assert parts["inter"] == 0.0 and parts["intra"] == pytest.approx(float((d[0, 0] + d[1, 1]) / 2), abs=1e-6)
    with pytest.raises(ValueError):
        SeptLoss(1.0, intra=False, inter=False)


def test_neighbor_sampler_visits_every_neighbor_each_epoch():
    owners = torch.tensor([c for c in range(5) for _ in range(10)])          # 5 classes x 10 neighbors
    sampler = NeighborSampler(owners, budget=8, seed=0)
    for steps in (3, 7, 20):
        chunks = sampler.epoch(0, steps)
        size = max(8, math.ceil(50 / steps))
        assert len(chunks) == steps and all(len(c) == size for c in chunks)
        assert set(torch.cat(chunks).tolist()) == set(range(50))
        # round-robin across classes: a chunk spans many classes
        assert all(len(set(owners[c].tolist())) >= min(5, len(c)) for c in chunks)
    assert all(torch.equal(a, b) for a, b in zip(sampler.epoch(2, 7), NeighborSampler(owners, 8, 0).epoch(2, 7)))
    assert not all(torch.equal(a, b) for a, b in zip(sampler.epoch(1, 7), sampler.epoch(2, 7)))
    assert len(NeighborSampler(owners[:3], 8, 0).epoch(0, 2)[0]) == 3      # never more than K


# --------------------------------------------------------------------------- program structure

def test_the_training_program_names_no_learner_family():
    """The step and evaluation go through the learner protocol (trainer/learners.py) only."""
    import re
    from pathlib import Path

    import sept.trainer.train as program

    source = Path(program.__file__).read_text(encoding="utf-8")
    named = sorted({m.group(0).lower() for m in re.finditer(r"dept|cocoop|aspl|kgcoop|palm", source, re.IGNORECASE)})
    assert named == []


def test_trainer_errors_are_sept_errors_with_their_old_bases():
    from sept.errors import SeptError
    from sept.trainer.train import TrainError

    assert issubclass(ConfigError, SeptError) and issubclass(ConfigError, ValueError)
    assert issubclass(DataError, SeptError) and issubclass(DataError, ValueError)
    assert issubclass(TrainError, SeptError) and issubclass(TrainError, RuntimeError)


def test_trust_checkpoint_is_off_unless_asked():
    assert make_config().trust_checkpoint is False
    assert make_config(overrides=["trust_checkpoint=true"]).trust_checkpoint is True
    assert "sept clap convert" in make_config().model_json_schema()["properties"]["trust_checkpoint"]["description"]


def test_checkpoint_round_trip_restores_every_rng(tmp_path):
    import random

    from sept.trainer.checkpoints import latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint

    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    path = save_checkpoint(tmp_path, 3, {"config": {}, "learner": {"w": torch.ones(2)}, "history": []})
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(7), np.random.rand(7), random.random()            # the process draws on
    state = load_checkpoint(path)
    restore_rng(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    assert state["epoch"] == 3 and latest_checkpoint(tmp_path) == path
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch_3.pt"]    # no temporary left


def test_run_progress_on_a_shared_display_removes_its_own_bars():
    from sept.trainer.progress import RunProgress, new_bar

    bar = new_bar()
    outer = bar.add_task("runs", total=2, info="")
    with RunProgress(bar) as progress:
        task = progress.task("epoch 1/1", 3)
        progress.advance(task, 2)
        assert bar.tasks[-1].completed == 2
    assert [t.id for t in bar.tasks] == [outer]
    with RunProgress(False) as silent:                           # disabled: every call is a no-op
        assert silent.task("x", 1) is None
        silent.advance(None)
