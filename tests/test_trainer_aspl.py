"""Audio-side prompts (ASPL) on the session's random-weight CLAP: FiLM stages, the stored log-mel
path, what one step trains, and a run's parameter counts.

Small on purpose (4 classes, 2 shots, batch 4): every ASPL step runs HTSAT forward and backward.
"""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from sept.trainer.audio_cache import LogmelCache
from sept.trainer.audio_prompts import AudioPrompt, PromptedAudio, build_audio_prompt, trainable_counts
from sept.trainer.config import ConfigError, make_config
from sept.trainer.data import few_shot, load_dataset
from sept.trainer.learners import build_learner
from sept.trainer.train import Run, evaluate_run, load_checkpoint, run_epoch, train


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("aspl-cache")


def _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, **over):
    values = dict(dataset_root=str(palm_dataset), checkpoint=str(clap_checkpoint), cache_dir=str(cache_dir),
                  out_dir=str(tmp_path / "runs"), shots=2, epochs=1, batch_size=4, n_ctx=2, ctx_init="",
                  method="coop", device="cpu", audio_prompt="aspl")
    values.update(over)
    return make_config(overrides=values)


@pytest.fixture(scope="module")
def clips(palm_dataset):
    """Every test clip (one is 11 s long, so the centered crop applies) and two training clips."""
    ds = load_dataset(palm_dataset)
    return [s.path for s in ds.test] + [s.path for s in ds.train[:2]]


@pytest.fixture(scope="module")
def frozen(backbone, clips):
    return backbone.encode_audio(clips)


def test_parameter_counts_are_the_papers(backbone):
    aspl, plus = AudioPrompt(backbone, "aspl"), AudioPrompt(backbone, "aspl+")
    assert aspl.n_parameters == 320 and plus.n_parameters == 704
    shapes = {name: tuple(p.shape) for name, p in plus.named_parameters()}
    assert shapes == {"film.spectral.gamma": (64,), "film.spectral.beta": (64,),
                      "film.token.gamma": (96,), "film.token.beta": (96,),
                      "film.structural.gamma": (192,), "film.structural.beta": (192,)}
    assert build_audio_prompt("none", backbone) is None
    # the backbone's weights are no part of the prompt module
    assert len(plus.state_dict()) == 6
    with pytest.raises(ConfigError, match="audio_prompt"):
        make_config(overrides=["audio_prompt=aspl2"])


def test_identity_film_reproduces_encode_audio(backbone, clips, frozen, cache_dir):
    prompt = AudioPrompt(backbone, "aspl+")                      # gamma 1, beta 0 at every stage
    source = PromptedAudio(cache_dir, backbone, prompt, batch_size=3)
    embedded = source.embed(clips)
    assert source.misses == len(clips) and source.hits == 0
    torch.testing.assert_close(embedded, frozen, atol=1e-5, rtol=0)
    # read back from the log-mel cache: same inputs, nothing recomputed
    reader = PromptedAudio(cache_dir, backbone, prompt, batch_size=3)
    assert torch.equal(reader.embed(clips), embedded)
    assert (reader.hits, reader.misses) == (len(clips), 0)
    stored = LogmelCache(cache_dir, backbone).load(clips)
    assert stored["mel"].shape == (len(clips), 1, 1001, 64) and not stored["longer"].any()


def test_each_stage_modulates_and_hooks_leave_with_the_call(backbone, clips, frozen):
    prompt = AudioPrompt(backbone, "aspl+")
    inputs = backbone.htsat_inputs(clips[:3])
    for stage, film in prompt.film.items():
        with torch.no_grad():
            film.gamma.fill_(1.5)
            moved = prompt.encode(inputs)
            film.gamma.fill_(1.0)
        assert (moved - frozen[:3]).abs().max().item() > 1e-4, stage
    with torch.no_grad():
        for film in prompt.film.values():
            film.beta.fill_(0.3)
        prompt.encode(inputs)
    # after encode the shared backbone is unmodulated again
    assert torch.equal(backbone.encode_audio(clips), frozen)


def test_film_stages_equal_hand_computation(backbone, clips):
    """Spectral FiLM = the same log-mel scaled per bin; token FiLM = patch_embed's LayerNorm affine
    rescaled; structural gamma = the first stage's patch-merging projection rows rescaled."""
    torch.manual_seed(3)
    inputs = backbone.htsat_inputs(clips[:3])
    g_mel, b_mel = 1 + 0.2 * torch.randn(64), 0.5 * torch.randn(64)
    g_tok, b_tok = 1 + 0.2 * torch.randn(96), 0.2 * torch.randn(96)
    g_st = 1 + 0.2 * torch.randn(192)

    spectral = AudioPrompt(backbone, "aspl")
    with torch.no_grad():
        spectral.film["spectral"].gamma.copy_(g_mel)
        spectral.film["spectral"].beta.copy_(b_mel)
        got = spectral.encode(inputs)
        by_hand = backbone.encode_htsat_inputs({"mel": inputs["mel"] * g_mel + b_mel, "longer": inputs["longer"]})
    torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=0)

    deep = AudioPrompt(backbone, "aspl+")
    htsat = copy.deepcopy(backbone.model.audio_branch)
    with torch.no_grad():
        deep.film["token"].gamma.copy_(g_tok)
        deep.film["token"].beta.copy_(b_tok)
        deep.film["structural"].gamma.copy_(g_st)
        got = deep.encode(inputs)
        norm = htsat.patch_embed.norm                             # gamma * (w * n + b) + beta
        norm.bias.copy_(g_tok * norm.bias + b_tok)
        norm.weight.mul_(g_tok)
        htsat.layers[0].downsample.reduction.weight.mul_(g_st[:, None])   # Linear 384 -> 192, no bias
        x = htsat.bn0(inputs["mel"].transpose(1, 3)).transpose(1, 3)
        out = htsat.forward_features(htsat.reshape_wav2img(x))["embedding"]
        by_hand = F.normalize(backbone.model.audio_projection(out), dim=-1)
    assert (got - backbone.encode_htsat_inputs(inputs)).abs().max().item() > 1e-4
    torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=0)


def _one_step_run(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir, **over):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir, **over)
    ds = load_dataset(palm_dataset)
    samples = few_shot(ds.train, cfg.shots, cfg.seed)
    torch.manual_seed(0)
    learner = build_learner(cfg.method, backbone, ds.classes, cfg)
    prompt = build_audio_prompt(cfg.audio_prompt, backbone)
    inputs = PromptedAudio(cache_dir, backbone, prompt).inputs([s.path for s in samples])
    run = Run(cfg, learner, ds.classes, None, torch.tensor([s.label for s in samples]), backbone.logit_scale,
              audio_prompt=prompt, audio_inputs=inputs)
    groups = ([{"params": list(learner.parameters())}] if learner.trainable else []) + \
        [{"params": list(prompt.parameters())}]
    run.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return run


def test_one_step_moves_only_the_film_and_the_text_prompt(backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                          cache_dir):
    run = _one_step_run(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir, audio_prompt="aspl+")
    clap_before = {k: v.clone() for k, v in backbone.model.state_dict().items()}     # weights and buffers (bn0's)
    film_before = {k: v.clone() for k, v in run.audio_prompt.state_dict().items()}
    ctx_before = run.learner.ctx.detach().clone()
    losses = run_epoch(run, 0, max_steps=1)
    assert torch.isfinite(torch.tensor(losses["loss"]))
    for name, value in run.audio_prompt.state_dict().items():
        assert (value - film_before[name]).abs().max().item() > 0, f"{name} did not move"
    assert (run.learner.ctx.detach() - ctx_before).abs().max().item() > 0
    after = backbone.model.state_dict()
    changed = [k for k, v in clap_before.items() if not torch.equal(v, after[k])]
    assert changed == []
    assert not any(p.requires_grad or p.grad is not None for p in backbone.model.parameters())
    # the reference's clip: the step's total gradient norm is at most 1
    trained = [p for g in run.optimizer.param_groups for p in g["params"]]
    assert torch.norm(torch.stack([p.grad.norm() for p in trained])).item() <= 1.0 + 1e-5


@pytest.mark.parametrize("method", ["zeroshot", "cocoop", "kgcoop", "palm"])
def test_every_learner_trains_with_an_audio_prompt(method, backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                   cache_dir):
    run = _one_step_run(backbone, palm_dataset, clap_checkpoint, tmp_path, cache_dir, method=method, batch_size=2)
    before = {k: v.clone() for k, v in run.audio_prompt.state_dict().items()}
    text_before = [p.detach().clone() for p in run.learner.parameters()]
    run_epoch(run, 0, max_steps=1)
    assert all((v - before[k]).abs().max().item() > 0 for k, v in run.audio_prompt.state_dict().items())
    assert all((p.detach() - q).abs().max().item() > 0 for p, q in zip(run.learner.parameters(), text_before))
    counts = trainable_counts(run.learner, run.audio_prompt)
    assert counts["audio"] == 320 and (counts["text"] == 0) == (method == "zeroshot")


def test_run_records_parameter_counts_and_checkpoints_the_prompt(backbone, palm_dataset, clap_checkpoint, tmp_path,
                                                                 cache_dir):
    cfg = _cfg(palm_dataset, clap_checkpoint, tmp_path, cache_dir)
    results = train(cfg, backbone=backbone)
    run_dir = tmp_path / "runs" / results["run"]
    assert results["run"].endswith("-aspl-seed0")
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["params"] == {"text": 2 * 768, "audio": 320}
    state = load_checkpoint(run_dir / "checkpoints" / "epoch_1.pt")
    assert set(state["audio_prompt"]) == {"film.spectral.gamma", "film.spectral.beta",
                                          "film.token.gamma", "film.token.beta"}
    assert (state["audio_prompt"]["film.spectral.beta"].abs().max().item() > 0)
    # re-evaluation goes through the trained audio prompt: same predictions as the run's own
    again = evaluate_run(run_dir, backbone=backbone)
    assert again["metrics"]["all"]["accuracy"] == saved["metrics"]["all"]["accuracy"]
    assert again["metrics"]["all"]["per_class"] == saved["metrics"]["all"]["per_class"]

    plain = train(cfg.replace(audio_prompt="none"), backbone=backbone)
    assert plain["params"] == {"text": 2 * 768, "audio": 0}
    zero = train(cfg.replace(method="zeroshot", audio_prompt="none", epochs=0), backbone=backbone)
    assert zero["params"] == {"text": 0, "audio": 0}


def test_fusion_tower_takes_the_stored_mel_fusion(palm_dataset, clap_tokenizer_dir, tmp_path_factory):
    """With fusion, HTSAT's input is laion-clap's mel_fusion (global view + 3 local chunks of a
    longer clip): stored as is, and laion-clap's own HTSAT.forward runs through the FiLM hooks."""
    from sept.clap import load_backbone
    from sept.clap.tiny import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path_factory.mktemp("clap-fusion") / "fusion.pt", enable_fusion=True)
    fused = load_backbone(checkpoint, enable_fusion=True, tokenizer=clap_tokenizer_dir, device="cpu")
    ds = load_dataset(palm_dataset)
    clips = [ds.test[0].path, ds.test[1].path, ds.train[0].path]          # the 11 s clip first
    prompt = AudioPrompt(fused, "aspl+")
    source = PromptedAudio(tmp_path_factory.mktemp("fusion-cache"), fused, prompt)
    inputs = source.inputs(clips)
    assert inputs["mel"].shape == (3, 4, 1001, 64) and inputs["longer"].tolist() == [True, False, False]
    torch.testing.assert_close(source.embed(clips), fused.encode_audio(clips), atol=1e-5, rtol=0)
    with torch.no_grad():
        prompt.film["spectral"].beta.fill_(0.5)
    assert (source.embed(clips) - fused.encode_audio(clips)).abs().max().item() > 1e-4
