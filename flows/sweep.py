"""The `train-sweep` flow: every (dataset, fold, method, SEPT arm, seed) of a bench as one task.

    sept bench base2new --datasets-root Audio-Datasets --checkpoint clap.pt --methods coop,kgcoop \\
        --sept off,on --neighbors base-v1 --seeds 1,2,3
    prefect deployment run 'train-sweep/default' --param datasets_root=Audio-Datasets \\
        --param methods=coop,kgcoop --param neighbors=base-v1 --watch

Planning, aggregation and the bench folder's files come from sept.sweeps; this module only
runs them: a run whose results.json holds the same config hash is skipped (a bench resumes), a
failed run fails alone while the others go on, and the flow fails at the end listing every
failed run with its reason, after the tables are written.

Task runners: `threads` (concurrency = visible GPUs, 1 on the CPU) and `ray` (prefect-ray: each
run a Ray task with `num_gpus` GPUs, fractional allowed, on a local cluster of `ray_workers`
CPUs or the cluster at `ray_address`). Ray needs a real Prefect server (`sept stack up`), not
the ephemeral one.
"""
from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

# Prefect loads this file by path; the task comes from the installed package (Ray workers
# unpickle it by module name).
from sept.errors import SeptError
from sept.flows import sweep_tasks
from sept.flows.params import ParameterError, clean_params
from sept.sweeps import BenchError, load_record, plan_bench, spec_from, write_json, write_outputs

TASK_RUNNERS = ("threads", "ray")
SUMMARY = "summary.json"


class SweepFailed(SeptError, RuntimeError):
    """Some runs of the sweep failed; the others finished and the tables are written."""


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_task_runner(kind: str, ray_address: str | None = None, ray_workers: int = 2):
    """"threads": one thread per visible GPU (1 on the CPU); "ray": a local Ray cluster of `ray_workers`
    CPUs, or the running cluster at `ray_address`."""
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, visible_gpus()))
    if kind == "ray":
        from prefect_ray import RayTaskRunner

        if ray_address:
            return RayTaskRunner(address=ray_address, init_kwargs=_ray_env())
        if ray_workers < 1:
            raise ParameterError(f"parameter 'ray_workers' must be >= 1 (got {ray_workers})")
        return RayTaskRunner(init_kwargs={"num_cpus": ray_workers, "include_dashboard": False, **_ray_env()})
    raise ParameterError(f"parameter 'task_runner': unknown task runner {kind!r} (known: {', '.join(TASK_RUNNERS)})")


def _ray_env() -> dict[str, Any]:
    """Workers of an existing cluster do not inherit this process's environment: pass on where the
    Prefect API is (never a key or token)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return {"runtime_env": {"env_vars": {"PREFECT_API_URL": url}}} if url else {}


def require_server(task_runner: str) -> None:
    """Ray tasks report to the Prefect API from other processes: the ephemeral server cannot serve them."""
    from prefect.settings import PREFECT_API_URL

    if task_runner == "ray" and not PREFECT_API_URL.value():
        raise ParameterError("task runner 'ray' needs a running Prefect server: `sept stack up`, then "
                             "`source .sept/stack/env.sh` (PREFECT_API_URL is not set)")


def _run_tasks(runs: list[dict[str, Any]], task_runner: str, num_gpus: float) -> dict[str, dict[str, Any]]:
    """Submit every run to the current flow's task runner and collect them as they finish.
    Returns {run name: {"ok": bool, "info" | "error": ...}}, whatever fails."""
    from contextlib import nullcontext

    from prefect.futures import as_completed

    logger = get_run_logger()
    if task_runner == "ray":
        from prefect_ray.context import remote_options

        # Ray's default for GPU tasks is a fresh worker process per task (max_calls=1), which would
        # reload CLAP for every run: keep workers alive
        options = remote_options(num_gpus=num_gpus, num_cpus=1, **({"max_calls": 0} if num_gpus else {}))
    else:
        options = nullcontext()
    with options:
        futures = {sweep_tasks.train_run_task.submit(r["name"], r["config"], r["config_hash"]): r["name"]
                   for r in runs}
    progress = sweep_tasks.current_display()
    outcome: dict[str, dict[str, Any]] = {}
    for i, future in enumerate(as_completed(list(futures)), 1):
        name = futures[future]
        try:
            info = future.result(raise_on_failure=False)
        except Exception as e:  # noqa: BLE001 - a result that cannot be read is itself the reason
            info = e
        # decided by the value: a just-finished future's state may still read as Running
        if isinstance(info, dict) and info.get("name") == name:
            outcome[name] = {"ok": True, "info": info}
            logger.info(f"[{i}/{len(runs)}] {name}: done in {info['ended'] - info['started']:.1f} s "
                        f"on {info['worker']}")
        else:
            reason = (f"{type(info).__name__}: {info}" if isinstance(info, BaseException)
                      else (future.state.message or future.state.name))
            outcome[name] = {"ok": False, "error": reason}
            logger.error(f"[{i}/{len(runs)}] {name}: FAILED: {reason}")
        if progress is not None:
            progress.bar.advance(progress.runs)
    return outcome


@flow(name="train-sweep-ray", persist_result=False)
def _runs_on_ray(runs: list[dict[str, Any]], num_gpus: float) -> dict[str, dict[str, Any]]:
    """The runs as Ray tasks: a flow's task runner is fixed when it starts, hence a subflow."""
    return _run_tasks(runs, "ray", num_gpus)


def _thread_slots() -> int:
    return max(1, visible_gpus())


@flow(name="train-sweep", persist_result=False, validate_parameters=True,
      task_runner=ThreadPoolTaskRunner(max_workers=_thread_slots()))
def train_sweep(
    datasets_root: str,
    protocol: str = "base2new",
    checkpoint: str = "",
    methods: str | list[str] = "coop",
    recipe: str = "palm",
    sept: str | list[str] = "off,on",
    neighbors: str | None = None,
    random_neighbors: str = "random",
    seeds: str | int | list[int] = "1",
    datasets: str | list[str] = "",
    folds: str | int = "all",
    split: str = "sorted",
    split_seed: int = 42,
    source: str | None = None,
    targets: str | list[str] = "",
    options: str | list[str] = "",
    out: str = "bench",
    store: str | None = None,
    fewshot_dir: str | None = None,
    task_runner: str = "threads",
    ray_address: str | None = None,
    ray_workers: int = 2,
    num_gpus: float | None = None,
    check_data: bool = True,
) -> dict[str, Any]:
    """Run a bench (see `sept bench --help`): plan, train what is not done, write runs.csv,
    table.md, table.csv, plots/ and summary.json into `out`. Returns the summary; fails at the end
    when a run failed, listing each with its reason.

    methods, sept (arms off,on,random), seeds, datasets, targets: comma-separated or lists.
    methods entries: [dept:]METHOD[+aspl|+aspl+][@RECIPE]; recipe: palm | reference, of the entries without one.
    options: training key=value (METHOD.key=value for one method), space-separated or a list.
    num_gpus: GPUs per Ray task (fractional allowed); default 1 when this machine sees a GPU, else 0.
    """
    logger = get_run_logger()
    t0 = time.time()
    # `prefect deployment run --param seeds=1` arrives as a number
    seeds = str(seeds) if isinstance(seeds, int) else seeds
    given = clean_params(dict(datasets_root=datasets_root, protocol=protocol, checkpoint=checkpoint, methods=methods,
                              recipe=recipe, sept=sept, neighbors=neighbors, random_neighbors=random_neighbors, seeds=seeds,
                              datasets=datasets, folds=str(folds), split=split, split_seed=split_seed, source=source,
                              targets=targets, options=options, out=out, store=store,
                              fewshot_dir=fewshot_dir))
    if num_gpus is not None and num_gpus < 0:
        raise ParameterError(f"parameter 'num_gpus' must be >= 0 (got {num_gpus})")
    if task_runner not in TASK_RUNNERS:
        raise ParameterError(f"parameter 'task_runner': unknown task runner {task_runner!r} "
                             f"(known: {', '.join(TASK_RUNNERS)})")
    require_server(task_runner)
    try:
        spec = spec_from(given)
        plan = plan_bench(spec, check_data=check_data)
    except BenchError as e:
        raise ParameterError(str(e)) from None
    if not plan.ok:
        raise ParameterError("the bench cannot start:\n" + plan.describe_problems())

    todo = [r for r in plan.runs if not r.done()]
    lacking = [r.name for r in todo if not r.config.get("checkpoint")]
    if lacking:
        raise ParameterError(f"parameter 'checkpoint' is required to train ({len(lacking)} run(s) to train, "
                             f"e.g. {lacking[0]}): the path of a LAION-CLAP checkpoint")
    logger.info(f"{spec.protocol}: {len(plan.runs)} runs over {', '.join(plan.datasets)}; "
                f"{len(plan.runs) - len(todo)} done already, {len(todo)} to train (task runner {task_runner})")
    outcome: dict[str, dict[str, Any]] = {}
    if todo:
        gpus = (1.0 if visible_gpus() else 0.0) if num_gpus is None else float(num_gpus)
        payload = [{"name": r.name, "config": r.config, "config_hash": r.config_hash} for r in todo]
        if task_runner == "threads":
            # this flow's own runner: one thread per visible GPU
            outcome = _run_tasks(payload, task_runner, gpus)
        else:
            runner = make_task_runner(task_runner, ray_address, ray_workers)
            outcome = _runs_on_ray.with_options(task_runner=runner)(payload, gpus)

    records = []
    for run in plan.runs:
        got = outcome.get(run.name)
        if got is None:
            records.append(load_record(run, "skipped"))
        elif got["ok"]:
            records.append(load_record(run, "trained"))
        else:
            records.append(load_record(run, "failed", error=got["error"]))
    written = write_outputs(plan, records)
    failures = [{"run": r.name, "dataset": r.dataset, "fold": r.fold, "method": r.method, "arm": r.arm,
                 "seed": r.seed, "reason": r.error} for r in records if r.status == "failed"]
    loads: dict[str, int] = {}
    for r in records:
        if r.status == "trained" and r.worker:
            loads[r.worker] = max(loads.get(r.worker, 0), r.clap_loads or 0)
    summary = {
        "protocol": spec.protocol, "out": str(plan.out), "runs": len(plan.runs),
        "trained": sum(r.status == "trained" for r in records),
        "skipped": sum(r.status == "skipped" for r in records),
        "failed": failures, "task_runner": task_runner, "clap_loads_per_worker": loads,
        "seconds": time.time() - t0, "files": written["files"],
    }
    write_json(plan.out / SUMMARY, summary)
    logger.info("table:\n" + (plan.out / "table.md").read_text(encoding="utf-8"))
    logger.info("summary " + json.dumps({k: v for k, v in summary.items() if k not in ("failed", "files")},
                                         sort_keys=True))
    if failures:
        lines = [f"{f['run']}: {f['reason']}" for f in failures]
        raise SweepFailed(f"{len(failures)} of {len(plan.runs)} run(s) failed (the others finished; tables in "
                          f"{plan.out}):\n  " + "\n  ".join(lines))
    return summary
