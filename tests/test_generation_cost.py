"""What a generation cost: requests, retries, response-cache hits, the API's token counts and
wall time, per backend, in the manifest (outside the version id) and in `sept store show`.

Tokens are checked against the REAL vLLM server's own Prometheus counters; retries against the
STAND-IN fault server (tests/fault_server.py), which fails requests on demand.
"""
import asyncio
import re
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from sept.cli import app
from sept.neighbor_store import Store
from sept.pipeline.generate import GenerationSettings, generate_all, generation_cost
from sept.pipeline.llm import ResponseCache, make_backend
from sept.prompts import load_prompt

PROMPT = load_prompt("default")
FAKE_KEY = "sk-test-FAKEKEY0123456789abcdef"


def server_counters(base_url: str) -> dict[str, float]:
    """The vLLM server's finished requests and token totals, from its /metrics."""
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/metrics", timeout=10) as r:
        text = r.read().decode()

    def total(name: str) -> float:
        return sum(float(m) for m in re.findall(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, flags=re.M))

    return {"requests": total("request_success_total"), "prompt_tokens": total("prompt_tokens_total"),
            "completion_tokens": total("generation_tokens_total")}


@pytest.mark.slow
def test_vllm_usage_agrees_with_the_server_and_a_rerun_costs_nothing(vllm_server, tmp_path):
    backend = make_backend("vllm", vllm_server.model, base_url=vllm_server.base_url)
    cache = ResponseCache(tmp_path / "cache")
    # one sample per request: vLLM's counters split an n>1 request into n, the API's usage does not
    settings = GenerationSettings(dataset="esc50", n_per_class=4, samples=1)
    before = server_counters(vllm_server.base_url)
    t0 = time.monotonic()
    results = asyncio.run(generate_all(backend, ["dog", "rain"], PROMPT, settings, cache))
    cost = generation_cost(backend.describe(), results, time.monotonic() - t0)
    after = server_counters(vllm_server.base_url)

    assert cost["backend"] == "vllm" and cost["model"] == vllm_server.model
    assert cost["requests"] == after["requests"] - before["requests"] >= 2
    assert cost["prompt_tokens"] == after["prompt_tokens"] - before["prompt_tokens"] > 0
    assert cost["completion_tokens"] == after["completion_tokens"] - before["completion_tokens"] > 0
    assert cost["usage_unreported"] == 0 and cost["retries"] == 0 and cost["response_cache_hits"] == 0
    assert 0 < cost["wall_seconds"] < 600
    for r in results.values():
        assert r.prompt_tokens > 0 and r.completion_tokens > 0 and r.seconds > 0

    again = asyncio.run(generate_all(backend, ["dog", "rain"], PROMPT, settings, cache))
    rerun = generation_cost(backend.describe(), again, 0.5)
    assert rerun["requests"] == 0 and rerun["response_cache_hits"] == 2
    assert rerun["prompt_tokens"] == rerun["completion_tokens"] == 0
    assert server_counters(vllm_server.base_url) == after


@pytest.mark.slow
def test_pipeline_run_records_cost_in_the_manifest_and_store_show_prints_it(vllm_server, tmp_path):
    from sept.pipeline.run import PipelineConfig, run_pipeline, write_result

    cfg = PipelineConfig(dataset="costs", classes=["dog", "rain"], backend="vllm", model=vllm_server.model,
                         base_url=vllm_server.base_url, n_per_class=3, samples=1, cache_dir=tmp_path / "cache",
                         store=tmp_path / "store")
    before = server_counters(vllm_server.base_url)
    result = run_pipeline(cfg)
    ref = write_result(None, cfg, result)
    after = server_counters(vllm_server.base_url)
    store = Store(cfg.store)
    manifest = store.read(ref).manifest
    [cost] = manifest["cost"]
    assert cost == result.stats["cost"][0]
    assert cost["requests"] == after["requests"] - before["requests"] >= 2
    assert cost["prompt_tokens"] == after["prompt_tokens"] - before["prompt_tokens"] > 0
    assert cost["completion_tokens"] == after["completion_tokens"] - before["completion_tokens"] > 0
    assert "cost" not in manifest["params"] and cost["wall_seconds"] > 0
    assert [name for name, problems in store.verify(ref) if problems] == []

    shown = CliRunner().invoke(app, ["store", "--store", str(cfg.store), "show", ref])
    assert shown.exit_code == 0, shown.output
    line = next(line for line in shown.stdout.splitlines() if line.startswith("  vllm "))
    assert (f"{cost['requests']} requests (0 retries), 0 response cache hits, "
            f"{cost['prompt_tokens']} prompt + {cost['completion_tokens']} completion tokens") in line

    # a re-run answers from the response cache: no request, and the same version (cost is not identity)
    again = run_pipeline(cfg)
    assert again.stats["cost"][0]["requests"] == 0 and again.stats["cost"][0]["response_cache_hits"] == 2
    assert write_result(None, cfg, again) == ref
    assert store.read(ref).manifest["cost"] == [cost]
    assert server_counters(vllm_server.base_url) == after


def test_retries_and_tokens_are_counted_against_the_fault_server(fault_server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    fault_server.script("dog", [{"status": 500}, {"status": 429, "retry_after": 0}, "ok"])
    fault_server.script("rain", ["not_json", "ok"])  # an invalid reply is asked again: a request, not a retry
    backend = make_backend("openai", "stand-in-model", base_url=fault_server.base_url)
    settings = GenerationSettings(dataset="faults", n_per_class=3, backoff_base=0.02, backoff_max=0.1)
    cache = ResponseCache(tmp_path / "cache")
    results = asyncio.run(generate_all(backend, ["dog", "rain"], PROMPT, settings, cache))
    assert (results["dog"].requests, results["dog"].retries) == (3, 2)
    assert (results["rain"].requests, results["rain"].retries) == (2, 0)
    cost = generation_cost(backend.describe(), results, 1.0)
    assert cost["requests"] == fault_server.count == 5 and cost["retries"] == 2
    # the stand-in reports 10 + 10 tokens per chat completion; failed requests report none
    assert cost["prompt_tokens"] == cost["completion_tokens"] == 10 * 3
    assert cost["usage_unreported"] == 0

    fault_server.reset()
    again = asyncio.run(generate_all(backend, ["dog", "rain"], PROMPT, settings, cache))
    rerun = generation_cost(backend.describe(), again, 0.1)
    assert fault_server.count == 0
    assert (rerun["requests"], rerun["retries"], rerun["response_cache_hits"], rerun["prompt_tokens"]) == (0, 0, 2, 0)


def test_anthropic_usage_is_counted(fault_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + FAKE_KEY[8:])
    fault_server.script("dog", [{"status": 529}, "ok"])
    backend = make_backend("anthropic", "stand-in-model", base_url=fault_server.anthropic_base_url)
    settings = GenerationSettings(dataset="faults", n_per_class=3, samples=2, backoff_base=0.02, backoff_max=0.1)
    results = asyncio.run(generate_all(backend, ["dog"], PROMPT, settings))
    cost = generation_cost(backend.describe(), results, 1.0)
    assert cost["backend"] == "anthropic" and cost["requests"] == 3 and cost["retries"] == 1
    assert cost["prompt_tokens"] == cost["completion_tokens"] == 20  # two replies of 10 + 10


def test_cost_is_in_the_manifest_not_in_the_version_id(tmp_path):
    from sept.neighbor_store import NeighborRecord

    store = Store(tmp_path / "store")
    n = [NeighborRecord(class_="dog", text="bark")]
    cost = {"backend": "vllm", "model": "m", "requests": 3, "retries": 1, "response_cache_hits": 0,
            "prompt_tokens": 120, "completion_tokens": 80, "usage_unreported": 0, "wall_seconds": 1.31}
    ref = store.write_version("d", ["dog"], n, cost=[cost])
    assert store.write_version("d", ["dog"], n, cost=[{**cost, "requests": 0, "response_cache_hits": 1}]) == ref
    assert store.read(ref).manifest["cost"] == [cost]
    assert [p for _, p in store.verify(ref) if p] == []
    shown = CliRunner().invoke(app, ["store", "--store", str(store.root), "show", ref])
    assert "  vllm m: 3 requests (1 retries), 0 response cache hits, 120 prompt + 80 completion tokens, 1.3 s" \
        in shown.stdout
    plain = store.write_version("d2", ["dog"], n)
    assert "cost" not in store.read(plain).manifest
    assert "cost:" not in CliRunner().invoke(app, ["store", "--store", str(store.root), "show", plain]).stdout
