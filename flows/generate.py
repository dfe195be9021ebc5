"""Prefect flows that wire the pipeline stages to the neighbor store.

`generate-neighbors`: validate parameters (PipelineConfig) -> one generation task per class
(retried with backoff, cached on its inputs, bounded by the global concurrency limit
`llm-<backend>`) -> the pipeline's `clean` chain (dedup -> CLAP filter -> margins), each stage a
task -> write the version, last. A failed class fails the run before anything is written. Its
parameters are PipelineConfig's fields, flat (sept.flows.params.flow_parameters), and the
flow's own task-runner options.

`compute-margins`: margins of an existing version under a CLAP text encoder.

No stage logic lives here: every task calls a `pipeline` function. Deployments name the flows
by module (`sept.flows.generate:generate_neighbors`), so they run from an installed package.

    prefect deployment run 'generate-neighbors/vllm-local' --param dataset=esc50 --watch
    python -c "from sept.flows.generate import generate_neighbors; generate_neighbors(dataset='esc50', ...)"
"""
from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger

from sept.flows.params import (
    FLOW_OPTIONS,
    ParameterError,
    clean_params,
    flow_docstring,
    flow_parameters,
    task_runner as make_task_runner,
    validate_config,
)
from sept.flows.tasks import attach_margins_task, call_as_task, generate_class_task, provenance_task, write_version_task
from sept.pipeline.run import PipelineConfig


# ---- flows ---------------------------------------------------------------------------------

def _cost(cfg, results: dict[str, Any], prefect_cached: set[str], wall: float) -> list[dict]:
    """The manifest's `cost`: this run's requests, retries, cache hits, tokens and wall time."""
    from sept.pipeline.generate import generation_cost

    return [generation_cost({"backend": cfg.backend, "model": cfg.model}, results, wall, prefect_cached)]


def _log_summary(logger, ref: str, summary: dict) -> None:
    lines = [f"{'class':<32} {'kept':>5} {'rejected':>8} {'requests':>8}"]
    for c, s in summary["classes"].items():
        lines.append(f"{c[:32]:<32} {s['kept']:>5} {s['rejected']:>8} {s['requests']:>8}")
    logger.info("per class:\n" + "\n".join(lines))
    logger.info(f"LLM requests: {summary['requests']}, response cache hits: {summary['response_cache_hits']}, "
                f"classes from the task cache: {summary['task_cache_hits']}")
    from sept.neighbor_store.cost import format_cost

    for cost in summary.get("cost", []):
        logger.info(f"cost: {format_cost(cost)}")
    # one machine-readable line (also what the tests read)
    # (cost has its own line above: kept out so this one stays short enough not to be wrapped)
    logger.info("summary " + json.dumps({k: v for k, v in summary.items() if k not in ("classes", "cost", "cross_class")},
                                        sort_keys=True))
    logger.info(f"new version: {ref}")
    try:
        from prefect.artifacts import create_markdown_artifact

        table = "\n".join(f"| {c} | {s['kept']} | {s['rejected']} | {s['requests']} |"
                          for c, s in summary["classes"].items())
        create_markdown_artifact(
            key="neighbors-summary",
            markdown=(f"**{ref}**\n\nLLM requests: {summary['requests']}, response cache hits: "
                      f"{summary['response_cache_hits']}, classes from the task cache: {summary['task_cache_hits']}"
                      f"\n\n| class | kept | rejected | requests |\n|---|---|---|---|\n{table}\n"),
            description="kept/rejected neighbors per class",
        )
    except Exception as e:  # an artifact is a nicety; the version is written already
        logger.warning(f"could not create the summary artifact: {e}")


@flow(name="generate-neighbors-stages", persist_result=False)
def _stages(run: dict[str, Any], classes: list[str], prompt_ref: str, task_retries: int,
            retry_delay_seconds: float) -> tuple[str, dict]:
    """The stages under the chosen task runner (a flow's runner is fixed when it starts,
    hence a subflow). Returns (reference, summary)."""
    from sept.pipeline.run import clean, provenance_stage

    cfg = PipelineConfig.model_validate(run)
    delays = [retry_delay_seconds * (4 ** i) for i in range(max(task_retries, 1))]
    gen = generate_class_task.with_options(retries=task_retries, retry_delay_seconds=delays)
    # loads the CLAP backbone while the LLM works: a bad checkpoint fails the run early
    early = {provenance_stage: provenance_task.submit(run)}
    started = time.monotonic()
    futures = {c: gen.submit(c, classes, prompt_ref, run) for c in classes}

    results, failed, prefect_cached = {}, {}, set()
    for c, fut in futures.items():
        fut.wait()
        state = fut.state
        if state.is_completed():
            results[c] = fut.result()
            if state.name == "Cached":
                prefect_cached.add(c)
        else:
            out = fut.result(raise_on_failure=False)
            failed[c] = str(out) if isinstance(out, BaseException) else (state.message or state.name)
    if failed:
        reasons = "; ".join(failed.values())
        raise RuntimeError(f"generation failed for {len(failed)} of {len(classes)} class(es), no version written: "
                           f"{reasons}")

    wall = time.monotonic() - started
    result = clean(cfg, classes, results, call=call_as_task(early), not_run=prefect_cached)
    result.stats["cost"] = _cost(cfg, results, prefect_cached, wall)
    ref = write_version_task.submit(result, run).result()
    return ref, result.stats


def _generate_neighbors(**params: Any) -> str:
    options = {o.name: params.pop(o.name) for o in FLOW_OPTIONS}
    task_runner, dask_workers = options["task_runner"], options["dask_workers"]
    task_retries, retry_delay_seconds = options["task_retries"], options["retry_delay_seconds"]
    from sept.pipeline.run import resolve_inputs

    logger = get_run_logger()
    if task_retries < 0:
        raise ParameterError(f"parameter 'task_retries' must be >= 0 (got {task_retries})")
    if retry_delay_seconds < 0:
        raise ParameterError(f"parameter 'retry_delay_seconds' must be >= 0 (got {retry_delay_seconds})")
    if dask_workers < 1:
        raise ParameterError(f"parameter 'dask_workers' must be >= 1 (got {dask_workers})")
    cfg = validate_config(params)
    try:
        class_list, prompt, _ = resolve_inputs(cfg)
    except ParameterError:
        raise
    except ValueError as e:   # ConfigError: the message names the parameter
        raise ParameterError(str(e)) from None
    runner = make_task_runner(task_runner, cfg.concurrency, dask_workers, options["dask_address"])
    if cfg.split or cfg.visible_classes_file:
        logger.info(f"visible classes ({f'split {cfg.split}, {cfg.split_policy}' if cfg.split else cfg.visible_classes_file}): "
                    + ", ".join(class_list))
    logger.info(f"{cfg.dataset}: {len(class_list)} classes, backend {cfg.backend} ({cfg.model}), "
                f"task runner {task_runner}")
    if cfg.message:
        logger.info(cfg.message)
    run = cfg.model_dump(mode="json")
    ref, summary = _stages.with_options(task_runner=runner)(run, class_list, prompt.ref, task_retries,
                                                            retry_delay_seconds)
    _log_summary(logger, ref, summary)
    return ref


# The signature is PipelineConfig's (flat) plus the flow's options: one declaration of each
# option, its default and its help (the docstring's Args, which Prefect shows per parameter).
_generate_neighbors.__signature__ = inspect.Signature(flow_parameters(), return_annotation=str)
_generate_neighbors.__annotations__ = {p.name: p.annotation
                                       for p in _generate_neighbors.__signature__.parameters.values()}
_generate_neighbors.__doc__ = flow_docstring(
    """Generate, clean and score semantic neighbors for every class of `dataset` and write
    them as a new version of the neighbor store. Returns its reference "dataset@<id>".

    Classes: `classes`, else `classes_file`, else `dataset_root` (PALM layout), else the
    bundled list of `dataset` (e.g. esc50). `split` or `visible_classes_file` limits the run
    to those classes: the LLM prompts, the CLAP filter and the audio check see no other class,
    and the manifest records `visible_classes` (and the resolved split). Without
    `clap_checkpoint` the CLAP filter and margins are skipped (the manifest says so).""")
_generate_neighbors.__name__ = _generate_neighbors.__qualname__ = "generate_neighbors"
generate_neighbors = flow(name="generate-neighbors", persist_result=False, validate_parameters=True)(
    _generate_neighbors)


def _default(name: str) -> Any:
    return PipelineConfig.model_fields[name].default


@flow(name="compute-margins", persist_result=False)
def compute_margins(
    ref: str,
    clap_checkpoint: str,
    clap_tokenizer: Optional[str] = _default("clap_tokenizer"),
    clap_amodel: str = _default("clap_amodel"),
    clap_fusion: bool = _default("clap_fusion"),
    trust_checkpoint: bool = _default("trust_checkpoint"),
    templates: str = _default("templates"),
    store: Optional[str] = _default("store"),
) -> str:
    """Attach margins [C, K] of version `ref` under the CLAP text encoder of
    `clap_checkpoint`. Returns the encoder fingerprint the margins are stored under.
    The other parameters mean what PipelineConfig's fields of the same name mean."""
    logger = get_run_logger()
    cleaned = clean_params(dict(ref=ref, clap_checkpoint=clap_checkpoint, clap_tokenizer=clap_tokenizer,
                                 templates=templates, store=store))
    if "ref" not in cleaned:
        raise ParameterError("parameter 'ref' is required (DATASET@VERSION)")
    if "clap_checkpoint" not in cleaned or not Path(cleaned["clap_checkpoint"]).is_file():
        raise ParameterError(f"parameter 'clap_checkpoint': {clap_checkpoint!r} is not a file")
    fingerprint, stored = attach_margins_task(cleaned["ref"], cleaned["clap_checkpoint"],
                                               cleaned.get("clap_tokenizer"), clap_amodel, clap_fusion,
                                               cleaned.get("templates", _default("templates")), cleaned.get("store"),
                                               trust_checkpoint)
    logger.info(f"margins of {stored} under encoder {fingerprint}")
    return fingerprint
