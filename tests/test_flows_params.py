"""Flow parameters: deployment placeholders and PipelineConfig errors name the parameter."""
from __future__ import annotations

import pytest

from sept.errors import SeptError
from sept.flows.params import ParameterError, clean_params, task_runner, validate_config
from sept.pipeline.run import PipelineConfig


def test_unresolved_deployment_placeholder_is_refused_naming_parameter_and_variable():
    with pytest.raises(ParameterError, match=r"'model'.*SEPT_VLLM_MODEL"):
        clean_params({"dataset": "esc50", "model": "{{ $SEPT_VLLM_MODEL }}"})


def test_empty_deployment_defaults_mean_unset():
    assert clean_params({"dataset": "esc50", "clap_checkpoint": "", "min_self": None, "seed": None},
                        none_means_default={"min_self"}) == {"dataset": "esc50", "seed": None}
    # None for a field that takes no None is its default; for one that does, it is None
    cfg = validate_config({"dataset": "esc50", "backend": "openai", "model": "m", "min_self": None, "seed": None})
    assert cfg.min_self == PipelineConfig.model_fields["min_self"].default and cfg.seed is None
    with pytest.raises(ParameterError, match="model: Field required"):
        validate_config({"dataset": "esc50", "backend": "openai", "model": None})


def test_bad_values_fail_naming_each_parameter():
    with pytest.raises(ParameterError) as e:
        validate_config({"dataset": "esc50", "backend": "nope", "model": "m", "n_per_class": 0})
    assert "backend" in str(e.value) and "'nope'" in str(e.value)
    assert "n_per_class" in str(e.value)
    with pytest.raises(ParameterError, match="base_url"):
        validate_config({"dataset": "esc50", "backend": "vllm", "model": "m"})
    assert issubclass(ParameterError, SeptError)  # the `sept` command prints it in one line


def test_valid_parameters_give_the_pipeline_config():
    cfg = validate_config({"dataset": "esc50", "backend": "openai", "model": "gpt-4o-mini", "clap_checkpoint": "",
                           "n_per_class": 5, "min_self": None})
    assert cfg.backend == "openai" and cfg.n_per_class == 5 and cfg.clap_checkpoint is None


def test_unknown_task_runner_names_the_parameter():
    with pytest.raises(ParameterError, match="task_runner"):
        task_runner("ray", 4, 2, None)
    assert type(task_runner("threads", 4, 2, None)).__name__ == "ThreadPoolTaskRunner"
    assert type(task_runner("dask", 4, 2, None)).__name__ == "DaskTaskRunner"
