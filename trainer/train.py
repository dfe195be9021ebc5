"""The training program: data -> cached audio features -> learner (+ SEPT) -> checkpoints -> metrics.

Read top to bottom: `train` builds everything, `run_epoch` is one pass over the few-shot set
(audio features come from the cache; the SEPT term is added to the cross-entropy), `evaluate`
scores a label space. The step and evaluation know only the learner protocol (trainer/learners.py:
`step_loss`, `sept_embeddings`, `logits`, `param_groups`), never a method. Randomness: few-shot
subset, batch order and neighbor subsets derive from (seed, epoch) alone, and the backbone stays
in eval mode, so a run resumed from its epoch-k checkpoint continues exactly as the uninterrupted
run.

Run folder <out_dir>/<run_name>/: config.json, fewshot.json (the training clips, sept.trainer.fewshot),
split.json (base-to-new), checkpoints/epoch_<e>.pt
(trainer/checkpoints.py), results.json; `evaluate_run` adds eval.json.
"""
from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sept.atomic import atomic_write_json
from sept.trainer.audio_cache import AudioCache
from sept.trainer.audio_prompts import (
    AudioPrompt, PromptedAudio, audio_features_source, build_audio_prompt, trainable_counts,
)
from sept.trainer.checkpoints import (
    check_resumable, checkpoint_dir, checkpoint_path, latest_checkpoint, load_checkpoint, restore_rng,
    save_checkpoint,
)
from sept.trainer.config import TrainConfig, config_from_dict, fewshot_sha256
from sept.trainer.data import AudioDataset, Sample, few_shot, load_dataset, relabel
from sept.trainer.errors import TrainError
from sept.trainer.fewshot import RUN_FILE as FEWSHOT_FILE, fewshot_record, read_fewshot_file
from sept.trainer.learners import Learner, audio_normalized, build_learner, method_label
from sept.trainer.metrics import classification_metrics, harmonic_mean, summarize
from sept.trainer.progress import RunProgress
from sept.trainer.sept_loss import NeighborSampler, NeighborSet, SeptLoss
from sept.splits import Split, SplitError, resolve_split

BATCH_STREAM = 0x5E97_0001


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_name(cfg: TrainConfig, dataset: str) -> str:
    if cfg.run_name:
        return cfg.run_name
    from sept.names import dataset_slug

    parts = [dataset_slug(dataset), method_label(cfg)]
    if cfg.fold is not None:
        parts.append(f"fold{cfg.fold}")
    if cfg.base_to_new and cfg.split != "sorted":
        # runs of two splits must not share a folder (the sorted split keeps the plain name)
        parts.append(f"shuffled{cfg.split_seed}" if cfg.split == "shuffled"
                     else "split-" + dataset_slug(Path(cfg.split[len("file:"):]).stem))
    if cfg.fewshot_file:
        # runs of two few-shot files must not share a folder (a drawn subset keeps the plain name)
        parts.append("fewshot-" + fewshot_sha256(cfg.fewshot_file)[:8])
    if cfg.neighbors:
        parts.append("sept")
    if cfg.audio_prompt != "none":
        parts.append(cfg.audio_prompt)
    return "-".join(parts + [f"seed{cfg.seed}"])


# --------------------------------------------------------------------------- neighbors

def check_neighbor_classes(version, dataset: str, dataset_classes: list[str], learner_classes: list[str],
                           split: Split | None, allow_visible_new: bool) -> dict[str, Any]:
    """Refuse a version that cannot serve this run; return what the run records about it.

    The check is the store's (`sept.neighbor_store.serving`, which the bench uses too): neighbors
    for every class the learner trains, no class foreign to the dataset, and nothing seen outside
    the training classes, unless `allow_visible_new` (the leak ablation), which the results then
    record.
    """
    from sept.neighbor_store.serving import serving

    served = serving(version, dataset_classes, learner_classes)
    refusal = served.refusal(split, allow_seen=allow_visible_new)
    if refusal is not None:
        if served.covers:     # it saw classes outside the training: say how to make one that did not
            refusal += f". {served.remedy(dataset, split)}; or set allow_visible_new=true for the leak ablation"
        raise TrainError(refusal)
    return served.record()


def read_neighbor_version(cfg: TrainConfig, dataset: str, dataset_classes: list[str], learner_classes: list[str],
                          split: Split | None):
    """The run's neighbor version `cfg.neighbors`, read once and checked (`check_neighbor_classes`)
    before anything heavy: (store, version, what the run records about it)."""
    from sept.neighbor_store import Store

    store = Store(cfg.store)
    version = store.read(cfg.neighbors)
    seen = check_neighbor_classes(version, dataset or version.dataset, dataset_classes, learner_classes, split,
                                  cfg.allow_visible_new)
    return store, version, seen


def load_neighbors(cfg: TrainConfig, backbone, store, version, learner_classes: list[str],
                   seen: dict[str, Any]) -> tuple[NeighborSet, dict[str, Any]]:
    """Neighbors of `learner_classes` from `version` (checked by `read_neighbor_version`, whose
    record is `seen`), with margins for this backbone: read from the store under the backbone
    fingerprint, or computed (manual templates `cfg.margin_templates`) and attached.
    """
    margins = store.read_margins(version.ref, backbone.fingerprint)
    origin = "store"
    if margins is None:
        from sept.clap.margins import compute_margins
        from sept.prompts import load_templates

        templates = load_templates(cfg.margin_templates)
        values = compute_margins(backbone, version.classes, version.neighbors, templates)
        origin = "computed"
        try:
            store.attach_margins(version.ref, backbone.fingerprint, values, version.neighbor_ids,
                                 meta={"templates": templates.ref, "computed_by": "sept train"})
        except OSError as e:
            # a read-only store still trains; the margins are just recomputed next time
            origin = f"computed (not attached: {type(e).__name__})"
    else:
        values = margins.values
    row = {c: i for i, c in enumerate(version.classes)}
    owner_of = {c: i for i, c in enumerate(learner_classes)}
    keep = [k for k, r in enumerate(version.neighbors) if r.class_ in owner_of]
    rows = torch.tensor([row[c] for c in learner_classes], dtype=torch.long)
    cols = torch.tensor(keep, dtype=torch.long)
    neighbors = NeighborSet(
        texts=[version.neighbors[k].text for k in keep],
        owners=torch.tensor([owner_of[version.neighbors[k].class_] for k in keep], dtype=torch.long),
        margins=values.float()[rows][:, cols] if keep else torch.zeros(len(learner_classes), 0),
        ids=[version.neighbors[k].id for k in keep],
    )
    info = {"ref": version.ref, "id": version.id, "K": len(keep), "K_version": len(version.neighbors),
            "margins": origin, "fingerprint": backbone.fingerprint, **seen}
    return neighbors, info


# --------------------------------------------------------------------------- one epoch

@dataclass
class Run:
    """Everything a training epoch touches."""

    cfg: TrainConfig
    learner: Learner
    classes: list[str]                       # the learner's label space (base classes or all)
    features: torch.Tensor | None            # [N, 512] cached audio embeddings of the few-shot set (None with an audio prompt)
    labels: torch.Tensor                     # [N]
    logit_scale: float
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    neighbors: NeighborSet | None = None
    sampler: NeighborSampler | None = None
    sept: SeptLoss | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    audio_prompt: AudioPrompt | None = None  # FiLM inside HTSAT, trained with the learner
    audio_inputs: dict[str, torch.Tensor] | None = None   # its HTSAT inputs of the few-shot set {"mel", "longer"}

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of the run (trainer/checkpoints.py adds the epoch and RNG state)."""
        return {
            "config": self.cfg.to_dict(),
            "learner": self.learner.state_dict(),
            "audio_prompt": self.audio_prompt.state_dict() if self.audio_prompt is not None else None,
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "history": self.history,
        }

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.labels) / self.cfg.batch_size)

    def audio(self, idx: torch.Tensor) -> torch.Tensor:
        """Audio embeddings [B, D] of few-shot clips `idx`: the cached ones, or HTSAT through the
        audio prompt from the stored log-mel (gradients flow into the prompt); unit-norm or not as
        the learner reads them (`audio_normalized`), as its cache holds them."""
        if self.audio_prompt is None:
            return self.features[idx]
        return self.audio_prompt.encode({k: v[idx] for k, v in self.audio_inputs.items()},
                                        normalize=self.learner.audio_normalized)


def is_trained(cfg: TrainConfig, learner: Learner, audio_prompt: AudioPrompt | None) -> bool:
    """Whether the run trains anything (and so has checkpoints): a learner with parameters or an
    audio prompt, for at least one epoch."""
    return (learner.trainable or audio_prompt is not None) and cfg.epochs > 0


def trained_param_groups(cfg: TrainConfig, learner: Learner, audio_prompt: AudioPrompt | None) -> list[dict[str, Any]]:
    """The SGD parameter groups of the run: the learner's, then the audio prompt's."""
    groups = learner.param_groups(cfg) if learner.trainable else []
    return groups + (audio_prompt.param_groups() if audio_prompt is not None else [])


def load_trained(learner: Learner, audio_prompt: AudioPrompt | None, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's trained parameters `state` (from `path`) into the learner and audio prompt."""
    learner.load_state_dict(state["learner"])
    if audio_prompt is not None:
        if state.get("audio_prompt") is None:
            raise TrainError(f"{path}: no audio prompt state, but the run's audio_prompt is {audio_prompt.kind!r}")
        audio_prompt.load_state_dict(state["audio_prompt"])


def class_step_loss(run: Run, audio: torch.Tensor, labels: torch.Tensor, chunk: torch.Tensor | None):
    """One step's loss: the learner's (CE over its classes + its own terms) + SEPT on `chunk`.

    audio [B, D], as the learner reads it. The learner gives SEPT its class and neighbor
    embeddings for this step (`sept_embeddings`).
    """
    step = run.learner.step_loss(audio, labels, run.classes, run.logit_scale)
    loss, parts = step.loss, step.parts
    if run.neighbors is not None and chunk is not None:
        texts, n_owners, margins = run.neighbors.take(chunk)
        z, p = run.learner.sept_embeddings(step, texts, n_owners)
        sept, terms = run.sept(z, p, n_owners, margins)
        loss = loss + sept
        parts.update(terms)
    parts["loss"] = loss.item()
    return loss, parts


def autocast_context(device: torch.device | str, precision: str):
    """The training step's autocast: bf16 on CUDA when `precision` is "bf16", else none (fp32).

    bf16 needs no loss scaling (it has fp32's exponent range); the CE is taken in fp32, and the
    parameters and optimizer state stay fp32. Off CUDA the step stays fp32 whatever `precision`
    says: CPU runs are the tests' and references' runs, where fp32's stable results matter more.
    """
    if precision == "bf16" and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def run_epoch(run: Run, epoch: int, audio: Callable[[torch.Tensor], torch.Tensor] | None = None,
              on_step: Callable[[], None] | None = None, max_steps: int | None = None) -> dict[str, float]:
    """One pass over the few-shot set in a (seed, epoch)-determined order; returns mean losses.

    audio: batch indices [B] -> audio embeddings [B, D]; default `run.audio` (the cached features,
    or the audio prompt's forward).
    max_steps: run only the epoch's first steps (timing); the scheduler then does not advance.
    """
    cfg, device = run.cfg, run.labels.device
    order = torch.from_numpy(np.random.Generator(np.random.PCG64([BATCH_STREAM, cfg.seed, epoch]))
                             .permutation(len(run.labels)))
    steps = run.steps_per_epoch
    chunks = run.sampler.epoch(epoch, steps) if run.sampler is not None else [None] * steps
    autocast = autocast_context(device, cfg.precision)
    totals: dict[str, float] = {}
    n_steps = steps if max_steps is None else min(steps, max_steps)
    for step in range(n_steps):
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        feats = audio(idx) if audio is not None else run.audio(idx)
        with autocast:
            loss, parts = class_step_loss(run, feats, run.labels[idx].to(device), chunks[step])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.audio_prompt is not None:
            # the audio prompt's reference clips the norm over every trained parameter
            torch.nn.utils.clip_grad_norm_([p for g in run.optimizer.param_groups for p in g["params"]],
                                           run.audio_prompt.grad_clip)
        run.optimizer.step()
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
        if on_step is not None:
            on_step()
    if run.scheduler is not None and n_steps == steps:
        run.scheduler.step()
    return {k: v / n_steps for k, v in totals.items()}


# --------------------------------------------------------------------------- evaluation

def evaluate(learner: Learner, features: torch.Tensor, labels: list[int], classes: list[str],
             logit_scale: float) -> dict[str, Any]:
    """Metrics of `learner` on audio features [N, D] in the label space `classes`."""
    logits = learner.logits(features, classes, logit_scale)
    return classification_metrics(labels, logits.argmax(1).cpu().numpy(), classes)


def _embed(cache: "AudioCache | PromptedAudio", samples: list[Sample], progress: RunProgress, what: str) -> torch.Tensor:
    task = progress.task(f"audio {what}", len(samples))
    feats = cache.embed([s.path for s in samples], progress=lambda n: progress.advance(task, n))
    progress.complete(task, len(samples))
    return feats


def evaluate_all(learner: Learner, cache, eval_splits: dict[str, tuple[list[str], list[Sample]]],
                 targets: list[AudioDataset], logit_scale: float, progress: RunProgress,
                 base_to_new: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's test figures, for `train` and `evaluate_run` alike: (metrics per split, with H in
    base-to-new; metrics per cross-dataset target)."""
    metrics: dict[str, Any] = {}
    for split, (split_classes, samples) in eval_splits.items():
        feats = _embed(cache, samples, progress, f"test {split}")
        metrics[split] = evaluate(learner, feats, [s.label for s in samples], split_classes, logit_scale)
    if base_to_new:
        metrics["H"] = harmonic_mean(metrics["base"]["accuracy"], metrics["new"]["accuracy"])
    transfer = {}
    for target in targets:
        feats = _embed(cache, target.test, progress, f"test {target.name}")
        transfer[target.name] = evaluate(learner, feats, [s.label for s in target.test], target.classes,
                                         logit_scale)
    return metrics, transfer


# --------------------------------------------------------------------------- the program

def run_split(cfg: TrainConfig, ds: AudioDataset) -> Split | None:
    """The base/new split of a base-to-new run (policy `cfg.split`), else None."""
    if not cfg.base_to_new:
        return None
    try:
        return resolve_split(ds.classes, cfg.split, cfg.split_seed, n_base=cfg.n_base, dataset=ds.name)
    except SplitError as e:
        raise TrainError(f"parameter 'split': {e}") from None


def _splits(ds: AudioDataset, split: Split | None) -> tuple[list[str], dict[str, tuple[list[str], list[Sample]]]]:
    """The learner's classes and the evaluation label spaces {split: (classes, samples)}, of the
    run's already resolved `split` (`run_split`)."""
    if split is not None:
        base, new = split.base, split.new
        return base, {"base": (base, relabel(ds.test, base)), "new": (new, relabel(ds.test, new))}
    return ds.classes, {"all": (ds.classes, ds.test)}


def training_clips(cfg: TrainConfig, ds: AudioDataset, classes: list[str]) -> tuple[list[Sample], dict[str, Any]]:
    """The few-shot set of the classes the learner trains, labelled in `classes`, and its record
    (the run's fewshot.json): the clips `cfg.fewshot_file` names, else `shots` per class drawn with `seed`."""
    if cfg.fewshot_file:
        drawn, given = read_fewshot_file(cfg.fewshot_file, ds, classes)
        source = {"file": str(cfg.fewshot_file), "sha256": fewshot_sha256(cfg.fewshot_file)}
        record = fewshot_record(ds, drawn, given.get("shots", cfg.shots), given.get("seed", cfg.seed), source)
    else:
        trained = set(classes)
        drawn = [s for s in few_shot(ds.train, cfg.shots, cfg.seed) if s.classname in trained]
        record = fewshot_record(ds, drawn, cfg.shots, cfg.seed)
    return relabel(drawn, classes), record


def lr_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Per-epoch schedule: none (constant), or cosine over `epochs` (T_max = epochs, to 0); with
    warmup_epochs, those first epochs run every group at warmup_lr, then the cosine starts from
    each group's lr (dassl's ConstantWarmupScheduler around CosineAnnealingLR, as the reference trainers use).
    """
    if cfg.warmup_epochs == 0:
        if cfg.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        return None
    warmup, total = cfg.warmup_epochs, max(cfg.epochs, 1)
    cosine = cfg.lr_schedule == "cosine"

    def factor(base_lr: float) -> Callable[[int], float]:
        def at(epoch: int) -> float:
            if epoch < warmup:
                return cfg.warmup_lr / base_lr
            return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / total)) if cosine else 1.0
        return at

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g["lr"]) for g in optimizer.param_groups])


def remember_backbone(backbone) -> None:
    """Make `backbone` the one `load_run_backbone` returns for its checkpoint/options/device."""
    from sept.clap import keep_backbone

    keep_backbone(backbone)


def load_run_backbone(cfg: TrainConfig, device: str):
    """The run's frozen CLAP, loaded once per process for a given checkpoint/options/device."""
    from sept.clap import get_backbone

    if not cfg.checkpoint:
        raise TrainError("parameter 'checkpoint' is required: the path of a LAION-CLAP checkpoint")
    if not Path(cfg.checkpoint).expanduser().is_file():
        raise TrainError(f"CLAP checkpoint not found: {cfg.checkpoint}")
    return get_backbone(cfg.checkpoint, amodel=cfg.amodel, enable_fusion=cfg.enable_fusion,
                        tokenizer=cfg.tokenizer, device=device, trust_checkpoint=cfg.trust_checkpoint)


def train(cfg: TrainConfig, *, backbone=None, resume: bool = False, stop_after: int | None = None,
          show_progress: bool = False) -> dict[str, Any]:
    """Train (or only evaluate, for zero-shot / epochs=0) one run; returns and writes its results.

    backbone: an already loaded ClapBackbone (else loaded from cfg.checkpoint).
    resume: continue from the run folder's latest checkpoint.
    stop_after: stop after this many epochs in total (a deliberate interruption; resume later).
    show_progress: epoch bars; True for its own display, or a running rich Progress to add them to.
    """
    started = time.time()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)

    # ---- data: every file checked before anything heavy
    ds = load_dataset(cfg.dataset_root, cfg.fold, cfg.train_csv, cfg.test_csv, cfg.dataset_name)
    targets = [load_dataset(t) for t in cfg.targets]
    names = [t.name for t in targets]
    if len(set(names)) < len(names):
        raise TrainError(f"parameter 'targets': two targets share a dataset name ({', '.join(names)})")
    # cross protocol: targets are only evaluated; nothing of theirs (clips, classes) is trained on
    class_split = run_split(cfg, ds)
    classes, eval_splits = _splits(ds, class_split)
    train_samples, fewshot = training_clips(cfg, ds, classes)
    run_dir = Path(cfg.out_dir) / run_name(cfg, ds.name)
    if resume and latest_checkpoint(run_dir) is None:
        raise TrainError(f"--resume: no checkpoint in {checkpoint_dir(run_dir)}")
    version = None
    if cfg.neighbors:
        # before any audio is encoded: a version that cannot serve this run fails it at once
        store, version, seen = read_neighbor_version(cfg, ds.name, ds.classes, classes, class_split)

    bb = backbone if backbone is not None else load_run_backbone(cfg, device)
    logit_scale = cfg.logit_scale if cfg.logit_scale is not None else bb.logit_scale
    audio_prompt = build_audio_prompt(cfg.audio_prompt, bb)
    # the embedding cache, or with an audio prompt the log-mel cache with HTSAT run through it;
    # unit-norm or the audio projection before normalization, as the learner reads audio
    cache = audio_features_source(cfg.cache_dir, bb, audio_prompt, cfg.crop, normalize=audio_normalized(cfg))

    with RunProgress(show_progress) as progress:
        # ---- audio: each clip encoded once, then read from the cache; with an audio prompt the
        # frozen log-mel is what is stored, and HTSAT's rest runs in every step
        audio_inputs = None
        if audio_prompt is None:
            features = _embed(cache, train_samples, progress, "train").to(device)
        else:
            features = None
            task = progress.task("log-mel train", len(train_samples))
            audio_inputs = {k: v.to(device) for k, v in cache.inputs(
                [s.path for s in train_samples], progress=lambda n: progress.advance(task, n)).items()}
        labels = torch.tensor([s.label for s in train_samples], dtype=torch.long, device=device)

        # ---- learner (+ SEPT)
        torch.manual_seed(cfg.seed)
        learner = build_learner(cfg.method, bb, classes, cfg).to(device)
        run = Run(cfg, learner, classes, features, labels, logit_scale,
                  audio_prompt=audio_prompt, audio_inputs=audio_inputs)
        neighbor_info = None
        if version is not None:
            run.neighbors, neighbor_info = load_neighbors(cfg, bb, store, version, classes, seen)
            if len(run.neighbors):
                run.sampler = NeighborSampler(run.neighbors.owners, cfg.neighbor_budget, cfg.seed)
                run.sept = SeptLoss(cfg.sept_lambda, cfg.sept_intra, cfg.sept_inter, cfg.sept_zero_margins)
            else:
                run.neighbors = None
        trainable = is_trained(cfg, learner, audio_prompt)
        if trainable:
            run.optimizer = torch.optim.SGD(trained_param_groups(cfg, learner, audio_prompt), lr=cfg.lr,
                                            momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            run.scheduler = lr_scheduler(run.optimizer, cfg)

        # ---- resume
        start_epoch = 0
        if resume:
            path = latest_checkpoint(run_dir)
            state = load_checkpoint(path)
            check_resumable(state["config"], cfg.to_dict(), path)
            load_trained(learner, audio_prompt, state, path)
            if run.optimizer is not None and state["optimizer"] is not None:
                run.optimizer.load_state_dict(state["optimizer"])
            if run.scheduler is not None and state["scheduler"] is not None:
                run.scheduler.load_state_dict(state["scheduler"])
            run.history = list(state["history"])
            restore_rng(state)
            start_epoch = state["epoch"]
            progress.log(f"resumed from {path} (epoch {start_epoch})")
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        atomic_write_json(run_dir / FEWSHOT_FILE, fewshot)
        if class_split is not None:
            atomic_write_json(run_dir / "split.json", class_split.to_dict())

        # ---- the loop
        last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        evals: dict[int, dict[str, float]] = {}
        for epoch in range(start_epoch, last if trainable else 0):
            task = progress.task(f"epoch {epoch + 1}/{cfg.epochs}", run.steps_per_epoch)
            t0 = time.perf_counter()
            losses = run_epoch(run, epoch, on_step=lambda: progress.advance(task))
            losses["seconds"] = time.perf_counter() - t0
            run.history.append(losses)
            progress.info(task, " ".join(f"{k} {v:.4f}" for k, v in losses.items() if k != "seconds"))
            save_checkpoint(run_dir, epoch + 1, run.state())
            if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
                evals[epoch + 1] = {split: evaluate(learner, _embed(cache, s, progress, split).to(device),
                                                    [x.label for x in s], c, logit_scale)["accuracy"]
                                    for split, (c, s) in eval_splits.items()}
        if trainable and last < cfg.epochs:
            return {"stopped_at_epoch": last, "run_dir": str(run_dir), "history": run.history}

        # ---- evaluation
        metrics, transfer = evaluate_all(learner, cache, eval_splits, targets, logit_scale, progress, cfg.base_to_new)

    results = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "config": cfg.to_dict(),
        "dataset": {"name": ds.name, "root": str(ds.root), "fold": ds.fold, "sources": ds.sources,
                    "classes": ds.classes, "n_train": len(train_samples), "n_test": len(ds.test)},
        "classes": {split: c for split, (c, _) in eval_splits.items()},
        "backbone": {"fingerprint": bb.fingerprint, "amodel": bb.amodel, "logit_scale": logit_scale,
                     "device": device},
        "protocol": "base2new" if class_split is not None else ("cross" if targets else "all"),
        "neighbors": neighbor_info,
        "params": trainable_counts(learner, audio_prompt),
        "metrics": metrics,
        "transfer": transfer,
        "history": run.history,
        "evals": evals,
        "cache": {"hits": cache.hits, "misses": cache.misses, "dir": str(cache.dir)},
        "seconds": time.time() - started,
    }
    if class_split is not None:
        results["split"] = class_split.to_dict()
    if neighbor_info and neighbor_info.get("allow_visible_new"):
        # the leak ablation: its figures are not base-to-new figures
        results["visible_new"] = neighbor_info["visible_new"]
    atomic_write_json(run_dir / "results.json", results)
    return results


def train_seeds(cfg: TrainConfig, seeds: list[int], **kwargs) -> dict[str, Any]:
    """One run per seed, then summary.json (mean ± std of every headline figure) beside the runs."""
    runs = [train(cfg.replace(seed=s), **kwargs) for s in seeds]
    summary = {"seeds": seeds, "runs": [r["run_dir"] for r in runs], "summary": summarize(runs)}
    name = Path(runs[0]["run_dir"]).name.rsplit("-seed", 1)[0]
    atomic_write_json(Path(cfg.out_dir) / f"{name}-summary.json", summary)
    return summary


def evaluate_run(run_dir: str | Path, *, targets: list[str] | None = None, backbone=None,
                 epoch: int | None = None) -> dict[str, Any]:
    """Re-evaluate a trained run from its checkpoint, on its own test split(s) and on `targets`.

    Writes <run_dir>/eval.json and returns it.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise TrainError(f"{run_dir} is not a run folder (no config.json)")
    cfg = config_from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.dataset_root, cfg.fold, cfg.train_csv, cfg.test_csv, cfg.dataset_name)
    target_sets = [load_dataset(t) for t in (targets or [])]
    class_split = run_split(cfg, ds)
    classes, eval_splits = _splits(ds, class_split)
    saved_split = run_dir / "split.json"
    if class_split is not None and saved_split.is_file() and \
            json.loads(saved_split.read_text(encoding="utf-8")) != class_split.to_dict():
        raise TrainError(f"{saved_split}: the run was trained on another split than {cfg.split!r} gives now "
                         f"(has its split file changed?)")
    bb = backbone if backbone is not None else load_run_backbone(cfg, device)
    logit_scale = cfg.logit_scale if cfg.logit_scale is not None else bb.logit_scale
    torch.manual_seed(cfg.seed)
    learner = build_learner(cfg.method, bb, classes, cfg).to(device)
    audio_prompt = build_audio_prompt(cfg.audio_prompt, bb)
    used = None
    if is_trained(cfg, learner, audio_prompt):
        path = checkpoint_path(run_dir, epoch) if epoch else latest_checkpoint(run_dir)
        if path is None or not path.is_file():
            raise TrainError(f"no checkpoint {'for epoch ' + str(epoch) if epoch else ''} in {checkpoint_dir(run_dir)}")
        load_trained(learner, audio_prompt, load_checkpoint(path), path)
        used = str(path)
    cache = audio_features_source(cfg.cache_dir, bb, audio_prompt, cfg.crop, normalize=audio_normalized(cfg))
    metrics, transfer = evaluate_all(learner, cache, eval_splits, target_sets, logit_scale, RunProgress(False),
                                     cfg.base_to_new)
    out = {"run_dir": str(run_dir), "checkpoint": used, "metrics": metrics, "transfer": transfer,
           "cache": {"hits": cache.hits, "misses": cache.misses}}
    atomic_write_json(run_dir / "eval.json", out)
    return out
