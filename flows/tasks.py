"""Prefect tasks of the flows: each wraps one pipeline stage function (sept.pipeline.run).

Tasks take the run's config as a plain dict (JSON values) and rebuild PipelineConfig, so they
cross process boundaries (Dask workers unpickle them by module name); models come from
per-process caches (sept.pipeline.models, sept.clap), so a worker loads each model once however
many tasks it runs. `call_as_task` is the StageCall that makes `sept.pipeline.run.clean` run
its stages as these tasks: the chain itself is the pipeline's.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

# Config fields that change what the LLM answers; everything else (addresses, timings,
# concurrency, later stages) stays out of the generation task's cache key.
GENERATION_KEY_FIELDS = ("dataset", "backend", "model", "n_per_class", "samples", "temperature", "max_tokens", "seed")


def generation_cache_key(context, parameters: dict[str, Any]) -> str:
    """Prefect cache key of one class's generation: the class, the class list, the prompt
    content and the answer-changing settings; never a client object or an address."""
    from sept.pipeline.llm.schema import SCHEMA_VERSION

    run = parameters["run"]
    fields = {
        "class": parameters["class_name"],
        "classes": list(parameters["classes"]),
        "prompt": parameters["prompt_ref"],
        "schema": SCHEMA_VERSION,
        **{k: run.get(k) for k in GENERATION_KEY_FIELDS},
    }
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return "generate-class-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


@task(name="generate-class", cache_key_fn=generation_cache_key, persist_result=True,
      task_run_name="generate {class_name}")
def generate_class_task(class_name: str, classes: list[str], prompt_ref: str, run: dict[str, Any]):
    """sept.pipeline.generate.generate_class for one class, holding one slot of `llm-<backend>`.
    Returns its ClassResult; raises RuntimeError naming the class and the reason."""
    from prefect.concurrency.sync import concurrency

    from sept.pipeline.generate import GenerationError, generate_class
    from sept.pipeline.llm import ResponseCache, make_backend
    from sept.pipeline.run import PipelineConfig, generation_settings
    from sept.prompts import load_prompt

    cfg = PipelineConfig.model_validate(run)
    prompt = load_prompt(cfg.prompt)
    if prompt.ref != prompt_ref:
        raise RuntimeError(f"class {class_name!r}: prompt {cfg.prompt!r} changed during the run "
                           f"({prompt_ref} -> {prompt.ref})")
    cache = ResponseCache(cfg.cache_dir) if cfg.cache_dir else None

    async def go():
        backend = make_backend(cfg.backend, cfg.model, cfg.base_url)
        try:
            return await generate_class(backend, class_name, classes, prompt, generation_settings(cfg), cache)
        finally:
            await backend.aclose()

    # strict=False: without the limit (a flow called outside the stack) the slot is a no-op
    with concurrency(f"llm-{cfg.backend}", occupy=1, strict=False):
        try:
            return asyncio.run(go())
        except GenerationError as e:
            # a plain exception: it crosses process boundaries (Dask) and result storage intact
            raise RuntimeError(str(e)) from None


@task(name="dedup", cache_policy=NO_CACHE, persist_result=False)
def dedup_task(run: dict[str, Any], candidates: dict[str, list]):
    """sept.pipeline.run.dedup_stage."""
    from sept.pipeline.run import PipelineConfig, dedup_stage

    return dedup_stage(PipelineConfig.model_validate(run), candidates)


@task(name="clap-filter", cache_policy=NO_CACHE, persist_result=False)
def clap_filter_task(run: dict[str, Any], classes: list[str], kept: dict[str, list]):
    """sept.pipeline.run.clap_filter_stage."""
    from sept.pipeline.run import PipelineConfig, clap_filter_stage

    return clap_filter_stage(PipelineConfig.model_validate(run), classes, kept)


@task(name="margins", cache_policy=NO_CACHE, persist_result=False)
def margins_task(run: dict[str, Any], classes: list[str], neighbors: list):
    """sept.pipeline.run.margins_stage: (encoder fingerprint, margins [C, K], neighbor ids)."""
    from sept.pipeline.run import PipelineConfig, margins_stage

    return margins_stage(PipelineConfig.model_validate(run), classes, neighbors)


@task(name="provenance", cache_policy=NO_CACHE, persist_result=False)
def provenance_task(run: dict[str, Any]) -> dict[str, Any]:
    """sept.pipeline.run.provenance_stage; loads the backbone for its fingerprint."""
    from sept.pipeline.run import PipelineConfig, provenance_stage

    return provenance_stage(PipelineConfig.model_validate(run))


def _stage_tasks() -> dict:
    from sept.pipeline import run

    return {run.dedup_stage: dedup_task, run.clap_filter_stage: clap_filter_task,
            run.margins_stage: margins_task, run.provenance_stage: provenance_task}


def call_as_task(submitted: dict | None = None):
    """A StageCall (sept.pipeline.run) that runs each stage as its task under the flow's task
    runner and waits for it. `submitted`: stage -> a future already submitted for it (the
    flow starts the provenance early so a bad checkpoint fails while the LLM works); each is
    used once."""
    tasks = _stage_tasks()
    early = dict(submitted or {})

    def call(stage, cfg, *args):
        if stage in early:
            return early.pop(stage).result()
        return tasks[stage].submit(cfg.model_dump(mode="json"), *args).result()

    return call


@task(name="write-version", cache_policy=NO_CACHE, persist_result=False)
def write_version_task(result, run: dict[str, Any]) -> str:
    """sept.pipeline.run.write_result: the version, then its margins."""
    from sept.pipeline.run import PipelineConfig, write_result

    return write_result(None, PipelineConfig.model_validate(run), result)


@task(name="attach-margins", cache_policy=NO_CACHE, persist_result=False)
def attach_margins_task(ref, checkpoint, tokenizer, amodel, fusion, templates, store_root,
                        trust_checkpoint: bool = False) -> tuple[str, str]:
    """Margins [C, K] of version `ref` attached under the encoder's fingerprint.
    Returns (fingerprint, resolved reference)."""
    from sept.neighbor_store import Store
    from sept.pipeline.margins import compute_margins as margins_of
    from sept.clap import get_backbone
    from sept.pipeline.run import attach_margins
    from sept.prompts import load_templates

    store = Store(store_root)
    version = store.read(ref)
    backbone = get_backbone(checkpoint, amodel, fusion, tokenizer, trust_checkpoint=trust_checkpoint)
    template_set = load_templates(templates)
    values = margins_of(backbone, version.classes, version.neighbors, template_set)
    attach_margins(store, version.ref, backbone.fingerprint, values, [n.id for n in version.neighbors],
                   meta={"templates": template_set.ref})
    return backbone.fingerprint, version.ref
