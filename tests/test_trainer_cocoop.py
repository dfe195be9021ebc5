"""CoCoOp with the session's random-weight CLAP: the conditional prompt path, training, SEPT via the CLI.

Tiny on purpose (3-4 classes, 2 shots, n_ctx 2): every step encodes clips x classes prompts.
"""
import json

import pytest
import torch
import torch.nn.functional as F

from sept.neighbor_store import NeighborRecord, Store
from sept.trainer.audio_cache import AudioCache
from sept.trainer.config import make_config
from sept.trainer.data import few_shot, load_dataset, relabel
from sept.trainer.learners import CoCoOp, CoOp, build_learner
from sept.trainer.train import Run, load_checkpoint, remember_backbone, run_epoch

CLASSES = ["Cough", "dog", "siren"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("audio-cache")


def _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, **over):
    values = dict(dataset_root=str(palm_dataset), checkpoint=str(clap_checkpoint), cache_dir=str(cache_dir),
                  out_dir=str(tmp_path / "runs"), shots=2, epochs=1, batch_size=4, n_ctx=2, ctx_init="",
                  method="cocoop", device="cpu")
    values.update(over)
    return make_config(overrides=values)


def _features(backbone, palm_dataset, cache_dir, n):
    samples = load_dataset(palm_dataset).test[::2][:n]          # one clip per class, distinct sounds
    return AudioCache(cache_dir, backbone).embed([s.path for s in samples])


def test_cocoop_defaults_follow_the_paper_adapted():
    cfg = make_config(overrides=["method=cocoop"])
    assert (cfg.n_ctx, cfg.ctx_init, cfg.lr, cfg.epochs, cfg.batch_size) == (4, "a sound of a", 0.032, 10, 16)
    assert make_config(overrides=["method=cocoop", "ctx_init=", "n_ctx=2"]).ctx_init == ""


def test_zero_meta_net_reduces_cocoop_to_coop(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir)
    torch.manual_seed(0)
    coop = CoOp(backbone, CLASSES, cfg)
    cocoop = build_learner("cocoop", backbone, CLASSES, cfg)
    assert isinstance(cocoop, CoCoOp) and cocoop.conditional and not coop.conditional
    with torch.no_grad():
        cocoop.ctx.copy_(coop.ctx)
        cocoop.meta_net.linear2.weight.zero_()
        cocoop.meta_net.linear2.bias.zero_()
    features = _features(backbone, palm_dataset, cache_dir, 3)
    expected = coop.logits(features, CLASSES, backbone.logit_scale)
    logits = cocoop.logits(features, CLASSES, backbone.logit_scale)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    # chunked evaluation (one clip per text-encoder call) gives the same logits
    torch.testing.assert_close(cocoop.logits(features, CLASSES, backbone.logit_scale, prompts_per_call=3),
                               logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="condition"):
        cocoop(CLASSES)


def test_meta_net_gives_each_clip_its_own_prompts(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir)
    torch.manual_seed(0)
    cocoop = CoCoOp(backbone, CLASSES, cfg)
    with torch.no_grad():
        cocoop.meta_net.linear2.weight.normal_(std=0.5)       # a bias large enough to move the prompt
    features = _features(backbone, palm_dataset, cache_dir, 2)
    assert not torch.allclose(features[0], features[1], atol=1e-3)
    with torch.no_grad():
        z = cocoop(CLASSES, condition=features)                                       # [2, 3, 512]
        alone = cocoop(CLASSES, condition=features[1:])[0]
    assert z.shape == (2, 3, 512)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2, 3))
    assert (z[0] - z[1]).norm(dim=-1).min().item() > 1e-3                     # every class moved per clip
    torch.testing.assert_close(alone, z[1], atol=1e-5, rtol=1e-5)            # a clip's prompt ignores the others


def test_training_lowers_loss_and_updates_meta_net(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, lr=0.5, batch_size=3)
    ds = load_dataset(palm_dataset)
    samples = relabel(few_shot(ds.train, 2, cfg.seed), CLASSES)               # 3 classes x 2 shots
    features = AudioCache(cache_dir, backbone).embed([s.path for s in samples])
    labels = torch.tensor([s.label for s in samples])
    torch.manual_seed(cfg.seed)
    learner = CoCoOp(backbone, CLASSES, cfg)
    initial = {k: v.clone() for k, v in learner.state_dict().items()}
    run = Run(cfg, learner, CLASSES, features, labels, backbone.logit_scale,
              optimizer=torch.optim.SGD(learner.parameters(), lr=cfg.lr, momentum=cfg.momentum))

    def ce():
        return F.cross_entropy(learner.logits(features, CLASSES, backbone.logit_scale), labels).item()

    before = ce()
    for epoch in range(3):
        run_epoch(run, epoch)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.meta_net.parameters())
    assert not torch.equal(learner.state_dict()["meta_net.linear1.weight"], initial["meta_net.linear1.weight"])
    assert ce() < before - 1e-3


def test_cli_train_cocoop_with_sept_and_eval(backbone, palm_dataset, clap_checkpoint, clap_tokenizer_dir, tmp_path,
                                             cache_dir):
    from typer.testing import CliRunner

    from sept.cli import app

    # base-to-new: a version of the base classes only (sorted split)
    neighbors = {"Cough": ["dry cough"], "cafe/restaurant": ["coffee shop ambience"]}
    records = [NeighborRecord(**{"class": c, "text": t}) for c, texts in neighbors.items() for t in texts]
    store_root = tmp_path / "store"
    ref = Store(store_root).write_version("Synth", list(neighbors), records, params={"backend": "human"})
    remember_backbone(backbone)         # the CLI resolves the same checkpoint to this loaded model
    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "--quiet", "--dataset-root", str(palm_dataset), "--checkpoint", str(clap_checkpoint),
        "--method", "cocoop", "--neighbors", ref, f"store={store_root}", f"tokenizer={clap_tokenizer_dir}",
        f"cache_dir={cache_dir}", f"out_dir={tmp_path / 'runs'}", "shots=2", "epochs=1", "batch_size=4",
        "n_ctx=2", "ctx_init=", "base_to_new=true", "neighbor_budget=2", "device=cpu"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "synth-cocoop-sept-seed0"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["method"] == "cocoop" and results["neighbors"]["K"] == 2     # base classes' neighbors
    assert {"ce", "intra", "inter"} <= set(results["history"][0])
    assert set(results["metrics"]) == {"base", "new", "H"}
    # the checkpoint holds every learner parameter, the Meta-Net's included
    state = load_checkpoint(run_dir / "checkpoints" / "epoch_1.pt")["learner"]
    assert set(state) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                          "meta_net.linear2.weight", "meta_net.linear2.bias"}
    result = runner.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((run_dir / "eval.json").read_text())
    assert evaluated["metrics"] == results["metrics"]
