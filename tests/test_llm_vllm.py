"""The LLM backends against a REAL vLLM OpenAI-compatible server on loopback (tiny local model
built by scripts/build_tiny_llm.py), through the real `openai` client; and the vLLM offline
engine in the vLLM environment."""
import asyncio
import json
import os
import subprocess
import sys
import re
import textwrap
import urllib.request

import pytest

from fixtures_llm import VLLM_PYTHON
from sept.pipeline.generate import GenerationSettings, generate_all
from sept.pipeline.llm import BackendError, ChatRequest, NeighborReply, ResponseCache, make_backend
from sept.prompts import load_prompt

pytestmark = pytest.mark.slow

PROMPT = load_prompt("default")
CLASSES = ["dog", "cafe/restaurant", "Cough", "Música ñ 鳥"]


def served_requests(base_url: str) -> float:
    """Requests the server finished, from its Prometheus metrics."""
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, flags=re.M))


def settings(**kw):
    return GenerationSettings(**{"dataset": "esc50", "n_per_class": 4, "max_tokens": 512, **kw})


def test_structured_output_n_samples_and_concurrency(vllm_server, tmp_path):
    backend = make_backend("vllm", vllm_server.model, base_url=vllm_server.base_url)
    cache = ResponseCache(tmp_path / "cache")
    classes = CLASSES + ["rain", "siren"]
    results = asyncio.run(generate_all(backend, classes, PROMPT, settings(samples=2, concurrency=3), cache))
    assert list(results) == classes
    for c, r in results.items():
        assert r.candidates, f"no candidates for {c}"
        assert {x.class_ for x in r.candidates} == {c}
        assert {x.source["sample"] for x in r.candidates} == {0, 1}
        assert all(x.text.strip() for x in r.candidates)
        assert r.requests >= 1
        for raw in r.raw:  # every valid reply is JSON of the schema, as generated
            if raw["valid"]:
                NeighborReply.model_validate_json(raw["text"])
    # one request carried both samples (n=2) unless a reply had to be asked again
    assert min(r.requests for r in results.values()) == 1
    served = served_requests(vllm_server.base_url)
    assert served >= len(classes)
    again = asyncio.run(generate_all(backend, classes, PROMPT, settings(samples=2, concurrency=3), cache))
    assert sum(r.requests for r in again.values()) == 0
    assert all(r.cache_hits == 2 for r in again.values())
    assert served_requests(vllm_server.base_url) == served  # the server saw nothing of the re-run


def test_greedy_several_samples_use_separate_requests(vllm_server):
    # vLLM refuses n > 1 with greedy decoding; generation must still deliver every sample
    backend = make_backend("vllm", vllm_server.model, base_url=vllm_server.base_url)
    results = asyncio.run(generate_all(backend, CLASSES[:2], PROMPT, settings(samples=2, temperature=0.0)))
    for r in results.values():
        assert r.requests >= 2 and {x.source["sample"] for x in r.candidates} == {0, 1}


def test_openai_client_parse_and_n(vllm_server):
    import openai

    client = openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0)
    messages = [{"role": "system", "content": PROMPT.system},
                {"role": "user", "content": PROMPT.render(dataset="esc50", class_name="dog", classes=CLASSES,
                                                         n=4, n_ask=6)}]
    parsed = client.chat.completions.parse(model=vllm_server.model, messages=messages, response_format=NeighborReply,
                                           max_tokens=512, temperature=0.7, n=3, seed=1)
    assert len(parsed.choices) == 3
    for choice in parsed.choices:
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, NeighborReply) and choice.message.parsed.neighbors


def test_unknown_model_is_not_retried(vllm_server):
    backend = make_backend("vllm", "no-such-model", base_url=vllm_server.base_url)
    with pytest.raises(Exception) as e:
        asyncio.run(generate_all(backend, CLASSES[:1], PROMPT, settings()))
    assert "'dog'" in str(e.value) and "http_404" in str(e.value)
    assert e.value.result.requests == 1


def test_offline_engine_in_the_vllm_environment(tiny_llm_dir, tmp_path):
    """`vllm.LLM(...).chat` with structured output, through our backend, in vLLM's own venv."""
    assert VLLM_PYTHON.exists(), f"the vLLM environment is missing: {VLLM_PYTHON}"
    script = textwrap.dedent("""
        import asyncio, json, sys
        from sept.pipeline.llm import ChatRequest, make_backend, parse_reply
        from sept.prompts import load_prompt
        prompt = load_prompt("default")
        backend = make_backend("vllm-offline", sys.argv[1], max_model_len=2048)
        async def main():
            out = {}
            for c in ["dog", "Música ñ 鳥"]:
                user = prompt.render(dataset="d", class_name=c, classes=["dog", "Música ñ 鳥"], n=4, n_ask=6)
                samples, usage = await backend.complete_with_usage(ChatRequest(prompt.system, user, 0.8, 512, n=3, seed=0))
                out[c] = [s.finish_reason for s in samples]
                out[c + "/usage"] = [usage.prompt_tokens, usage.completion_tokens]
                out[c + "/valid"] = [len(parse_reply(s.text, s.finish_reason).neighbors) for s in samples
                                     if s.finish_reason == "stop"]
            return out
        print("RESULT " + json.dumps(asyncio.run(main()), ensure_ascii=False))
    """)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env.update(TMPDIR=str(scratch), VLLM_CACHE_ROOT=str(scratch / "vllm"),
               TORCHINDUCTOR_CACHE_DIR=str(scratch / "inductor"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([str(VLLM_PYTHON), "-c", script, str(tiny_llm_dir)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tmp_path)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, f"offline engine run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(line[len("RESULT "):])
    for c in ["dog", "Música ñ 鳥"]:
        assert len(result[c]) == 3  # n=3 samples from one request
        assert len(result[c + "/valid"]) >= 2 and all(k >= 1 for k in result[c + "/valid"])
        prompt_tokens, completion_tokens = result[c + "/usage"]  # the engine's own token counts
        assert prompt_tokens > 10 and completion_tokens >= 3 * 5


def test_offline_backend_without_vllm_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as in an environment without vLLM
    backend = make_backend("vllm-offline", "some/model-dir")
    with pytest.raises(BackendError, match="needs the `vllm` package.*backend 'vllm'"):
        asyncio.run(backend.complete(ChatRequest("s", "u")))
    with pytest.raises(ValueError, match="no base_url"):
        make_backend("vllm-offline", "some/model-dir", base_url="http://127.0.0.1:1/v1")
