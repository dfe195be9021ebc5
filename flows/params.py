"""Flow parameters: validation through the pipeline's one parameter model, and the task runner.

Deployment defaults arrive as strings (see flows/prefect.yaml): "" means unset, and an
unresolved "{{ $VAR }}" means the deployment was made without that variable.
"""
from __future__ import annotations

from typing import Any

TASK_RUNNERS = ("threads", "dask")
# flow parameters whose None means "PipelineConfig's default", not "none"
_DEFAULT_WHEN_NONE = ("min_self", "confuser_margin", "model")


class ParameterError(ValueError):
    """A flow parameter is invalid; the message names it."""


def clean_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop unset values; refuse unresolved deployment placeholders, naming the parameter."""
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
        if value is None and name in _DEFAULT_WHEN_NONE:
            continue
        out[name] = value
    return out


def validate_config(params: dict[str, Any]):
    """PipelineConfig from flow parameters; raises ParameterError naming each bad parameter."""
    from pydantic import ValidationError

    from sept.pipeline.run import PipelineConfig, config_error_text

    try:
        return PipelineConfig.model_validate(clean_params(params))
    except ValidationError as e:
        raise ParameterError(f"invalid parameters: {config_error_text(e)}") from None


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
