"""KgCoOp as its reference has it, and DePT on CoOp / CoCoOp / KgCoOp, against hand computations
on the session's random-weight CLAP. Small on purpose (2-4 classes, 2 shots, n_ctx 2-4).
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from sept.neighbor_store import NeighborRecord, Store
from sept.trainer.audio_cache import AudioCache
from sept.trainer.config import ConfigError, make_config
from sept.trainer.data import few_shot, load_dataset, relabel
from sept.trainer.learners import CoCoOp, CoOp, DePT, KgCoOp, build_learner
from sept.trainer.sept_loss import NeighborSampler, NeighborSet, SeptLoss
from sept.trainer.train import Run, load_checkpoint, lr_scheduler, run_epoch, train

BASE = ["Cough", "cafe/restaurant"]          # the sorted split's base half of the fixture's 4 classes


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio-cache")


def _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, **over):
    values = dict(dataset_root=str(palm_dataset), checkpoint=str(clap_checkpoint), cache_dir=str(cache_dir),
                  out_dir=str(tmp_path / "runs"), shots=2, epochs=1, batch_size=4, n_ctx=4, method="coop",
                  device="cpu")
    values.update(over)
    return make_config(overrides=values)


def _train_set(backbone, palm_dataset, cache_dir, classes, normalize):
    ds = load_dataset(palm_dataset)
    samples = relabel(few_shot(ds.train, 2, 0), classes)
    feats = AudioCache(cache_dir, backbone, normalize=normalize).embed([s.path for s in samples])
    return feats, torch.tensor([s.label for s in samples])


# --------------------------------------------------------------------------- config

def test_dept_defaults_come_from_its_configs_and_given_values_win():
    cfg = make_config(overrides=["method=coop", "dept=true"])
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.warmup_epochs, cfg.warmup_lr) == \
        (10, 4, 0.0035, "cosine", 1, 1e-5)
    assert (cfg.dept_weight, cfg.dept_lr_mult, cfg.weight_decay, cfg.n_ctx, cfg.ctx_init) == (0.7, 6.5, 5e-4, 16, "")
    kg = make_config(overrides=["method=kgcoop", "dept=true"])
    assert (kg.kgcoop_weight, kg.ctx_init) == (2.0, "a sound of a")          # DePT's KgCoOp weight, not 8
    assert make_config(overrides=["method=kgcoop"]).kgcoop_weight == 8.0
    co = make_config(overrides=["method=cocoop", "dept=true"])
    assert (co.batch_size, co.lr, co.epochs, co.n_ctx) == (16, 0.032, 10, 4)
    given = make_config(overrides=["method=coop", "dept=true", "epochs=3", "lr=0.1"])
    assert (given.epochs, given.lr, given.batch_size) == (3, 0.1, 4)
    assert make_config(overrides=["method=coop"]).epochs == 50              # no DePT, no DePT defaults


@pytest.mark.parametrize("override, word", [
    (["method=palm", "dept=true"], "dept"), (["method=zeroshot", "dept=true"], "dept"),
    (["dept_weight=1.5"], "dept_weight"), (["kgcoop_anchor=a sound of a"], "kgcoop_anchor"),
])
def test_dept_and_anchor_errors_name_the_parameter(override, word):
    with pytest.raises(ConfigError, match=word):
        make_config(overrides=override)


def test_warmup_then_cosine_per_group_as_dassl():
    cfg = make_config(overrides=["method=coop", "dept=true"])
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": cfg.lr * cfg.dept_lr_mult}], lr=cfg.lr)
    sched = lr_scheduler(opt, cfg)
    seen = []
    for _ in range(cfg.epochs):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx([1e-5, 1e-5])                   # the warmup epoch: every group at 1e-5
    assert seen[1] == pytest.approx([0.0035, 0.0035 * 6.5])         # then the cosine from each group's lr
    for e in range(1, cfg.epochs):
        f = 0.5 * (1 + math.cos(math.pi * (e - 1) / cfg.epochs))
        assert seen[e] == pytest.approx([0.0035 * f, 0.02275 * f])
    assert lr_scheduler(opt, cfg.replace(warmup_epochs=0, lr_schedule="constant")) is None


# --------------------------------------------------------------------------- KgCoOp

def test_kgcoop_regularizer_zero_at_anchor_then_hand_computed(backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                              cache_dir):
    classes = ["Cough", "cafe/restaurant", "dog"]
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, method="kgcoop", lr=2.0, batch_size=6)
    assert (cfg.ctx_init, cfg.kgcoop_anchor, cfg.class_suffix, cfg.kgcoop_weight) == \
        ("a sound of a", "a sound of a {}.", ".", 8.0)
    torch.manual_seed(0)
    kg = build_learner("kgcoop", backbone, classes, cfg)
    assert isinstance(kg, KgCoOp)
    with torch.no_grad():
        assert abs(kg.regularizer(classes, kg(classes)).item()) < 1e-8       # starts on its anchor
    feats, labels = _train_set(backbone, palm_dataset, cache_dir, classes + ["siren"], normalize=True)
    keep = labels < 3
    run = Run(cfg, kg, classes, feats[keep], labels[keep], backbone.logit_scale,
              optimizer=torch.optim.SGD(kg.parameters(), lr=cfg.lr))
    run_epoch(run, 0)
    with torch.no_grad():
        z = kg(classes)
        z0 = backbone.encode_text([f"a sound of a {c}." for c in classes])
        by_hand = 8.0 * (1 - (z * z0).sum(-1).mean().item())            # unit vectors: cos = dot
        got = kg.regularizer(classes, z).item()
        # the project's former term, 8 * mean ||z - z0||^2, is twice the reference's on unit vectors
        former = 8.0 * (z - z0).pow(2).sum(-1).mean().item()
    assert got > 1e-4
    assert got == pytest.approx(by_hand, rel=1e-4)
    assert former == pytest.approx(2 * got, rel=1e-3)


def test_kgcoop_anchor_is_a_parameter(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    classes = ["dog", "siren"]
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, method="kgcoop", ctx_init="this is a sound of",
               kgcoop_anchor="this is a sound of {}.")
    kg = KgCoOp(backbone, classes, cfg)
    with torch.no_grad():
        assert abs(kg.regularizer(classes, kg(classes)).item()) < 1e-8
        other = KgCoOp(backbone, classes, cfg.replace(kgcoop_anchor="a recording of {}."))
        assert other.regularizer(classes, other(classes)).item() > 1e-4   # another anchor: not where ctx starts


# --------------------------------------------------------------------------- DePT

def test_cache_keeps_the_projection_before_normalization(backbone, palm_dataset, cache_dir):
    paths = [s.path for s in load_dataset(palm_dataset).test[:3]]
    raw = AudioCache(cache_dir, backbone, normalize=False).embed(paths)
    unit = AudioCache(cache_dir, backbone).embed(paths)
    assert (raw.norm(dim=-1) - 1).abs().min() > 0.05                      # really before normalization
    torch.testing.assert_close(F.normalize(raw, dim=-1), unit, atol=0, rtol=0)
    torch.testing.assert_close(unit, backbone.encode_audio(paths), atol=1e-6, rtol=0)
    torch.testing.assert_close(raw, backbone.encode_audio(paths, normalize=False), atol=1e-5, rtol=1e-5)


def test_dept_fused_logits_equal_hand_computation(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, dept=True)
    assert cfg.dept_weight == 0.7
    torch.manual_seed(1)
    dept = build_learner("coop", backbone, BASE, cfg)
    assert isinstance(dept, DePT) and isinstance(dept.base, CoOp) and dept.head.out_features == 2
    with torch.no_grad():
        for p in dept.head_parameters():                                 # away from the identity FiLM
            p.add_(0.3 * torch.randn_like(p))
    raw = AudioCache(cache_dir, backbone, normalize=False).embed([s.path for s in load_dataset(palm_dataset).test[:4]])
    scale = backbone.logit_scale
    with torch.no_grad():
        logits = dept.logits(raw, BASE, scale)
        text = dept.base.features(BASE)                                  # [2, 512] before normalization
        cosine = scale * F.normalize(raw, dim=-1) @ F.normalize(text, dim=-1).t()
        film_a = raw * dept.film_audio.scale + dept.film_audio.shift
        head = film_a @ dept.head.weight.t() + dept.head.bias
        expected = 0.3 * cosine + 0.7 * head                             # logits, not probabilities
        # another label space (new classes): the cosine logits alone
        new = ["dog", "siren"]
        new_logits = dept.logits(raw, new, scale)
        new_expected = scale * F.normalize(raw, dim=-1) @ dept.base(new).t()
    assert not torch.allclose(cosine, head, atol=1e-2)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(new_logits, new_expected, atol=1e-4, rtol=1e-5)

    # training: head on [FiLM_t(text of each label); FiLM_a(audio)], labels duplicated
    labels = torch.tensor([1, 0, 1, 0])
    with torch.no_grad():
        head_logits, head_labels = dept.head_training_logits(text[labels], raw, labels)
        film_t = text[labels] * dept.film_text.scale + dept.film_text.shift
        by_hand = torch.cat([film_t, film_a]) @ dept.head.weight.t() + dept.head.bias
    assert torch.equal(head_labels, torch.cat([labels, labels]))
    torch.testing.assert_close(head_logits, by_hand, atol=1e-4, rtol=1e-5)


def test_dept_training_loss_by_hand(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, dept=True, batch_size=8)
    torch.manual_seed(2)
    dept = build_learner("coop", backbone, BASE, cfg)
    raw, labels = _train_set(backbone, palm_dataset, cache_dir, BASE, normalize=False)
    run = Run(cfg, dept, BASE, raw, labels, backbone.logit_scale,
              optimizer=torch.optim.SGD(dept.param_groups(cfg), lr=cfg.lr))
    assert [g["lr"] for g in run.optimizer.param_groups] == pytest.approx([0.0035, 0.0035 * 6.5])
    with torch.no_grad():
        text = dept.base.features(BASE)
        cosine = backbone.logit_scale * F.normalize(raw, dim=-1) @ F.normalize(text, dim=-1).t()
        head = torch.cat([dept.film_text(text[labels]), dept.film_audio(raw)]) @ dept.head.weight.t() + dept.head.bias
        by_hand = 0.3 * F.cross_entropy(cosine, labels) + 0.7 * F.cross_entropy(head, torch.cat([labels, labels]))
    before = {k: v.clone() for k, v in dept.state_dict().items()}
    losses = run_epoch(run, 0)
    assert losses["loss"] == pytest.approx(by_hand.item(), rel=1e-5)
    moved = {k for k, v in dept.state_dict().items() if not torch.equal(v, before[k])}
    assert {"base.ctx", "head.weight", "head.bias", "film_text.scale", "film_audio.shift"} <= moved


def _step(learner, cfg, feats, labels, backbone, neighbors):
    run = Run(cfg, learner, BASE, feats, labels, backbone.logit_scale,
              optimizer=torch.optim.SGD(learner.param_groups(cfg), lr=cfg.lr, momentum=0.9),
              neighbors=neighbors, sampler=NeighborSampler(neighbors.owners, 2, 0), sept=SeptLoss(1.0))
    return run_epoch(run, 0)


@pytest.mark.parametrize("method", ["coop", "cocoop", "kgcoop"])
def test_dept_with_zero_weight_is_its_base_learner(method, backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                  cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, method=method, dept=True, dept_weight=0.0,
               n_ctx=2, ctx_init="", lr=0.5, batch_size=4)
    plain = cfg.replace(dept=False)
    torch.manual_seed(3)
    base = build_learner(method, backbone, BASE, plain)
    torch.manual_seed(3)
    dept = build_learner(method, backbone, BASE, cfg)
    assert type(dept.base) is type(base) and dept.conditional == isinstance(base, CoCoOp)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), dept.base.state_dict().values()))
    raw, labels = _train_set(backbone, palm_dataset, cache_dir, BASE, normalize=False)
    unit = AudioCache(cache_dir, backbone).embed([s.path for s in relabel(
        few_shot(load_dataset(palm_dataset).train, 2, 0), BASE)])
    with torch.no_grad():
        assert torch.equal(dept.logits(raw, BASE, 20.0), base.logits(unit, BASE, 20.0))
    # one SEPT step each: the neighbors go through the same prompt path, so the whole loss is the base's
    texts = ["dry cough", "coffee shop ambience", "person coughing"]
    owners = torch.tensor([0, 1, 0])
    neighbors = NeighborSet(texts, owners, torch.full((2, 3), 0.3), ["a", "b", "c"])
    start = base.ctx.detach().clone()
    got = _step(dept, cfg, raw, labels, backbone, neighbors)
    want = _step(base, plain, unit, labels, backbone, neighbors)
    assert {k: got[k] for k in want} == want and got["head_ce"] > 0 and want["intra"] > 0
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), dept.base.state_dict().values()))
    assert not torch.allclose(base.ctx, start)                          # the step did move the prompt


def test_train_dept_base_to_new_with_sept(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    store_root = tmp_path / "store"
    records = [NeighborRecord(**{"class": c, "text": t}) for c, t in
               [("Cough", "dry cough"), ("cafe/restaurant", "coffee shop ambience")]]
    ref = Store(store_root).write_version("Synth", BASE, records, params={"backend": "human"})
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, method="kgcoop", dept=True, base_to_new=True,
               epochs=2, batch_size=4, neighbors=ref, store=str(store_root))
    results = train(cfg, backbone=backbone)
    run_dir = tmp_path / "runs" / results["run"]
    assert results["run"].startswith("synth-kgcoop-dept-") and set(results["metrics"]) == {"base", "new", "H"}
    assert {"ce", "head_ce", "intra", "inter"} <= set(results["history"][0])
    state = load_checkpoint(run_dir / "checkpoints/epoch_2.pt")
    assert {"head.weight", "film_text.scale", "film_audio.shift", "base.ctx"} <= set(state["learner"])
    assert state["learner"]["head.weight"].shape == (2, backbone.embed_dim)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["dept"] and saved["kgcoop_weight"] == 2.0 and saved["warmup_epochs"] == 1
