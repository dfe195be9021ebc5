"""Trainer with the session's random-weight CLAP on a synthesized PALM-layout dataset.

Small on purpose (4 classes, 2 shots, 1-2 epochs, n_ctx 4): the text encoder dominates the cost.
"""
import json

import pytest
import torch
import torch.nn.functional as F

from sept.neighbor_store import NeighborRecord, Store
from sept.trainer.audio_cache import AudioCache
from sept.trainer.config import make_config
from sept.trainer.data import few_shot, load_dataset, relabel
from sept.trainer.learners import CoOp, KgCoOp, Palm, ZeroShot, build_learner
from sept.trainer.train import (TrainError, load_checkpoint, remember_backbone,
                           train)

NEIGHBORS = {
    "Cough": ["dry cough", "person coughing"],
    "cafe/restaurant": ["busy diner chatter", "coffee shop ambience"],
    "dog": ["barking dog", "puppy yelp"],
    "siren": ["ambulance siren", "police siren wailing"],
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio-cache")


@pytest.fixture(scope="module")
def neighbor_ref(tmp_path_factory):
    store_root = tmp_path_factory.mktemp("store")
    # a base-only version (sorted split: the first two classes), as base-to-new training requires
    base = list(NEIGHBORS)[:2]
    records = [NeighborRecord(**{"class": c, "text": t}) for c in base for t in NEIGHBORS[c]]
    ref = Store(store_root).write_version("Synth", base, records, params={"backend": "human"})
    return store_root, ref


def _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, **over):
    values = dict(dataset_root=str(palm_dataset), checkpoint=str(clap_checkpoint), cache_dir=str(cache_dir),
                  out_dir=str(tmp_path / "runs"), shots=2, epochs=2, batch_size=4, n_ctx=4, method="coop",
                  device="cpu")
    values.update(over)
    return make_config(overrides=values)


def test_zero_shot_logits_equal_hand_computation(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, method="zeroshot")
    ds = load_dataset(palm_dataset)
    samples = ds.test[:4]
    learner = ZeroShot(backbone, ds.classes, cfg)
    features = AudioCache(cache_dir, backbone).embed([s.path for s in samples])
    logits = learner.logits(features, ds.classes, backbone.logit_scale)
    # by hand: mean of unit template embeddings, renormalized; audio straight from the backbone
    from sept.prompts import load_templates

    templates = load_templates("default").templates
    text = torch.stack([F.normalize(backbone.encode_text([t.format(c) for t in templates]).mean(0), dim=-1)
                        for c in ds.classes])
    audio = backbone.encode_audio([s.path for s in samples], crop="deterministic")
    expected = backbone.logit_scale * audio @ text.t()
    assert logits.shape == (4, 4)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    single = ZeroShot(backbone, ds.classes, cfg.replace(ensemble=False))
    torch.testing.assert_close(single(["dog"]), backbone.encode_text([templates[0].format("dog")]), atol=1e-6, rtol=0)


def test_coop_word_init_reproduces_zero_shot_with_that_template(backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                                cache_dir):
    classes = ["Cough", "cafe/restaurant", "city_center", "dog"]
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, templates="single", ensemble=False,
               ctx_init="this is a sound of",          # the "single" set: "this is a sound of {}."
               kgcoop_anchor="this is a sound of {}.")
    coop = CoOp(backbone, classes, cfg)
    assert coop.n_ctx == 5
    with torch.no_grad():
        torch.testing.assert_close(coop(classes), ZeroShot(backbone, classes, cfg)(classes), atol=2e-5, rtol=0)
        # KgCoOp starts on its anchor: zero penalty, positive once the context moves
        kg = KgCoOp(backbone, classes, cfg)
        assert kg.regularizer(classes, kg(classes)).item() == pytest.approx(0.0, abs=1e-8)
        kg.ctx.add_(0.5 * torch.randn_like(kg.ctx))
        assert kg.regularizer(classes, kg(classes)).item() > 1e-4


def test_palm_learner_per_class_context(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, method="palm")
    palm = build_learner("palm", backbone, ["dog", "siren"], cfg)
    assert isinstance(palm, Palm) and sorted(n for n, _ in palm.named_parameters()) == ["ctx", "lambdas"]
    with torch.no_grad():
        palm.ctx.copy_(torch.randn_like(palm.ctx))
        f = backbone.encode_text(["barking dog", "rain"])
        out = palm(["barking dog", "barking dog", "rain"], torch.tensor([0, 1, -1]))
        s = torch.sigmoid(palm.lambdas)
        torch.testing.assert_close(out[0], F.normalize((1 - s[0]) * f[0] + s[0] * palm.ctx[0], dim=-1))
        torch.testing.assert_close(out[1], F.normalize((1 - s[1]) * f[0] + s[1] * palm.ctx[1], dim=-1))
        torch.testing.assert_close(out[2], f[1])        # unseen class: frozen feature, no context


def _train_ce(learner, features, labels, classes, scale):
    return F.cross_entropy(learner.logits(features, classes, scale), labels).item()


def test_training_lowers_loss_and_cache_hits_on_second_run(backbone, palm_dataset, clap_checkpoint, tmp_path):
    cache = tmp_path / "fresh-cache"
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache, epochs=3, lr=0.5, run_name="lower")
    first = train(cfg, backbone=backbone)
    assert first["cache"] == {"hits": 0, "misses": 16, "dir": first["cache"]["dir"]}    # 8 train + 8 test clips
    # full few-shot set CE: initial learner (same seed) vs the trained one
    ds = load_dataset(palm_dataset)
    samples = relabel(few_shot(ds.train, 2, cfg.seed), ds.classes)
    features = AudioCache(cache, backbone).embed([s.path for s in samples])
    labels = torch.tensor([s.label for s in samples])
    torch.manual_seed(cfg.seed)
    initial = build_learner("coop", backbone, ds.classes, cfg)
    trained = build_learner("coop", backbone, ds.classes, cfg)
    trained.load_state_dict(load_checkpoint(tmp_path / "runs/lower/checkpoints/epoch_3.pt")["learner"])
    before = _train_ce(initial, features, labels, ds.classes, backbone.logit_scale)
    after = _train_ce(trained, features, labels, ds.classes, backbone.logit_scale)
    assert after < before - 1e-3
    results = json.loads((tmp_path / "runs/lower/results.json").read_text())
    assert set(results["metrics"]) == {"all"} and 0 <= results["metrics"]["all"]["accuracy"] <= 1
    assert len(results["history"]) == 3
    second = train(cfg.replace(epochs=1, run_name="again"), backbone=backbone)
    assert (second["cache"]["hits"], second["cache"]["misses"]) == (16, 0)


def test_resume_equals_uninterrupted_with_sept_and_store_margins(backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                                 cache_dir, neighbor_ref):
    store_root, ref = neighbor_ref
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, base_to_new=True, batch_size=4,
               neighbors=ref, store=str(store_root), neighbor_budget=2, sept_lambda=2.0, run_name="full")
    full = train(cfg, backbone=backbone)
    assert full["neighbors"]["margins"] in ("computed", "store") and full["neighbors"]["K"] == 4   # base classes only
    assert Store(store_root).read_margins(ref, backbone.fingerprint) is not None
    assert {"ce", "intra", "inter"} <= set(full["history"][0])
    assert set(full["metrics"]) == {"base", "new", "H"}
    assert full["classes"] == {"base": ["Cough", "cafe/restaurant"], "new": ["dog", "siren"]}

    part = cfg.replace(run_name="parted")
    stopped = train(part, backbone=backbone, stop_after=1)
    assert stopped["stopped_at_epoch"] == 1
    resumed = train(part, backbone=backbone, resume=True)
    assert resumed["neighbors"]["margins"] == "store"        # attached by the first run
    a = load_checkpoint(tmp_path / "runs/full/checkpoints/epoch_2.pt")
    b = load_checkpoint(tmp_path / "runs/parted/checkpoints/epoch_2.pt")
    assert all(torch.equal(a["learner"][k], b["learner"][k]) for k in a["learner"])
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(full["history"]) == strip(resumed["history"])
    assert full["metrics"] == resumed["metrics"]
    with pytest.raises(TrainError, match="configuration changed.*lr"):
        train(part.replace(lr=0.1), backbone=backbone, resume=True)


def test_neighbor_version_must_match_dataset_classes(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    store = Store(tmp_path / "store")
    records = [NeighborRecord(**{"class": "dog", "text": "barking dog"})]
    ref = store.write_version("Synth", ["Cough", "dog", "wolf"], records)
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, neighbors=ref, store=str(tmp_path / "store"))
    with pytest.raises(TrainError) as e:
        train(cfg, backbone=backbone)
    msg = str(e.value)
    assert "'cafe/restaurant', 'siren'" in msg and "in the version but not the dataset: 'wolf'" in msg


def test_cli_train_and_eval_with_transfer(backbone, palm_dataset, palm_dataset_other, clap_checkpoint,
                                          clap_tokenizer_dir, tmp_path, cache_dir):
    from typer.testing import CliRunner

    from sept.cli import app

    remember_backbone(backbone)         # the CLI resolves the same checkpoint to this loaded model
    runner = CliRunner()
    args = ["train", "--quiet", "--dataset-root", str(palm_dataset), "--checkpoint", str(clap_checkpoint),
            "--method", "palm", f"tokenizer={clap_tokenizer_dir}", f"cache_dir={cache_dir}",
            f"out_dir={tmp_path / 'runs'}", "shots=2", "epochs=2", "batch_size=4", "device=cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "synth-palm-seed0"
    assert (run_dir / "results.json").is_file() and "results:" in result.output
    result = runner.invoke(app, ["eval", str(run_dir), "--target", str(palm_dataset_other)])
    assert result.exit_code == 0, result.output
    out = json.loads((run_dir / "eval.json").read_text())
    assert out["checkpoint"].endswith("epoch_2.pt")
    assert out["transfer"]["Other"]["per_class"].keys() == {"dog", "rain", "siren"}
    trained = json.loads((run_dir / "results.json").read_text())
    assert out["metrics"]["all"]["accuracy"] == trained["metrics"]["all"]["accuracy"]
    # seeds summary
    result = runner.invoke(app, args + ["--seeds", "0,1", "epochs=1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "synth-palm-summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["summary"]["all/accuracy"]["n"] == 2
    # bad input: one clear line, exit 1 (the console script's handling, so not through CliRunner)
    result = _console(args + ["n_ctx=0"])
    assert result.exit_code == 1 and "n_ctx" in result.output


def _console(args: list[str]):
    """`sept ARGS` as a user runs it: the console script in a subprocess; its exit code and stderr."""
    import subprocess
    import sys
    from types import SimpleNamespace

    done = subprocess.run([sys.executable, "-m", "sept", *args], capture_output=True, text=True, timeout=300)
    return SimpleNamespace(exit_code=done.returncode, output=done.stderr)


def test_cli_yaml_config_fold_and_zero_shot(backbone, palm_dataset, clap_checkpoint, clap_tokenizer_dir, tmp_path,
                                            cache_dir):
    from typer.testing import CliRunner

    from sept.cli import app

    remember_backbone(backbone)
    config = tmp_path / "run.yaml"
    config.write_text(f"dataset_root: {palm_dataset}\ncheckpoint: {clap_checkpoint}\ntokenizer: {clap_tokenizer_dir}\n"
                      f"cache_dir: {cache_dir}\nout_dir: {tmp_path / 'runs'}\nmethod: coop\nepochs: 5\n")
    result = CliRunner().invoke(app, ["train", "-q", "--config", str(config), "--method", "zeroshot", "--fold", "1",
                                      "templates=single"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "runs" / "synth-zeroshot-fold1-seed0" / "results.json").read_text())
    # the flag beats the YAML's method; zero-shot has nothing to train whatever epochs says
    assert results["config"]["method"] == "zeroshot" and results["config"]["epochs"] == 5
    assert results["history"] == [] and not (tmp_path / "runs" / "synth-zeroshot-fold1-seed0" / "checkpoints").exists()
    assert results["dataset"]["fold"] == 1 and results["metrics"]["all"]["n"] == 4


def test_cache_key_follows_file_identity(backbone, palm_dataset, tmp_path):
    import os
    import shutil

    clip = tmp_path / "clip.wav"
    shutil.copy(next((palm_dataset / "audio" / "dog").glob("*.wav")), clip)
    cache = AudioCache(tmp_path / "c", backbone)
    first = cache.embed([clip, clip])
    assert (cache.hits, cache.misses) == (0, 1) and torch.equal(first[0], first[1])
    cache.embed([clip])
    assert (cache.hits, cache.misses) == (1, 1)
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))          # a touched file is re-encoded
    again = cache.embed([clip])
    assert (cache.hits, cache.misses) == (1, 2)
    torch.testing.assert_close(again[0], first[0])
    assert AudioCache(tmp_path / "c", backbone, crop="random").dir != cache.dir   # crop policy in the key


def test_a_pickled_clap_checkpoint_loads_only_when_the_config_trusts_it(clap_checkpoint, clap_tokenizer_dir,
                                                                         tmp_path):
    import argparse

    from sept.clap import UntrustedCheckpointError
    from sept.trainer.train import load_run_backbone

    # as released LAION-CLAP checkpoints do: training arguments pickled beside the weights
    state = torch.load(clap_checkpoint, map_location="cpu", weights_only=True)
    pickled = tmp_path / "clap-pickled.pt"
    torch.save({"state_dict": state.get("state_dict", state), "args": argparse.Namespace(lr=1e-4)}, pickled)
    cfg = make_config(overrides=dict(checkpoint=str(pickled), tokenizer=str(clap_tokenizer_dir)))
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        load_run_backbone(cfg, "cpu")
    loaded = load_run_backbone(cfg.replace(trust_checkpoint=True), "cpu")
    assert loaded.checkpoint == pickled
