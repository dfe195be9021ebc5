"""Trainer benchmarks: cached audio vs PALM-style audio, SEPT step cost, loop overhead.

Random-weight LAION-CLAP (HTSAT-tiny + RoBERTa, the real classes), ESC-50's 50 class names,
synthesized clips. Figures measured side by side in one run:

P1  epoch with the audio-embedding cache vs the same trainer run PALM-style (each step reads
    and decodes its clips, and the frozen audio encoder runs in train mode with gradients
    flowing through it to the waveform); ratio (goal >= 3x) and the audio share of a cached
    epoch (cache read + per-step gather; goal <= 5%).
P2  SEPT step vs CoOp step with 10 neighbors per class at the default neighbor budget, at the
    16-shot step count (50 steps/epoch); goal <= 1.5x. And the budget's effect: SEPT loss over
    the budgeted subsets vs over all neighbors, same learner state.
P3  cached epoch vs bare text-encoder forward+backward on the same prompts; goal <= 1.25x.
P4  audio-side prompts (CoOp + ASPL): an epoch with the stored log-mel (HTSAT's rest per step,
    through the FiLM) vs the cached-embedding CoOp epoch, and vs the reference's way (each step
    decodes its clips and recomputes the log-mel, as hyebin-c/aspl's dataloader + HTSAT do);
    both ratios, and the share of the ASPL epoch spent in the audio encoder (forward, and
    backward from the text prompt's last gradient to the spectral FiLM's, by gradient hooks).

Scaled down to fit a 2-core CPU, as printed: P1 and P3 use 50 classes x 4 shots (13 steps of
16); P1's epoch times are extrapolated from --palm-steps alternating steps of each kind
(and a measured cached epoch gives the audio share); P2 times
--sept-steps steps of each kind with the 16-shot step count (the 4-shot features repeated
4x; step cost does not depend on feature values); margins use the one-template set.

P4 times --aspl-steps alternating steps of each kind at batch 16 (epochs extrapolated to the
few-shot set's step count); the CoOp step reads stand-in features (its cost does not depend on
their values) and the embedding-cache read is scaled from one batch of real clips.
--aspl-only runs the set-up and P4 alone.
P5  DePT step (CoOp + FiLM + linear head, fused loss) vs the plain CoOp step, same 16-clip batches
    and prompts, --dept-steps alternating steps of each; the ratio (DePT adds a [512] x C head and
    two FiLMs beside C text-encoder passes). --dept-only runs the set-up and P5 alone.

    python benchmarks/trainer.py [--shots 4] [--palm-steps 2] [--sept-steps 3] [--aspl-steps 1]
                                 [--aspl-only] [--dept-steps 3] [--dept-only] [--threads N]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

NEIGHBOR_FORMS = ("{} up close", "distant {}", "loud {} noise", "{} in a small room", "muffled {}",
                  "recording of {} outdoors", "soft {}", "{} echoing in a hall", "short burst of {}",
                  "continuous {} for a while")


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(ROOT / ".sept" / "bench-trainer"))
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--palm-steps", type=int, default=2)
    ap.add_argument("--sept-steps", type=int, default=3)
    ap.add_argument("--dept-steps", type=int, default=3)
    ap.add_argument("--dept-only", action="store_true", help="set-up and P5 only")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--aspl-steps", type=int, default=1)
    ap.add_argument("--aspl-only", action="store_true", help="set-up and P4 only")
    args = ap.parse_args()
    if args.threads:
        # on a shared machine one thread per process avoids stalls at every parallel op
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from fixtures_audio import write_palm_dataset
    from sept.neighbor_store import NeighborRecord
    from sept.pipeline.margins import compute_margins
    from sept.prompts import load_templates
    from sept.trainer.audio_cache import AudioCache
    from sept.clap import import_laion_clap, load_backbone, read_audio, to_clap_rate
    from sept.trainer.config import make_config
    from sept.trainer.data import few_shot, load_dataset
    from sept.trainer.learners import build_learner
    from sept.trainer.sept_loss import NeighborSampler, NeighborSet, SeptLoss, sept_terms
    from sept.clap.tiny import write_random_checkpoint, write_tokenizer
    from sept.trainer.train import Run, run_epoch

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tok_dir = write_tokenizer(work / "tokenizer") if not (work / "tokenizer" / "merges.txt").is_file() else work / "tokenizer"
    ckpt = work / "clap-random.pt"
    if not ckpt.is_file():
        write_random_checkpoint(ckpt, seed=0)
    bb, t_load = timed(load_backbone, ckpt, tokenizer=tok_dir)
    print(f"backbone: random-weight HTSAT-tiny CLAP, {sum(p.numel() for p in bb.model.parameters()) / 1e6:.0f}M params, "
          f"loaded in {t_load:.1f} s; torch threads {torch.get_num_threads()}")

    classes = (ROOT / "pipeline/classlists/esc50.txt").read_text().split("\n")
    classes = [c for c in classes if c.strip()]
    data_root = work / f"data-{args.shots}"
    if not (data_root / "Bench50" / "train.csv").is_file():
        write_palm_dataset(data_root, name="Bench50", classes=classes, n_train=args.shots, n_test=1,
                           seconds=2.0, long_clip=False)
    ds = load_dataset(data_root / "Bench50")
    C = len(ds.classes)
    cfg = make_config(overrides=dict(dataset_root=str(ds.root), checkpoint=str(ckpt), method="coop",
                                     shots=args.shots, cache_dir=str(work / "cache"), device="cpu"))
    samples = few_shot(ds.train, cfg.shots, cfg.seed)
    print(f"workload: {C} classes x {cfg.shots} shots = {len(samples)} clips, batch {cfg.batch_size}, "
          f"CoOp n_ctx {cfg.n_ctx}, prompts padded to the longest")

    if args.aspl_only:
        aspl_epochs(bb, cfg, ds, samples, work, args.aspl_steps)
        return
    if args.dept_only:
        dept_step_ratio(args, cfg, bb, ds, samples)
        return

    # ---------------------------------------------------------------- P1: cache vs PALM-style
    import shutil

    shutil.rmtree(work / "cache", ignore_errors=True)
    cache = AudioCache(cfg.cache_dir, bb)
    _, t_fill = timed(cache.embed, [s.path for s in samples])
    reader = AudioCache(cfg.cache_dir, bb)
    features, t_read = timed(reader.embed, [s.path for s in samples])
    assert reader.hits == len(samples) and reader.misses == 0
    labels = torch.tensor([s.label for s in samples])

    torch.manual_seed(cfg.seed)
    learner = build_learner("coop", bb, ds.classes, cfg)
    run = Run(cfg, learner, ds.classes, features, labels, bb.logit_scale)
    run.optimizer = torch.optim.SGD(learner.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    steps = run.steps_per_epoch

    import_laion_clap()
    from laion_clap.training.data import get_audio_features

    audio_cfg = bb.model_cfg["audio_cfg"]

    def palm_audio(idx):
        """PALM-style: decode the batch's files, encoder in train mode, gradients to the waveform."""
        bb.model.train()
        batch = []
        for i in idx.tolist():
            wave, rate = read_audio(samples[i].path)
            wave = torch.from_numpy(to_clap_rate(wave, rate)).requires_grad_(True)
            batch.append(get_audio_features({}, wave, 480000, data_truncating="rand_trunc",
                                            data_filling="repeatpad", audio_cfg=audio_cfg, require_grad=True))
        return bb.model.get_audio_embedding(batch)

    # Other processes share the CPU: the two kinds of step alternate, so both see the same load.
    gather = [0.0]

    def cached_audio(idx):
        t0 = time.perf_counter()
        out = run.features[idx]
        gather[0] += time.perf_counter() - t0
        return out

    cached_steps, palm_steps = [], []
    for i in range(args.palm_steps):
        cached_steps.append(timed(run_epoch, run, 100 + i, audio=cached_audio, max_steps=1)[1])
        try:
            palm_steps.append(timed(run_epoch, run, 100 + i, audio=palm_audio, max_steps=1)[1])
        finally:
            bb.model.eval()
    epoch_cached_est = statistics.median(cached_steps) * steps + t_read
    epoch_palm = statistics.median(palm_steps) * steps
    print("\nP1  audio-embedding cache vs PALM-style audio")
    print(f"    cache fill (one-off, {len(samples)} clips, eval mode): {t_fill:.1f} s "
          f"({t_fill / len(samples) * 1000:.0f} ms/clip); cache read of all {len(samples)}: {t_read * 1000:.0f} ms")
    print(f"    alternating steps x {args.palm_steps}: cached {statistics.median(cached_steps):.2f} s/step, "
          f"PALM-style {statistics.median(palm_steps):.2f} s/step (medians)")
    print(f"    epoch of {steps} steps: cached {epoch_cached_est:.1f} s, PALM-style {epoch_palm:.1f} s")
    print(f"    ratio PALM-style / cached: {epoch_palm / epoch_cached_est:.1f}x (goal >= 3x)")

    # ---------------------------------------------------------------- P3 (+ P1 audio share): a real epoch
    inputs, mask = learner.prompts(ds.classes)

    def bare_step():
        x = inputs.detach().clone().requires_grad_(True)
        bb.encode_token_embeddings(x, mask).sum().backward()

    bare: list[float] = []
    gather[0] = 0.0
    # a bare forward+backward after every training step, timed apart from the epoch
    _, t_span = timed(run_epoch, run, 0, audio=cached_audio, on_step=lambda: bare.append(timed(bare_step)[1]))
    t_epoch = t_span - sum(bare)
    epoch_cached = t_epoch + t_read            # an epoch that also reads every feature from disk
    audio_cached = t_read + gather[0]
    print(f"    measured cached epoch: {epoch_cached:.1f} s  [steps {t_epoch:.1f} s, cache read {t_read * 1000:.0f} ms, "
          f"per-step gather {gather[0] * 1000:.1f} ms]")
    print(f"    audio share of a cached epoch: {100 * audio_cached / epoch_cached:.2f}% (goal <= 5%)")
    print("\nP3  training loop vs bare text encoder (same prompts, interleaved step by step)")
    print(f"    bare forward+backward x {steps}: {sum(bare):.1f} s ({statistics.mean(bare):.2f} s/step, "
          f"{inputs.shape[0]} prompts of {inputs.shape[1]} tokens)")
    print(f"    cached epoch: {epoch_cached:.1f} s")
    print(f"    ratio epoch / bare: {epoch_cached / sum(bare):.2f}x (goal <= 1.25x)")

    # ---------------------------------------------------------------- P2: SEPT vs CoOp steps
    records = [NeighborRecord(**{"class": c, "text": f.format(c)}) for c in ds.classes for f in NEIGHBOR_FORMS]
    templates = load_templates("single")
    margins, t_margins = timed(compute_margins, bb, ds.classes, records, templates)
    owners = torch.tensor([ds.classes.index(r.class_) for r in records])
    neighbors = NeighborSet([r.text for r in records], owners, margins, [r.id for r in records])
    reps = math.ceil(16 / cfg.shots)
    full_features, full_labels = features.repeat(reps, 1), labels.repeat(reps)
    coop_run = Run(cfg, learner, ds.classes, full_features, full_labels, bb.logit_scale,
                   optimizer=torch.optim.SGD(learner.parameters(), lr=cfg.lr, momentum=cfg.momentum))
    sept_run = dataclasses.replace(coop_run, history=[], neighbors=neighbors,
                                   sampler=NeighborSampler(owners, cfg.neighbor_budget, cfg.seed),
                                   sept=SeptLoss(cfg.sept_lambda))
    n16 = coop_run.steps_per_epoch
    size = sept_run.sampler.size(n16)
    t_coop = t_sept = 0.0
    for i in range(args.sept_steps):          # alternating, one step each, so both see the same load
        t_coop += timed(run_epoch, coop_run, i, max_steps=1)[1]
        t_sept += timed(run_epoch, sept_run, i, max_steps=1)[1]
    print(f"\nP2  SEPT vs CoOp step ({len(records)} neighbors = 10/class, budget {cfg.neighbor_budget}, "
          f"{n16} steps/epoch at 16 shots -> {size} neighbor prompts/step)")
    print(f"    margins [{C}, {len(records)}] computed in {t_margins:.1f} s (template set 'single')")
    print(f"    CoOp step {t_coop / args.sept_steps:.2f} s, SEPT step {t_sept / args.sept_steps:.2f} s "
          f"(mean of {args.sept_steps})")
    print(f"    ratio SEPT / CoOp: {t_sept / t_coop:.2f}x (goal <= 1.5x)")

    with torch.no_grad():
        z = learner(ds.classes)
        p = torch.cat([learner(neighbors.texts[i:i + 100], owners[i:i + 100]) for i in range(0, len(records), 100)])
        full_intra, full_inter = (t.item() for t in sept_terms(z, p, owners, margins))
        chunks = sept_run.sampler.epoch(0, n16)
        per_step = [[t.item() for t in sept_terms(z, p[c], owners[c], margins[:, c])] for c in chunks]
    step_total = [a + b for a, b in per_step]
    full = full_intra + full_inter
    print(f"    budget effect (same learner state, epoch of {n16} subsets of {size}):")
    print(f"      full L_intra {full_intra:.4f}  L_inter {full_inter:.4f}  sum {full:.4f}")
    print(f"      budgeted: mean {statistics.mean(step_total):.4f} (rel. diff "
          f"{100 * (statistics.mean(step_total) - full) / max(full, 1e-12):+.1f}%), std {statistics.pstdev(step_total):.4f}, "
          f"min {min(step_total):.4f}, max {max(step_total):.4f}")

    aspl_epochs(bb, cfg, ds, samples, work, args.aspl_steps)
    dept_step_ratio(args, cfg, bb, ds, samples)


def aspl_epochs(bb, cfg, ds, samples, work: Path, n_steps: int) -> None:
    """P4: CoOp + ASPL epoch (stored log-mel) vs cached-embedding CoOp vs per-step log-mel."""
    import shutil

    import torch.nn.functional as F

    from sept.trainer.audio_cache import AudioCache
    from sept.trainer.audio_prompts import AudioPrompt, PromptedAudio
    from sept.trainer.learners import build_learner
    from sept.trainer.train import Run, run_epoch

    paths = [s.path for s in samples]
    labels = torch.tensor([s.label for s in samples])
    shutil.rmtree(work / "cache-aspl", ignore_errors=True)
    torch.manual_seed(cfg.seed)
    prompt = AudioPrompt(bb, "aspl")
    _, t_fill = timed(PromptedAudio(work / "cache-aspl", bb, prompt).inputs, paths)
    inputs, t_mel_read = timed(PromptedAudio(work / "cache-aspl", bb, prompt).inputs, paths)
    mel_mb = inputs["mel"].numel() * 4 / 2 ** 20

    # the embedding cache's read cost, from one batch of real clips scaled to the set
    embedding_cache = AudioCache(work / "cache-aspl", bb)
    embedding_cache.embed(paths[:cfg.batch_size])
    _, t_batch_read = timed(AudioCache(work / "cache-aspl", bb).embed, paths[:cfg.batch_size])
    t_emb_read = t_batch_read * len(paths) / cfg.batch_size

    def learner():
        torch.manual_seed(cfg.seed)
        return build_learner("coop", bb, ds.classes, cfg)

    coop = learner()
    stand_in = F.normalize(torch.randn(len(paths), bb.embed_dim), dim=-1)
    coop_run = Run(cfg, coop, ds.classes, stand_in, labels, bb.logit_scale,
                   optimizer=torch.optim.SGD(coop.parameters(), lr=cfg.lr, momentum=cfg.momentum))
    text = learner()
    aspl_run = Run(cfg, text, ds.classes, None, labels, bb.logit_scale, audio_prompt=prompt, audio_inputs=inputs,
                   optimizer=torch.optim.SGD([{"params": list(text.parameters())},
                                              {"params": list(prompt.parameters())}], lr=cfg.lr, momentum=cfg.momentum))

    # where the audio encoder's time goes: its forward is timed around the call; its backward runs
    # after the text encoder's (autograd takes later nodes first), from the context's gradient to
    # the spectral FiLM's, the first module of the forward and so the last of the backward
    marks: dict[str, float] = {}
    text.ctx.register_hook(lambda g: marks.__setitem__("text_done", time.perf_counter()))
    prompt.film["spectral"].gamma.register_hook(lambda g: marks.__setitem__("audio_done", time.perf_counter()))
    forward: list[float] = []

    def stored_audio(idx):
        out, t = timed(aspl_run.audio, idx)
        forward.append(t)
        return out

    front_end: list[float] = []

    def reference_audio(idx):
        # the reference's way: decode, resample, STFT and log-mel in every step
        batch, t = timed(bb.htsat_inputs, [paths[i] for i in idx.tolist()])
        front_end.append(t)
        return prompt.encode(batch)

    coop_steps, stored_steps, reference_steps, backward = [], [], [], []
    for i in range(n_steps):                 # alternating, one step each, so all see the same load
        coop_steps.append(timed(run_epoch, coop_run, 200 + i, max_steps=1)[1])
        marks.clear()
        stored_steps.append(timed(run_epoch, aspl_run, 200 + i, audio=stored_audio, max_steps=1)[1])
        backward.append(marks["audio_done"] - marks["text_done"])
        reference_steps.append(timed(run_epoch, aspl_run, 300 + i, audio=reference_audio, max_steps=1)[1])
    steps = coop_run.steps_per_epoch
    med = statistics.median
    epoch_coop = med(coop_steps) * steps + t_emb_read
    epoch_stored = med(stored_steps) * steps + t_mel_read
    epoch_reference = med(reference_steps) * steps
    audio_step = med(forward) + med(backward)
    print(f"\nP4  audio-side prompts: CoOp + ASPL (spectral + token FiLM, {prompt.n_parameters} parameters), "
          f"{len(paths)} clips, batch {cfg.batch_size}, {steps} steps/epoch")
    print(f"    log-mel cache fill (one-off): {t_fill:.1f} s ({t_fill / len(paths) * 1000:.0f} ms/clip); "
          f"read of all {len(paths)}: {t_mel_read * 1000:.0f} ms ({mel_mb:.0f} MB in memory)")
    print(f"    steps (median of {n_steps}, alternating): CoOp cached embeddings {med(coop_steps):.2f} s, "
          f"ASPL stored log-mel {med(stored_steps):.2f} s, ASPL log-mel per step {med(reference_steps):.2f} s")
    print(f"    epoch: CoOp cached {epoch_coop:.1f} s, ASPL stored log-mel {epoch_stored:.1f} s, "
          f"ASPL reference way {epoch_reference:.1f} s")
    print(f"    ratio ASPL stored log-mel / CoOp cached embeddings: {epoch_stored / epoch_coop:.1f}x")
    print(f"    ratio ASPL reference way / ASPL stored log-mel: {epoch_reference / epoch_stored:.2f}x "
          f"(its decode + resample + log-mel: {med(front_end):.2f} s/step, "
          f"{100 * med(front_end) / med(reference_steps):.1f}% of its step)")
    print(f"    audio encoder per ASPL step: forward {med(forward):.2f} s + backward {med(backward):.2f} s = "
          f"{100 * audio_step * steps / epoch_stored:.0f}% of the stored-log-mel epoch")


def dept_step_ratio(args, cfg, bb, ds, samples) -> None:
    """P5: alternating CoOp and CoOp+DePT steps on the same 16-clip batches, at the 16-shot step count."""
    from sept.trainer.audio_cache import AudioCache
    from sept.trainer.learners import build_learner
    from sept.trainer.train import Run, run_epoch

    # batch, lr and everything else as the CoOp run: only DePT's parts differ
    dept_cfg = cfg.replace(dept=True)
    torch.manual_seed(cfg.seed)
    coop = build_learner("coop", bb, ds.classes, cfg)
    torch.manual_seed(cfg.seed)
    dept = build_learner("coop", bb, ds.classes, dept_cfg)
    reps = math.ceil(16 / cfg.shots)
    labels = torch.tensor([s.label for s in samples]).repeat(reps)
    unit = AudioCache(cfg.cache_dir, bb).embed([s.path for s in samples]).repeat(reps, 1)
    raw = AudioCache(cfg.cache_dir, bb, normalize=False).embed([s.path for s in samples]).repeat(reps, 1)
    coop_run = Run(cfg, coop, ds.classes, unit, labels, bb.logit_scale,
                   optimizer=torch.optim.SGD(coop.parameters(), lr=cfg.lr, momentum=cfg.momentum))
    dept_run = Run(dept_cfg, dept, ds.classes, raw, labels, bb.logit_scale,
                   optimizer=torch.optim.SGD(dept.param_groups(dept_cfg), lr=cfg.lr, momentum=cfg.momentum))
    extra = sum(p.numel() for p in dept.head_parameters())
    run_epoch(coop_run, 99, max_steps=1)       # untimed: each learner's first call tokenizes the classes
    run_epoch(dept_run, 99, max_steps=1)
    t_coop, t_dept = [], []
    for i in range(args.dept_steps):           # alternating, which goes first too, so both see the same load
        pair = [(t_coop, coop_run), (t_dept, dept_run)]
        for times, run in (pair if i % 2 == 0 else pair[::-1]):
            times.append(timed(run_epoch, run, i, max_steps=1)[1])
    med = statistics.median
    print(f"\nP5  DePT step vs CoOp step ({len(ds.classes)} classes, batch {cfg.batch_size}, n_ctx {cfg.n_ctx}; "
          f"DePT adds {extra} parameters: 2 FiLMs of {bb.embed_dim} x 2 and a {bb.embed_dim} -> {len(ds.classes)} head)")
    print(f"    CoOp step {med(t_coop):.2f} s, CoOp+DePT step {med(t_dept):.2f} s (medians of {args.dept_steps}; "
          f"ranges {min(t_coop):.2f}-{max(t_coop):.2f} and {min(t_dept):.2f}-{max(t_dept):.2f} s)")
    print(f"    ratio DePT / CoOp: {med(t_dept) / med(t_coop):.3f}x")


if __name__ == "__main__":
    main()
