"""Prefect flows that wire the pipeline stages to the neighbor store.

`generate-neighbors`: validate parameters (PipelineConfig) -> one generation task per class
(retried with backoff, cached on its inputs, bounded by the global concurrency limit
`llm-<backend>`) -> dedup -> CLAP filter -> margins -> write the version, last. A failed
class fails the run before anything is written.

`compute-margins`: margins of an existing version under a CLAP text encoder.

No stage logic lives here: every task calls a `pipeline` function.

    prefect deployment run 'generate-neighbors/vllm-local' --param dataset=esc50 --watch
    python -c "from flows.generate import generate_neighbors; generate_neighbors(dataset='esc50', ...)"
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

# Prefect loads this file by path; the tasks must come from the importable package
# (Dask workers unpickle them by module name).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from sept.flows.params import ParameterError, clean_params, task_runner as make_task_runner, validate_config  # noqa: E402
from sept.flows.tasks import (  # noqa: E402
    attach_margins_task,
    clap_filter_task,
    dedup_task,
    generate_class_task,
    margins_task,
    provenance_task,
    write_version_task,
)


# ---- flows ---------------------------------------------------------------------------------

def _summary(classes: list[str], results: dict[str, Any], prefect_cached: set[str], deduped, filtered) -> dict:
    """Per class kept/rejected, and the run's LLM request figures. A class whose task result
    came from Prefect's cache made no request in this run, whatever its stored figures say."""
    per_class = {}
    requests = cache_hits = 0
    for c in classes:
        r = results[c]
        ran = c not in prefect_cached
        requests += r.requests if ran else 0
        cache_hits += r.cache_hits if ran else 0
        kept = len((filtered or deduped).kept[c])
        n_dedup = deduped.info.get("counts", {}).get(c, {}).get("rejected", 0) if deduped.info else 0
        n_clap = len(deduped.kept[c]) - kept
        per_class[c] = {"kept": kept, "rejected": len(r.invalid) + n_dedup + n_clap,
                        "requests": r.requests if ran else 0, "cached": not ran or (r.requests == 0)}
    return {"classes": per_class, "requests": requests, "response_cache_hits": cache_hits,
            "task_cache_hits": len(prefect_cached), "kept": sum(v["kept"] for v in per_class.values()),
            "rejected": sum(v["rejected"] for v in per_class.values())}


def _cost(run: dict[str, Any], results: dict[str, Any], prefect_cached: set[str], wall: float) -> list[dict]:
    """The manifest's `cost`: this run's requests, retries, cache hits, tokens and wall time."""
    from sept.pipeline.generate import generation_cost

    return [generation_cost({"backend": run["backend"], "model": run["model"]}, results, wall, prefect_cached)]


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
    logger.info("summary " + json.dumps({k: v for k, v in summary.items() if k not in ("classes", "cost")},
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
    from sept.pipeline.run import PipelineResult

    delays = [retry_delay_seconds * (4 ** i) for i in range(max(task_retries, 1))]
    gen = generate_class_task.with_options(retries=task_retries, retry_delay_seconds=delays)
    # loads the CLAP backbone while the LLM works: a bad checkpoint fails the run early
    params_future = provenance_task.submit(run)
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
    rejected = [r for c in classes for r in results[c].invalid]
    deduped = dedup_task.submit({c: results[c].candidates for c in classes}, run).result()
    rejected += deduped.rejected
    kept, filtered, margins = deduped.kept, None, None
    params = params_future.result()
    if run.get("clap_checkpoint"):
        filtered = clap_filter_task.submit(kept, classes, run).result()
        rejected += filtered.rejected
        kept = filtered.kept
    neighbors = [r for c in classes for r in kept[c]]
    if run.get("clap_checkpoint"):
        margins = margins_task.submit(classes, neighbors, run).result()

    summary = _summary(classes, results, prefect_cached, deduped, filtered)
    summary["cost"] = _cost(run, results, prefect_cached, wall)
    result = PipelineResult(classes=classes, neighbors=neighbors, rejected=rejected, params=params,
                            margins=margins, stats=summary)
    ref = write_version_task.submit(result, run).result()
    return ref, summary


@flow(name="generate-neighbors", persist_result=False, validate_parameters=True)
def generate_neighbors(
    dataset: str,
    classes: list[str] | None = None,
    classes_file: str | None = None,
    dataset_root: str | None = None,
    split: str | None = None,
    split_policy: str = "sorted",
    split_seed: int = 42,
    visible_classes_file: str | None = None,
    backend: str = "vllm",
    model: str | None = None,
    base_url: str | None = None,
    n_per_class: int = 10,
    samples: int = 1,
    prompt: str = "default",
    temperature: float = 0.8,
    max_tokens: int = 512,
    seed: int | None = 0,
    dedup_threshold: float = 0.85,
    dedup_model: str | None = None,
    clap_checkpoint: str | None = None,
    clap_tokenizer: str | None = None,
    clap_amodel: str = "HTSAT-tiny",
    templates: str = "default",
    min_self: float | None = None,
    confuser_margin: float | None = None,
    audio_clips_per_class: int = 0,
    tag: str | None = None,
    store: str | None = None,
    cache_dir: str | None = None,
    concurrency: int = 8,
    max_attempts: int = 4,
    message: str = "",
    task_runner: str = "threads",
    dask_workers: int = 2,
    dask_address: str | None = None,
    task_retries: int = 2,
    retry_delay_seconds: float = 5.0,
) -> str:
    """Generate, clean and score semantic neighbors for every class of `dataset` and write
    them as a new version of the neighbor store. Returns its reference "dataset@<id>".

    Classes: `classes`, else `classes_file`, else `dataset_root` (PALM layout), else the
    bundled list of `dataset` (e.g. esc50). `split` ("base", "new" or "all") with
    `split_policy` (sorted | shuffled | file:PATH) and `split_seed`, or `visible_classes_file`
    (one class per line), limits the run to those classes: the LLM prompts, the CLAP filter
    and the audio check see no other class, and the manifest records `visible_classes` (and
    the resolved split). Without `clap_checkpoint` the CLAP filter and
    margins are skipped (the manifest says so). task_runner: "threads" (default) or "dask"
    (a LocalCluster of `dask_workers` processes, or the cluster at `dask_address`).
    task_retries / retry_delay_seconds: retries of a failed class, with 4x backoff.
    """
    params = dict(locals())
    for flow_only in ("task_runner", "dask_workers", "dask_address", "task_retries", "retry_delay_seconds"):
        params.pop(flow_only)
    from sept.pipeline.datasets import resolve_classes
    from sept.prompts import load_prompt

    logger = get_run_logger()
    if task_retries < 0:
        raise ParameterError(f"parameter 'task_retries' must be >= 0 (got {task_retries})")
    if retry_delay_seconds < 0:
        raise ParameterError(f"parameter 'retry_delay_seconds' must be >= 0 (got {retry_delay_seconds})")
    if dask_workers < 1:
        raise ParameterError(f"parameter 'dask_workers' must be >= 1 (got {dask_workers})")
    cfg = validate_config(params)
    try:
        class_list = resolve_classes(cfg)
    except (ValueError, OSError) as e:
        raise ParameterError(str(e)) from None
    try:
        prompt_ref = load_prompt(cfg.prompt).ref
    except (ValueError, OSError, KeyError) as e:
        raise ParameterError(f"parameter 'prompt': {e}") from None
    runner = make_task_runner(task_runner, cfg.concurrency, dask_workers, dask_address)
    if cfg.split or cfg.visible_classes_file:
        logger.info(f"visible classes ({f'split {cfg.split}, {cfg.split_policy}' if cfg.split else cfg.visible_classes_file}): "
                    + ", ".join(class_list))
    logger.info(f"{cfg.dataset}: {len(class_list)} classes, backend {cfg.backend} ({cfg.model}), "
                f"task runner {task_runner}")
    if cfg.message:
        logger.info(cfg.message)
    run = cfg.model_dump(mode="json")
    ref, summary = _stages.with_options(task_runner=runner)(run, class_list, prompt_ref, task_retries,
                                                            retry_delay_seconds)
    _log_summary(logger, ref, summary)
    return ref


@flow(name="compute-margins", persist_result=False)
def compute_margins(
    ref: str,
    clap_checkpoint: str,
    clap_tokenizer: str | None = None,
    clap_amodel: str = "HTSAT-tiny",
    clap_fusion: bool = False,
    templates: str = "default",
    store: str | None = None,
) -> str:
    """Attach margins [C, K] of version `ref` under the CLAP text encoder of
    `clap_checkpoint`. Returns the encoder fingerprint the margins are stored under."""
    from pathlib import Path

    logger = get_run_logger()
    cleaned = clean_params(dict(ref=ref, clap_checkpoint=clap_checkpoint, clap_tokenizer=clap_tokenizer,
                                 templates=templates, store=store))
    if "ref" not in cleaned:
        raise ParameterError("parameter 'ref' is required (DATASET@VERSION)")
    if "clap_checkpoint" not in cleaned or not Path(cleaned["clap_checkpoint"]).is_file():
        raise ParameterError(f"parameter 'clap_checkpoint': {clap_checkpoint!r} is not a file")
    fingerprint, stored = attach_margins_task(cleaned["ref"], cleaned["clap_checkpoint"],
                                               cleaned.get("clap_tokenizer"), clap_amodel, clap_fusion,
                                               cleaned.get("templates", "default"), cleaned.get("store"))
    logger.info(f"margins of {stored} under encoder {fingerprint}")
    return fingerprint
