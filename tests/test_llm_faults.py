"""Retry, validation, cache and secrecy rules of `pipeline.generate`, driven through the real
`openai` and `anthropic` clients against the STAND-IN fault server (tests/fault_server.py),
which injects what a real server will not produce on demand."""
import asyncio
import gc
import json
import time

import pytest

from fault_server import FaultServer
from sept.pipeline.generate import GenerationError, GenerationSettings, generate_all, generate_class
from sept.pipeline.llm import ResponseCache, make_backend
from sept.prompts import load_prompt

PROMPT = load_prompt("default")
CLASSES = ["dog", "cafe/restaurant", "Cough", "Música ñ 鳥"]
FAKE_KEY = "sk-test-FAKEKEY0123456789abcdef"


@pytest.fixture(autouse=True)
def _fake_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + FAKE_KEY[8:])


def settings(**kw):
    kw = {"dataset": "faults", "n_per_class": 3, "backoff_base": 0.02, "backoff_max": 0.1, **kw}
    return GenerationSettings(**kw)


def openai_backend(server, **kw):
    return make_backend("openai", "stand-in-model", base_url=server.base_url, **kw)


def one_class(backend, class_name="dog", cache=None, **kw):
    return asyncio.run(generate_class(backend, class_name, CLASSES, PROMPT, settings(**kw), cache))


def test_valid_reply_becomes_candidates(fault_server):
    result = one_class(openai_backend(fault_server))
    assert result.requests == 1 and result.failures == [] and result.cache_hits == 0
    assert len(result.candidates) == 4  # all items returned; trimming to n is the dedup stage's job
    rec = result.candidates[0]
    assert rec.class_ == "dog" and rec.status == "accepted" and rec.text.startswith("dog sound variant")
    assert rec.source == {"backend": "openai", "model": "stand-in-model", "prompt": PROMPT.ref, "sample": 0}
    body = fault_server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["neighbors"]
    assert "at least 5 items" in body["messages"][1]["content"]  # n_ask = ceil(1.5 * 3)


def test_429_waits_for_retry_after(fault_server):
    fault_server.script("dog", [{"status": 429, "retry_after": 1}, "ok"])
    result = one_class(openai_backend(fault_server))
    first, second = fault_server.requests
    assert second["time"] - first["time"] >= 1.0
    assert result.requests == 2 and len(result.candidates) == 4
    assert "http_429" in result.failures[0]


def test_500_then_success(fault_server):
    fault_server.script("dog", [{"status": 500}, {"status": 503}, "ok"])
    result = one_class(openai_backend(fault_server))
    assert result.requests == 3 and len(result.candidates) == 4
    assert ["http_500" in result.failures[0], "http_503" in result.failures[1]] == [True, True]


def test_transport_failures_give_up_with_the_reason(fault_server):
    fault_server.script("dog", [{"status": 500}] * 10)
    with pytest.raises(GenerationError) as e:
        one_class(openai_backend(fault_server), transport_retries=2)
    assert e.value.class_name == "dog" and "http_500" in str(e.value) and "'dog'" in str(e.value)
    assert fault_server.count == 3


@pytest.mark.parametrize("action, reason", [
    ("garbage", "bad_response"),
    ("not_json", "not_json"),
    ("truncated", "truncated"),
    ("wrong_shape", "wrong_shape"),
    ("empty_list", "empty_list"),
    ("refusal", "refusal"),
])
def test_invalid_reply_is_asked_again_and_kept_for_review(fault_server, action, reason):
    fault_server.script("dog", [action, "ok"])
    result = one_class(openai_backend(fault_server))
    assert result.requests == 2 and len(result.candidates) == 4
    assert reason in result.failures[0]
    if action != "garbage":  # a garbage HTTP body never reaches the reply parser
        bad = [r for r in result.raw if not r["valid"]]
        assert len(bad) == 1 and bad[0]["reason"].startswith(reason)
    assert [r["valid"] for r in result.raw][-1] is True


def test_fenced_json_counts_as_valid(fault_server):
    fault_server.script("dog", ["fenced"])
    result = one_class(openai_backend(fault_server))
    assert result.requests == 1 and result.failures == [] and len(result.candidates) == 4
    assert result.raw[0]["text"].startswith("```json")


def test_slow_reply_times_out_and_is_retried(fault_server):
    fault_server.script("dog", [{"delay": 3.0}, "ok"])
    t0 = time.monotonic()
    result = one_class(openai_backend(fault_server, timeout=0.5))
    assert time.monotonic() - t0 < 2.5
    assert result.requests == 2 and "timeout" in result.failures[0] and len(result.candidates) == 4


def test_unusable_items_are_returned_as_invalid(fault_server):
    fault_server.script("dog", ["bad_items"])
    result = one_class(openai_backend(fault_server))
    assert [r.text for r in result.candidates] == ["good dog neighbor"]
    assert result.candidates[0].kind == "acoustic"
    reasons = sorted(r.reason for r in result.invalid)
    assert reasons == ["invalid:class_name_only", "invalid:empty_text", "invalid:too_long"]
    assert all(r.status == "rejected" and r.class_ == "dog" for r in result.invalid)


def test_class_without_valid_reply_fails_the_run_naming_it(fault_server, tmp_path):
    fault_server.script("Cough", ["not_json"] * 3)
    cache = ResponseCache(tmp_path / "cache")
    backend = openai_backend(fault_server)
    with pytest.raises(GenerationError) as e:
        asyncio.run(generate_all(backend, CLASSES, PROMPT, settings(max_attempts=3), cache))
    err = e.value
    assert err.class_name == "Cough" and set(err.failed) == {"Cough"}
    assert "'Cough'" in str(err) and "not_json" in str(err) and "3 attempt" in str(err)
    assert fault_server.count_for("Cough") == 3
    import pickle

    assert str(pickle.loads(pickle.dumps(err))) == str(err)  # crosses process boundaries intact
    assert len(err.result.raw) == 3 and err.result.raw[0]["text"].startswith("Here are some neighbors")
    # the classes that succeeded are cached: the re-run asks only for the failed one
    before = fault_server.count
    results = asyncio.run(generate_all(backend, CLASSES, PROMPT, settings(max_attempts=3), cache))
    assert fault_server.count - before == 1 and fault_server.requests[-1]["class"] == "Cough"
    assert list(results) == CLASSES


def test_second_run_costs_zero_requests(fault_server, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    backend = openai_backend(fault_server)
    first = asyncio.run(generate_all(backend, CLASSES, PROMPT, settings(samples=2), cache))
    assert fault_server.count == len(CLASSES)  # one request per class, n=2
    assert {r["body"]["n"] for r in fault_server.requests} == {2}
    second = asyncio.run(generate_all(backend, CLASSES, PROMPT, settings(samples=2), cache))
    assert fault_server.count == len(CLASSES)
    for c in CLASSES:
        assert second[c].requests == 0 and second[c].cache_hits == 2
        assert [r.to_json_dict() for r in second[c].candidates] == [r.to_json_dict() for r in first[c].candidates]
        assert sorted({r.source["sample"] for r in first[c].candidates}) == [0, 1]
    # more samples: only the new sample index is asked for
    asyncio.run(generate_all(backend, CLASSES, PROMPT, settings(samples=3), cache))
    assert fault_server.count == 2 * len(CLASSES)
    assert [r["body"]["n"] for r in fault_server.requests[-len(CLASSES):]] == [1] * len(CLASSES)
    # a sampling change, or another class list (it is in the prompt), is a different answer
    asyncio.run(generate_all(backend, CLASSES, PROMPT, settings(temperature=0.3), cache))
    assert fault_server.count == 3 * len(CLASSES)
    asyncio.run(generate_all(backend, CLASSES[:2], PROMPT, settings(), cache))
    assert fault_server.count == 3 * len(CLASSES) + 2


def test_cache_ignores_server_address_and_key(tmp_path, monkeypatch):
    cache = ResponseCache(tmp_path / "cache")
    with FaultServer() as a:
        asyncio.run(generate_all(openai_backend(a), CLASSES, PROMPT, settings(), cache))
        assert a.count == len(CLASSES)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-another-key-entirely")
    with FaultServer() as b:  # another port, another key: same answers
        results = asyncio.run(generate_all(openai_backend(b), CLASSES, PROMPT, settings(), cache))
        assert b.count == 0 and all(r.cache_hits == 1 for r in results.values())


def test_class_names_verbatim_and_cache_files_hex(fault_server, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    results = asyncio.run(generate_all(openai_backend(fault_server), CLASSES, PROMPT, settings(), cache))
    assert list(results) == CLASSES
    for c in CLASSES:
        assert {r.class_ for r in results[c].candidates} == {c}
        assert results[c].candidates[0].text.startswith(c)
    names = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(names) == len(CLASSES) and all(n[:-5].isalnum() and n.isascii() for n in names)
    stored = {json.loads(p.read_text())["fields"]["class"] for p in (tmp_path / "cache").rglob("*.json")}
    assert stored == set(CLASSES)


def test_api_key_never_reaches_cache_errors_or_results(fault_server, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    fault_server.script("Cough", [{"status": 401, "echo_key": True}])
    backend = openai_backend(fault_server)
    with pytest.raises(GenerationError) as e:
        asyncio.run(generate_all(backend, CLASSES, PROMPT, settings(), cache))
    assert fault_server.requests[0]["authorization"] == f"Bearer {FAKE_KEY}"  # the key was really sent
    assert "for credential" in str(e.value) and "401" in str(e.value)
    assert e.value.result.requests == 1  # 401 is not worth a retry
    texts = [str(e.value), repr(e.value), json.dumps(e.value.failed), json.dumps(e.value.result.failures),
             repr(backend), json.dumps(backend.describe())]
    texts += [p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(texts) > 6
    for text in texts:
        assert FAKE_KEY not in text and FAKE_KEY[8:] not in text


def test_api_key_only_from_environment(monkeypatch):
    with pytest.raises(ValueError, match="environment"):
        make_backend("openai", "m", api_key="sk-x")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(Exception, match="OPENAI_API_KEY"):
        make_backend("openai", "m")
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        make_backend("gpt", "m")


def test_concurrency_bound_across_classes(tmp_path):
    classes = [f"class {i}" for i in range(12)]
    with FaultServer(latency=0.2) as server:
        t0 = time.monotonic()
        results = asyncio.run(generate_all(openai_backend(server), classes, PROMPT, settings(concurrency=3)))
        elapsed = time.monotonic() - t0
    assert server.max_in_flight == 3
    assert elapsed >= 4 * 0.2 and len(results) == 12


def test_on_class_done_called_per_class(fault_server):
    seen = []
    asyncio.run(generate_all(openai_backend(fault_server), CLASSES, PROMPT, settings(),
                             on_class_done=lambda c, r: seen.append((c, len(r.candidates)))))
    assert sorted(seen) == sorted((c, 4) for c in CLASSES)


def test_bad_settings_and_classes_are_named():
    with pytest.raises(ValueError, match="'samples'"):
        GenerationSettings(dataset="d", samples=0)
    with pytest.raises(ValueError, match="'cat' appears twice"):
        with FaultServer() as s:
            asyncio.run(generate_all(openai_backend(s), ["cat", "dog", "cat"], PROMPT, settings()))


# -- Anthropic, through the real `anthropic` SDK against the stand-in's Messages API shape -----

def anthropic_backend(server, **kw):
    return make_backend("anthropic", "stand-in-claude", base_url=server.anthropic_base_url, **kw)


def test_anthropic_forced_tool_use(fault_server):
    result = one_class(anthropic_backend(fault_server), samples=2)
    assert result.requests == 2  # no `n` in the Messages API: one request per sample
    assert len(result.candidates) == 8 and {r.source["sample"] for r in result.candidates} == {0, 1}
    body = fault_server.requests[0]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "record_neighbors"}
    assert body["tools"][0]["input_schema"]["required"] == ["neighbors"]
    sent = fault_server.requests[0]["x-api-key"] or fault_server.requests[0]["authorization"]
    assert "sk-ant-" in sent
    # separate requests for separate samples must not share a seed-less identical answer
    assert result.candidates[0].text != result.candidates[4].text


def test_anthropic_429_and_missing_tool_call(fault_server):
    fault_server.script("dog", [{"status": 429, "retry_after": 0.5}, "no_tool", "truncated", "ok"])
    result = one_class(anthropic_backend(fault_server))
    assert result.requests == 4 and len(result.candidates) == 4
    assert "http_429" in result.failures[0]
    assert "not_json" in result.failures[1] and "truncated" in result.failures[2]
    assert fault_server.requests[1]["time"] - fault_server.requests[0]["time"] >= 0.5


def test_backends_pickle_without_clients(fault_server):
    import pickle

    backend = openai_backend(fault_server)
    one_class(backend)  # made (and closed) a client on a loop
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.describe() == backend.describe() and FAKE_KEY.encode() not in pickle.dumps(backend)
    assert len(one_class(copy).candidates) == 4
    offline = make_backend("vllm-offline", "some/model-dir")
    assert pickle.loads(pickle.dumps(offline)).describe() == {"backend": "vllm-offline", "model": "some/model-dir"}


def test_one_sample_failing_for_good_fails_the_class_after_the_others_finish(fault_server):
    fault_server.script("dog", [{"status": 401}])
    with pytest.raises(GenerationError, match="'dog'.*http_401"):
        one_class(anthropic_backend(fault_server), samples=3)
    assert fault_server.count == 3  # the other two samples were still sent and awaited


def test_retry_after_pauses_every_request_of_the_run(fault_server):
    # after a 429 with Retry-After the whole run holds back, not only the refused request
    fault_server.script("dog", [{"status": 429, "retry_after": 1}, "ok"])
    asyncio.run(generate_all(openai_backend(fault_server), ["dog", "Cough"], PROMPT, settings(concurrency=1)))
    times = {}
    for r in fault_server.requests:
        times.setdefault(r["class"], r["time"])
    assert fault_server.requests[0]["class"] == "dog"
    assert times["Cough"] - times["dog"] >= 1.0


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_backend_serves_several_event_loops(fault_server):
    # one flow task per class runs asyncio.run() per class with the same backend object; without
    # aclose() the old loop's sockets are left to the garbage collector (hence the warnings)
    from sept.pipeline.llm import ChatRequest

    backend = openai_backend(fault_server)
    for _ in range(3):
        samples = asyncio.run(backend.complete(ChatRequest("system", "user")))  # no aclose between runs
        assert len(samples) == 1 and samples[0].finish_reason == "stop"
    assert fault_server.count == 3
    del backend
    gc.collect()  # the dropped clients' warnings are raised here, inside this test's filters
