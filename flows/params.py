"""Flow parameters: the `generate-neighbors` signature built from the pipeline's one parameter
model, their validation through it, and the task runner.

`flow_parameters()` is every PipelineConfig field as a flat, keyword-only flow parameter (same
name, default and help; a path is a string, as a deployment passes it) followed by the
flow's own FLOW_OPTIONS. Deployment defaults arrive as strings (see flows/prefect.yaml): ""
means unset, and an unresolved "{{ $VAR }}" means the deployment was made without that
variable.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sept.pipeline.run import ConfigError, config_fields

TASK_RUNNERS = ("threads", "dask")


class ParameterError(ConfigError):
    """A flow parameter is invalid; the message names it."""


@dataclass(frozen=True)
class FlowOption:
    """A parameter of the flow that is not a PipelineConfig field (how the run is executed)."""

    name: str
    type: Any
    default: Any
    help: str


FLOW_OPTIONS = (
    FlowOption("task_runner", str, "threads", f"Task runner: {' | '.join(TASK_RUNNERS)} (a LocalCluster of "
                                              "dask_workers processes, or the cluster at dask_address)."),
    FlowOption("dask_workers", int, 2, "Worker processes of the local Dask cluster."),
    FlowOption("dask_address", Optional[str], None, "Address of a running Dask cluster."),
    FlowOption("task_retries", int, 2, "Retries of a failed class's generation task."),
    FlowOption("retry_delay_seconds", float, 5.0, "Delay before the first retry; each next one waits 4x longer."),
)


def flow_parameters() -> list[inspect.Parameter]:
    """The `generate-neighbors` flow's parameters: PipelineConfig's fields, then FLOW_OPTIONS."""
    params = []
    for f in config_fields():
        kind = str if f.type is Path else f.type
        annotation = Optional[kind] if f.optional else kind
        default = inspect.Parameter.empty if f.required else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))
    for o in FLOW_OPTIONS:
        params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default,
                                        annotation=o.type))
    return params


def flow_docstring(summary: str) -> str:
    """`summary` and an Args section with every parameter's help: Prefect reads the
    descriptions of the parameter schema (UI, `prefect deployment inspect`) from it."""
    lines = [summary.strip(), "", "Args:"]
    lines += [f"    {f.name}: {f.help}" for f in config_fields()]
    lines += [f"    {o.name}: {o.help}" for o in FLOW_OPTIONS]
    return "\n".join(lines) + "\n"


def clean_params(params: dict[str, Any], none_means_default: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """Drop unset values ("", and None for the names in `none_means_default`); refuse
    unresolved deployment placeholders, naming the parameter."""
    out = {}
    for name, value in params.items():
        if isinstance(value, str):
            if value.strip().startswith("{{") and value.strip().endswith("}}"):
                raise ParameterError(
                    f"parameter {name!r} is the unresolved deployment placeholder {value!r}: "
                    f"set {value.strip()[2:-2].strip().lstrip('$')} when running `prefect deploy` "
                    f"(`sept stack up` does), or pass --param {name}=..."
                )
            if value == "":
                continue
        if value is None and name in none_means_default:
            continue
        out[name] = value
    return out


def validate_config(params: dict[str, Any]):
    """PipelineConfig from flow parameters; raises ParameterError naming each bad parameter."""
    from sept.pipeline.run import config_from

    # None for a field that does not take None means "its default" (a required field is then
    # reported missing by the validation)
    no_none = {f.name for f in config_fields() if not f.optional}
    try:
        return config_from(clean_params(params, no_none))
    except ParameterError:
        raise
    except ConfigError as e:
        raise ParameterError(f"invalid parameters: {e}") from None


def task_runner(kind: str, concurrency: int, dask_workers: int, dask_address: str | None):
    """Task runner by name: "threads", a pool of `concurrency` threads; "dask", a LocalCluster of `dask_workers`
    processes, or the existing cluster at `dask_address`."""
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=concurrency)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # one thread per worker process: the models are loaded once per process and
        # torch already uses the cores
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None},
        )
    raise ParameterError(f"parameter 'task_runner': unknown task runner {kind!r} (known: {', '.join(TASK_RUNNERS)})")
